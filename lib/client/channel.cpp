#include "client/channel.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/parse.h"
#include "core/pem_file.h"

namespace zaptid::client {
namespace {

// Round-robin over every resolved address; UNAVAILABLE is retried (gRPC picks the next
// address) with short back-offs, always within the call's own deadline.
constexpr std::string_view kServiceConfig = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "idgen.IdGen"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.01s",
      "maxBackoff": "0.2s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

struct HostPort {
  std::string host;
  std::string port;
};

Result<HostPort> split_host_port(std::string_view entry) {
  if (!entry.empty() && entry.front() == '[') {
    const auto close = entry.find("]:");
    if (close == std::string_view::npos) return invalid(fmt::format("--server entry {} is not [host]:port", quote_input(entry)));
    return HostPort{std::string(entry.substr(1, close - 1)), std::string(entry.substr(close + 2))};
  }
  const auto colon = entry.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == entry.size()) {
    return invalid(fmt::format("--server entry {} is not host:port", quote_input(entry)));
  }
  return HostPort{std::string(entry.substr(0, colon)), std::string(entry.substr(colon + 1))};
}

// The first IPv4 address of host (else its first IPv6 one), as text, with its family.
Result<std::pair<int, std::string>> resolve(const HostPort& hp) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    return unavailable(fmt::format("cannot resolve {}: {}", hp.host, ::gai_strerror(rc)));
  }
  std::pair<int, std::string> best{AF_UNSPEC, ""};
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    if (best.first == AF_INET) break;
    char host[NI_MAXHOST];
    if (::getnameinfo(a->ai_addr, a->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) continue;
    if (best.first == AF_UNSPEC || a->ai_family == AF_INET) best = {a->ai_family, host};
  }
  ::freeaddrinfo(res);
  if (best.first == AF_UNSPEC) return unavailable(fmt::format("cannot resolve {}: no address", hp.host));
  return best;
}

// "ipv4:a.b.c.d:port" or "ipv6:[x::y]:port" for a numeric address:port, else nullopt.
std::optional<std::string> numeric_target(std::string_view server) {
  if (server.find("://") != std::string_view::npos) return std::nullopt;
  auto hp = split_host_port(server);
  if (!hp || hp->port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  unsigned char addr[16];
  if (::inet_pton(AF_INET, hp->host.c_str(), addr) == 1) return "ipv4:" + std::string(server);
  if (server.front() == '[' && ::inet_pton(AF_INET6, hp->host.c_str(), addr) == 1) return "ipv6:" + std::string(server);
  return std::nullopt;
}

}  // namespace

void use_native_dns_resolver() { ::setenv("GRPC_DNS_RESOLVER", "native", 0); }

// zaptidgen's port, the one --server means when it names none (gRPC would take 443).
constexpr int kDefaultPort = 8888;

// ":PORT" is this host's PORT (the seed's form); a host or [v6] without a port gets 8888.
std::string with_default_port(std::string_view entry) {
  // A gRPC target with a scheme (dns:, unix:, ipv4:, ...) says what it means already.
  const auto colon = entry.find(':');
  if (colon != std::string_view::npos && colon > 0 &&
      entry.substr(0, colon).find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-+.") == std::string_view::npos &&
      entry.substr(colon + 1).find_first_not_of("0123456789") != std::string_view::npos) {
    return std::string(entry);
  }
  if (is_port_only(entry)) return fmt::format("localhost{}", entry);  // the seed's ":8888"
  if (!entry.empty() && entry.front() == '[' && entry.back() == ']') return fmt::format("{}:{}", entry, kDefaultPort);
  if (colon == std::string_view::npos) return fmt::format("{}:{}", entry, kDefaultPort);
  return std::string(entry);
}

Result<std::string> target_for(const std::string& given) {
  if (trim(given).empty()) return invalid("--server is empty");
  // A gRPC scheme (dns:///host:port, ipv4:a,b) says what it means already.
  if (given.find("://") != std::string::npos || given.rfind("ipv4:", 0) == 0 || given.rfind("ipv6:", 0) == 0) {
    return given;
  }
  std::vector<std::string> listed;
  std::string_view rest = given;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (!entry.empty()) listed.push_back(with_default_port(entry));
  }
  if (listed.empty()) return invalid("--server lists no address");
  if (listed.size() == 1) return numeric_target(listed[0]).value_or(listed[0]);
  // Check every entry before resolving any, so a typo is a usage error, not a lookup failure.
  std::vector<HostPort> entries;
  for (const auto& entry : listed) {
    auto hp = split_host_port(entry);
    if (!hp) return hp.error();
    entries.push_back(std::move(*hp));
  }
  int family = AF_UNSPEC;
  std::string addresses;
  for (const auto& hp : entries) {
    auto addr = resolve(hp);
    if (!addr) return addr.error();
    if (family != AF_UNSPEC && family != addr->first) {
      return invalid(fmt::format("--server {} mixes IPv4 and IPv6 addresses; list one family", quote_input(given)));
    }
    family = addr->first;
    if (!addresses.empty()) addresses += ',';
    addresses += family == AF_INET6 ? fmt::format("[{}]:{}", addr->second, hp.port)
                                    : fmt::format("{}:{}", addr->second, hp.port);
  }
  return (family == AF_INET6 ? "ipv6:" : "ipv4:") + addresses;
}

Result<std::shared_ptr<grpc::Channel>> make_channel(const ChannelOptions& opt, const ChannelTuning& tuning) {
  auto target = target_for(opt.server);
  if (!target) return target.error();
  if (opt.tls_cert.empty() != opt.tls_key.empty()) return invalid("--tls-cert and --tls-key go together");

  grpc::ChannelArguments args;
  if (tuning.retries) {
    args.SetServiceConfigJSON(std::string(kServiceConfig));
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
  } else {
    args.SetLoadBalancingPolicyName("round_robin");
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  }
  if (tuning.own_connection >= 0) {
    args.SetInt("zaptid.connection", tuning.own_connection);  // distinct arguments: not shared
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  args.SetMaxReceiveMessageSize(64 << 20);  // a full batch never comes near this
  std::shared_ptr<grpc::ChannelCredentials> creds;
  const bool tls = opt.tls || !opt.tls_ca.empty() || !opt.tls_cert.empty() || !opt.tls_server_name.empty();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!opt.tls_ca.empty()) {
      auto ca = read_pem_file(opt.tls_ca, "--tls-ca");
      if (!ca) return ca.error();
      ssl.pem_root_certs = std::move(*ca);
    }
    if (!opt.tls_cert.empty()) {
      auto cert = read_pem_file(opt.tls_cert, "--tls-cert");
      if (!cert) return cert.error();
      auto key = read_pem_file(opt.tls_key, "--tls-key");
      if (!key) return key.error();
      ssl.pem_cert_chain = std::move(*cert);
      ssl.pem_private_key = std::move(*key);
    }
    if (!opt.tls_server_name.empty()) args.SetSslTargetNameOverride(opt.tls_server_name);
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(*target, creds, args);
}

std::string describe(const grpc::Status& status, std::chrono::milliseconds timeout) {
  static constexpr std::string_view kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
      "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
      "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const auto code = static_cast<size_t>(status.error_code());
  const std::string_view name = code < std::size(kNames) ? kNames[code] : "UNKNOWN";
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return fmt::format("no answer within {} ({})", format_duration_ms(timeout.count()), name);
  }
  std::string message = status.error_message();
  if (message.empty()) message = "the call failed";
  return fmt::format("{} ({})", message, name);
}

std::optional<std::chrono::milliseconds> retry_after(const grpc::ClientContext& ctx) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  const auto it = trailers.find(grpc::string_ref(kRetryAfterKey.data(), kRetryAfterKey.size()));
  if (it == trailers.end()) return std::nullopt;
  uint64_t ms = 0;
  const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), ms);
  if (ec != std::errc() || end != it->second.data() + it->second.size()) return std::nullopt;
  return std::chrono::milliseconds(std::clamp<uint64_t>(ms, 1, 60'000));
}

std::chrono::milliseconds with_jitter(std::chrono::milliseconds base) {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> extra(0, std::max<int64_t>(base.count() / 2, 1));
  return base + std::chrono::milliseconds(extra(rng));
}

}  // namespace zaptid::client
