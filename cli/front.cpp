// main() of zaptid, the front: the command line and the local commands (version, gen, decode,
// compose), linked without gRPC, protobuf or OpenSSL. For serve, get and bench it runs the
// network part, zaptid-net, in its own place (execv): same pid, same argv, same stdin/stdout/
// stderr, same exit status, and zaptid-net parses the user's arguments again with the real options.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "app.h"
#include "core/version.h"
#include "net_part.h"
#include "std_fds.h"

namespace {

char** g_argv = nullptr;

// zaptid-net's path: ZAPTID_NET_RELPATH (bindir to libexecdir/zaptid) from this binary's folder.
std::string net_path() {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    throw zaptid::cli::Fatal(zaptid::cli::kExitFailure,
                             std::string("cannot find this program's own path (/proc/self/exe): ") + std::strerror(errno));
  }
  const std::filesystem::path exe(std::string(self, static_cast<size_t>(n)));
  return (exe.parent_path() / ZAPTID_NET_RELPATH).lexically_normal().string();
}

[[noreturn]] int run_net(const std::string& command) {
  const std::string net = net_path();
  ::setenv(zaptid::cli::kFrontVariable, std::string(zaptid::kVersion).c_str(), 1);
  // zaptid-net starts with the standard descriptors closed that were closed here, so its own
  // std_fds.cpp reopens them and knows (serve may run with standard output closed).
  zaptid::cli::close_reopened_descriptors_on_exec();
  ::execv(net.c_str(), g_argv);
  throw zaptid::cli::Fatal(zaptid::cli::kExitFailure,
                           "zaptid " + command + " needs zaptid's network part " + net + ": " + std::strerror(errno) +
                               " (reinstall zaptid)");
}

// The commands zaptid-net runs, with their descriptions (tests/cli/test_split.py checks them
// against zaptid-net's).
constexpr std::pair<const char*, const char*> kNetCommands[] = {
    {"serve", "Serve IDs over gRPC (zaptidgen-compatible IdGen service)"},
    {"get", "Get IDs from a zaptid (or zaptidgen) server"},
    {"bench", "Load-test a zaptid or zaptidgen server and check every ID is unique"},
};

// Stand-ins for serve, get and bench: the same names and descriptions, no options of their own.
// Everything after the name, --help included, is left for zaptid-net to parse.
void net_commands(CLI::App& app, zaptid::cli::Action& action, std::string_view only) {
  for (const auto& [name, description] : kNetCommands) {
    if (!only.empty() && only != name) continue;
    auto* sub = app.add_subcommand(name, description);
    sub->set_help_flag();
    sub->fallthrough(false);
    sub->allow_extras();
    sub->prefix_command();
    sub->callback([&action, command = std::string(name)] { action = [command] { return run_net(command); }; });
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_argv = argv;
  // `zaptid get ...` and the like: zaptid-net parses the whole command line again, so building
  // this parser first would only delay it. Anything else (an option before the command, a
  // misspelt command, --help) goes through the parser, which runs zaptid-net in the same way.
  if (argc > 1) {
    for (const auto& [command, description] : kNetCommands) {
      if (std::strcmp(argv[1], command) != 0) continue;
      try {
        run_net(command);
      } catch (const zaptid::cli::Fatal& e) {
        std::fprintf(stderr, "zaptid: %s\n", e.what());
        return e.status();
      }
    }
  }
  return zaptid::cli::main(argc, argv, net_commands);
}
