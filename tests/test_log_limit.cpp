#include "server/log_limit.h"

#include <doctest/doctest.h>

using zaptid::server::LogLimiter;
using namespace std::chrono_literals;

TEST_CASE("server::LogLimiter") {
  LogLimiter limiter(3, 10s);
  const auto t0 = LogLimiter::Clock::time_point{} + 1000s;
  SUBCASE("a burst per key and window, then a count of what was dropped") {
    for (int i = 0; i < 3; ++i) {
      const auto d = limiter.admit("ssl.cc:1", t0 + std::chrono::seconds(i));
      CHECK(d.log);
      CHECK(d.suppressed == 0);
    }
    for (int i = 0; i < 100; ++i) {
      const auto d = limiter.admit("ssl.cc:1", t0 + 9s);
      CHECK_FALSE(d.log);
      CHECK(d.suppressed == 0);
    }
    // Another key has its own budget.
    CHECK(limiter.admit("tcp.cc:7", t0 + 9s).log);
    const auto next = limiter.admit("ssl.cc:1", t0 + 10s);
    CHECK(next.log);
    CHECK(next.suppressed == 100);
    const auto after = limiter.admit("ssl.cc:1", t0 + 11s);
    CHECK(after.log);
    CHECK(after.suppressed == 0);
  }
  SUBCASE("a quiet key logs every line") {
    for (int i = 0; i < 10; ++i) CHECK(limiter.admit("k", t0 + std::chrono::seconds(10 * i)).log);
  }
}
