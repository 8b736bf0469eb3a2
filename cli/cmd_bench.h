// zaptid bench: a load generator against any zaptid or zaptidgen server.
#pragma once

#include "client/channel.h"

#include <string>

#include "subcommand.h"

namespace zaptid::cli {

struct BenchOptions {
  client::ChannelOptions channel;  ///< --server and the TLS flags, as for get
  int connections = 1;
  int concurrency = 1;
  std::string duration = "5s";
  std::string method = "gen";
  uint32_t batch_size = 1000;
  std::string timeout = "1s";
  std::string format = "text";
};

void setup_bench(CLI::App& app, Action& action);
int run_bench(const BenchOptions& opt);

}  // namespace zaptid::cli
