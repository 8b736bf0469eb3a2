// Client channels to zaptid (or zaptidgen) servers: targets, load balancing, retries and TLS.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

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

/// Makes gRPC resolve names with getaddrinfo instead of c-ares, unless GRPC_DNS_RESOLVER is
/// set. Call before the first gRPC object is created. Debian 12's c-ares leaks a few bytes per
/// lookup (LeakSanitizer fails the command at exit), and a command-line client gains nothing
/// from c-ares's asynchronous lookups.
void use_native_dns_resolver();

/// The gRPC target for --server. ":PORT" means localhost:PORT, and a host or [v6] without a
/// port gets zaptidgen's 8888 (not gRPC's 443). A gRPC target (dns:///host:port, ipv4:…,
/// unix:…, host:port) is used as it is, except that a numeric IPv4 or IPv6 address:port becomes an ipv4: (ipv6:)
/// target: the channel then starts no resolver (no lookup thread) for an address that needs none. A comma list of host:port is resolved now into one ipv4: (or ipv6:) target
/// holding every address, which the channel balances round-robin. Errors name the bad entry.
Result<std::string> target_for(const std::string& server);

/// How make_channel() builds a channel beyond what the user's flags say.
struct ChannelTuning {
  /// Retry a call that failed UNAVAILABLE. Off for a load generator, which counts failures.
  bool retries = true;
  /// >= 0: a connection of this channel's own, not shared with other channels of the process
  /// (gRPC shares one between channels with equal arguments); the number tells them apart.
  int own_connection = -1;
};

/// A channel that balances round-robin over every address of the target and (unless tuned
/// otherwise) retries a call that failed UNAVAILABLE (on the next address) while its deadline
/// allows. Fails for unreadable TLS files or a bad --server.
Result<std::shared_ptr<grpc::Channel>> make_channel(const ChannelOptions& options, const ChannelTuning& tuning = {});

/// A one-line reason for a failed call, e.g. "no answer within 1s (DEADLINE_EXCEEDED)" or
/// "failed to connect to all addresses (UNAVAILABLE)".
std::string describe(const grpc::Status& status, std::chrono::milliseconds timeout);

/// The trailing metadata key of a call the server refused over capacity: how many milliseconds
/// to wait before trying again (server::kRetryAfterKey on the server's side).
inline constexpr std::string_view kRetryAfterKey = "retry-after-ms";

/// The server's retry-after-ms hint on a finished call, if it sent one (a call refused over
/// capacity), clamped to 1 ms .. 60 s.
std::optional<std::chrono::milliseconds> retry_after(const grpc::ClientContext& ctx);

/// `base` plus a random 0–50% on top, so that clients refused together do not all come back
/// in the same instant. Thread-safe.
std::chrono::milliseconds with_jitter(std::chrono::milliseconds base);

/// Runs `attempt(grpc::ClientContext&)` (which makes one call and returns its status) with a
/// fresh context whose deadline is `deadline`, and again while it fails UNAVAILABLE and the
/// deadline leaves room: after the server's retry-after-ms hint when it refused the call over
/// capacity, otherwise after a short back-off (20 ms doubling to 200 ms), both with jitter. On
/// top of the channel's own retries this outlasts a balanced target whose healthy servers are
/// still connecting, and a server at its ceiling. Returns the last status, except that a
/// deadline hit after an UNAVAILABLE answer returns that answer: its message says why
/// ("Connection refused", the server's reason), the deadline does not.
template <typename Attempt>
grpc::Status call_with_retries(std::chrono::system_clock::time_point deadline, Attempt&& attempt) {
  auto backoff = std::chrono::milliseconds(20);
  std::optional<grpc::Status> unavailable;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::Status st = attempt(ctx);
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && unavailable) return *unavailable;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return st;
    const auto hint = retry_after(ctx);
    const auto pause = with_jitter(hint ? *hint : backoff);
    if (std::chrono::system_clock::now() + pause >= deadline) return st;
    unavailable = st;
    std::this_thread::sleep_for(pause);
    if (!hint) backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

}  // namespace zaptid::client
