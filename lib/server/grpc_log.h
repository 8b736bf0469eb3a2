// gRPC's own log lines (gpr_log) routed to spdlog, so stderr keeps one format.
#pragma once

#include <spdlog/common.h>

namespace zaptid::server {

/// From now on gRPC's ERROR lines are logged at `error_level`, its INFO and DEBUG lines at
/// debug. Thread-safe; may be called again to change the level (e.g. quiet during start-up,
/// when zaptid reports a failed bind itself).
void route_grpc_logs(spdlog::level::level_enum error_level);

}  // namespace zaptid::server
