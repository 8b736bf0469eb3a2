#include "app.h"

#include <csignal>
#include <iostream>

#include "cmd_compose.h"
#include "cmd_decode.h"
#include "cmd_gen.h"
#include "cmd_version.h"
#include "common.h"
#include "core/version.h"
#include "logging.h"

namespace zaptid::cli {

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
  setup_gen(app, action);
  setup_decode(app, action);
  setup_compose(app, action);
  setup_version(app, action);
  net(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and --version arrive as "errors" that exit 0; CLI11 prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    std::cerr << "zaptid: " << e.what() << " (see 'zaptid --help')\n";
    return kExitUsage;
  }

  try {
    const auto chosen = app.get_subcommands();
    const bool daemon = !chosen.empty() && chosen.front()->get_name() == "serve";
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
