#include "server/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "core/generator.h"

namespace zaptid::server {

namespace {

constexpr std::array<const char*, 17> kCodeNames = {
    "OK",           "CANCELED",       "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED",  "INTERNAL",          "UNAVAILABLE",     "DATA_LOSS",         "UNAUTHENTICATED"};

struct MethodName {
  const char* service;
  const char* method;
};
constexpr std::array<MethodName, static_cast<size_t>(Method::kCount)> kMethods = {{
    {"idgen.IdGen", "Gen"},
    {"idgen.IdGen", "GenBatch"},
    {"idgen.IdGen", "Info"},
    {"grpc.health.v1.Health", "Check"},
}};

constexpr std::array<const char*, static_cast<size_t>(Refusal::kCount)> kRefusals = {
    "clock_behind", "time_exhausted", "unavailable", "over_capacity", "shutting_down"};

std::string method_labels(size_t m) {
  return fmt::format(R"(grpc_type="unary",grpc_service="{}",grpc_method="{}")", kMethods[m].service,
                     kMethods[m].method);
}

// The exposition format's float: Go's strconv 'g' style; integers print without a fraction.
std::string format_value(double v) { return fmt::format("{}", v); }

}  // namespace

void Histogram::observe(std::chrono::nanoseconds elapsed) {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  const auto it = std::lower_bound(kLatencyBuckets.begin(), kLatencyBuckets.end(), seconds);
  if (it != kLatencyBuckets.end()) buckets_[static_cast<size_t>(it - kLatencyBuckets.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, elapsed.count())), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::write(std::string& out, std::string_view name, std::string_view labels) const {
  // Read the count first: a call observed meanwhile may then show in a bucket but not in the
  // count, never the other way round, so +Inf (the count) is never below the last bucket.
  const uint64_t count = count_.load(std::memory_order_relaxed);
  const uint64_t sum_ns = sum_ns_.load(std::memory_order_relaxed);
  const std::string_view comma = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, comma, format_value(kLatencyBuckets[i]),
                       std::min(cumulative, count));
  }
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, comma, count);
  write_sample(out, fmt::format("{}_sum", name), labels, static_cast<double>(sum_ns) / 1e9);
  write_sample(out, fmt::format("{}_count", name), labels, count);
}

Metrics::Metrics(size_t lanes) : lane_count_(lanes), lanes_(new LaneCounters[lanes]) {}

void Metrics::handled(Method m, int code, std::chrono::nanoseconds elapsed) {
  auto& c = methods_[index(m)];
  c.handled[static_cast<size_t>(code) < kCodes ? static_cast<size_t>(code) : 2].fetch_add(1, std::memory_order_relaxed);
  c.latency.observe(elapsed);
}

void Metrics::waited(size_t lane, std::chrono::nanoseconds wait) {
  lanes_[lane].waits.fetch_add(1, std::memory_order_relaxed);
  lanes_[lane].wait_ns.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, wait.count())), std::memory_order_relaxed);
}

void Metrics::write_calls(std::string& out) const {
  write_family(out, "grpc_server_started_total", "counter", "RPCs started on the server.");
  for (size_t m = 0; m < methods_.size(); ++m) {
    write_sample(out, "grpc_server_started_total", method_labels(m), methods_[m].started.load(std::memory_order_relaxed));
  }
  write_family(out, "grpc_server_handled_total", "counter",
               "RPCs completed on the server, by gRPC status code (OK always shown, other codes once seen).");
  for (size_t m = 0; m < methods_.size(); ++m) {
    for (size_t code = 0; code < kCodes; ++code) {
      const uint64_t n = methods_[m].handled[code].load(std::memory_order_relaxed);
      if (n == 0 && code != 0) continue;
      write_sample(out, "grpc_server_handled_total", fmt::format("{},grpc_code=\"{}\"", method_labels(m), kCodeNames[code]), n);
    }
  }
  write_family(out, "grpc_server_handling_seconds", "histogram",
               "Time from a call's start until the server finished it (including any wait for its tick).");
  for (size_t m = 0; m < methods_.size(); ++m) methods_[m].latency.write(out, "grpc_server_handling_seconds", method_labels(m));
}

void Metrics::write_lane_counters(std::string& out, const std::string* labels) const {
  write_family(out, "zaptid_ids_issued_total", "counter", "IDs handed out to callers.");
  for (size_t i = 0; i < lane_count_; ++i) write_sample(out, "zaptid_ids_issued_total", labels[i], issued(i));
  write_family(out, "zaptid_tick_waits_total", "counter",
               "Gen and GenBatch calls that waited for a later tick (the lane was at its ceiling).");
  for (size_t i = 0; i < lane_count_; ++i) {
    write_sample(out, "zaptid_tick_waits_total", labels[i], lanes_[i].waits.load(std::memory_order_relaxed));
  }
  write_family(out, "zaptid_tick_wait_seconds_total", "counter", "Time those calls were expected to wait for their tick.");
  for (size_t i = 0; i < lane_count_; ++i) {
    write_sample(out, "zaptid_tick_wait_seconds_total", labels[i],
                 static_cast<double>(lanes_[i].wait_ns.load(std::memory_order_relaxed)) / 1e9);
  }
  write_family(out, "zaptid_refusals_total", "counter", "Gen and GenBatch calls that got no IDs, by reason.");
  for (size_t i = 0; i < lane_count_; ++i) {
    for (size_t r = 0; r < kRefusals.size(); ++r) {
      write_sample(out, "zaptid_refusals_total", fmt::format("{},reason=\"{}\"", labels[i], kRefusals[r]),
                   lanes_[i].refused[r].load(std::memory_order_relaxed));
    }
  }
}

void write_family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void write_sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  if (labels.empty()) {
    out += fmt::format("{} {}\n", name, format_value(value));
  } else {
    out += fmt::format("{}{{{}}} {}\n", name, labels, format_value(value));
  }
}

void write_sample(std::string& out, std::string_view name, std::string_view labels, uint64_t value) {
  if (labels.empty()) {
    out += fmt::format("{} {}\n", name, value);
  } else {
    out += fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
}

std::string escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void write_clock_step_backs(std::string& out, const std::vector<const Generator*>& lanes) {
  std::vector<std::pair<std::string, ClockStepBacks>> seen;
  for (const Generator* g : lanes) seen.emplace_back(fmt::format("machine_id=\"{}\"", g->machine_id()), g->clock_step_backs());
  const auto seconds = [](Nanos d) { return std::chrono::duration<double>(d).count(); };
  write_family(out, "zaptid_clock_step_backs_total", "counter",
               "Times the clock read behind a tick it had already shown (NTP or an operator set it back); the "
               "readings while it catches up count once.");
  for (const auto& [labels, s] : seen) write_sample(out, "zaptid_clock_step_backs_total", labels, s.count);
  write_family(out, "zaptid_clock_step_back_seconds_total", "counter",
               "The sizes of those step-backs added up (each to within one tick).");
  for (const auto& [labels, s] : seen) write_sample(out, "zaptid_clock_step_back_seconds_total", labels, seconds(s.total));
  write_family(out, "zaptid_clock_step_back_max_seconds", "gauge", "The largest of those step-backs.");
  for (const auto& [labels, s] : seen) write_sample(out, "zaptid_clock_step_back_max_seconds", labels, seconds(s.largest));
}

void write_process_metrics(std::string& out) {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // /proc/self/stat: fields after the command name (in parentheses, which may hold spaces).
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;
    for (std::string s; fields >> s;) f.push_back(s);
    // f[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
    if (f.size() > 21) {
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      write_family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
      write_sample(out, "process_cpu_seconds_total", "", cpu);
      write_family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
      write_sample(out, "process_virtual_memory_bytes", "", std::stod(f[20]));
      write_family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
      write_sample(out, "process_resident_memory_bytes", "", std::stod(f[21]) * page);
      std::ifstream proc_stat("/proc/stat");
      for (std::string key; proc_stat >> key;) {
        if (key == "btime") {
          double boot = 0;
          proc_stat >> boot;
          write_family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
          write_sample(out, "process_start_time_seconds", "", boot + std::stod(f[19]) / ticks);
          break;
        }
      }
    }
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    uint64_t fds = 0;
    while (const dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') ++fds;
    }
    closedir(dir);
    write_family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    write_sample(out, "process_open_fds", "", fds - 1);  // not the one reading the folder
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    write_family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    write_sample(out, "process_max_fds", "", static_cast<uint64_t>(lim.rlim_cur));
  }
}

}  // namespace zaptid::server
