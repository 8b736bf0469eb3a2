#include "etcd/client.h"

#include <fmt/format.h>

#include <algorithm>
#include "core/parse.h"
#include "core/pem_file.h"

namespace zaptid::etcd {

namespace {

/// Errors another endpoint may not have: unreachable, too slow, no leader, shutting down.
bool try_next(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::UNKNOWN;
}

}  // namespace

Result<std::vector<std::string>> parse_endpoints(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    for (std::string_view scheme : {"http://", "https://"}) {
      if (item.substr(0, scheme.size()) == scheme) item.remove_prefix(scheme.size());
    }
    while (!item.empty() && item.back() == '/') item.remove_suffix(1);
    if (item.empty()) continue;
    const auto colon = item.rfind(':');
    if (colon == std::string_view::npos || colon + 1 == item.size()) {
      return invalid(fmt::format("--etcd-endpoints: {} is not host:port", quote_input(item)));
    }
    out.emplace_back(item);
  }
  if (out.empty()) return invalid("--etcd-endpoints is required with --machine-id-from etcd (host:port[,host:port…])");
  return out;
}

Result<std::unique_ptr<Client>> Client::create(ClientOptions options) {
  if (options.endpoints.empty()) return invalid("no etcd endpoints given");
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (options.tls.enabled()) {
    if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
      return invalid("--etcd-cert and --etcd-key go together");
    }
    grpc::SslCredentialsOptions ssl;
    if (!options.tls.ca_file.empty()) {
      auto pem = read_pem_file(options.tls.ca_file, "--etcd-ca");
      if (!pem) return pem.error();
      ssl.pem_root_certs = *pem;
    }
    if (!options.tls.cert_file.empty()) {
      auto cert = read_pem_file(options.tls.cert_file, "--etcd-cert");
      if (!cert) return cert.error();
      auto key = read_pem_file(options.tls.key_file, "--etcd-key");
      if (!key) return key.error();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
  }
  std::unique_ptr<Client> c(new Client(std::move(options)));
  c->endpoints_ = c->opt_.endpoints;
  for (const auto& ep : c->endpoints_) {
    grpc::ChannelArguments args;
    // Reconnect quickly after etcd comes back: the lease TTL is seconds, gRPC's default
    // backoff grows to two minutes. gRPC gives each connection attempt max(the back-off, its
    // "minimum reconnect back-off") to complete, so that minimum is the connect timeout, derived
    // from the TTL by the caller: at 100 ms no attempt over a 0.3 s link ever reached SETTINGS.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(c->opt_.connect_timeout.count()));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    auto channel = grpc::CreateCustomChannel(ep, creds, args);
    c->channels_.push_back(channel);
    c->kv_.push_back(etcdserverpb::KV::NewStub(channel));
    c->lease_.push_back(etcdserverpb::Lease::NewStub(channel));
  }
  return c;
}

bool Client::wait_connected(size_t i, std::chrono::milliseconds timeout) {
  return channels_.at(i)->WaitForConnected(std::chrono::system_clock::now() + timeout);
}

std::string Client::last_error() const {
  std::lock_guard lock(error_mu_);
  return last_error_;
}

Status Client::with_failover(std::string_view what,
                             const std::function<grpc::Status(size_t, grpc::ClientContext&)>& call,
                             std::chrono::milliseconds timeout) {
  const size_t n = endpoints_.size();
  const size_t start = preferred();
  std::string errors;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (start + k) % n;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    const auto st = call(i, ctx);
    if (st.ok()) {
      prefer(i);
      return Ok{};
    }
    if (!errors.empty()) errors += "; ";
    errors += fmt::format("{}: {}", endpoints_[i], st.error_message());
    {
      std::lock_guard lock(error_mu_);
      last_error_ = fmt::format("{} on {}", what, errors);
    }
    if (!try_next(st.error_code())) {
      return Error{ErrorKind::kIo, fmt::format("etcd {} failed: {}", what, errors)};
    }
  }
  return unavailable(fmt::format("etcd {} failed on every endpoint ({})", what, errors));
}

Result<etcdserverpb::RangeResponse> Client::range(const etcdserverpb::RangeRequest& req) {
  etcdserverpb::RangeResponse resp;
  auto st = with_failover("range", [&](size_t i, grpc::ClientContext& ctx) { return kv_[i]->Range(&ctx, req, &resp); },
                          opt_.call_timeout);
  if (!st) return st.error();
  return resp;
}

Result<etcdserverpb::TxnResponse> Client::txn(const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  auto st =
      with_failover("transaction", [&](size_t i, grpc::ClientContext& ctx) { return kv_[i]->Txn(&ctx, req, &resp); },
                    opt_.call_timeout);
  if (!st) return st.error();
  return resp;
}

Result<etcdserverpb::LeaseGrantResponse> Client::grant(int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(ttl_seconds);
  etcdserverpb::LeaseGrantResponse resp;
  // The first call of a session, on a channel that has yet to connect. A grant whose answer is
  // lost and that is repeated on the next endpoint leaves a second lease with no keys, which
  // etcd drops after its TTL.
  auto st = with_failover(
      "lease grant", [&](size_t i, grpc::ClientContext& ctx) { return lease_[i]->LeaseGrant(&ctx, req, &resp); },
      std::max(opt_.call_timeout, opt_.connect_timeout));
  if (!st) return st.error();
  if (!resp.error().empty()) return unavailable(fmt::format("etcd refused a lease: {}", resp.error()));
  return resp;
}

Status Client::revoke(int64_t lease_id) {
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(lease_id);
  etcdserverpb::LeaseRevokeResponse resp;
  // A revoke repeated after its answer was lost finds the lease gone: done all the same.
  return with_failover(
      "lease revoke",
      [&](size_t i, grpc::ClientContext& ctx) {
        auto status = lease_[i]->LeaseRevoke(&ctx, req, &resp);
        return status.error_code() == grpc::StatusCode::NOT_FOUND ? grpc::Status::OK : status;
      },
      opt_.call_timeout);
}

}  // namespace zaptid::etcd
