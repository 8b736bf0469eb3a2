// server::Admission: deadline-aware admission and the fair share, driven with a generator on a
// fake clock (no gRPC, nothing sleeps).
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <string>

#include "core/clock.h"
#include "core/generator.h"
#include "core/layout.h"
#include "server/admission.h"

namespace zaptid::server {
namespace {

using namespace std::chrono_literals;

constexpr double kSonyflakePerSecond = 25'600;  // 256 IDs per 10 ms tick

AdmissionOptions sonyflake() {
  AdmissionOptions o;
  o.ids_per_second = kSonyflakePerSecond;
  return o;
}

TEST_CASE("server::Admission margin") {
  CHECK(Admission::margin(100ms) == 20ms);
  CHECK(Admission::margin(1s) == 100ms);
  CHECK(Admission::margin(2s) == 200ms);
  CHECK(Admission::margin(30s) == 250ms);
}

TEST_CASE("server::Admission refuses calls whose IDs would be ready too close to the deadline") {
  Admission a(sonyflake());
  SUBCASE("ready before deadline minus margin: admitted") {
    CHECK(a.admit("p", 6400, 1799ms, 2s).admitted);
    CHECK(a.held("p") == 6400);
  }
  SUBCASE("ready inside the margin: refused with the time until it would fit") {
    const Verdict v = a.admit("p", 6400, 1850ms, 2s);
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after == 50ms);
    CHECK(v.reason == "over capacity: IDs would be ready in 1850 ms, too close to the call's deadline (2000 ms)");
    CHECK(a.held("p") == 0);
    CHECK(a.peers() == 0);
  }
  SUBCASE("a deadline already past: refused, hint at least 1 ms") {
    const Verdict v = a.admit("p", 1, 0ms, -5ms);
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after >= 1ms);
    CHECK_FALSE(a.admit("p", 1, 0ms, 0ms).admitted);
  }
  SUBCASE("IDs ready now need no margin: a 10 ms or 1 ms deadline is served") {
    CHECK(a.admit("p", 1, 0ms, 10ms).admitted);
    CHECK(a.admit("q", 1, 0ms, 1ms).admitted);
  }
  SUBCASE("a short wait needs a margin of at most itself") {
    CHECK(a.admit("p", 1, 3ms, 10ms).admitted);   // ready in 3 ms, 3 ms kept free, 4 ms to spare
    CHECK(a.admit("q", 1, 5ms, 10ms).admitted);   // 5 + 5 = 10: just fits
    const Verdict v = a.admit("r", 1, 6ms, 10ms);  // 6 + 6 > 10
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after == 2ms);
  }
}

TEST_CASE("server::Admission shares the window between connections") {
  Admission a(sonyflake());
  REQUIRE(a.window_ids() == 12'800);  // 500 ms of the ceiling
  SUBCASE("alone, a connection may hold the whole window, and no more") {
    CHECK(a.admit("greedy", 6400, 0ms, 30s).admitted);
    CHECK(a.admit("greedy", 6400, 250ms, 30s).admitted);
    const Verdict v = a.admit("greedy", 6400, 500ms, 30s);
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after == 250ms);  // 6400 IDs past its share, at 25,600 IDs/s
    CHECK(v.reason == "over capacity: this connection already waits for 12800 IDs, its share of 12800 among 1");
  }
  SUBCASE("a connection holding nothing gets one call in even when another holds the window") {
    REQUIRE(a.admit("greedy", 12'800, 0ms, 30s).admitted);
    CHECK(a.admit("gen", 1, 500ms, 1s).admitted);
    CHECK(a.peers() == 2);
    SUBCASE("and the greedy one's share halves meanwhile") {
      a.release("greedy", 6400);
      CHECK_FALSE(a.admit("greedy", 1, 250ms, 30s).admitted);  // holds 6400 = 12800 / 2
    }
    SUBCASE("released calls give the share back") {
      a.release("gen", 1);
      CHECK(a.peers() == 1);
      a.release("greedy", 6400);
      CHECK(a.admit("greedy", 6400, 250ms, 30s).admitted);
    }
  }
  SUBCASE("releasing more than held, or an unknown peer, is harmless") {
    a.release("nobody", 5);
    REQUIRE(a.admit("p", 10, 0ms, 1s).admitted);
    a.release("p", 20);
    CHECK(a.peers() == 0);
  }
}

// One greedy connection keeps 32 GenBatch(6400) calls with 30 s deadlines in flight (refused ones
// come back 20 ms later); a second one calls Gen with a 1 s deadline four times a second. Over
// 10 s of fake time the Gen caller is always admitted and served before its deadline, and the
// greedy one still gets nearly the whole ceiling.
TEST_CASE("server::Admission: a greedy connection cannot starve a 1 s caller") {
  auto layout = make_layout("sonyflake", {}, std::nullopt);
  REQUIRE(layout.ok());
  FakeClock clock(std::chrono::milliseconds(layout->epoch_ms) + 1000h);
  GeneratorOptions go;
  go.layout = *layout;
  go.machine_id = 1;
  go.clock = &clock;
  auto gen = Generator::create(go);
  REQUIRE(gen.ok());
  Generator& g = **gen;
  Admission a(sonyflake());

  struct Call {
    std::string peer;
    uint64_t count;
    Nanos ready_at;
    Nanos deadline;
  };
  std::deque<Call> waiting;
  const Nanos start = clock.now();
  auto wait_for = [&](uint64_t count) { return std::max(Nanos(0), g.ready_at_next(count) - clock.now()); };
  auto try_call = [&](const std::string& peer, uint64_t count, Nanos timeout) {
    const Verdict v = a.admit(peer, count, wait_for(count), timeout);
    if (!v.admitted) return false;
    auto block = g.reserve(count);
    REQUIRE(block.ok());
    waiting.push_back({peer, count, g.ready_at(*block), clock.now() + timeout});
    return true;
  };

  uint64_t greedy_ids = 0, gen_ok = 0, gen_refused = 0, late = 0;
  int greedy_free = 32;  // greedy calls not in flight: they come back every 20 ms
  for (int step = 0; step < 1000; ++step) {  // 10 ms steps, 10 s
    const Nanos now = clock.now();
    for (auto it = waiting.begin(); it != waiting.end();) {
      if (it->ready_at > now) {
        ++it;
        continue;
      }
      if (it->ready_at > it->deadline) ++late;
      a.release(it->peer, it->count);
      if (it->peer == "greedy") {
        greedy_ids += it->count;
        ++greedy_free;
      } else {
        ++gen_ok;
      }
      it = waiting.erase(it);
    }
    if (step % 2 == 0) {
      for (int n = greedy_free; n > 0; --n) {
        if (try_call("greedy", 6400, 30s)) --greedy_free;
      }
    }
    if (step % 25 == 0 && !try_call("gen", 1, 1s)) ++gen_refused;
    clock.advance(10ms);
  }
  (void)start;
  CHECK(late == 0);
  CHECK(gen_refused == 0);
  const auto gen_waiting = std::count_if(waiting.begin(), waiting.end(), [](const Call& c) { return c.peer == "gen"; });
  CHECK(gen_waiting <= 2);  // admitted in the last half second, not ready yet
  CHECK(gen_ok + static_cast<uint64_t>(gen_waiting) == 40);
  // The ceiling over 10 s is 256,000 IDs; the greedy connection alone gets at least 90% of it.
  CHECK(greedy_ids >= 230'000);
}

}  // namespace
}  // namespace zaptid::server
