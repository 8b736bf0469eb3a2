// The zaptid version, set by CMake from project(VERSION).
#pragma once

#include <string_view>

namespace zaptid {

inline constexpr std::string_view kVersion = ZAPTID_VERSION;

}  // namespace zaptid
