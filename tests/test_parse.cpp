// Parsers of what users type, and the exact messages they answer bad input with.
#include <doctest/doctest.h>

#include <string>

#include "core/parse.h"

using namespace std::chrono_literals;
using zaptid::format_duration_ms;
using zaptid::format_timestamp_ms;
using zaptid::is_port_only;
using zaptid::parse_bytes;
using zaptid::parse_duration;
using zaptid::parse_id;
using zaptid::parse_timestamp_ms;
using zaptid::parse_unsigned;
using zaptid::escape_control;
using zaptid::kFirstMsPastYear9999;
using zaptid::quote_input;

namespace {

std::string not_a_time(const std::string& text) {
  return "--time '" + text + "' is not a time: expected RFC 3339 (2014-09-01T00:00:00Z) or Unix milliseconds";
}

int64_t timestamp(const std::string& text) {
  auto ms = parse_timestamp_ms(text, "--time");
  REQUIRE_MESSAGE(ms.ok(), ms.message());
  return *ms;
}

}  // namespace

TEST_CASE("parse::parse_unsigned") {
  SUBCASE("values") {
    CHECK(*parse_unsigned("0", 10, "--count") == 0);
    CHECK(*parse_unsigned("007", 10, "--count") == 7);
    CHECK(*parse_unsigned("10", 10, "--count") == 10);
    CHECK(*parse_unsigned("18446744073709551615", UINT64_MAX, "--count") == UINT64_MAX);
  }
  SUBCASE("over the maximum") {
    CHECK(parse_unsigned("11", 10, "--count").message() == "--count 11 is out of range (at most 10)");
    CHECK(parse_unsigned("18446744073709551616", UINT64_MAX, "--count").message() ==
          "--count '18446744073709551616' is out of range (at most 18446744073709551615)");
    CHECK(parse_unsigned("99999999999999999999999", 5, "--count").message() ==
          "--count '99999999999999999999999' is out of range (at most 5)");
  }
  SUBCASE("not a number") {
    for (const std::string text : {"", "-1", "+1", " 1", "1 ", "0x10", "1.5", "1e3", "one", "1_000"}) {
      CAPTURE(text);
      auto v = parse_unsigned(text, UINT64_MAX, "--count");
      REQUIRE_FALSE(v.ok());
      CHECK(v.error().kind == zaptid::ErrorKind::kInvalidArgument);
      CHECK(v.message() == "--count '" + text + "' is not a non-negative integer");
    }
  }
}

TEST_CASE("parse::parse_id") {
  SUBCASE("decimal and hex") {
    CHECK(*parse_id("647842057989128197") == 647842057989128197u);
    CHECK(*parse_id("0x8fd98eb59000005") == 647842057989128197u);
    CHECK(*parse_id("0x08FD98EB59000005") == 647842057989128197u);
    CHECK(*parse_id("0X08fd98eb59000005") == 647842057989128197u);
    CHECK(*parse_id("0") == 0);
    CHECK(*parse_id("0x0") == 0);
    CHECK(*parse_id("18446744073709551615") == UINT64_MAX);  // decode shows any 64-bit value
    CHECK(*parse_id("0xffffffffffffffff") == UINT64_MAX);
  }
  SUBCASE("larger than 64 bits") {
    CHECK(parse_id("18446744073709551616").message() == "'18446744073709551616' is not an ID: larger than 64 bits");
    CHECK(parse_id("0x10000000000000000").message() == "'0x10000000000000000' is not an ID: larger than 64 bits");
  }
  SUBCASE("not a number") {
    for (const std::string text :
         {"", "-1", "+1", "0x", "0x-1", "0x+1", "0xg", "x10", "12abc", "1.0", " 1", "abc", "99999999999999999999x",
          "0x1ffffffffffffffffz"}) {
      CAPTURE(text);
      CHECK(parse_id(text).message() == "'" + text + "' is not an ID: expected a decimal number or 0x-prefixed hex");
    }
  }
}

TEST_CASE("parse::is_port_only") {
  CHECK(is_port_only(":8888"));
  CHECK(is_port_only(":0"));
  CHECK_FALSE(is_port_only(":"));
  CHECK_FALSE(is_port_only("::1"));
  CHECK_FALSE(is_port_only(":88a"));
  CHECK_FALSE(is_port_only("localhost:8888"));
  CHECK_FALSE(is_port_only(""));
}

TEST_CASE("parse::parse_bytes") {
  CHECK(*parse_bytes("4096", UINT64_MAX, "--max-memory") == 4096);
  CHECK(*parse_bytes("0", UINT64_MAX, "--max-memory") == 0);
  CHECK(*parse_bytes("512KiB", UINT64_MAX, "--max-memory") == 512u << 10);
  CHECK(*parse_bytes("64MiB", UINT64_MAX, "--max-memory") == 64u << 20);
  CHECK(*parse_bytes("2GiB", UINT64_MAX, "--max-memory") == uint64_t{2} << 30);
  CHECK(parse_bytes("3GiB", uint64_t{2} << 30, "--max-memory").message() ==
        "--max-memory '3GiB' is too large (at most 2147483648 bytes)");
  for (const std::string text : {"", "MiB", "64M", "64mib", "1.5GiB", "-1", "64 MiB", "0x10"}) {
    CAPTURE(text);
    CHECK(parse_bytes(text, UINT64_MAX, "--max-memory").message() ==
          "--max-memory '" + text + "' is not a size (examples: 4096, 512KiB, 64MiB, 1GiB)");
  }
}

TEST_CASE("parse::parse_duration") {
  SUBCASE("units and fractions") {
    CHECK(*parse_duration("250us", "--lock-timeout") == 250us);
    CHECK(*parse_duration("10ms", "--lock-timeout") == 10ms);
    CHECK(*parse_duration("0.5ms", "--lock-timeout") == 500us);
    CHECK(*parse_duration("1s", "--lock-timeout") == 1s);
    CHECK(*parse_duration("1.5s", "--lock-timeout") == 1500ms);
    CHECK(*parse_duration("2m", "--lock-timeout") == 2min);
    CHECK(*parse_duration("1.25h", "--lock-timeout") == 75min);
    CHECK(*parse_duration("0", "--lock-timeout") == 0us);
    CHECK(*parse_duration("0ms", "--lock-timeout") == 0us);
    CHECK(*parse_duration("1.0005ms", "--lock-timeout") == 1001us);  // rounded to the microsecond
  }
  SUBCASE("not a duration") {
    for (const std::string text :
         {"", "10", "ms", "10 ms", "10sec", "10S", "-1s", "+1s", "1e3ms", "1..5s", "1,5s", "1s2ms", "1d", "nanms"}) {
      CAPTURE(text);
      auto d = parse_duration(text, "--lock-timeout");
      REQUIRE_FALSE(d.ok());
      CHECK(d.error().kind == zaptid::ErrorKind::kInvalidArgument);
      CHECK(d.message() == "--lock-timeout '" + text + "' is not a duration (examples: 500ms, 1s, 1.5s, 2m)");
    }
  }
  SUBCASE("too long") {
    CHECK(parse_duration("300000h", "--max-clock-wait").message() == "--max-clock-wait '300000h' is too long");
    CHECK(parse_duration("277777h", "--max-clock-wait").ok());
  }
}

TEST_CASE("parse::parse_timestamp_ms") {
  SUBCASE("RFC 3339 in UTC") {
    CHECK(timestamp("2014-09-01T00:00:00Z") == 1409529600000);
    CHECK(timestamp("2026-11-26T06:12:37.370Z") == 1795673557370);
    CHECK(timestamp("2026-11-26t06:12:37.370z") == 1795673557370);
    CHECK(timestamp("2026-11-26 06:12:37.370Z") == 1795673557370);
  }
  SUBCASE("fractions") {
    CHECK(timestamp("2026-11-26T06:12:37.37Z") == 1795673557370);
    CHECK(timestamp("2026-11-26T06:12:37.3Z") == 1795673557300);
    CHECK(timestamp("2026-11-26T06:12:37.370999999Z") == 1795673557370);  // truncated, never rounded up
    CHECK(timestamp("2026-11-26T06:12:37.000Z") == 1795673557000);
  }
  SUBCASE("offsets") {
    CHECK(timestamp("2026-11-26T07:12:37.370+01:00") == 1795673557370);
    CHECK(timestamp("2026-11-26T00:42:37.370-05:30") == 1795673557370);
    CHECK(timestamp("2026-11-26T06:12:37.370+00:00") == 1795673557370);
    CHECK(timestamp("2026-11-26T06:12:37.370-00:00") == 1795673557370);
    CHECK(timestamp("2026-11-27T05:12:37.370+23:00") == 1795673557370);
  }
  SUBCASE("leap years and leap seconds") {
    CHECK(timestamp("2024-02-29T12:00:00Z") == 1709208000000);
    CHECK(timestamp("2000-02-29T00:00:00Z") == 951782400000);
    CHECK(timestamp("2016-12-31T23:59:60Z") == 1483228799000);  // a leap second reads as :59
  }
  SUBCASE("before 1970") {
    CHECK(timestamp("1969-12-31T23:59:59.999Z") == -1);
    CHECK(timestamp("1960-01-01T00:00:00Z") == -315619200000);
  }
  SUBCASE("Unix milliseconds") {
    CHECK(timestamp("1795673557370") == 1795673557370);
    CHECK(timestamp("0") == 0);
    CHECK(timestamp("9223372036854775807") == INT64_MAX);
    CHECK(parse_timestamp_ms("9223372036854775808", "--time").message() ==
          "--time 9223372036854775808 is out of range (at most 9223372036854775807)");
  }
  SUBCASE("not a time") {
    for (const std::string text :
         {"", "now", "-5", "1.5", "2025-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
          "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z",
          "2026-01-01T23:60:00Z", "2026-01-01T00:00:61Z", "2026-11-26T06:12:37", "2026-11-26", "2026-11-26T06:12Z",
          "2026-11-26T06:12:37.Z", "2026-11-26T06:12:37ZZ", "2026-11-26T06:12:37+0100", "2026-11-26T06:12:37+24:00",
          "2026-11-26T06:12:37+01:60", "2026-11-26X06:12:37Z", "26-11-26T06:12:37Z", " 2026-11-26T06:12:37Z",
          "2026-11-26T06:12:37Z "}) {
      CAPTURE(text);
      auto ms = parse_timestamp_ms(text, "--time");
      REQUIRE_FALSE(ms.ok());
      CHECK(ms.error().kind == zaptid::ErrorKind::kInvalidArgument);
      CHECK(ms.message() == not_a_time(text));
    }
  }
}

TEST_CASE("parse::format_timestamp_ms") {
  CHECK(format_timestamp_ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(format_timestamp_ms(1795673557370) == "2026-11-26T06:12:37.370Z");
  CHECK(format_timestamp_ms(951782400000) == "2000-02-29T00:00:00.000Z");
  CHECK(format_timestamp_ms(253402300799999) == "9999-12-31T23:59:59.999Z");
  CHECK(format_timestamp_ms(-1) == "1969-12-31T23:59:59.999Z");
  CHECK(format_timestamp_ms(-86400000) == "1969-12-31T00:00:00.000Z");
  CHECK(format_timestamp_ms(-86400001) == "1969-12-30T23:59:59.999Z");
  CHECK(format_timestamp_ms(-315619200000) == "1960-01-01T00:00:00.000Z");

  SUBCASE("round trips, before and after 1970") {
    // A stride that is no multiple of a day, hour or second visits every kind of date.
    for (int64_t ms = -4'000'000'000'000; ms < 8'000'000'000'000; ms += 7'777'777'777) {
      CAPTURE(ms);
      const std::string text = format_timestamp_ms(ms);
      REQUIRE(timestamp(text) == ms);
    }
    for (int64_t ms = -100'000; ms <= 100'000; ms += 7) REQUIRE(timestamp(format_timestamp_ms(ms)) == ms);
  }
}

TEST_CASE("parse::format_duration_ms") {
  CHECK(format_duration_ms(0) == "0ms");
  CHECK(format_duration_ms(999) == "999ms");
  CHECK(format_duration_ms(1000) == "1.000s");
  CHECK(format_duration_ms(1500) == "1.500s");
  CHECK(format_duration_ms(61001) == "61.001s");
}

TEST_CASE("parse::format_timestamp_ms past year 9999") {
  // RFC 3339 has four-digit years; from 10000-01-01 on the Unix milliseconds are printed instead,
  // which parse_timestamp_ms reads back (decode's timestamp is always valid compose --time).
  CHECK(format_timestamp_ms(kFirstMsPastYear9999 - 1) == "9999-12-31T23:59:59.999Z");
  CHECK(format_timestamp_ms(kFirstMsPastYear9999) == "253402300800000");
  CHECK(format_timestamp_ms(INT64_MAX) == "9223372036854775807");
  for (const int64_t ms : {kFirstMsPastYear9999 - 1, kFirstMsPastYear9999, int64_t{4611686018427387903}, INT64_MAX}) {
    CAPTURE(ms);
    CHECK(timestamp(format_timestamp_ms(ms)) == ms);
  }
}

TEST_CASE("parse::quote_input") {
  CHECK(quote_input("abc") == "'abc'");
  CHECK(quote_input("") == "''");
  SUBCASE("control bytes, quotes, backslashes and bytes past ASCII are escaped") {
    CHECK(quote_input(std::string_view("a\nb\tc\rd\x01\x7f\0", 10)) == "'a\\nb\\tc\\rd\\x01\\x7f\\x00'");
    CHECK(quote_input("it's a\\b") == "'it\\'s a\\\\b'");
    CHECK(quote_input("\xc3\xa9") == "'\\xc3\\xa9'");
  }
  SUBCASE("at most 64 bytes, then the length") {
    CHECK(quote_input(std::string(64, 'x')) == "'" + std::string(64, 'x') + "'");
    CHECK(quote_input(std::string(65, 'x')) == "'" + std::string(64, 'x') + "'... (65 bytes)");
    CHECK(quote_input(std::string(100000, '\n')).size() == 2 + 64 * 2 + std::string_view("... (100000 bytes)").size());
  }
  SUBCASE("every parser quotes with it") {
    const std::string bad = "1\n" + std::string(100, '2');
    const std::string quoted = quote_input(bad);
    CHECK(parse_id(bad).message() == quoted + " is not an ID: expected a decimal number or 0x-prefixed hex");
    CHECK(parse_unsigned(bad, 9, "--count").message() == "--count " + quoted + " is not a non-negative integer");
    CHECK(parse_duration(bad, "--timeout").message() ==
          "--timeout " + quoted + " is not a duration (examples: 500ms, 1s, 1.5s, 2m)");
    CHECK(parse_timestamp_ms(bad, "--epoch").message() ==
          "--epoch " + quoted + " is not a time: expected RFC 3339 (2014-09-01T00:00:00Z) or Unix milliseconds");
  }
  CHECK(escape_control("a\nb'c\\\xc3\xa9") == "a\\nb'c\\\xc3\xa9");
}
