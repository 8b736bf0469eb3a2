// The generator under a fake clock: every wait is visible as FakeClock::sleeps(), nothing sleeps.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"
#include "core/layout.h"

using namespace std::chrono_literals;
using zaptid::Block;
using zaptid::Cursor;
using zaptid::ErrorKind;
using zaptid::FakeClock;
using zaptid::Generator;
using zaptid::GeneratorOptions;
using zaptid::Layout;
using zaptid::Nanos;

namespace {

// The zaptidgen vector 647842057989128197: sonyflake tick 38614395737, 2026-11-26T06:12:37.370Z.
constexpr uint64_t kVectorId = 647842057989128197u;
constexpr uint64_t kT = 38614395737u;
constexpr int64_t kVectorMs = 1795673557370;

Nanos ms(int64_t v) { return std::chrono::milliseconds(v); }

Layout preset(const char* name) {
  auto l = zaptid::make_layout(name, {}, std::nullopt);
  REQUIRE(l.ok());
  return *l;
}

GeneratorOptions options(FakeClock& clock, const char* layout = "sonyflake", uint64_t machine = 5) {
  GeneratorOptions o;
  o.layout = preset(layout);
  o.machine_id = machine;
  o.clock = &clock;
  return o;
}

std::unique_ptr<Generator> make(GeneratorOptions o) {
  auto g = Generator::create(std::move(o));
  REQUIRE(g.ok());
  return std::move(g).value();
}

uint64_t next_id(Generator& g) {
  auto id = g.next();
  REQUIRE_MESSAGE(id.ok(), id.message());
  return *id;
}

// The cursor (time << bits_sequence | sequence) of an ID.
Cursor cursor_of(const Layout& l, uint64_t id) {
  const auto p = l.decompose(id);
  return p.time << l.bits_sequence | p.sequence;
}

// The start of a sonyflake tick on the clock.
Nanos sonyflake_tick_start(uint64_t tick) { return ms(1409529600000 + static_cast<int64_t>(tick) * 10); }

// Records every reserve_through() call; fails every call after `fail_after` successful ones.
class RecordingReserver final : public zaptid::Reserver {
 public:
  zaptid::Status reserve_through(Cursor through) override {
    const uint64_t n = calls.fetch_add(1) + 1;
    if (fail_after && n > *fail_after) return zaptid::Error{ErrorKind::kIo, "disk full"};
    if (through <= high.load()) went_back = true;
    high.store(through);
    return zaptid::Ok{};
  }
  std::atomic<uint64_t> calls{0};
  std::atomic<Cursor> high{0};
  std::atomic<bool> went_back{false};
  std::optional<uint64_t> fail_after;
};

}  // namespace

TEST_CASE("generator::issuing") {
  FakeClock clock(ms(kVectorMs + 3));
  auto gen = make(options(clock));
  const Layout l = gen->layout();

  SUBCASE("the first ID is at the clock's tick") {
    CHECK(next_id(*gen) == kVectorId);
    CHECK(clock.sleeps() == 0);
  }
  SUBCASE("an exhausted sequence moves to the next tick, which is waited for") {
    for (uint64_t s = 0; s <= l.max_sequence(); ++s) CHECK(cursor_of(l, next_id(*gen)) == (kT << 8 | s));
    CHECK(clock.sleeps() == 0);
    auto block = gen->reserve(1);
    REQUIRE(block.ok());
    CHECK(block->first == (kT + 1) << 8);
    CHECK_FALSE(block->ready);
    CHECK_FALSE(gen->is_ready(*block));
    CHECK(gen->ready_at(*block) == sonyflake_tick_start(kT + 1));
    CHECK(clock.now() == ms(kVectorMs + 3));  // reserve() never sleeps
    REQUIRE(gen->wait_ready(*block).ok());
    CHECK(clock.sleeps() == 1);
    CHECK(clock.now() == sonyflake_tick_start(kT + 1));
    CHECK(gen->is_ready(*block));
    CHECK(gen->id_at(block->first) == l.compose(kT + 1, 0, 5));
  }
  SUBCASE("IDs strictly increase across ticks and clock moves") {
    uint64_t prev = 0;
    for (int i = 0; i < 3000; ++i) {
      if (i % 700 == 0) clock.advance(37ms);
      const uint64_t id = next_id(*gen);
      CHECK(id > prev);
      CHECK((id & 0xFFFF) == 5);
      CHECK((id >> 63) == 0);
      prev = id;
    }
  }
  SUBCASE("last_reserved") {
    CHECK_FALSE(gen->last_reserved().has_value());
    next_id(*gen);
    CHECK(gen->last_reserved() == (kT << 8));
  }
}

TEST_CASE("generator::reserve") {
  FakeClock clock(ms(kVectorMs + 3));
  auto gen = make(options(clock));
  const Layout l = gen->layout();

  SUBCASE("one block of consecutive cursors, crossing a tick") {
    auto block = gen->reserve(300);
    REQUIRE(block.ok());
    CHECK(block->first == kT << 8);
    CHECK(block->count == 300);
    CHECK(block->last() == ((kT + 1) << 8 | 43));
    CHECK(gen->ready_at(*block) == sonyflake_tick_start(kT + 1));
    CHECK(clock.sleeps() == 0);
    REQUIRE(gen->wait_ready(*block).ok());
    CHECK(clock.sleeps() == 1);
    std::vector<uint64_t> ids(300);
    gen->write_ids(*block, ids.data());
    for (uint64_t i = 0; i < 300; ++i) CHECK(cursor_of(l, ids[i]) == block->first + i);
    CHECK(ids[255] == l.compose(kT, 255, 5));
    CHECK(ids[256] == l.compose(kT + 1, 0, 5));
    CHECK(cursor_of(l, next_id(*gen)) == block->last() + 1);
  }
  SUBCASE("a block inside the current tick is ready at once") {
    auto block = gen->next_block(256);
    REQUIRE(block.ok());
    CHECK(block->ready);
    CHECK(clock.sleeps() == 0);
  }
  SUBCASE("invalid counts") {
    CHECK(gen->max_block() == uint64_t{1} << 24);
    auto zero = gen->reserve(0);
    REQUIRE_FALSE(zero.ok());
    CHECK(zero.error().kind == ErrorKind::kInvalidArgument);
    CHECK(zero.message() == "cannot reserve 0 IDs at once (1 to 16777216)");
    CHECK(gen->reserve(gen->max_block() + 1).message() == "cannot reserve 16777217 IDs at once (1 to 16777216)");
    CHECK_FALSE(gen->last_reserved().has_value());  // nothing was taken
    CHECK(gen->reserve(gen->max_block()).ok());
  }
}

TEST_CASE("generator::ready_at_next forecasts reserve() without reserving") {
  FakeClock clock(ms(kVectorMs + 3));  // 3 ms into tick kT
  auto g = make(options(clock));
  const Nanos tick_start = ms(kVectorMs);
  SUBCASE("idle: the block would start at the current tick") {
    CHECK(g->ready_at_next(256) == tick_start);             // one tick's sequence
    CHECK(g->ready_at_next(257) == tick_start + ms(10));    // spills into the next tick
    CHECK(g->ready_at_next(2560) == tick_start + ms(90));   // ten ticks: ready at the tenth's start
    CHECK_FALSE(g->last_reserved().has_value());            // nothing was reserved
  }
  SUBCASE("behind reservations: the block would follow them, as reserve() then gives") {
    auto first = g->reserve(2560);
    REQUIRE(first.ok());
    const Nanos forecast = g->ready_at_next(256);
    CHECK(forecast == tick_start + ms(100));
    auto second = g->reserve(256);
    REQUIRE(second.ok());
    CHECK(g->ready_at(*second) == forecast);
  }
}

TEST_CASE("generator::create") {
  FakeClock clock(ms(kVectorMs));
  SUBCASE("a machine id that does not fit") {
    auto o = options(clock);
    o.machine_id = 65536;
    auto g = Generator::create(o);
    REQUIRE_FALSE(g.ok());
    CHECK(g.error().kind == ErrorKind::kInvalidArgument);
    CHECK(g.message() == "machine id 65536 does not fit the layout's 16 machine bits (0 to 65535)");
    o = options(clock, "snowflake", 1024);
    CHECK(Generator::create(o).message() == "machine id 1024 does not fit the layout's 10 machine bits (0 to 1023)");
    o.machine_id = 1023;
    CHECK(Generator::create(o).ok());
  }
  SUBCASE("no clock") {
    auto o = options(clock);
    o.clock = nullptr;
    CHECK(Generator::create(o).message() == "generator needs a clock");
  }
}

TEST_CASE("generator::clock steps back") {
  FakeClock clock(ms(kVectorMs + 3));
  auto gen = make(options(clock));
  const Layout l = gen->layout();
  REQUIRE(next_id(*gen) == kVectorId);

  SUBCASE("a small step: the own last tick is used up first, then the clock is waited for") {
    clock.set(ms(kVectorMs + 3 - 300));
    for (uint64_t s = 1; s <= l.max_sequence(); ++s) CHECK(next_id(*gen) == l.compose(kT, s, 5));
    CHECK(clock.sleeps() == 0);  // the clock has shown tick kT before: nothing to wait for
    CHECK(next_id(*gen) == l.compose(kT + 1, 0, 5));
    CHECK(clock.sleeps() == 1);
    CHECK(clock.now() == sonyflake_tick_start(kT + 1));
  }
  SUBCASE("exactly the limit behind is still waited for") {
    clock.set(ms(kVectorMs + 3 - 1000));
    CHECK(next_id(*gen) == l.compose(kT, 1, 5));
  }
  SUBCASE("a large step fails and issues nothing") {
    clock.set(ms(kVectorMs + 3 - 2000));
    for (int i = 0; i < 3; ++i) {
      auto id = gen->next();
      REQUIRE_FALSE(id.ok());
      CHECK(id.error().kind == ErrorKind::kUnavailable);
      CHECK(id.message() ==
            "the clock is 2.000s behind the newest time already used (2026-11-26T06:12:37.370Z); refusing to wait "
            "longer than the clock wait limit of 1.000s");
    }
    CHECK(gen->last_reserved() == (kT << 8));
    CHECK(clock.sleeps() == 0);
    clock.set(ms(kVectorMs + 3));
    CHECK(next_id(*gen) == l.compose(kT, 1, 5));  // continues right after the last one
  }
  SUBCASE("a large step while waiting fails the wait") {
    for (uint64_t s = 1; s <= l.max_sequence(); ++s) next_id(*gen);
    auto block = gen->reserve(1);
    REQUIRE(block.ok());
    CHECK_FALSE(block->ready);
    clock.set(ms(kVectorMs + 3 - 5000));
    auto st = gen->wait_ready(*block);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::kUnavailable);
    CHECK(st.message() ==
          "the clock is 5.000s behind the newest time already used (2026-11-26T06:12:37.370Z); refusing to wait "
          "longer than the clock wait limit of 1.000s");
    CHECK(clock.sleeps() == 0);
    clock.set(ms(kVectorMs + 13));
    CHECK(next_id(*gen) == l.compose(kT + 1, 1, 5));  // the failed block's ID is never handed out
  }
  SUBCASE("a shorter limit") {
    auto o = options(clock);
    o.max_clock_wait = 50ms;
    auto g = make(o);
    REQUIRE(g->next().ok());
    clock.set(ms(kVectorMs + 3 - 60));
    CHECK(g->next().message() ==
          "the clock is 60ms behind the newest time already used (2026-11-26T06:12:37.370Z); refusing to wait "
          "longer than the clock wait limit of 50ms");
  }
}

TEST_CASE("generator::clock step-backs are counted once each, with their size") {
  FakeClock clock(ms(kVectorMs + 3));  // 3 ms into tick kT, which starts at kVectorMs
  auto gen = make(options(clock));
  REQUIRE(next_id(*gen) == kVectorId);
  CHECK(gen->clock_step_backs().count == 0);

  SUBCASE("a step within the newest tick is not one") {
    clock.set(ms(kVectorMs + 1));
    REQUIRE(gen->next().ok());
    CHECK(gen->clock_step_backs().count == 0);
  }
  SUBCASE("a refused step, the readings while catching up, and a second step") {
    clock.set(ms(kVectorMs + 3 - 2000));
    REQUIRE_FALSE(gen->next().ok());
    auto seen = gen->clock_step_backs();
    CHECK(seen.count == 1);
    CHECK(seen.largest == ms(1997));  // from the start of tick kT: the 3 ms into it are not known
    CHECK(seen.total == ms(1997));
    clock.advance(ms(500));  // catching up: the same step
    REQUIRE_FALSE(gen->next().ok());
    clock.advance(ms(700));
    REQUIRE(gen->next().ok());  // 797 ms behind: waited for
    CHECK(gen->clock_step_backs().count == 1);
    clock.advance(-ms(200));  // back again before it caught up: measured between the readings
    REQUIRE(gen->next().ok());
    seen = gen->clock_step_backs();
    CHECK(seen.count == 2);
    CHECK(seen.total == ms(1997 + 200));
    CHECK(seen.largest == ms(1997));
  }
  SUBCASE("after the clock caught up, a step back is a new one") {
    clock.set(ms(kVectorMs - 100));
    REQUIRE(gen->next().ok());
    clock.set(ms(kVectorMs + 50));  // past the newest tick: caught up
    REQUIRE(gen->next().ok());
    clock.set(ms(kVectorMs + 50 - 40));
    REQUIRE(gen->next().ok());
    const auto seen = gen->clock_step_backs();
    CHECK(seen.count == 2);
    CHECK(seen.total == ms(100 + 40));  // tick kT+5 starts at +50
    CHECK(seen.largest == ms(100));
  }
  SUBCASE("the forecast sees a step back too, and the reservation after it is the same step") {
    clock.set(ms(kVectorMs - 3000));
    CHECK(gen->ready_at_next(1) == sonyflake_tick_start(kT));
    CHECK(gen->clock_step_backs().count == 1);
    CHECK(gen->clock_step_backs().largest == ms(3000));
    REQUIRE_FALSE(gen->next().ok());
    CHECK(gen->clock_step_backs().count == 1);
  }
  SUBCASE("waiting for a tick sees a step back too") {
    for (uint64_t s = 1; s <= gen->layout().max_sequence(); ++s) next_id(*gen);
    auto block = gen->reserve(1);
    REQUIRE(block.ok());
    clock.set(ms(kVectorMs - 20));
    REQUIRE(gen->wait_ready(*block).ok());
    CHECK(gen->clock_step_backs().count == 1);
    CHECK(gen->clock_step_backs().largest == ms(20));
  }
}

TEST_CASE("generator::clock before the epoch") {
  FakeClock clock(ms(1409529600000 - 1));
  auto gen = make(options(clock));
  auto id = gen->next();
  REQUIRE_FALSE(id.ok());
  CHECK(id.error().kind == ErrorKind::kUnavailable);
  CHECK(id.message() ==
        "the clock (2014-08-31T23:59:59.999Z) is before the layout's epoch (2014-09-01T00:00:00.000Z); correct the clock");
  clock.set(ms(1409529600000));
  CHECK(next_id(*gen) == 5);  // tick 0, sequence 0
}

TEST_CASE("generator::time field runs out") {
  // 32 bits of 1 ms time from 2001-09-09T01:46:40Z: the field ends 2^32 ms later.
  zaptid::LayoutOverrides o;
  o.epoch_ms = 1'000'000'000'000;
  o.bits_sequence = 8;
  o.bits_machine = 23;
  auto layout = zaptid::make_layout("snowflake", o, std::nullopt);
  REQUIRE(layout.ok());
  const Layout l = *layout;
  REQUIRE(l.max_time() == 0xFFFFFFFFu);
  const int64_t end_ms = 1'000'000'000'000 + (int64_t{1} << 32);
  const std::string ran_out =
      "the layout's time field ran out at 2001-10-28T18:49:27.296Z; no more IDs can be issued with this layout";

  FakeClock clock(ms(end_ms - 2));
  GeneratorOptions go;
  go.layout = l;
  go.machine_id = l.max_machine();
  go.clock = &clock;
  auto gen = make(go);

  SUBCASE("the last tick is used up, then kExhausted, never a wrap") {
    uint64_t prev = 0;
    for (int i = 0; i < 512; ++i) {
      const uint64_t id = next_id(*gen);
      CHECK(id > prev);
      CHECK((id >> 63) == 0);
      prev = id;
    }
    CHECK(prev == l.compose(l.max_time(), l.max_sequence(), l.max_machine()));
    CHECK(prev == 0x7FFFFFFFFFFFFFFFu);
    for (int i = 0; i < 2; ++i) {
      auto id = gen->next();
      REQUIRE_FALSE(id.ok());
      CHECK(id.error().kind == ErrorKind::kExhausted);
      CHECK(id.message() == ran_out);
    }
  }
  SUBCASE("a block that would cross the end takes nothing") {
    auto block = gen->reserve(600);
    REQUIRE_FALSE(block.ok());
    CHECK(block.error().kind == ErrorKind::kExhausted);
    CHECK(block.message() == ran_out);
    CHECK_FALSE(gen->last_reserved().has_value());
    CHECK(next_id(*gen) == l.compose(l.max_time() - 1, 0, l.max_machine()));
  }
  SUBCASE("a clock past the end") {
    clock.set(ms(end_ms));
    CHECK(gen->next().message() == ran_out);
    clock.set(ms(end_ms + 86'400'000));
    CHECK(gen->next().error().kind == ErrorKind::kExhausted);
  }
  SUBCASE("a predecessor that used the last ID") {
    go.start_after = l.max_time() << l.bits_sequence | l.max_sequence();
    auto g = Generator::create(go);
    REQUIRE_FALSE(g.ok());
    CHECK(g.error().kind == ErrorKind::kExhausted);
    CHECK(g.message() == ran_out);
  }
  SUBCASE("a predecessor's cursor past the end of the layout") {
    for (Cursor after : {(l.max_time() + 1) << l.bits_sequence, (l.max_time() + 7) << l.bits_sequence | 3,
                         ~Cursor{0} - 1, ~Cursor{0}}) {
      CAPTURE(after);
      go.start_after = after;
      auto g = Generator::create(go);
      REQUIRE_FALSE(g.ok());
      CHECK(g.error().kind == ErrorKind::kExhausted);
      CHECK(g.message() == ran_out);
    }
    go.start_after = (l.max_time() << l.bits_sequence) | (l.max_sequence() - 1);
    auto g = make(go);  // one ID left
    clock.set(ms(end_ms - 1));
    CHECK(next_id(*g) == 0x7FFFFFFFFFFFFFFFu);
    CHECK(g->next().error().kind == ErrorKind::kExhausted);
  }
}

TEST_CASE("generator::a cursor far past the end of a narrow layout") {
  // 32 bits of 10 ms time, 1 bit of sequence: a damaged record's cursor can hold a tick 2^31 times
  // the layout's last. It must be refused before any arithmetic on it.
  zaptid::LayoutOverrides o;
  o.unit_ms = 10;
  o.bits_sequence = 1;
  o.bits_machine = 30;
  auto layout = zaptid::make_layout("snowflake", o, std::nullopt);
  REQUIRE(layout.ok());
  FakeClock clock(ms(kVectorMs));
  GeneratorOptions go;
  go.layout = *layout;
  go.clock = &clock;
  go.start_after = ~Cursor{0} - 1;
  auto g = Generator::create(go);
  REQUIRE_FALSE(g.ok());
  CHECK(g.error().kind == ErrorKind::kExhausted);
}

TEST_CASE("generator::start_after") {
  FakeClock clock(ms(kVectorMs + 3));
  auto o = options(clock);
  const Layout l = o.layout;

  SUBCASE("the first ID comes strictly after the predecessor's cursor") {
    o.start_after = kT << 8 | 5;
    auto gen = make(o);
    CHECK(gen->last_reserved() == (kT << 8 | 5));
    CHECK(next_id(*gen) == l.compose(kT, 6, 5));
    CHECK(clock.sleeps() == 0);
  }
  SUBCASE("a predecessor that used up the tick") {
    o.start_after = kT << 8 | 255;
    auto gen = make(o);
    CHECK(next_id(*gen) == l.compose(kT + 1, 0, 5));
    CHECK(clock.sleeps() == 1);
  }
  SUBCASE("an older predecessor: the clock's tick") {
    o.start_after = (kT - 1000) << 8 | 7;
    CHECK(next_id(*make(o)) == kVectorId);
  }
  SUBCASE("ahead of the clock within the limit: waits, never issues early") {
    o.start_after = (kT + 50) << 8 | 9;
    auto gen = make(o);
    CHECK(next_id(*gen) == l.compose(kT + 50, 10, 5));
    CHECK(clock.sleeps() == 1);
    CHECK(clock.now() == sonyflake_tick_start(kT + 50));
  }
  SUBCASE("ahead of the clock by more than the limit: refused") {
    o.start_after = (kT + 101) << 8;
    auto gen = make(o);
    auto id = gen->next();
    REQUIRE_FALSE(id.ok());
    CHECK(id.error().kind == ErrorKind::kUnavailable);
    CHECK(id.message() ==
          "the clock is 1.010s behind the newest time already used (2026-11-26T06:12:38.380Z); refusing to wait "
          "longer than the clock wait limit of 1.000s");
    CHECK(gen->last_reserved() == ((kT + 101) << 8));
  }
}

TEST_CASE("generator::reserver") {
  FakeClock clock(ms(kVectorMs + 3));
  auto o = options(clock);
  const Layout l = o.layout;
  RecordingReserver reserver;
  o.reserver = &reserver;

  SUBCASE("called once per window, and every ID is covered before it is handed out") {
    auto gen = make(o);
    // 200 ticks of IDs; each record reaches 500 ms (50 ticks) past the tick that needed it.
    for (int i = 0; i < 256 * 200; ++i) {
      const uint64_t id = next_id(*gen);
      REQUIRE(cursor_of(l, id) <= reserver.high.load());
    }
    CHECK(reserver.calls.load() == 4);
    CHECK(reserver.high.load() == ((kT + 153 + 50) << 8 | 255));
    CHECK_FALSE(reserver.went_back.load());
  }
  SUBCASE("needs_reservation() foretells the calls that record a new window") {
    auto gen = make(o);
    CHECK(gen->needs_reservation(1));  // nothing recorded yet
    next_id(*gen);
    REQUIRE(reserver.calls.load() == 1);
    CHECK_FALSE(gen->needs_reservation(1));
    // The window reaches the end of tick kT + 50; the current tick is kT.
    const uint64_t left = ((kT + 51) << 8) - (*gen->last_reserved() + 1);
    CHECK_FALSE(gen->needs_reservation(left));
    CHECK(gen->needs_reservation(left + 1));
    clock.set(sonyflake_tick_start(kT + 51));  // the clock passed the window
    CHECK(gen->needs_reservation(1));
    next_id(*gen);
    CHECK(reserver.calls.load() == 2);
    CHECK_FALSE(gen->needs_reservation(1));
    GeneratorOptions plain = options(clock);
    CHECK_FALSE(make(plain)->needs_reservation(1));  // no reserver: never
  }
  SUBCASE("a failing reserver stops issuing") {
    reserver.fail_after = 1;
    auto gen = make(o);
    for (int i = 0; i < 256 * 51; ++i) next_id(*gen);
    CHECK(reserver.high.load() == ((kT + 50) << 8 | 255));
    for (int i = 0; i < 3; ++i) {
      auto id = gen->next();
      REQUIRE_FALSE(id.ok());
      CHECK(id.error().kind == ErrorKind::kIo);
      CHECK(id.message() == "disk full");
    }
    CHECK(reserver.calls.load() == 4);
    reserver.fail_after.reset();
    const uint64_t id = next_id(*gen);  // once it recovers, issuing resumes past every taken cursor
    CHECK(cursor_of(l, id) > ((kT + 51) << 8 | 2));
    CHECK(cursor_of(l, id) <= reserver.high.load());
  }
  SUBCASE("a successor records its own window with its first ID") {
    o.start_after = (kT - 3) << 8;
    auto gen = make(o);
    next_id(*gen);
    CHECK(reserver.calls.load() == 1);
    CHECK(reserver.high.load() == ((kT + 50) << 8 | 255));
  }
  SUBCASE("top_up() records the next window early, so issuing never waits for the reserver") {
    auto gen = make(o);
    CHECK(gen->top_up(std::chrono::milliseconds(375)).ok());  // nothing recorded: records now
    REQUIRE(reserver.calls.load() == 1);
    CHECK(reserver.high.load() == ((kT + 50) << 8 | 255));
    CHECK(gen->top_up(std::chrono::milliseconds(375)).ok());  // 500 ms left: nothing to do
    CHECK(reserver.calls.load() == 1);
    clock.set(sonyflake_tick_start(kT + 13));  // ticks kT+13 to kT+50 left: 380 ms
    CHECK(gen->top_up(std::chrono::milliseconds(375)).ok());
    CHECK(reserver.calls.load() == 1);
    clock.set(sonyflake_tick_start(kT + 14));  // 370 ms left: under the low mark
    CHECK(gen->top_up(std::chrono::milliseconds(375)).ok());
    CHECK(reserver.calls.load() == 2);
    CHECK(reserver.high.load() == ((kT + 14 + 50) << 8 | 255));
    // Issuing inside the topped-up window writes nothing more.
    for (int i = 0; i < 256 * 10; ++i) REQUIRE(cursor_of(l, next_id(*gen)) <= reserver.high.load());
    CHECK(reserver.calls.load() == 2);
    CHECK_FALSE(gen->needs_reservation(1));
    CHECK_FALSE(reserver.went_back.load());
  }
  SUBCASE("top_up() measures from the next free cursor when issuing runs ahead of the clock") {
    auto gen = make(o);
    for (int i = 0; i < 256 * 40; ++i) next_id(*gen);  // 40 ticks of IDs at tick kT: cursors run ahead
    REQUIRE(reserver.calls.load() == 1);
    CHECK(gen->top_up(std::chrono::milliseconds(375)).ok());
    CHECK(reserver.calls.load() == 2);
    CHECK(reserver.high.load() == ((kT + 40 + 50) << 8 | 255));
  }
  SUBCASE("a failing top_up() says why and leaves the recorded window as it was") {
    reserver.fail_after = 1;
    auto gen = make(o);
    next_id(*gen);
    clock.set(sonyflake_tick_start(kT + 20));
    auto st = gen->top_up(std::chrono::milliseconds(375));
    REQUIRE_FALSE(st.ok());
    CHECK(st.message() == "disk full");
    CHECK(reserver.high.load() == ((kT + 50) << 8 | 255));
    for (int i = 0; i < 256 * 30; ++i) REQUIRE(cursor_of(l, next_id(*gen)) <= reserver.high.load());
  }
  SUBCASE("no reserver: top_up() does nothing") {
    GeneratorOptions plain = options(clock);
    CHECK(make(plain)->top_up(std::chrono::milliseconds(375)).ok());
  }
}

TEST_CASE("generator::max_start_wait allows a record reserved ahead, not a clock stepping back") {
  FakeClock clock(ms(kVectorMs + 3));
  auto o = options(clock);
  o.max_clock_wait = std::chrono::milliseconds(1000);
  o.start_after = (kT + 300) << 8;  // a predecessor's record, 3 s ahead
  SUBCASE("without it, refused") {
    auto gen = make(o);
    auto block = gen->reserve(1);
    REQUIRE_FALSE(block.ok());
    CHECK(block.error().kind == ErrorKind::kUnavailable);
  }
  SUBCASE("with it, reserved after the record and waited for") {
    o.max_start_wait = std::chrono::milliseconds(5000);
    auto gen = make(o);
    auto block = gen->reserve(1);
    REQUIRE(block.ok());
    CHECK(block->first == ((kT + 300) << 8 | 1));
    CHECK(gen->wait_ready(*block).ok());
    CHECK(clock.now() >= sonyflake_tick_start(kT + 300));
    // Now the clock has shown that tick: a step back of 2 s is a clock fault, over max_clock_wait.
    clock.set(sonyflake_tick_start(kT + 100));
    CHECK_FALSE(gen->reserve(1).ok());
  }
}

TEST_CASE("generator::many threads") {
  // Snowflake at full speed: the fake clock moves only when a thread waits for the next tick.
  FakeClock clock(ms(1795673557370));
  auto o = options(clock, "snowflake", 1023);
  const Layout l = o.layout;
  RecordingReserver reserver;
  o.reserver = &reserver;
  auto gen = make(o);

  constexpr int kThreads = 8;
  constexpr uint64_t kPerThread = 20000;
  std::vector<std::vector<uint64_t>> ids(kThreads);
  std::atomic<uint64_t> uncovered{0}, failures{0};
  std::latch start(kThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      auto& mine = ids[static_cast<size_t>(t)];
      mine.reserve(kPerThread);
      const uint64_t batch = t % 2 == 0 ? 1 : 7;  // half take single IDs, half blocks
      std::vector<uint64_t> buf(batch);
      start.arrive_and_wait();
      while (mine.size() < kPerThread) {
        const uint64_t n = std::min(batch, kPerThread - mine.size());
        auto block = gen->next_block(n);
        if (!block) {
          failures.fetch_add(1);
          return;
        }
        gen->write_ids(*block, buf.data());
        if (block->last() > reserver.high.load()) uncovered.fetch_add(1);
        mine.insert(mine.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      }
    });
  }
  for (auto& th : pool) th.join();
  REQUIRE(failures.load() == 0);
  CHECK(uncovered.load() == 0);
  std::vector<uint64_t> all;
  for (const auto& mine : ids) {
    REQUIRE(mine.size() == kPerThread);
    CHECK(std::adjacent_find(mine.begin(), mine.end(), std::greater_equal<>()) == mine.end());
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  CHECK(all.size() == kThreads * kPerThread);
  for (uint64_t id : {all.front(), all.back()}) {
    CHECK(l.decompose(id).machine == 1023);
    CHECK(id < (uint64_t{1} << 63));
  }
  // 160000 IDs at 4096 per tick need at least 40 ticks; no ID is from a tick the clock never showed.
  CHECK(l.decompose(all.back()).time - l.decompose(all.front()).time >= 39);
  CHECK(l.tick_start_ms(l.decompose(all.back()).time) * 1'000'000 <= clock.now().count());
  CHECK_FALSE(reserver.went_back.load());
}
