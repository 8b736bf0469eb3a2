// The clock the generator reads, as an interface so tests can move time by hand.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace zaptid {

/// Wall-clock time as nanoseconds since the Unix epoch.
using Nanos = std::chrono::nanoseconds;

/// A source of wall-clock time. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current wall-clock time. May step backwards (NTP, an operator): callers must cope.
  virtual Nanos now() const = 0;
  /// Blocks the calling thread until now() has probably reached `t` (it may have stepped back
  /// meanwhile; callers re-check). Returns at once if `t` has passed.
  virtual void sleep_until(Nanos t) = 0;
};

/// The system's wall clock (CLOCK_REALTIME), the one Sonyflake and Snowflake IDs are made of.
class SystemClock final : public Clock {
 public:
  Nanos now() const override;
  void sleep_until(Nanos t) override;
};

/// A clock for tests: time moves only when told to, or when a caller sleeps (sleep_until()
/// jumps forward to the target, so waiting code finishes at once and deterministically).
/// Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Nanos start) : now_(start.count()) {}
  Nanos now() const override { return Nanos(now_.load()); }
  void sleep_until(Nanos t) override;
  /// Sets the time, forwards or backwards.
  void set(Nanos t) { now_.store(t.count()); }
  void advance(Nanos d) { now_.fetch_add(d.count()); }
  /// How many sleep_until() calls had to wait (their target was in the future).
  uint64_t sleeps() const { return sleeps_.load(); }

 private:
  std::atomic<int64_t> now_;
  std::atomic<uint64_t> sleeps_{0};
};

}  // namespace zaptid
