// spdlog set-up for the CLI and server layers (the library core never logs).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace zaptid::cli {

struct LogOptions {
  std::string level;           ///< empty: the subcommand's default
  std::string format = "text";  ///< text or json
};

/// --log-level and --log-format, valid before or after the subcommand.
void add_log_options(CLI::App& app, LogOptions& opt);

/// Sends spdlog to stderr. One-shot commands default to "warn" with lines like
/// "zaptid: warning: …"; long-running ones (`daemon`) default to "info" with UTC timestamps.
/// json writes one object per line: {"time":…,"level":…,"msg":…}.
void setup_logging(const LogOptions& opt, bool daemon);

}  // namespace zaptid::cli
