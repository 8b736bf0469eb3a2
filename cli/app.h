// The zaptid command line: wires the subcommands together. Both parts of zaptid run it (see
// cli/CMakeLists.txt): the front with stand-ins for the network commands, zaptid-net with the
// real ones, so both parse the same command line.
#pragma once

#include <string_view>

#include "subcommand.h"

namespace zaptid::cli {

/// Adds the subcommands serve, get and bench to `app`, in that order; only the one named `only`
/// when that is not empty.
using NetCommands = void (*)(CLI::App& app, Action& action, std::string_view only);

/// Parses argv, runs the chosen subcommand, prints any error as "zaptid: <message>" on stderr
/// and returns the exit status (see exit_status.h). The only place errors become exit codes.
int main(int argc, char** argv, NetCommands net);

}  // namespace zaptid::cli
