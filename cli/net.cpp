// main() of zaptid-net, the network part of zaptid: serve, get and bench. The front (front.cpp)
// runs it with the user's argv and ZAPTID_FRONT=<its version> (net_part.h), which proves the two
// parts come from the same build of zaptid.
#include <absl/synchronization/mutex.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <iostream>
#include <string_view>

#include "app.h"
#include "cmd_bench.h"
#include "cmd_get.h"
#include "cmd_serve.h"
#include "core/version.h"
#include "net_part.h"

namespace {

void net_commands(CLI::App& app, zaptid::cli::Action& action, std::string_view only) {
  if (only.empty() || only == "serve") zaptid::cli::setup_serve(app, action);
  if (only.empty() || only == "get") zaptid::cli::setup_get(app, action);
  if (only.empty() || only == "bench") zaptid::cli::setup_bench(app, action);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace zaptid::cli;
  const char* front = std::getenv(kFrontVariable);
  if (front == nullptr) {
    std::cerr << "zaptid: zaptid-net is the network part of zaptid, not a command of its own: run zaptid\n";
    return kExitUsage;
  }
  const std::string front_version = front;
  ::unsetenv(kFrontVariable);  // not for anything serve might start
  if (front_version != zaptid::kVersion) {
    char self[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    const std::string_view path = n > 0 ? std::string_view(self, static_cast<size_t>(n)) : "zaptid-net";
    std::cerr << "zaptid: zaptid " << front_version << " and its network part " << path << " ("
              << zaptid::kVersion << ") come from different builds: reinstall zaptid\n";
    return kExitFailure;
  }
  // Debian's Abseil is built to check every mutex acquisition for lock-order cycles, gRPC's
  // included: a debug aid that cost serve a few percent of each request and a one-shot get
  // about 6% of its time (perf; docs/BENCHMARKS.md). Before gRPC takes its first lock.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return zaptid::cli::main(argc, argv, net_commands);
}
