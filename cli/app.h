// The zaptid command line: wires the subcommands together.
#pragma once

namespace zaptid::cli {

/// Parses argv, runs the chosen subcommand, prints any error as "zaptid: <message>" on stderr
/// and returns the exit status (see exit_status.h). The only place errors become exit codes.
int main(int argc, char** argv);

}  // namespace zaptid::cli
