#include "cmd_version.h"

#include <iostream>

#include "core/version.h"

namespace zaptid::cli {

void setup_version(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("version", "Print the version");
  sub->footer("Example: zaptid version   # the same as zaptid --version");
  sub->callback([&action] {
    action = [] {
      std::cout << "zaptid " << kVersion << '\n';
      return kExitOk;
    };
  });
}

}  // namespace zaptid::cli
