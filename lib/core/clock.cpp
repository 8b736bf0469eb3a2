#include "core/clock.h"

#include <thread>

namespace zaptid {

Nanos SystemClock::now() const {
  return std::chrono::duration_cast<Nanos>(std::chrono::system_clock::now().time_since_epoch());
}

void SystemClock::sleep_until(Nanos t) {
  std::this_thread::sleep_until(std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(t)));
}

void FakeClock::sleep_until(Nanos t) {
  int64_t cur = now_.load();
  if (cur >= t.count()) return;
  sleeps_.fetch_add(1);
  while (cur < t.count() && !now_.compare_exchange_weak(cur, t.count())) {
  }
}

}  // namespace zaptid
