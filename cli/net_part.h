// How the two parts of zaptid meet (cli/CMakeLists.txt): the front runs the network part as
// `zaptid-net --zaptid-front=<its version> <the user's arguments>`.
#pragma once

#include <string_view>

namespace zaptid::cli {

inline constexpr std::string_view kFrontFlag = "--zaptid-front=";

}  // namespace zaptid::cli
