#include "std_fds.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace zaptid::cli {
namespace {

// Bit n set: descriptor n was closed at start.
unsigned g_closed = 0;

// A descriptor left closed by the parent is the lowest free number, so the first file zaptid
// opened (a lock, a record, a socket) would become its standard output and receive the IDs, or
// its standard error and receive the messages. Reopening each closed one on /dev/null before
// anything else runs rules that out; what was closed is remembered so that commands can refuse
// to write into nothing. Runs from .preinit_array: before the C++ runtime, the shared libraries'
// constructors (gRPC, protobuf) and main(), so no one can open a file first. Only async-signal-
// safe calls, no allocation.
void reopen_closed_standard_descriptors(int, char**, char**) {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // open() returns the lowest free descriptor: this one, since the lower ones are open.
    const int got = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (got != fd) {
      // No /dev/null (a bare chroot): refuse to run rather than let a file become stdio.
      static constexpr char kMessage[] = "zaptid: cannot reopen a closed standard descriptor on /dev/null\n";
      if (fd != 2) (void)!::write(2, kMessage, sizeof kMessage - 1);
      ::_exit(1);
    }
    g_closed |= 1u << fd;
  }
}

}  // namespace

// The ELF loader calls these before any constructor (man 5 elf: DT_PREINIT_ARRAY; only honoured
// in the executable, which links this file because main() asks what was closed).
__attribute__((section(".preinit_array"), used)) void (*const zaptid_reopen_stdio)(int, char**, char**) =
    &reopen_closed_standard_descriptors;

bool stdin_was_closed() { return (g_closed & 1u) != 0; }
bool stdout_was_closed() { return (g_closed & 2u) != 0; }
bool stderr_was_closed() { return (g_closed & 4u) != 0; }

void close_reopened_descriptors_on_exec() {
  for (int fd = 0; fd <= 2; ++fd) {
    if ((g_closed & (1u << fd)) != 0) (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
}

}  // namespace zaptid::cli
