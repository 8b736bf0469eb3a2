// server::ResetCounter: HTTP/2 byte streams cut at every place, windows on a given clock.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "server/reset_counter.h"

namespace zaptid::server {
namespace {

using Bytes = std::vector<uint8_t>;
using V = ResetCounter::Verdict;

const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

void append_frame(Bytes& out, uint8_t type, uint32_t stream, const Bytes& payload) {
  const auto n = static_cast<uint32_t>(payload.size());
  for (uint8_t b : {uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n), type, uint8_t{0}, uint8_t(stream >> 24),
                    uint8_t(stream >> 16), uint8_t(stream >> 8), uint8_t(stream)}) {
    out.push_back(b);
  }
  out.insert(out.end(), payload.begin(), payload.end());
}

/// The preface, SETTINGS, then `resets` times a HEADERS frame and its RST_STREAM.
Bytes rapid_reset(int resets) {
  Bytes out(kPreface.begin(), kPreface.end());
  append_frame(out, 0x4, 0, {});
  for (int k = 0; k < resets; ++k) {
    const auto stream = static_cast<uint32_t>(2 * k + 1);
    append_frame(out, 0x1, stream, Bytes(40, 0x82));
    append_frame(out, 0x3, stream, {0, 0, 0, 8});
  }
  return out;
}

V feed(ResetCounter& c, const Bytes& b, int64_t now_ms = 0) { return c.feed(b.data(), b.size(), now_ms); }

TEST_CASE("server::ResetCounter limit per second") {
  ResetCounter c;
  c.restart(10);
  CHECK(feed(c, rapid_reset(10)) == V::kOk);
  CHECK(c.resets_in_window() == 10);

  c.restart(10);
  CHECK(feed(c, rapid_reset(11)) == V::kOverLimit);
  CHECK(feed(c, Bytes{0}) == V::kOverLimit);  // stays decided
}

TEST_CASE("server::ResetCounter windows") {
  ResetCounter c;
  c.restart(10);
  Bytes head(kPreface.begin(), kPreface.end());
  REQUIRE(feed(c, head, 0) == V::kOk);
  Bytes ten;
  for (uint32_t s = 1; s <= 19; s += 2) append_frame(ten, 0x3, s, {0, 0, 0, 8});
  CHECK(feed(c, ten, 0) == V::kOk);
  CHECK(feed(c, ten, 999 + 1000) == V::kOk);  // a new window
  CHECK(c.resets_in_window() == 10);
  Bytes one;
  append_frame(one, 0x3, 99, {0, 0, 0, 8});
  CHECK(feed(c, one, 2500) == V::kOverLimit);  // 11 within [1999, 2999)
}

TEST_CASE("server::ResetCounter bytes cut anywhere") {
  const Bytes all = rapid_reset(6);
  for (size_t cut = 1; cut < all.size(); ++cut) {
    ResetCounter c;
    c.restart(5);
    const V first = c.feed(all.data(), cut, 0);
    const V rest = c.feed(all.data() + cut, all.size() - cut, 0);
    CAPTURE(cut);
    CHECK(first != V::kNotHttp2);
    CHECK(rest == V::kOverLimit);
  }
  ResetCounter one_by_one;
  one_by_one.restart(6);
  for (uint8_t b : all) REQUIRE(one_by_one.feed(&b, 1, 0) == V::kOk);
  CHECK(one_by_one.resets_in_window() == 6);
}

TEST_CASE("server::ResetCounter payloads are skipped, not read as frames") {
  ResetCounter c;
  c.restart(1);
  Bytes b(kPreface.begin(), kPreface.end());
  // A DATA frame whose payload is a run of RST_STREAM frame headers.
  Bytes fake;
  for (uint32_t s = 1; s < 40; s += 2) append_frame(fake, 0x3, s, {0, 0, 0, 8});
  append_frame(b, 0x0, 1, fake);
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.resets_in_window() == 0);
}

TEST_CASE("server::ResetCounter not HTTP/2") {
  ResetCounter c;
  c.restart(1);
  CHECK(feed(c, Bytes{0x16, 0x03, 0x01, 0x02, 0x00}) == V::kNotHttp2);  // a TLS ClientHello
  c.restart(1);
  const std::string get = "GET /metrics HTTP/1.1\r\n";
  CHECK(feed(c, Bytes(get.begin(), get.end())) == V::kNotHttp2);
  c.restart(1);
  CHECK(feed(c, Bytes(kPreface.begin(), kPreface.begin() + 10)) == V::kOk);  // undecided yet
}

TEST_CASE("server::ResetCounter limit 0 counts without closing") {
  ResetCounter c;
  c.restart(0);
  CHECK(feed(c, rapid_reset(5000)) == V::kOk);
  CHECK(c.resets_in_window() == 5000);
}

}  // namespace
}  // namespace zaptid::server
