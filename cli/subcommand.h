// What every subcommand's file pair (cmd_<name>.{h,cpp}) builds on: CLI11, Fatal, and the
// action its setup leaves behind.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "fatal.h"

namespace zaptid::cli {

/// What a subcommand's setup leaves behind: the action to run once parsing succeeded.
using Action = std::function<int()>;

}  // namespace zaptid::cli
