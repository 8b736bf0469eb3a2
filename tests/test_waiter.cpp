// server::Waiter with a fake clock: calls come back in ready order, give up, or stop; never twice.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "server/waiter.h"

namespace zaptid::server {
namespace {

using namespace std::chrono_literals;

// Collects the finisher's calls; wait_for() blocks on a real event (the finisher ran), never on time.
struct Finished {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<uint64_t, Outcome>> calls;  // (block.first, outcome)

  void operator()(Pending& p, Outcome o) {
    std::lock_guard lock(mu);
    calls.emplace_back(p.block.first, o);
    cv.notify_all();
  }
  bool wait_for(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] { return calls.size() >= n; });
  }
  std::vector<std::pair<uint64_t, Outcome>> snapshot() {
    std::lock_guard lock(mu);
    return calls;
  }
};

Pending pending(uint64_t first, Nanos ready_at, std::chrono::steady_clock::duration give_up = 1h) {
  Pending p;
  p.block = {first, 1};
  p.ready_at = ready_at;
  p.give_up = std::chrono::steady_clock::now() + give_up;
  return p;
}

TEST_CASE("server::Waiter") {
  const Nanos t0 = 1'700'000'000'000'000'000ns;
  FakeClock clock(t0);
  Finished done;
  Waiter waiter(clock, [&](Pending& p, Outcome o) { done(p, o); });

  SUBCASE("hands calls back in ready order once the clock reaches them") {
    waiter.add(pending(3, t0 + 30ms));
    waiter.add(pending(1, t0 + 10ms));
    waiter.add(pending(2, t0 + 20ms));
    CHECK(waiter.size() == 3);
    clock.set(t0 + 20ms);
    waiter.poke();
    REQUIRE(done.wait_for(2));
    clock.set(t0 + 30ms);
    waiter.poke();
    REQUIRE(done.wait_for(3));
    const auto calls = done.snapshot();
    REQUIRE(calls.size() == 3);
    CHECK(calls[0] == std::pair{uint64_t{1}, Outcome::kReady});
    CHECK(calls[1] == std::pair{uint64_t{2}, Outcome::kReady});
    CHECK(calls[2] == std::pair{uint64_t{3}, Outcome::kReady});
    CHECK(waiter.size() == 0);
  }

  SUBCASE("a call already ready is handed back at once") {
    waiter.add(pending(7, t0));
    REQUIRE(done.wait_for(1));
    CHECK(done.snapshot()[0] == std::pair{uint64_t{7}, Outcome::kReady});
  }

  SUBCASE("gives up when the clock stepped back past the call's patience") {
    waiter.add(pending(5, t0 + 10ms, -1ms));  // its give-up time has passed; the clock never got there
    REQUIRE(done.wait_for(1));
    CHECK(done.snapshot()[0] == std::pair{uint64_t{5}, Outcome::kGaveUp});
  }

  SUBCASE("stop hands every queued call back once, and refuses later ones") {
    waiter.add(pending(1, t0 + 1h));
    waiter.add(pending(2, t0 + 2h));
    waiter.stop();
    waiter.add(pending(3, t0 + 1ms));
    const auto calls = done.snapshot();
    REQUIRE(calls.size() == 3);
    CHECK(calls[0] == std::pair{uint64_t{1}, Outcome::kStopping});
    CHECK(calls[1] == std::pair{uint64_t{2}, Outcome::kStopping});
    CHECK(calls[2] == std::pair{uint64_t{3}, Outcome::kStopping});
    waiter.stop();  // idempotent
    CHECK(done.snapshot().size() == 3);
  }
}

}  // namespace
}  // namespace zaptid::server
