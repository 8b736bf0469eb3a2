// Choosing the machine id: flag, environment, then the host's addresses (never the real host's).
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "core/layout.h"
#include "core/machine_id.h"

using zaptid::choose_machine_id;
using zaptid::HostAddress;
using zaptid::is_private_ipv4;
using zaptid::Layout;

namespace {

constexpr uint32_t ip(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return a << 24 | b << 16 | c << 8 | d; }

Layout preset(const char* name) {
  auto l = zaptid::make_layout(name, {}, std::nullopt);
  REQUIRE(l.ok());
  return *l;
}

const std::optional<std::string> kNone;

}  // namespace

TEST_CASE("machine_id::is_private_ipv4") {
  CHECK(is_private_ipv4(ip(10, 0, 0, 0)));
  CHECK(is_private_ipv4(ip(10, 255, 255, 255)));
  CHECK_FALSE(is_private_ipv4(ip(9, 255, 255, 255)));
  CHECK_FALSE(is_private_ipv4(ip(11, 0, 0, 0)));
  CHECK_FALSE(is_private_ipv4(ip(172, 15, 255, 255)));
  CHECK(is_private_ipv4(ip(172, 16, 0, 0)));
  CHECK(is_private_ipv4(ip(172, 31, 255, 255)));
  CHECK_FALSE(is_private_ipv4(ip(172, 32, 0, 0)));
  CHECK(is_private_ipv4(ip(192, 168, 0, 0)));
  CHECK(is_private_ipv4(ip(192, 168, 255, 255)));
  CHECK_FALSE(is_private_ipv4(ip(192, 167, 255, 255)));
  CHECK_FALSE(is_private_ipv4(ip(192, 169, 0, 0)));
  CHECK(is_private_ipv4(ip(169, 254, 0, 1)));
  CHECK_FALSE(is_private_ipv4(ip(169, 253, 0, 1)));
  CHECK_FALSE(is_private_ipv4(ip(169, 255, 0, 1)));
  CHECK_FALSE(is_private_ipv4(ip(127, 0, 0, 1)));
  CHECK_FALSE(is_private_ipv4(ip(8, 8, 8, 8)));
  CHECK(zaptid::format_ipv4(ip(192, 168, 1, 254)) == "192.168.1.254");
}

TEST_CASE("machine_id::choose_machine_id") {
  const Layout sony = preset("sonyflake");
  const std::vector<HostAddress> addresses{
      {ip(127, 0, 0, 1), "lo"}, {ip(8, 8, 4, 4), "wan0"}, {ip(10, 1, 2, 3), "eth0"}, {ip(192, 168, 7, 9), "eth1"}};

  SUBCASE("the flag beats the environment beats the addresses") {
    auto c = choose_machine_id(std::string("3"), std::string("4"), addresses, sony);
    REQUIRE(c.ok());
    CHECK(c->id == 3);
    CHECK(c->source == "--machine-id");
    CHECK(c->warning.empty());
    c = choose_machine_id(kNone, std::string("4"), addresses, sony);
    REQUIRE(c.ok());
    CHECK(c->id == 4);
    CHECK(c->source == "ZAPTID_MACHINE_ID");
    c = choose_machine_id(kNone, kNone, addresses, sony);
    REQUIRE(c.ok());
    CHECK(c->id == (2u << 8 | 3u));
    CHECK(c->source == "the low 16 bits of private IPv4 10.1.2.3 (eth0)");
    CHECK(c->warning.empty());
  }
  SUBCASE("the first private address wins, public ones and loopback are passed over") {
    const std::vector<HostAddress> list{{ip(127, 0, 1, 1), "lo"}, {ip(172, 32, 0, 1), "a"}, {ip(172, 15, 0, 1), "b"},
                                        {ip(172, 31, 1, 2), "c"}, {ip(169, 254, 3, 4), "d"}};
    auto c = choose_machine_id(kNone, kNone, list, sony);
    REQUIRE(c.ok());
    CHECK(c->id == (1u << 8 | 2u));
    CHECK(c->source == "the low 16 bits of private IPv4 172.31.1.2 (c)");
    c = choose_machine_id(kNone, kNone, {{ip(169, 254, 3, 4), "d"}}, sony);
    REQUIRE(c.ok());
    CHECK(c->id == (3u << 8 | 4u));
  }
  SUBCASE("a public address works, with a warning") {
    auto c = choose_machine_id(kNone, kNone, {{ip(127, 0, 0, 1), "lo"}, {ip(8, 8, 4, 4), "wan0"}}, sony);
    REQUIRE(c.ok());
    CHECK(c->id == (4u << 8 | 4u));
    CHECK(c->source == "the low 16 bits of public IPv4 8.8.4.4 (wan0)");
    CHECK(c->warning ==
          "machine id 1028 comes from a non-private address and is not guaranteed unique; set --machine-id");
  }
  SUBCASE("nothing usable") {
    const std::string message =
        "no machine id: no non-loopback IPv4 address to derive one from; set --machine-id or ZAPTID_MACHINE_ID";
    auto c = choose_machine_id(kNone, kNone, {}, sony);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().kind == zaptid::ErrorKind::kInvalidArgument);
    CHECK(c.message() == message);
    CHECK(choose_machine_id(kNone, kNone, {{ip(127, 0, 0, 1), "lo"}, {ip(127, 1, 2, 3), "lo"}, {0, "none"}}, sony)
              .message() == message);
  }
  SUBCASE("the layout's machine bits") {
    const Layout snow = preset("snowflake");
    auto c = choose_machine_id(kNone, kNone, {{ip(192, 168, 5, 255), "eth0"}}, snow);
    REQUIRE(c.ok());
    CHECK(c->id == 0x1FF);  // the low 10 bits of 0x05FF
    CHECK(c->source == "the low 10 bits of private IPv4 192.168.5.255 (eth0)");
    CHECK(choose_machine_id(std::string("1023"), kNone, {}, snow)->id == 1023);
    zaptid::LayoutOverrides o;
    o.bits_machine = 0;
    auto none = zaptid::make_layout("sonyflake", o, std::nullopt);
    REQUIRE(none.ok());
    CHECK(choose_machine_id(kNone, kNone, addresses, *none)->id == 0);
  }
  SUBCASE("explicit ids that do not fit or are not numbers") {
    const Layout snow = preset("snowflake");
    CHECK(choose_machine_id(std::string("1024"), kNone, addresses, snow).message() ==
          "--machine-id 1024 does not fit the layout's 10 machine bits (0 to 1023)");
    CHECK(choose_machine_id(kNone, std::string("65536"), addresses, sony).message() ==
          "ZAPTID_MACHINE_ID 65536 does not fit the layout's 16 machine bits (0 to 65535)");
    CHECK(choose_machine_id(std::string("99999999999999999999"), kNone, addresses, sony).message() ==
          "--machine-id 99999999999999999999 does not fit the layout's 16 machine bits (0 to 65535)");
    CHECK(choose_machine_id(std::string("x"), std::string("4"), addresses, sony).message() ==
          "--machine-id 'x' is not a non-negative integer");
    CHECK(choose_machine_id(std::string("-1"), kNone, addresses, sony).message() ==
          "--machine-id '-1' is not a non-negative integer");
    CHECK(choose_machine_id(std::string(""), kNone, addresses, sony).message() ==
          "--machine-id '' is not a non-negative integer");
    CHECK(choose_machine_id(kNone, std::string("0x5"), addresses, sony).message() ==
          "ZAPTID_MACHINE_ID '0x5' is not a non-negative integer");
    // A bad explicit id is refused, never replaced by one from the addresses.
    CHECK(choose_machine_id(kNone, std::string("5 "), addresses, sony).error().kind ==
          zaptid::ErrorKind::kInvalidArgument);
  }
}
