// The rapid-reset guard of zaptid serve (HTTP/2 rapid reset, CVE-2023-44487; docs/ARCHITECTURE.md,
// "Limits").
#pragma once

#include <cstdint>

namespace zaptid::cli {

/// Watches what clients send on every connection gRPC's listeners accept, plain or TLS, and
/// closes a connection that sends more than `max_resets_per_second` RST_STREAM frames within one
/// second, before gRPC has read those frames (gRPC 1.51 has no such limit of its own). The guard
/// is this executable's recvmsg(), close() and SSL_read(), which gRPC calls in place of libc's and
/// OpenSSL's (with the accept4() of serve_limits.cpp). 0 turns it off. Call once, before the
/// server starts.
void arm_reset_guard(uint32_t max_resets_per_second);

/// Connections the guard closed since start.
uint64_t reset_guard_closed();

/// serve_limits.cpp's accept4() calls this for every connection accepted.
void reset_guard_accepted(int fd);

}  // namespace zaptid::cli
