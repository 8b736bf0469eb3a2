#pragma once

// What the server counts for operators, and its Prometheus text exposition
// (https://prometheus.io/docs/instrumenting/exposition_formats/). Counting is a few relaxed atomic
// additions per call; formatting happens only when someone scrapes.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace zaptid {
class Generator;
}

namespace zaptid::server {

/// The unary methods the server counts, named as gRPC's Prometheus conventions name them.
enum class Method : uint8_t { kGen, kGenBatch, kInfo, kHealthCheck, kCount };

/// Why a Gen or GenBatch call got no IDs.
enum class Refusal : uint8_t {
  kClockBehind,    ///< the clock is (or stepped) further behind than --max-clock-wait
  kTimeExhausted,  ///< the layout's time field has run out
  kUnavailable,    ///< the service is unavailable (etcd lease not confirmed, record not writable)
  kOverCapacity,   ///< the IDs could not be ready before the call's deadline
  kShuttingDown,   ///< the server is stopping
  kCount
};

/// Latency buckets in seconds: a call answered at once takes tens of microseconds, one that waits
/// for its tick up to a tick (10ms for sonyflake), an over-capacity one up to its deadline.
inline constexpr std::array<double, 14> kLatencyBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                          0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};

class Histogram {
 public:
  void observe(std::chrono::nanoseconds elapsed);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  /// Appends `name`_bucket/_sum/_count lines with `labels` (`a="b",c="d"`, no braces; may be empty).
  void write(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  std::array<std::atomic<uint64_t>, kLatencyBuckets.size()> buckets_{};  // not cumulative
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

/// Counters of the calls and lanes of one IdService. Thread-safe; never blocks.
class Metrics {
 public:
  explicit Metrics(size_t lanes);

  void started(Method m) { methods_[index(m)].started.fetch_add(1, std::memory_order_relaxed); }
  /// A call of `m` ended with gRPC status `code` after `elapsed`.
  void handled(Method m, int code, std::chrono::nanoseconds elapsed);
  void issued(size_t lane, uint64_t count) { lanes_[lane].issued.fetch_add(count, std::memory_order_relaxed); }
  /// A call on `lane` had to wait `wait` for its tick.
  void waited(size_t lane, std::chrono::nanoseconds wait);
  void refused(size_t lane, Refusal r) { lanes_[lane].refused[index(r)].fetch_add(1, std::memory_order_relaxed); }

  uint64_t issued(size_t lane) const { return lanes_[lane].issued.load(std::memory_order_relaxed); }
  size_t lanes() const { return lane_count_; }

  /// Appends the call metrics (grpc_server_*) in the text exposition format.
  void write_calls(std::string& out) const;
  /// Appends the per-lane counters; `machine_id(i)` names lane i.
  template <class MachineId>
  void write_lanes(std::string& out, MachineId machine_id) const;

 private:
  static constexpr size_t kCodes = 17;  // gRPC status codes 0..16
  template <class E>
  static constexpr size_t index(E e) {
    return static_cast<size_t>(e);
  }
  struct MethodCounters {
    std::atomic<uint64_t> started{0};
    std::array<std::atomic<uint64_t>, kCodes> handled{};
    Histogram latency;
  };
  struct LaneCounters {
    std::atomic<uint64_t> issued{0};
    std::atomic<uint64_t> waits{0};
    std::atomic<uint64_t> wait_ns{0};
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Refusal::kCount)> refused{};
  };
  void write_lane_counters(std::string& out, const std::string* labels) const;

  std::array<MethodCounters, static_cast<size_t>(Method::kCount)> methods_;
  size_t lane_count_;
  std::unique_ptr<LaneCounters[]> lanes_;
};

/// `# HELP` and `# TYPE` lines of a metric family.
void write_family(std::string& out, std::string_view name, std::string_view type, std::string_view help);
/// One sample line: name{labels} value (no braces when labels is empty).
void write_sample(std::string& out, std::string_view name, std::string_view labels, double value);
void write_sample(std::string& out, std::string_view name, std::string_view labels, uint64_t value);
/// A label value escaped as the exposition format wants (backslash, double quote, newline).
std::string escape_label(std::string_view value);

/// The clock step-backs each lane's generator saw (Generator::clock_step_backs()), labelled by
/// the lane's machine id.
void write_clock_step_backs(std::string& out, const std::vector<const Generator*>& lanes);

/// The standard process_* metrics of this process, read from /proc: CPU seconds, resident and
/// virtual memory, open and maximum descriptors, start time.
void write_process_metrics(std::string& out);

template <class MachineId>
void Metrics::write_lanes(std::string& out, MachineId machine_id) const {
  std::unique_ptr<std::string[]> labels(new std::string[lane_count_]);
  for (size_t i = 0; i < lane_count_; ++i) labels[i] = "machine_id=\"" + std::to_string(machine_id(i)) + "\"";
  write_lane_counters(out, labels.get());
}

}  // namespace zaptid::server
