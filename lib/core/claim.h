// The host-wide claim on a machine id: at most one process per host issues IDs with it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "core/result.h"

namespace zaptid {

/// A claim on one machine id, held by binding the abstract Unix socket `@zaptid/machine-id/<id>`.
///
/// Abstract socket names belong to the network namespace, not to a folder or a user: every
/// process of every user on the host (in that namespace) sees the same name, nobody can delete
/// it, and the kernel frees it the moment its holder ends, however it ends (no stale lock). A
/// process in another network namespace (a container with a network of its own) is another host
/// as far as the claim goes. Not thread-safe; release by destroying. Holds one small thread.
class MachineClaim {
 public:
  /// The socket name (without the leading NUL) for a machine id.
  static std::string name_for(uint64_t machine_id);

  /// Takes the claim, waiting up to `timeout` while another process holds it; after that,
  /// kUnavailable naming the holder (pid, user and command line, from the kernel's record of
  /// who bound the name, SO_PEERCRED), or kIo when sockets fail.
  static Result<std::unique_ptr<MachineClaim>> acquire(uint64_t machine_id, std::chrono::milliseconds timeout);

  ~MachineClaim();
  MachineClaim(const MachineClaim&) = delete;
  MachineClaim& operator=(const MachineClaim&) = delete;

  uint64_t machine_id() const { return machine_id_; }

 private:
  MachineClaim(int fd, uint64_t machine_id);
  int fd_;
  uint64_t machine_id_;
  std::thread answering_;  // accepts and closes the connections of processes asking who holds it
};

/// Who holds the claim on `machine_id` right now: "pid 123 (user alice): zaptid gen -n 5", or a
/// reason it cannot be told. For messages only.
std::string describe_claim_holder(uint64_t machine_id);

}  // namespace zaptid
