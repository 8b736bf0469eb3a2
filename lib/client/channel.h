// Client channels to zaptid (or zaptidgen) servers: targets, load balancing, retries and TLS.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"

namespace zaptid::client {

/// What --server and the TLS flags say.
struct ChannelOptions {
  std::string server = "localhost:8888";  ///< gRPC target, or a comma list of host:port
  bool tls = false;                       ///< TLS with the system's roots (implied by the others)
  std::string tls_ca;                     ///< PEM file of the CA that signed the server's certificate
  std::string tls_cert;                   ///< PEM client certificate, for mutual TLS
  std::string tls_key;                    ///< PEM key of tls_cert
  std::string tls_server_name;            ///< name to verify instead of the target's host
};

/// The gRPC target for --server. A gRPC target (dns:///host:port, ipv4:…, unix:…, host:port)
/// is used as it is. A comma list of host:port is resolved now into one ipv4: (or ipv6:) target
/// holding every address, which the channel balances round-robin. Errors name the bad entry.
Result<std::string> target_for(const std::string& server);

/// A channel that balances round-robin over every address of the target and retries a call
/// that failed UNAVAILABLE (on the next address) while its deadline allows. Fails for unreadable
/// TLS files or a bad --server.
Result<std::shared_ptr<grpc::Channel>> make_channel(const ChannelOptions& options);

/// The contents of a PEM file; `option` names it in the error ("--tls-ca").
Result<std::string> read_pem(const std::string& path, std::string_view option);

/// A one-line reason for a failed call, e.g. "no answer within 1s (DEADLINE_EXCEEDED)" or
/// "failed to connect to all addresses (UNAVAILABLE)".
std::string describe(const grpc::Status& status, std::chrono::milliseconds timeout);

}  // namespace zaptid::client
