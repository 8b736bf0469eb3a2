// Process-wide limits zaptid serve sets up before it serves: descriptors, and giving freed memory
// back to the system (the connection guard is cli/net_guard.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace zaptid::cli {

/// Raises the soft RLIMIT_NOFILE to the hard limit; logs the change. Returns the soft limit now.
uint64_t raise_descriptor_limit();

/// Starts a low-priority thread that gives freed heap memory back to the system (malloc_trim)
/// every `period` when more than `slack` bytes of it lie free. Stops at exit.
void start_memory_trimmer(std::chrono::milliseconds period, uint64_t slack);

}  // namespace zaptid::cli
