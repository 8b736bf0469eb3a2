#pragma once

// The operators' HTTP endpoints of `zaptid serve --metrics-listen`: /metrics (Prometheus text),
// /healthz and /readyz (Kubernetes probes). Served by GNU libmicrohttpd on a thread of its own,
// apart from the gRPC queues, with its own bounds on connections, time and memory, so that a
// slow or abusive HTTP client cannot stall or grow the ID service.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"

struct MHD_Daemon;

namespace zaptid::server {

struct MetricsHttpOptions {
  std::vector<std::string> addresses;  ///< host:port or [v6]:port; port 0 picks a free one
  /// The /metrics body; called on the HTTP thread.
  std::function<std::string()> metrics;
  /// Why the service would not issue IDs now, or "" when it would (/readyz).
  std::function<std::string()> not_ready;
  /// Where libmicrohttpd's own error messages go: the message's format (the same for every
  /// line of one kind, whatever the client sent: a key to limit them by) and the line.
  std::function<void(const std::string& format, const std::string& line)> log;
  unsigned max_connections = 16;           ///< at once, over all clients
  unsigned max_connections_per_ip = 4;     ///< at once, from one address
  unsigned timeout_seconds = 5;            ///< a connection idle this long is closed
  size_t memory_per_connection = 32 << 10;  ///< request headers and buffers
};

class MetricsHttp {
 public:
  /// Binds every address and starts serving; the error names the address that failed.
  static Result<std::unique_ptr<MetricsHttp>> start(MetricsHttpOptions options);
  /// Stops serving and closes every connection.
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  /// The addresses as bound (port 0 replaced by the real port), in the order given.
  const std::vector<std::string>& bound() const { return bound_; }

  /// Checks a --metrics-listen address without binding it.
  static Status check_address(const std::string& address);

 private:
  explicit MetricsHttp(MetricsHttpOptions options) : opt_(std::move(options)) {}
  MetricsHttpOptions opt_;
  std::vector<MHD_Daemon*> daemons_;
  std::vector<std::string> bound_;
};

}  // namespace zaptid::server
