// The connection guard of zaptid serve: what stands between a client and gRPC 1.51's transport
// (docs/ARCHITECTURE.md, "Limits"). Debian 12's gRPC has none of upstream's fixes for the HTTP/2
// attacks published since 2023, and no settings for them, so zaptid-net replaces the few libc and
// OpenSSL functions through which gRPC meets its clients. gRPC is linked into zaptid-net, so the
// linker binds its calls to these definitions (exported too, for a shared gRPC: cli/CMakeLists.txt);
// each passes everything it does not act on to the real function unchanged:
//
//   listen()    notes the listening sockets gRPC opens while a GrpcListeners scope is alive on the
//               thread, so that accept4() acts on those and on nothing else.
//   accept4()   on gRPC's listening sockets: when descriptors run out (EMFILE, ENFILE), frees a
//               spare, accepts and closes what waits, and says EAGAIN, because gRPC 1.51 stops
//               listening for good after any other error (CVE-2023-4785); starts policing each
//               connection accepted. Every other caller (the machine-id claim's answering thread,
//               libmicrohttpd) gets libc's accept4().
//   recvmsg()   feeds what a policed plain-TCP or unix-socket connection sent to its
//               server::Http2Policer before gRPC parses it, and closes the connection when the
//               policer says so (ECONNRESET to gRPC).
//   SSL_read()  the same for TLS connections, after decryption.
//   close()     forgets a descriptor, whatever its number becomes next.
#pragma once

#include <cstdint>
#include <string_view>

#include "server/http2_policer.h"

namespace zaptid::cli {

struct GuardOptions {
  /// Per-connection limits; each 0 turns one off.
  server::PolicerLimits limits;
  /// Stream resets per second over all connections together (0: no limit).
  uint32_t server_resets_per_second = 0;
};

/// Arms the guard: keeps one spare descriptor, and polices every connection accepted on gRPC's
/// listeners from now on. Call once, before the server starts.
void arm_net_guard(const GuardOptions& options);

/// While alive, the listening sockets this thread opens are gRPC's (wrap ServerBuilder's
/// BuildAndStart(), which binds them on the calling thread).
class GrpcListeners {
 public:
  GrpcListeners();
  ~GrpcListeners();
  GrpcListeners(const GrpcListeners&) = delete;
  GrpcListeners& operator=(const GrpcListeners&) = delete;
};

/// Connections the guard closed since start for `reason`: a server::Http2Policer::reason() or
/// "out_of_descriptors".
uint64_t guard_closed(std::string_view reason);

/// The reasons guard_closed() knows, for /metrics.
inline constexpr std::string_view kGuardReasons[] = {"stream_resets",   "server_resets",  "streams_before_ack",
                                                     "header_block",    "control_frames", "out_of_descriptors"};

/// How often descriptors ran out.
uint64_t guard_descriptor_exhaustions();

}  // namespace zaptid::cli
