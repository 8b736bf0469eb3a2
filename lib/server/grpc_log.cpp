#include "server/grpc_log.h"

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

#include <fmt/format.h>

namespace zaptid::server {
namespace {

std::atomic<spdlog::level::level_enum> g_error_level{spdlog::level::warn};
std::mutex g_mu;
// 5 lines per gRPC source line per 10 s: enough to see what happens, not enough to fill a disk.
LogLimiter g_limiter(5, std::chrono::seconds(10));

void forward(gpr_log_func_args* args) {
  const auto level = args->severity == GPR_LOG_SEVERITY_ERROR ? g_error_level.load() : spdlog::level::debug;
  if (!spdlog::should_log(level)) return;
  LogLimiter::Decision d;
  {
    std::lock_guard lock(g_mu);
    d = g_limiter.admit(fmt::format("{}:{}", args->file, args->line), LogLimiter::Clock::now());
  }
  if (d.suppressed > 0) {
    spdlog::log(level, "grpc: {} more lines like the next were suppressed ({}:{})", d.suppressed, args->file,
                args->line);
  }
  if (d.log) spdlog::log(level, "grpc: {} ({}:{})", args->message, args->file, args->line);
}

}  // namespace

LogLimiter::Decision LogLimiter::admit(const std::string& key, Clock::time_point now) {
  // Bounded: gRPC has a few hundred log sites; forget all if something odd makes more keys.
  if (buckets_.size() > 1024) buckets_.clear();
  auto [it, fresh] = buckets_.try_emplace(key);
  Bucket& b = it->second;
  Decision d;
  if (fresh || now - b.start >= window_) {
    d.suppressed = b.suppressed;
    b = Bucket{now, 0, 0};
  }
  if (b.logged < burst_) {
    ++b.logged;
    d.log = true;
  } else {
    ++b.suppressed;
  }
  return d;
}

void route_grpc_logs(spdlog::level::level_enum error_level) {
  g_error_level.store(error_level);
  gpr_set_log_function(forward);
}

}  // namespace zaptid::server
