#include "serve_limits.h"

#include <malloc.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <pthread.h>
#include <spdlog/spdlog.h>

namespace zaptid::cli {

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
