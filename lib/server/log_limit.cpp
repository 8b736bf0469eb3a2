#include "server/log_limit.h"

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

#include <fmt/format.h>

namespace zaptid::server {
namespace {

std::atomic<spdlog::level::level_enum> g_error_level{spdlog::level::warn};
std::mutex g_mu;
// 5 lines per key per 10 s: enough to see what happens, not enough to fill a disk.
LogLimiter g_limiter(5, std::chrono::seconds(10));  // under g_mu

void forward(gpr_log_func_args* args) {
  const auto level = args->severity == GPR_LOG_SEVERITY_ERROR ? g_error_level.load() : spdlog::level::debug;
  if (!spdlog::should_log(level)) return;
  log_limited(level, fmt::format("{}:{}", args->file, args->line),
              fmt::format("grpc: {} ({}:{})", args->message, args->file, args->line));
}

}  // namespace

LogLimiter::Decision LogLimiter::admit(const std::string& key, Clock::time_point now, uint32_t burst) {
  // Bounded: there are a few hundred log sites; forget all if something odd makes more keys.
  if (buckets_.size() > 1024) buckets_.clear();
  auto [it, fresh] = buckets_.try_emplace(key);
  Bucket& b = it->second;
  Decision d;
  if (fresh || now - b.start >= window_) {
    d.suppressed = b.suppressed;
    b = Bucket{now, 0, 0};
  }
  if (b.logged < burst) {
    ++b.logged;
    d.log = true;
  } else {
    ++b.suppressed;
  }
  return d;
}

void log_limited(spdlog::level::level_enum level, const std::string& key, std::string_view message,
                 uint32_t burst) {
  if (!spdlog::should_log(level)) return;
  LogLimiter::Decision d;
  {
    std::lock_guard lock(g_mu);
    d = g_limiter.admit(key, LogLimiter::Clock::now(), burst);
  }
  if (d.suppressed > 0) spdlog::log(level, "{} more lines like the next were suppressed", d.suppressed);
  if (d.log) spdlog::log(level, "{}", message);
}

void route_grpc_logs(spdlog::level::level_enum error_level) {
  g_error_level.store(error_level);
  gpr_set_log_function(forward);
}

}  // namespace zaptid::server
