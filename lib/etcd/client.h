// A small etcd v3 client over gRPC: the unary KV and Lease calls zaptid needs, each with a
// deadline, failing over across the configured endpoints.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "etcd_rpc.grpc.pb.h"

namespace zaptid::etcd {

/// PEM files for talking to etcd over TLS. TLS is on when any of them is set; the certificate
/// and key (client authentication) go together.
struct TlsOptions {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !ca_file.empty() || !cert_file.empty() || !key_file.empty(); }
};

struct ClientOptions {
  std::vector<std::string> endpoints;  ///< host:port, at least one
  TlsOptions tls;
  /// Deadline of every unary call on one endpoint, before trying the next.
  std::chrono::milliseconds call_timeout{2000};
  /// How long one connection attempt (TCP, TLS, HTTP/2 settings) may take. gRPC's own floor is
  /// its minimum reconnect back-off; a floor below a few round trips never connects over a
  /// slow link. The lease grant, the first call, gets at least this long too.
  std::chrono::milliseconds connect_timeout{5000};
};

/// Splits "host:port[,host:port…]"; accepts and drops an http:// or https:// scheme. Refuses
/// an empty list or an entry without a port.
Result<std::vector<std::string>> parse_endpoints(std::string_view text);

/// One channel per endpoint. A call goes to the endpoint that answered last; when it is
/// unreachable, times out or has no leader, the call is retried on the next endpoint, once
/// per endpoint. Thread-safe.
class Client {
 public:
  /// Reads the TLS files and creates the channels (connecting lazily). Fails (kInvalidArgument)
  /// for no endpoints or an unreadable TLS file.
  static Result<std::unique_ptr<Client>> create(ClientOptions options);

  Result<etcdserverpb::RangeResponse> range(const etcdserverpb::RangeRequest& req);
  Result<etcdserverpb::TxnResponse> txn(const etcdserverpb::TxnRequest& req);
  /// A lease of `ttl_seconds` (etcd may grant a longer one; see the response's TTL).
  Result<etcdserverpb::LeaseGrantResponse> grant(int64_t ttl_seconds);
  Status revoke(int64_t lease_id);

  size_t endpoint_count() const { return endpoints_.size(); }
  const std::string& endpoint(size_t i) const { return endpoints_[i]; }
  /// The endpoint that answered last (where calls and keep-alive streams start).
  size_t preferred() const { return preferred_.load(); }
  void prefer(size_t i) { preferred_.store(i % endpoints_.size()); }
  /// The newest failed call's errors ("HOST:PORT: why; …"), or "" if none failed yet.
  std::string last_error() const;
  /// Waits up to `timeout` for endpoint i's channel to connect; true once it has.
  bool wait_connected(size_t i, std::chrono::milliseconds timeout);
  /// The Lease stub of endpoint i, for the keep-alive stream.
  etcdserverpb::Lease::Stub& lease_stub(size_t i) { return *lease_[i]; }

 private:
  explicit Client(ClientOptions options) : opt_(std::move(options)) {}
  /// Runs `call` on each endpoint in turn from the preferred one until one answers or fails
  /// with an error that another endpoint would not fix.
  Status with_failover(std::string_view what, const std::function<grpc::Status(size_t, grpc::ClientContext&)>& call,
                       std::chrono::milliseconds timeout);

  ClientOptions opt_;
  std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv_;
  std::vector<std::unique_ptr<etcdserverpb::Lease::Stub>> lease_;
  std::atomic<size_t> preferred_{0};
  mutable std::mutex error_mu_;
  std::string last_error_;
};

}  // namespace zaptid::etcd
