// Process-wide limits zaptid serve sets up before it serves: descriptors, a guard that keeps the
// listeners accepting when descriptors run out, and giving freed memory back to the system.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace zaptid::cli {

/// Raises the soft RLIMIT_NOFILE to the hard limit; logs the change. Returns the soft limit now.
uint64_t raise_descriptor_limit();

/// Keeps one spare descriptor, so that when accept4() fails for want of descriptors (EMFILE,
/// ENFILE) the guard can free it, accept and close the waiting connections at once, and tell
/// gRPC "try again later" (EAGAIN). gRPC 1.51 stops listening for good after any other accept4
/// error (CVE-2023-4785); with the guard a server out of descriptors refuses new connections
/// only while it is out of them. The guard is this executable's accept4(), which gRPC's
/// listeners call in place of libc's. Call once, before the server starts.
void arm_accept_guard();

/// Connections the guard closed since start, and how often descriptors ran out.
struct AcceptGuardCounts {
  uint64_t closed = 0;
  uint64_t exhausted = 0;
};
AcceptGuardCounts accept_guard_counts();

/// Starts a low-priority thread that gives freed heap memory back to the system (malloc_trim)
/// every `period` when more than `slack` bytes of it lie free. Stops at exit.
void start_memory_trimmer(std::chrono::milliseconds period, uint64_t slack);

}  // namespace zaptid::cli
