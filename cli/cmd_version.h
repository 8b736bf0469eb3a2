// zaptid version: the version, as `zaptid --version` prints it.
#pragma once

#include "subcommand.h"

namespace zaptid::cli {

void setup_version(CLI::App& app, Action& action);

}  // namespace zaptid::cli
