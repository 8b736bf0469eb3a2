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
