#pragma once

// What the server's durable side did, for /metrics: the high-water writes to the record files or
// to etcd, and the etcd lease's keep-alives. Each is a relaxed atomic add at a write or a
// keep-alive (a few a second at most), never per ID; formatting happens only when someone scrapes.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "core/generator.h"
#include "server/metrics.h"

namespace zaptid::server {

/// Counts and times the high-water writes of one store. Thread-safe; never blocks.
class StoreMetrics {
 public:
  /// `store` labels every sample: "file" (the host and state records) or "etcd".
  explicit StoreMetrics(std::string store) : labels_("store=\"" + escape_label(store) + "\"") {}
  /// A write took `elapsed` and succeeded (`ok`) or failed.
  void wrote(std::chrono::nanoseconds elapsed, bool ok);
  /// Appends zaptid_high_water_writes_total, _write_failures_total and _write_seconds.
  void write(std::string& out) const;

 private:
  std::string labels_;
  std::atomic<uint64_t> failures_{0};
  Histogram latency_;  // every write, failed or not
};

/// A Reserver that passes each write to `inner` and tells `metrics` how long it took and whether
/// it failed. Both must outlive it.
class MeasuredReserver final : public Reserver {
 public:
  MeasuredReserver(Reserver& inner, StoreMetrics& metrics) : inner_(inner), metrics_(metrics) {}
  Status reserve_through(Cursor high) override;

 private:
  Reserver& inner_;
  StoreMetrics& metrics_;
};

/// A ReserverWrapper that measures into `metrics` (which must outlive what it makes).
ReserverWrapper measure_into(StoreMetrics& metrics);

/// The etcd lease as operators watch it. Thread-safe; never blocks.
class LeaseMetrics {
 public:
  /// A keep-alive was answered (the lease confirmed) `round_trip` after it was sent.
  void kept_alive(std::chrono::nanoseconds round_trip) { round_trip_.observe(round_trip); }
  /// A keep-alive got no answer (the stream failed or was given up as stuck).
  void keep_alive_failed() { failures_.fetch_add(1, std::memory_order_relaxed); }

  /// What the session says now, read when someone scrapes.
  struct State {
    bool confirmed = false;
    std::chrono::milliseconds since_confirmed{0};
    std::chrono::milliseconds ttl{0};
  };
  /// Appends the zaptid_etcd_* families.
  void write(std::string& out, const State& now) const;

 private:
  std::atomic<uint64_t> failures_{0};
  Histogram round_trip_;
};

}  // namespace zaptid::server
