// zaptid get: IDs from a zaptid (or zaptidgen) server.
#pragma once

#include <string>

#include "client/channel.h"
#include "output.h"
#include "subcommand.h"

namespace zaptid::cli {

struct GetOptions {
  uint64_t count = 1;
  IdFormat format = IdFormat::kDec;
  bool decode = false;
  bool info = false;  ///< print the server's Info instead of IDs
  std::string timeout = "1s";
  client::ChannelOptions channel;
};

void setup_get(CLI::App& app, Action& action);
int run_get(const GetOptions& opt);

/// --server, --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name (with ZAPTID_* twins);
/// shared with the subcommands that call servers. `retries`: whether they retry UNAVAILABLE
/// calls (get does, bench counts them as failed), as --server's help says.
void add_client_options(CLI::App& app, client::ChannelOptions& opt, bool retries = true);

/// client::make_channel(), or Fatal: a name that does not resolve is an unreachable server
/// (kExitServer, "<server>: cannot resolve …"), a malformed option a usage error (kExitUsage).
std::shared_ptr<grpc::Channel> open_channel(const client::ChannelOptions& opt,
                                            const client::ChannelTuning& tuning = {});

}  // namespace zaptid::cli
