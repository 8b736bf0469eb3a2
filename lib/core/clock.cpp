#include "core/clock.h"

#include <thread>

namespace zaptid {

Nanos SystemClock::now() const {
  return std::chrono::duration_cast<Nanos>(std::chrono::system_clock::now().time_since_epoch());
}

void SystemClock::sleep_until(Nanos t) {
  // One relative sleep, then back to the caller, which re-reads the clock and applies its bound.
  // std::this_thread::sleep_until(system_clock) loops until the clock reaches t, so a clock set
  // back an hour during a 10 ms wait would block for that hour (sonyflake's issue #39).
  const Nanos left = t - now();
  if (left > Nanos::zero()) std::this_thread::sleep_for(left);
}

void FakeClock::sleep_until(Nanos t) {
  int64_t cur = now_.load();
  if (cur >= t.count()) return;
  sleeps_.fetch_add(1);
  while (cur < t.count() && !now_.compare_exchange_weak(cur, t.count())) {
  }
}

}  // namespace zaptid
