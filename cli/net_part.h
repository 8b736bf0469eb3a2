// How the two parts of zaptid meet (cli/CMakeLists.txt): the front execs the network part with
// the user's own argv (argv[0] included, so `ps` and the claim's holder line show the command
// the user typed) and its version in the environment variable kFrontVariable, which zaptid-net
// checks and removes before anything else.
#pragma once

namespace zaptid::cli {

inline constexpr const char* kFrontVariable = "ZAPTID_FRONT";

}  // namespace zaptid::cli
