#include "app.h"

#include <csignal>
#include <iostream>
#include <sstream>

#include "cmd_compose.h"
#include "cmd_decode.h"
#include "cmd_gen.h"
#include "cmd_version.h"
#include "output.h"
#include "core/parse.h"
#include "core/version.h"
#include "logging.h"
#include "std_fds.h"

namespace zaptid::cli {
namespace {

// Help and --version: CLI11 renders them, Output writes them, so a write error (a full disk,
// /dev/full, a closed standard output) fails the command like any other output would.
int print_help_or_version(const CLI::App& app, const CLI::Error& e) {
  std::ostringstream text, ignored;
  const int status = app.exit(e, text, ignored);
  try {
    if (stdout_was_closed()) throw Fatal(kExitFailure, "cannot write to standard output: it is closed");
    Output out;
    out.buffer() = text.str();
    out.flush();
  } catch (const Fatal& f) {
    std::cerr << "zaptid: " << f.what() << '\n';
    return f.status();
  }
  return status;
}

// The first word that is not an option: the command the user meant, when it is not one.
std::string unknown_command(const CLI::App& app) {
  for (const auto& word : app.remaining()) {
    if (!word.empty() && word[0] != '-') return word;
  }
  return {};
}

// The command argv[1] names, or "" when it names none (an option comes first, a typo, nothing).
// Only that command's options are built then: building every command's costs start-up time
// (issue 10), and a second command on the line is an error either way ("not expected").
std::string_view command_named(int argc, char** argv) {
  if (argc < 2) return {};
  for (std::string_view name : {"gen", "decode", "compose", "version", "serve", "get", "bench"}) {
    if (name == argv[1]) return name;
  }
  return {};
}

}  // namespace

int main(int argc, char** argv, NetCommands net) {
  // Writes to a closed pipe must fail with EPIPE (handled by Output), not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  std::ios::sync_with_stdio(false);

  CLI::App app("zaptid: time-ordered 64-bit unique IDs (Sonyflake, Snowflake), locally or over gRPC", "zaptid");
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", std::string("zaptid ") + std::string(kVersion));
  app.footer("Each subcommand's --help shows its options' defaults (=...) and environment variables (Env:...).\n"
             "Exit status: 0 ok, 1 failure, 2 usage error, 3 bad input, 4 server error. More: man zaptid\n"
             "Example: zaptid gen --count 3 | zaptid decode");
  LogOptions log;
  add_log_options(app, log);

  Action action;
  const std::string_view only = command_named(argc, argv);
  if (only.empty() || only == "gen") setup_gen(app, action);
  if (only.empty() || only == "decode") setup_decode(app, action);
  if (only.empty() || only == "compose") setup_compose(app, action);
  if (only.empty() || only == "version") setup_version(app, action);
  net(app, action, only);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and --version arrive as "errors" that exit 0; CLI11 prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return print_help_or_version(app, e);
    if (app.get_subcommands().empty()) {
      if (const auto word = unknown_command(app); !word.empty()) {
        std::cerr << "zaptid: unknown command " << quote_input(word) << " (commands: gen, decode, compose, "
                  << "version, serve, get, bench; see 'zaptid --help')\n";
        return kExitUsage;
      }
    }
    // CLI11's messages repeat what was typed: keep them on one line, control bytes escaped.
    std::cerr << "zaptid: " << escape_control(e.what()) << " (see 'zaptid --help')\n";
    return kExitUsage;
  }

  try {
    const auto chosen = app.get_subcommands();
    const bool daemon = !chosen.empty() && chosen.front()->get_name() == "serve";
    // Every command but serve writes its result to standard output: with it closed the result
    // would be lost, so refuse before anything is issued, claimed or recorded.
    if (!daemon && stdout_was_closed()) throw Fatal(kExitFailure, "cannot write to standard output: it is closed");
    setup_logging(log, daemon);
    return action();
  } catch (const Fatal& e) {
    std::cout.flush();
    std::cerr << "zaptid: " << e.what() << '\n';
    return e.status();
  } catch (const std::exception& e) {
    std::cerr << "zaptid: internal error: " << e.what() << '\n';
    return kExitFailure;
  }
}

}  // namespace zaptid::cli
