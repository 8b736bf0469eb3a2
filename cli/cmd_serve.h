// zaptid serve: the IdGen gRPC server (zaptidgen-compatible), one or more lanes.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layout_options.h"
#include "machine_identity.h"
#include "serve_etcd.h"

namespace zaptid::server {
class IdService;
}

namespace zaptid::cli {

struct ServeOptions {
  std::vector<std::string> listen{"0.0.0.0:8888"};
  uint32_t lanes = 1;
  uint32_t max_batch = 0;  ///< 0: server::default_max_batch(layout)
  uint32_t threads = 1;    ///< completion queues, one thread each
  uint32_t max_streams = 32;  ///< HTTP/2 concurrent streams per connection
  std::string shutdown_timeout = "5s";
  std::string handshake_timeout = "10s";  ///< connections that send no HTTP/2 preface (or TLS) are closed then
  std::string idle_timeout = "5m";        ///< connections with no call for this long are closed; 0: never
  std::string max_memory = "64MiB";       ///< gRPC's memory budget (grpc::ResourceQuota)
  uint32_t max_stream_resets = 1000;      ///< RST_STREAM frames per second per connection; 0: no limit
  uint32_t max_control_frames = 10000;    ///< frames carrying no request per second per connection; 0: no limit
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::vector<std::string> metrics_listen;  ///< HTTP /metrics, /healthz, /readyz; none: off
  LayoutOptions layout;
  IdentityOptions identity;
  EtcdOptions etcd;
};

void setup_serve(CLI::App& app, Action& action);
int run_serve(const ServeOptions& opt);

/// The generators a server issues with, and how to let go of them.
struct Lanes {
  std::vector<std::shared_ptr<Generator>> generators;  ///< one per lane, lane order
  std::string source;  ///< where the machine ids came from, for the start-up line
  /// Records exactly what each lane issued and releases its claim; throws Fatal on failure.
  std::function<void()> release;
  /// Optional: called once with the service, before it serves. A leased source keeps it to call
  /// set_unavailable() / set_available() / replace_lane() as its leases come and go.
  std::function<void(server::IdService&)> on_service;
  /// Appends what the source's stores did (high-water writes; the etcd lease) to /metrics.
  std::function<void(std::string& out)> write_metrics;
};

/// The one place that decides which machine ids a server holds: today static ids (one, or a
/// range A-B with --lanes), each under this host's lock; a leased source slots in here.
/// Throws Fatal (kExitUsage for bad options, kExitFailure when a lock is held).
Lanes open_lanes(const ServeOptions& opt, const Layout& layout, Clock& clock);

}  // namespace zaptid::cli
