#include "server/grpc_log.h"

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <atomic>

namespace zaptid::server {
namespace {

std::atomic<spdlog::level::level_enum> g_error_level{spdlog::level::warn};

void forward(gpr_log_func_args* args) {
  const auto level = args->severity == GPR_LOG_SEVERITY_ERROR ? g_error_level.load() : spdlog::level::debug;
  spdlog::log(level, "grpc: {} ({}:{})", args->message, args->file, args->line);
}

}  // namespace

void route_grpc_logs(spdlog::level::level_enum error_level) {
  g_error_level.store(error_level);
  gpr_set_log_function(forward);
}

}  // namespace zaptid::server
