// Every log line a client can cause goes through one limiter, so that no client can fill a disk
// or spend the server's CPU on writing: gRPC's own lines (gpr_log, routed to spdlog so stderr
// keeps one format), libmicrohttpd's, and the connection guards' (cli/net_guard.h).
#pragma once

#include <spdlog/common.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace zaptid::server {

/// Lets through at most `burst` lines per key in each `window`; counts the rest, and reports
/// the count with the key's first line in a later window. Not thread-safe.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  LogLimiter(uint32_t burst, std::chrono::milliseconds window) : burst_(burst), window_(window) {}

  struct Decision {
    bool log = false;         ///< log this line
    uint64_t suppressed = 0;  ///< lines of this key dropped since it last logged; say so first
  };
  Decision admit(const std::string& key, Clock::time_point now) { return admit(key, now, burst_); }
  /// The same with a burst of this key's own.
  Decision admit(const std::string& key, Clock::time_point now, uint32_t burst);

 private:
  struct Bucket {
    Clock::time_point start;
    uint32_t logged = 0;
    uint64_t suppressed = 0;
  };
  uint32_t burst_;
  std::chrono::milliseconds window_;
  std::unordered_map<std::string, Bucket> buckets_;
};

/// Logs `message` at `level` unless its `key` (where the line comes from: a source line, a
/// format, a guard's reason) has logged `burst` lines within the last 10 s; a line that follows
/// dropped ones first says how many were dropped. Lines that carry their own running count (the
/// guard's) need only 1. Thread-safe.
void log_limited(spdlog::level::level_enum level, const std::string& key, std::string_view message,
                 uint32_t burst = 5);

/// From now on gRPC's ERROR lines are logged at `error_level`, its INFO and DEBUG lines at
/// debug, limited per gRPC source line by log_limited(). Thread-safe; may be called again to
/// change the level (e.g. quiet during start-up, when zaptid reports a failed bind itself).
void route_grpc_logs(spdlog::level::level_enum error_level);

}  // namespace zaptid::server
