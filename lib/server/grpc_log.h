// gRPC's own log lines (gpr_log) routed to spdlog, so stderr keeps one format, and repeated lines
// (a client failing TLS handshakes in a loop) rate-limited so they cannot flood the log.
#pragma once

#include <spdlog/common.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace zaptid::server {

/// From now on gRPC's ERROR lines are logged at `error_level`, its INFO and DEBUG lines at
/// debug; each source line of gRPC logs at most LogLimiter's budget. Thread-safe; may be called
/// again to change the level (e.g. quiet during start-up, when zaptid reports a failed bind itself).
void route_grpc_logs(spdlog::level::level_enum error_level);

/// Lets through at most `burst` lines per key (a gRPC source file:line) in each `window`; counts
/// the rest, and reports the count with the key's first line in a later window. Not thread-safe.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  LogLimiter(uint32_t burst, std::chrono::milliseconds window) : burst_(burst), window_(window) {}

  struct Decision {
    bool log = false;         ///< log this line
    uint64_t suppressed = 0;  ///< lines of this key dropped since it last logged; say so first
  };
  Decision admit(const std::string& key, Clock::time_point now);

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

}  // namespace zaptid::server
