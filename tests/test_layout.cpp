#include <doctest/doctest.h>

#include "core/layout.h"

using zaptid::Layout;
using zaptid::make_layout;

namespace {

Layout preset(const char* name) {
  auto l = make_layout(name, {}, std::nullopt);
  REQUIRE(l.ok());
  return *l;
}

}  // namespace

TEST_CASE("layout::zaptidgen vector") {
  // A real zaptidgen server (sonyflake v1.2.0) with machine id 5 issued this ID.
  const Layout l = preset("sonyflake");
  const auto p = l.decompose(647842057989128197u);
  CHECK(p.msb == 0);
  CHECK(p.time == 38614395737u);
  CHECK(p.sequence == 0);
  CHECK(p.machine == 5);
  CHECK(l.compose(38614395737u, 0, 5) == 647842057989128197u);
  CHECK(l.tick_start_ms(p.time) == 1795673557370);  // 2026-11-26T06:12:37.370Z
}

TEST_CASE("layout::presets") {
  SUBCASE("sonyflake") {
    const Layout l = preset("sonyflake");
    CHECK(l.epoch_ms == 1409529600000);
    CHECK(l.unit_ms == 10);
    CHECK(l.bits_time == 39);
    CHECK(l.bits_sequence == 8);
    CHECK(l.bits_machine == 16);
    CHECK_FALSE(l.machine_above_sequence);
    CHECK(l.compose(1, 2, 3) == ((uint64_t{1} << 24) | (2u << 16) | 3u));
  }
  SUBCASE("sonyflake-v2") {
    const Layout l = preset("sonyflake-v2");
    CHECK(l.epoch_ms == 1735689600000);
    CHECK(l.bits_time == 39);
  }
  SUBCASE("snowflake") {
    const Layout l = preset("snowflake");
    CHECK(l.epoch_ms == 1288834974657);
    CHECK(l.unit_ms == 1);
    CHECK(l.bits_time == 41);
    CHECK(l.machine_above_sequence);
    CHECK(l.compose(1, 2, 3) == ((uint64_t{1} << 22) | (3u << 12) | 2u));
  }
}

TEST_CASE("layout::round trip") {
  for (const auto& name : zaptid::layout_preset_names()) {
    CAPTURE(name);
    const Layout l = preset(name.c_str());
    const uint64_t times[] = {0, 1, l.max_time() / 2, l.max_time()};
    for (uint64_t t : times) {
      for (uint64_t s : {uint64_t{0}, l.max_sequence()}) {
        for (uint64_t m : {uint64_t{0}, uint64_t{1}, l.max_machine()}) {
          const uint64_t id = l.compose(t, s, m);
          CHECK((id >> 63) == 0);
          const auto p = l.decompose(id);
          CHECK(p.time == t);
          CHECK(p.sequence == s);
          CHECK(p.machine == m);
        }
      }
    }
  }
}

TEST_CASE("layout::overrides") {
  zaptid::LayoutOverrides o;
  SUBCASE("custom bits") {
    o.bits_sequence = 10;
    o.bits_machine = 12;
    auto l = make_layout("sonyflake", o, std::nullopt);
    REQUIRE(l.ok());
    CHECK(l->name == "custom");
    CHECK(l->bits_time == 41);
    CHECK(l->key() == "e1409529600000-u10-t41-s10-m12-sm");
  }
  SUBCASE("too many bits") {
    o.bits_sequence = 20;
    o.bits_machine = 16;
    auto l = make_layout("sonyflake", o, std::nullopt);
    REQUIRE_FALSE(l.ok());
    CHECK(l.message() ==
          "20 sequence bits and 16 machine bits leave 27 bits of time; time needs at least 32 (sequence + machine at "
          "most 31)");
  }
  SUBCASE("sequence out of range") {
    o.bits_sequence = 0;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "--bits-sequence 0 is out of range (1 to 31)");
  }
  SUBCASE("unit") {
    o.unit_ms = 0;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "time unit must be at least 1ms");
  }
  SUBCASE("epoch in the future") {
    o.epoch_ms = 2000;
    CHECK(make_layout("sonyflake", o, 1000).message() == "epoch 1970-01-01T00:00:02.000Z is in the future");
  }
  SUBCASE("unknown preset") {
    CHECK(make_layout("uuid", o, std::nullopt).message() ==
          "unknown layout 'uuid' (known: sonyflake, sonyflake-v2, snowflake)");
  }
}

TEST_CASE("layout::exhaustion time") {
  const Layout l = preset("sonyflake");
  // sonyflake's 39 bits of 10 ms last about 174 years from 2014-09-01.
  CHECK(l.exhausted_at_ms() == 1409529600000 + (int64_t{1} << 39) * 10);
  CHECK(l.ceiling_per_second() == doctest::Approx(25600.0));
  CHECK(preset("snowflake").ceiling_per_second() == doctest::Approx(4096000.0));
}

TEST_CASE("layout::snowflake vector") {
  // Tweet 1050118621198921728 was created 2018-10-10T20:19:24Z (Twitter API documentation).
  const Layout l = preset("snowflake");
  const auto p = l.decompose(1050118621198921728u);
  CHECK(p.msb == 0);
  CHECK(p.time == 250367789554u);
  CHECK(p.machine == 347);
  CHECK(p.sequence == 0);
  CHECK(l.tick_start_ms(p.time) == 1539202764211);
  CHECK(l.compose(p.time, p.sequence, p.machine) == 1050118621198921728u);
}

TEST_CASE("layout::decompose any 64-bit value") {
  const Layout l = preset("sonyflake");
  const auto p = l.decompose(UINT64_MAX);
  CHECK(p.msb == 1);
  CHECK(p.time == l.max_time());
  CHECK(p.sequence == l.max_sequence());
  CHECK(p.machine == l.max_machine());
  CHECK(l.compose(l.max_time(), l.max_sequence(), l.max_machine()) == 0x7FFFFFFFFFFFFFFFu);  // never the top bit
}

TEST_CASE("layout::keys") {
  CHECK(preset("sonyflake").key() == "e1409529600000-u10-t39-s8-m16-sm");
  CHECK(preset("sonyflake-v2").key() == "e1735689600000-u10-t39-s8-m16-sm");
  CHECK(preset("snowflake").key() == "e1288834974657-u1-t41-s12-m10-ms");
  // The key names the parts, not the preset: overriding a part to its preset value changes nothing.
  zaptid::LayoutOverrides o;
  o.bits_sequence = 8;
  auto same = make_layout("sonyflake", o, std::nullopt);
  REQUIRE(same.ok());
  CHECK(same->name == "custom");
  CHECK(same->key() == preset("sonyflake").key());
}

TEST_CASE("layout::more overrides") {
  zaptid::LayoutOverrides o;
  SUBCASE("the preset's order and epoch stay") {
    o.bits_sequence = 10;
    auto l = make_layout("snowflake", o, std::nullopt);
    REQUIRE(l.ok());
    CHECK(l->machine_above_sequence);
    CHECK(l->epoch_ms == 1288834974657);
    CHECK(l->unit_ms == 1);
    CHECK(l->bits_machine == 10);
    CHECK(l->bits_time == 43);
  }
  SUBCASE("exactly 32 bits of time") {
    o.bits_sequence = 15;
    o.bits_machine = 16;
    auto l = make_layout("sonyflake", o, std::nullopt);
    REQUIRE(l.ok());
    CHECK(l->bits_time == 32);
    o.bits_sequence = 16;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() ==
          "16 sequence bits and 16 machine bits leave 31 bits of time; time needs at least 32 (sequence + machine at "
          "most 31)");
  }
  SUBCASE("no machine bits") {
    o.bits_machine = 0;
    auto l = make_layout("sonyflake", o, std::nullopt);
    REQUIRE(l.ok());
    CHECK(l->max_machine() == 0);
    CHECK(l->bits_time == 55);
  }
  SUBCASE("bits out of range") {
    o.bits_sequence = 32;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "--bits-sequence 32 is out of range (1 to 31)");
    o.bits_sequence.reset();
    o.bits_machine = 32;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "--bits-machine 32 is out of range (0 to 31)");
    o.bits_machine = -1;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "--bits-machine -1 is out of range (0 to 31)");
  }
  SUBCASE("epochs") {
    o.epoch_ms = -1;
    CHECK(make_layout("sonyflake", o, std::nullopt).message() == "epoch must not be before 1970-01-01T00:00:00Z");
    o.epoch_ms = 0;
    CHECK(make_layout("sonyflake", o, 0).ok());
    o.epoch_ms = 1795673557370;
    CHECK(make_layout("sonyflake", o, 1795673557370).ok());  // now is not the future
    CHECK(make_layout("sonyflake", o, 1795673557369).message() == "epoch 2026-11-26T06:12:37.370Z is in the future");
  }
  SUBCASE("every preset is accepted today") {
    for (const auto& name : zaptid::layout_preset_names()) CHECK(make_layout(name, {}, 1795673557370).ok());
  }
  SUBCASE("a layout whose end does not fit 64-bit milliseconds") {
    o.unit_ms = int64_t{1} << 30;  // 12 days a tick, 39 bits of ticks
    auto l = make_layout("sonyflake", o, std::nullopt);
    REQUIRE_FALSE(l.ok());
    CHECK(l.message() ==
          "a time unit of 1073741824ms with 39 bits of time ends past the largest time zaptid can represent; use "
          "a shorter --time-unit or fewer time bits");
    o.unit_ms = 10'000;  // 10 s a tick still ends in the year 176,000
    CHECK(make_layout("sonyflake", o, std::nullopt).ok());
  }
}

TEST_CASE("layout::ends") {
  CHECK(preset("snowflake").exhausted_at_ms() == 1288834974657 + (int64_t{1} << 41));
  CHECK(preset("sonyflake-v2").exhausted_at_ms() == 1735689600000 + (int64_t{1} << 39) * 10);
  const Layout l = preset("sonyflake");
  CHECK(l.tick_start_ms(l.max_time() + 1) == l.exhausted_at_ms());
}
