#include "cmd_version.h"

#include <fmt/format.h>

#include "core/version.h"
#include "output.h"

namespace zaptid::cli {

void setup_version(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("version", "Print the version");
  sub->footer("Example: zaptid version   # the same as zaptid --version");
  sub->callback([&action] {
    action = [] {
      Output out;  // a write error fails the command (Output throws)
      fmt::format_to(std::back_inserter(out.buffer()), "zaptid {}\n", kVersion);
      out.flush();
      return kExitOk;
    };
  });
}

}  // namespace zaptid::cli
