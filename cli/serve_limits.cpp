#include "serve_limits.h"

#include "reset_guard.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <spdlog/spdlog.h>

namespace zaptid::cli {
namespace {

std::mutex g_guard_mu;
int g_spare = -1;  // under g_guard_mu
std::atomic<uint64_t> g_closed{0};
std::atomic<uint64_t> g_exhausted{0};
std::atomic<int64_t> g_last_log_s{-1000};

int raw_accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  return static_cast<int>(::syscall(SYS_accept4, fd, addr, len, flags));
}

bool out_of_descriptors(int err) { return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM; }

// Accepts and closes what waits on `listener`, using the spare descriptor's slot.
void shed(int listener, int err) {
  uint64_t closed = 0;
  {
    std::lock_guard lock(g_guard_mu);
    if (g_spare >= 0) {
      ::close(g_spare);
      g_spare = -1;
    }
    // Bounded, so a connection flood cannot keep this thread here.
    for (int i = 0; i < 4096; ++i) {
      const int c = raw_accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      ::close(c);
      ++closed;
    }
    g_spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  g_closed.fetch_add(closed, std::memory_order_relaxed);
  const uint64_t times = g_exhausted.fetch_add(1, std::memory_order_relaxed) + 1;
  // One line per 10 s at most: a client that keeps connecting would otherwise flood the log.
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  int64_t last = g_last_log_s.load(std::memory_order_relaxed);
  if (now_s - last >= 10 && g_last_log_s.compare_exchange_strong(last, now_s)) {
    spdlog::warn(
        "out of file descriptors ({}): closing new connections at once until some are free ({} closed in {} "
        "episodes so far); raise LimitNOFILE or lower --idle-timeout",
        std::strerror(err), g_closed.load(std::memory_order_relaxed), times);
  }
}

}  // namespace

uint64_t raise_descriptor_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur >= rl.rlim_max) return rl.rlim_cur;
  const rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    spdlog::warn("cannot raise the open-file limit from {} to {}: {}", before, rl.rlim_max, std::strerror(errno));
    return before;
  }
  spdlog::info("raised the open-file limit from {} to {} (the hard limit)", before, rl.rlim_cur);
  return rl.rlim_cur;
}

void arm_accept_guard() {
  std::lock_guard lock(g_guard_mu);
  if (g_spare < 0) g_spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

AcceptGuardCounts accept_guard_counts() {
  return {g_closed.load(std::memory_order_relaxed), g_exhausted.load(std::memory_order_relaxed)};
}

void start_memory_trimmer(std::chrono::milliseconds period, uint64_t slack) {
  std::thread([period, slack] {
    pthread_setname_np(pthread_self(), "zaptid-trim");
    // SCHED_IDLE: runs only when no serving thread wants the CPU.
    sched_param none{};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    for (;;) {
      std::this_thread::sleep_for(period);
      const struct mallinfo2 mi = ::mallinfo2();
      if (mi.fordblks > slack) ::malloc_trim(0);
    }
  }).detach();
}

}  // namespace zaptid::cli

// gRPC's listeners call accept4() through the dynamic linker, which finds this definition in the
// executable before libc's (the executable exports it: see cli/CMakeLists.txt).
extern "C" int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  const int c = zaptid::cli::raw_accept4(fd, addr, len, flags);
  if (c >= 0) zaptid::cli::reset_guard_accepted(c);
  if (c >= 0 || !zaptid::cli::out_of_descriptors(errno)) return c;
  const int err = errno;
  zaptid::cli::shed(fd, err);
  errno = EAGAIN;  // gRPC re-arms the listener on EAGAIN
  return -1;
}
