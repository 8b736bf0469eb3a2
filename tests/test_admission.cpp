// server::Admission: deadline-aware admission, the window all connections share and the reserve
// for connections holding nothing, driven with a generator on a fake clock (no gRPC, nothing
// sleeps).
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <vector>

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

TEST_CASE("server::Admission bounds what all connections hold together") {
  Admission a(sonyflake());
  REQUIRE(a.window_ids() == 12'800);
  REQUIRE(a.reserve_ids() == 1'600);  // an eighth of the window, for newcomers' small calls
  SUBCASE("batches of many connections fill the window, and no more") {
    CHECK(a.admit("b0", 6400, 0ms, 2s).admitted);
    CHECK(a.admit("b1", 6400, 250ms, 2s).admitted);
    const Verdict v = a.admit("b2", 6400, 500ms, 2s);  // in time, and holding nothing, but no room
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after == 250ms);  // 6400 IDs over, at 25,600 IDs/s
    CHECK(v.reason == "over capacity: calls in flight hold 12800 IDs ahead; 6400 more would pass the 12800 allowed");
    CHECK(a.held_total() == 12'800);
    SUBCASE("a small call of a connection holding nothing gets in from the reserve") {
      CHECK(a.admit("gen", 1, 500ms, 1s).admitted);
      CHECK(a.admit("b2", 1599, 500ms, 2s).admitted);  // b2 holds nothing either
      const Verdict full = a.admit("gen2", 1, 562ms, 1s);
      CHECK_FALSE(full.admitted);
      // One ID over, but held IDs leave a call at a time: room comes when b0, the oldest, is
      // delivered, 8001 IDs (312.5 ms) before the 562 ms this call would wait.
      CHECK(full.retry_after == 250ms);
      CHECK(full.reason == "over capacity: calls in flight hold 14400 IDs ahead; 1 more would pass the 14400 allowed");
      a.release("b0", 6400);
      CHECK(a.admit("gen2", 1, 300ms, 1s).admitted);
    }
    SUBCASE("a call of more than the reserve never uses it") {
      CHECK_FALSE(a.admit("b2", 1601, 500ms, 2s).admitted);
      CHECK(a.held_total() == 12'800);
    }
    SUBCASE("a connection that holds IDs never uses the reserve") {
      a.release("b1", 6400);
      REQUIRE(a.admit("gen", 1, 250ms, 1s).admitted);
      REQUIRE(a.admit("b2", 6399, 250ms, 2s).admitted);  // the window is full again
      const Verdict v2 = a.admit("gen", 1, 500ms, 1s);  // within its share of 4266, but it holds one
      CHECK_FALSE(v2.admitted);
      CHECK(v2.reason == "over capacity: calls in flight hold 12800 IDs ahead; 1 more would pass the 12800 allowed");
      CHECK(a.admit("gen2", 1, 500ms, 1s).admitted);
    }
  }
  SUBCASE("when nothing is held, one call is admitted whatever its count") {
    CHECK(a.admit("big", 100'000, 0ms, 30s).admitted);
    const Verdict v = a.admit("gen", 1, 3900ms, 30s);
    CHECK_FALSE(v.admitted);
    CHECK(v.retry_after == 3900ms);  // when the big call is delivered, not 85,601 IDs over at the ceiling's rate
    a.release("big", 100'000);
    CHECK(a.held_total() == 0);
    CHECK(a.admit("gen", 1, 0ms, 1s).admitted);
  }
}

// One lane on a fake clock with admission in front of it, driven as IdService drives them: the
// forecast wait from the generator, admit(), reserve(), and once the clock reaches the block's
// tick, delivery and release(). Nothing sleeps: the test moves the clock.
class Lane {
 public:
  struct Call {
    std::string peer;
    uint64_t count;
    Nanos ready_at;
    Nanos deadline;
  };

  Lane() : clock_(std::chrono::milliseconds(sonyflake_layout().epoch_ms) + 1000h), admission_(sonyflake()) {
    GeneratorOptions go;
    go.layout = sonyflake_layout();
    go.machine_id = 1;
    go.clock = &clock_;
    auto gen = Generator::create(go);
    REQUIRE(gen.ok());
    gen_ = std::move(*gen);
  }

  /// Admits and reserves a call of `count` IDs with `timeout` left, or returns the refusal.
  Verdict call(const std::string& peer, uint64_t count, Nanos timeout) {
    const Nanos wait = std::max(Nanos(0), gen_->ready_at_next(count) - clock_.now());
    Verdict v = admission_.admit(peer, count, wait, timeout);
    if (!v.admitted) return v;
    auto block = gen_->reserve(count);
    REQUIRE(block.ok());
    waiting_.push_back({peer, count, gen_->ready_at(*block), clock_.now() + timeout});
    return v;
  }

  /// Delivers every call whose IDs are ready now, in order, releasing its share; counts those
  /// ready after their deadline in late().
  template <class F>
  void deliver(F&& delivered) {
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (it->ready_at > clock_.now()) {
        ++it;
        continue;
      }
      if (it->ready_at > it->deadline) ++late_;
      admission_.release(it->peer, it->count);
      delivered(*it);
      it = waiting_.erase(it);
    }
  }

  FakeClock& clock() { return clock_; }
  Admission& admission() { return admission_; }
  const std::deque<Call>& waiting() const { return waiting_; }
  uint64_t late() const { return late_; }

 private:
  static Layout sonyflake_layout() {
    auto layout = make_layout("sonyflake", {}, std::nullopt);
    REQUIRE(layout.ok());
    return *layout;
  }

  FakeClock clock_;
  Admission admission_;
  std::unique_ptr<Generator> gen_;
  std::deque<Call> waiting_;
  uint64_t late_ = 0;
};

// One greedy connection keeps 32 GenBatch(6400) calls with 30 s deadlines in flight (refused ones
// come back 20 ms later); a second one calls Gen with a 1 s deadline four times a second. Over
// 10 s of fake time the Gen caller is always admitted and served before its deadline, and the
// greedy one still gets nearly the whole ceiling.
TEST_CASE("server::Admission: a greedy connection cannot starve a 1 s caller") {
  Lane lane;
  uint64_t greedy_ids = 0, gen_ok = 0, gen_refused = 0;
  int greedy_free = 32;  // greedy calls not in flight: they come back every 20 ms
  for (int step = 0; step < 1000; ++step) {  // 10 ms steps, 10 s
    lane.deliver([&](const Lane::Call& c) {
      if (c.peer == "greedy") {
        greedy_ids += c.count;
        ++greedy_free;
      } else {
        ++gen_ok;
      }
    });
    if (step % 2 == 0) {
      for (int n = greedy_free; n > 0; --n) {
        if (lane.call("greedy", 6400, 30s).admitted) --greedy_free;
      }
    }
    if (step % 25 == 0 && !lane.call("gen", 1, 1s).admitted) ++gen_refused;
    lane.clock().advance(10ms);
  }
  CHECK(lane.late() == 0);
  CHECK(gen_refused == 0);
  const auto& waiting = lane.waiting();
  const auto gen_waiting = std::count_if(waiting.begin(), waiting.end(), [](const auto& c) { return c.peer == "gen"; });
  CHECK(gen_waiting <= 2);  // admitted in the last half second, not ready yet
  CHECK(gen_ok + static_cast<uint64_t>(gen_waiting) == 40);
  // The ceiling over 10 s is 256,000 IDs; the greedy connection alone gets at least 90% of it.
  CHECK(greedy_ids >= 230'000);
}

// Issue 18: 16 connections each keep one GenBatch(6400) with a 2 s deadline in flight, trying a
// refused call again after the hint (plus 0-50% jitter, as bench and get do) while its deadline
// leaves room; a Gen caller with a 1 s deadline calls four times a second. Under the rule by
// calls (a connection holding nothing always got one call in) the 16 held 4 s of IDs ahead and
// the Gen caller got 2 of 53 calls. Now it gets every one, in time, and the batches still get
// most of the ceiling; nothing held ever passes the window and the reserve.
TEST_CASE("server::Admission: many batch connections cannot starve a 1 s caller") {
  Lane lane;
  Admission& a = lane.admission();
  struct Client {
    std::string peer;
    bool in_flight = false;
    Nanos next_try{0};   // when to try (again)
    Nanos deadline{0};   // of the logical call; 0: none started
  };
  std::vector<Client> batch(16);
  for (size_t i = 0; i < batch.size(); ++i) batch[i].peer = "batch" + std::to_string(i);
  uint64_t batch_ids = 0, batch_failed = 0, batch_refused = 0, gen_ok = 0, gen_refused = 0, max_held = 0, jitter = 0;
  for (int step = 0; step < 20'000; ++step) {  // 1 ms steps, 20 s
    const Nanos now = lane.clock().now();
    lane.deliver([&](const Lane::Call& c) {
      if (c.peer == "gen") {
        ++gen_ok;
        return;
      }
      batch_ids += c.count;
      for (auto& b : batch) {
        if (b.peer == c.peer) b = Client{b.peer, false, now, Nanos(0)};
      }
    });
    for (auto& b : batch) {
      if (b.in_flight || b.next_try > now) continue;
      if (b.deadline == Nanos(0)) b.deadline = now + 2s;
      const Verdict v = lane.call(b.peer, 6400, b.deadline - now);
      if (v.admitted) {
        b.in_flight = true;
        continue;
      }
      ++batch_refused;
      const Nanos pause = v.retry_after + v.retry_after * static_cast<int64_t>(jitter++ % 6) / 10;
      b.next_try = now + pause;
      if (b.next_try >= b.deadline) {  // no room before the deadline: failed; the next one waits the hint out
        ++batch_failed;
        b.deadline = Nanos(0);
      }
    }
    if (step % 250 == 0 && !lane.call("gen", 1, 1s).admitted) ++gen_refused;
    max_held = std::max(max_held, a.held_total());
    lane.clock().advance(1ms);
  }
  CHECK(lane.late() == 0);
  CHECK(gen_refused == 0);
  const auto& waiting = lane.waiting();
  const auto gen_waiting = std::count_if(waiting.begin(), waiting.end(), [](const auto& c) { return c.peer == "gen"; });
  CHECK(gen_ok + static_cast<uint64_t>(gen_waiting) == 80);
  CHECK(max_held <= a.window_ids() + a.reserve_ids());
  // The ceiling over 20 s is 512,000 IDs: the batches get at least 80% of it, in time.
  CHECK(batch_ids >= 409'600);
  // Hints send a refused client back about when room comes (a held call is delivered), not every
  // millisecond: ~1,100 tries refused here; 75,709 when the hint was the excess at the ceiling's
  // rate, which is 1 ms when a Gen call tips the window by one ID.
  CHECK(batch_refused <= 2'000);
  MESSAGE("batch IDs ", batch_ids, " (", 100.0 * static_cast<double>(batch_ids) / 512'000, "% of the ceiling), ",
          batch_failed, " batch calls failed, ", batch_refused, " tries refused");
}

}  // namespace
}  // namespace zaptid::server
