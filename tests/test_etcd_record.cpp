// The pure parts of the etcd lease: id ranges, keys, the holder record, the high-water value.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "core/layout.h"
#include "etcd/leased_lanes.h"
#include "etcd/record.h"

using namespace zaptid;
using namespace zaptid::etcd;

TEST_CASE("etcd::parse_id_range") {
  SUBCASE("a range") {
    auto r = parse_id_range("3-7", 65535, "--machine-id-range");
    REQUIRE(r.ok());
    CHECK(r->first == 3);
    CHECK(r->last == 7);
    CHECK(r->size() == 5);
  }
  SUBCASE("one id") {
    auto r = parse_id_range("9", 65535, "--machine-id-range");
    REQUIRE(r.ok());
    CHECK(r->first == 9);
    CHECK(r->last == 9);
  }
  SUBCASE("reversed, too large, not a number") {
    for (const char* bad : {"7-3", "0-65536", "a-b", "1-", "-"}) {
      auto r = parse_id_range(bad, 65535, "--machine-id-range");
      REQUIRE_FALSE(r.ok());
      CHECK(r.message() == fmt::format("--machine-id-range '{}' must be A-B with 0 <= A <= B <= 65535", bad));
    }
  }
}

TEST_CASE("etcd::keys") {
  CHECK(machine_key("/zaptid/", 12) == "/zaptid/machines/12");
  CHECK(highwater_key("/zaptid/", 12) == "/zaptid/highwater/12");
  CHECK(normalize_prefix("/zaptid").value() == "/zaptid/");
  CHECK(normalize_prefix("/a/b//").value() == "/a/b/");
  CHECK(normalize_prefix("/").message() == "--etcd-prefix must name a key prefix such as /zaptid/");
  CHECK(prefix_end("/zaptid/machines/") == "/zaptid/machines0");
  CHECK(prefix_end(std::string("a\xff", 2)) == "b");
}

TEST_CASE("etcd::holder record") {
  Holder h;
  h.host = "web 1";
  h.pid = 4242;
  h.addresses = "10.0.0.5:50051,[::1]:50051";
  h.started_ms = 1'764'140'400'000;
  h.high_water = 123456;
  const auto text = format_holder(h);
  CHECK(text ==
        "host=web_1 pid=4242 addr=10.0.0.5:50051,[::1]:50051 started=2025-11-26T07:00:00.000Z high_water=123456");
  auto back = parse_holder(text);
  REQUIRE(back.ok());
  CHECK(back->host == "web_1");
  CHECK(back->pid == 4242);
  CHECK(back->addresses == h.addresses);
  CHECK(back->started_ms == h.started_ms);
  CHECK(back->high_water == h.high_water);
  CHECK(describe_holder(3, *back) ==
        "id 3 (web_1 pid 4242 at 10.0.0.5:50051,[::1]:50051 since 2025-11-26T07:00:00.000Z)");
  CHECK(parse_holder("host=x pid=zz").message() == "holder record has a bad pid 'zz'");
  CHECK(parse_holder("someone else's value").ok());
}

TEST_CASE("etcd::high-water value") {
  CHECK(parse_high_water("987\n", "/z/highwater/1").value() == 987);
  CHECK(format_high_water(987) == "987");
  auto bad = parse_high_water("soon", "/z/highwater/1");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().kind == ErrorKind::kCorrupt);
  CHECK(bad.message() == "/z/highwater/1 holds 'soon', not a cursor (a decimal number)");
}

TEST_CASE("etcd::check_high_water") {
  using std::chrono::milliseconds;
  LayoutOverrides o;
  auto layout = make_layout("sonyflake", o, 1'764'140'400'000).value();
  const int64_t now_ms = 1'764'140'400'000;
  const uint64_t now_tick = static_cast<uint64_t>((now_ms - layout.epoch_ms) / layout.unit_ms);
  const Cursor at_now = now_tick << layout.bits_sequence;
  CHECK(check_high_water(layout, 1, at_now, now_ms, milliseconds(1000), milliseconds(0)).ok());
  const Cursor ahead = (now_tick + 50) << layout.bits_sequence;  // 500 ms ahead
  CHECK(check_high_water(layout, 1, ahead, now_ms, milliseconds(1000), milliseconds(0)).ok());
  const Cursor far = (now_tick + 500) << layout.bits_sequence;  // 5 s ahead
  auto st = check_high_water(layout, 1, far, now_ms, milliseconds(1000), milliseconds(0));
  REQUIRE_FALSE(st.ok());
  CHECK(st.message() ==
        "machine id 1 was last used up to 2025-11-26T07:00:05.000Z, 5.000s ahead of this host's clock; refusing to "
        "wait longer than --max-clock-wait 1.000s plus the 0ms reserved ahead (fix the clock, or raise "
        "--max-clock-wait)");
  // A window reserved ahead by a predecessor is waited out, up to its size and no further.
  CHECK(check_high_water(layout, 1, far, now_ms, milliseconds(1000), milliseconds(4000)).ok());
  CHECK_FALSE(check_high_water(layout, 1, far, now_ms, milliseconds(1000), milliseconds(3990)).ok());
}
