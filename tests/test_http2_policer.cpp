// server::Http2Policer: HTTP/2 byte streams cut at every place, windows on a given clock, one
// case per attack it bounds.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "server/http2_policer.h"

namespace zaptid::server {
namespace {

using Bytes = std::vector<uint8_t>;
using V = Http2Policer::Verdict;

const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr uint8_t kData = 0x0, kHeaders = 0x1, kPriority = 0x2, kRst = 0x3, kSettings = 0x4, kPing = 0x6,
                  kWindowUpdate = 0x8, kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4;

void append_frame(Bytes& out, uint8_t type, uint32_t stream, const Bytes& payload, uint8_t flags = 0) {
  const auto n = static_cast<uint32_t>(payload.size());
  for (uint8_t b : {uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n), type, flags, uint8_t(stream >> 24),
                    uint8_t(stream >> 16), uint8_t(stream >> 8), uint8_t(stream)}) {
    out.push_back(b);
  }
  out.insert(out.end(), payload.begin(), payload.end());
}

/// The preface and the client's SETTINGS; with `ack`, also its ACK of the server's SETTINGS.
Bytes start(bool ack = true) {
  Bytes out(kPreface.begin(), kPreface.end());
  append_frame(out, kSettings, 0, {});
  if (ack) append_frame(out, kSettings, 0, {}, kAck);
  return out;
}

/// `count` whole requests' HEADERS on new streams from `first` (odd).
void append_streams(Bytes& out, uint32_t first, int count) {
  for (int k = 0; k < count; ++k) append_frame(out, kHeaders, first + 2 * static_cast<uint32_t>(k), Bytes(40, 0x82), kEndHeaders | kEndStream);
}

/// The preface, SETTINGS and its ACK, then `resets` times a HEADERS frame and its RST_STREAM.
Bytes rapid_reset(int resets, uint32_t first = 1) {
  Bytes out = start();
  for (int k = 0; k < resets; ++k) {
    const uint32_t stream = first + 2 * static_cast<uint32_t>(k);
    append_frame(out, kHeaders, stream, Bytes(40, 0x82), kEndHeaders);
    append_frame(out, kRst, stream, {0, 0, 0, 8});
  }
  return out;
}

PolicerLimits limits(uint32_t resets, uint32_t streams = 0, uint32_t block = 0, uint32_t control = 0) {
  return PolicerLimits{resets, streams, block, control};
}

V feed(Http2Policer& c, const Bytes& b, int64_t now_ms = 0) { return c.feed(b.data(), b.size(), now_ms); }

TEST_CASE("server::Http2Policer resets per second") {
  Http2Policer c;
  c.restart(limits(10));
  CHECK(feed(c, rapid_reset(10)) == V::kOk);
  CHECK(c.resets_in_window() == 10);

  c.restart(limits(10));
  CHECK(feed(c, rapid_reset(11)) == V::kStreamResets);
  CHECK(feed(c, Bytes{0}) == V::kStreamResets);  // stays decided
  CHECK(Http2Policer::reason(V::kStreamResets) == "stream_resets");
}

TEST_CASE("server::Http2Policer windows") {
  Http2Policer c;
  c.restart(limits(10));
  REQUIRE(feed(c, start(), 0) == V::kOk);
  Bytes ten;
  for (uint32_t s = 1; s <= 19; s += 2) append_frame(ten, kRst, s, {0, 0, 0, 8});
  CHECK(feed(c, ten, 0) == V::kOk);
  CHECK(feed(c, ten, 999 + 1000) == V::kOk);  // a new window
  CHECK(c.resets_in_window() == 10);
  Bytes one;
  append_frame(one, kRst, 99, {0, 0, 0, 8});
  CHECK(feed(c, one, 2500) == V::kStreamResets);  // 11 within [1999, 2999)
}

TEST_CASE("server::Http2Policer bytes cut anywhere") {
  Bytes all = rapid_reset(6);
  append_frame(all, kHeaders, 101, Bytes(30, 0x82));        // a block left open...
  append_frame(all, kContinuation, 101, Bytes(30, 0x82));   // ...and continued
  for (size_t cut = 1; cut < all.size(); ++cut) {
    Http2Policer c;
    c.restart(limits(5));
    const V first = c.feed(all.data(), cut, 0);
    const V rest = c.feed(all.data() + cut, all.size() - cut, 0);
    CAPTURE(cut);
    CHECK(first != V::kNotHttp2);
    CHECK(rest == V::kStreamResets);
  }
  Http2Policer one_by_one;
  one_by_one.restart(limits(6, 7, 60, 3));
  for (uint8_t b : all) REQUIRE(one_by_one.feed(&b, 1, 0) == V::kOk);
  CHECK(one_by_one.resets_in_window() == 6);
  CHECK(one_by_one.streams_opened() == 7);
  CHECK(one_by_one.control_frames_in_window() == 3);  // the SETTINGS, its ACK, the CONTINUATION
}

TEST_CASE("server::Http2Policer payloads are skipped, not read as frames") {
  Http2Policer c;
  c.restart(limits(1, 1, 100, 1));
  Bytes b(kPreface.begin(), kPreface.end());
  // A DATA frame whose payload is a run of frame headers of every kind policed.
  Bytes fake;
  for (uint32_t s = 1; s < 40; s += 2) {
    append_frame(fake, kRst, s, {0, 0, 0, 8});
    append_frame(fake, kHeaders, s, {});
    append_frame(fake, kPing, 0, Bytes(8, 0));
  }
  append_frame(b, kData, 1, fake);
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.resets_in_window() == 0);
  CHECK(c.streams_opened() == 0);
  CHECK(c.control_frames_in_window() == 0);
}

TEST_CASE("server::Http2Policer not HTTP/2") {
  Http2Policer c;
  c.restart(limits(1));
  CHECK(feed(c, Bytes{0x16, 0x03, 0x01, 0x02, 0x00}) == V::kNotHttp2);  // a TLS ClientHello
  c.restart(limits(1));
  const std::string get = "GET /metrics HTTP/1.1\r\n";
  CHECK(feed(c, Bytes(get.begin(), get.end())) == V::kNotHttp2);
  c.restart(limits(1));
  CHECK(feed(c, Bytes(kPreface.begin(), kPreface.begin() + 10)) == V::kOk);  // undecided yet
  CHECK(Http2Policer::reason(V::kNotHttp2).empty());
}

TEST_CASE("server::Http2Policer limits 0 count without closing") {
  Http2Policer c;
  c.restart(limits(0));
  Bytes b = rapid_reset(5000);
  append_frame(b, kHeaders, 20001, Bytes(1000, 0x82));
  for (int k = 0; k < 100; ++k) append_frame(b, kContinuation, 20001, Bytes(1000, 0x82));
  for (int k = 0; k < 20000; ++k) append_frame(b, kWindowUpdate, 0, {0, 0, 0, 1});
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.resets_in_window() == 5000);
  CHECK(c.control_frames_in_window() == 2 + 100 + 20000);  // SETTINGS, CONTINUATION, WINDOW_UPDATE
}

TEST_CASE("server::Http2Policer streams opened before the SETTINGS ACK") {
  Http2Policer c;
  c.restart(limits(0, 32));
  Bytes b = start(/*ack=*/false);
  append_streams(b, 1, 32);
  CHECK(feed(c, b) == V::kOk);
  Bytes one;
  append_streams(one, 65, 1);
  CHECK(feed(c, one) == V::kStreamsBeforeAck);
  CHECK(Http2Policer::reason(V::kStreamsBeforeAck) == "streams_before_ack");

  // Acknowledged, the limit is gRPC's own (it refuses streams past it), and not counted here.
  c.restart(limits(0, 32));
  b = start(/*ack=*/false);
  append_streams(b, 1, 10);
  append_frame(b, kSettings, 0, {}, kAck);
  append_streams(b, 21, 1000);
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.streams_opened() == 1010);

  // Trailers and HEADERS on an old stream id open nothing.
  c.restart(limits(0, 2));
  b = start(/*ack=*/false);
  append_streams(b, 1, 2);
  for (int k = 0; k < 10; ++k) append_frame(b, kHeaders, 3, Bytes(4, 0x82), kEndHeaders | kEndStream);
  append_frame(b, kHeaders, 2, Bytes(4, 0x82), kEndHeaders);  // an even id is not a client's stream
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.streams_opened() == 2);
}

TEST_CASE("server::Http2Policer one header block across CONTINUATION frames") {
  Http2Policer c;
  c.restart(limits(0, 0, 16384));
  Bytes b = start();
  append_frame(b, kHeaders, 1, Bytes(10000, 0x82));
  append_frame(b, kContinuation, 1, Bytes(6383, 0x82));
  append_frame(b, kContinuation, 1, Bytes(1, 0x82), kEndHeaders);  // 16384 bytes: the limit
  append_frame(b, kHeaders, 3, Bytes(16000, 0x82));                // a new block counts anew
  CHECK(feed(c, b) == V::kOk);
  Bytes more;
  append_frame(more, kContinuation, 3, Bytes(385, 0x82));
  CHECK(feed(c, more) == V::kHeaderBlock);
  CHECK(Http2Policer::reason(V::kHeaderBlock) == "header_block");

  // One HEADERS frame over the limit, END_HEADERS or not.
  c.restart(limits(0, 0, 100));
  b = start();
  append_frame(b, kHeaders, 1, Bytes(101, 0x82), kEndHeaders);
  CHECK(feed(c, b) == V::kHeaderBlock);

  // A CONTINUATION declared near 16 MiB is judged by its header, before its bytes come.
  c.restart(limits(0, 0, 16384));
  b = start();
  append_frame(b, kHeaders, 1, Bytes(10, 0x82));
  for (uint8_t x : {uint8_t{0xff}, uint8_t{0xff}, uint8_t{0xff}, kContinuation, uint8_t{0}, uint8_t{0}, uint8_t{0}, uint8_t{0}, uint8_t{1}}) b.push_back(x);
  CHECK(feed(c, b) == V::kHeaderBlock);
}

TEST_CASE("server::Http2Policer frames that carry no request") {
  auto flood = [](uint8_t type, uint8_t flags, const Bytes& payload, uint32_t stream, int count) {
    Bytes b = start();
    append_frame(b, kHeaders, 1, Bytes(40, 0x82), kEndHeaders);
    for (int k = 0; k < count; ++k) append_frame(b, type, stream, payload, flags);
    return b;
  };
  struct Case {
    const char* name;
    uint8_t type, flags;
    Bytes payload;
    uint32_t stream;
  };
  const Case cases[] = {
      {"PING", kPing, 0, Bytes(8, 0), 0},
      {"SETTINGS", kSettings, 0, {}, 0},
      {"WINDOW_UPDATE", kWindowUpdate, 0, {0, 0, 0, 1}, 0},
      {"PRIORITY", kPriority, 0, {0, 0, 0, 0, 16}, 5},
      {"empty DATA", kData, 0, {}, 1},
      {"CONTINUATION outside a block", kContinuation, 0, {}, 1},
      {"HEADERS on an open stream", kHeaders, kEndHeaders, {}, 1},
      {"an unknown type", 0x42, 0, Bytes(4, 0), 0},
  };
  for (const Case& k : cases) {
    CAPTURE(k.name);
    Http2Policer c;
    c.restart(limits(0, 0, 0, 100));
    // 100, and 4 for the stream flood() opened; start() sent 2 SETTINGS frames: 102 more fit.
    CHECK(feed(c, flood(k.type, k.flags, k.payload, k.stream, 102)) == V::kOk);
    Bytes one;
    append_frame(one, k.type, k.stream, k.payload, k.flags);
    CHECK(feed(c, one, 999) == V::kControlFrames);
    c.restart(limits(0, 0, 0, 100));
    CHECK(feed(c, flood(k.type, k.flags, k.payload, k.stream, 102)) == V::kOk);
    CHECK(feed(c, one, 1000) == V::kOk);  // the next window
  }

  // Requests are not control frames: DATA with bytes, or ending the stream; new streams.
  Http2Policer c;
  c.restart(limits(0, 0, 0, 3));
  Bytes b = start();
  append_streams(b, 1, 100);
  for (int k = 0; k < 100; ++k) append_frame(b, kData, 3, Bytes(5, 0));
  append_frame(b, kData, 5, {}, kEndStream);
  CHECK(feed(c, b) == V::kOk);
  CHECK(c.control_frames_in_window() == 2);
  CHECK(Http2Policer::reason(V::kControlFrames) == "control_frames");

  // Each stream opened in the window earns 4 (a gRPC client answers each response with about 2
  // WINDOW_UPDATE frames); streams of an earlier window earn nothing now.
  c.restart(limits(0, 0, 0, 10));
  b = start();
  append_streams(b, 1, 100);
  for (int k = 0; k < 408; ++k) append_frame(b, kWindowUpdate, 0, {0, 0, 0, 1});  // 2 + 408 = 10 + 400
  CHECK(feed(c, b, 0) == V::kOk);
  Bytes wu;
  append_frame(wu, kWindowUpdate, 0, {0, 0, 0, 1});
  CHECK(feed(c, wu, 999) == V::kControlFrames);
  c.restart(limits(0, 0, 0, 10));
  CHECK(feed(c, b, 0) == V::kOk);
  Bytes eleven;
  for (int k = 0; k < 11; ++k) append_frame(eleven, kWindowUpdate, 0, {0, 0, 0, 1});
  CHECK(feed(c, eleven, 1000) == V::kControlFrames);
}

TEST_CASE("server::ResetBudget bounds resets over all connections") {
  ResetBudget budget(10);
  Http2Policer a, b;
  a.restart(limits(100), &budget);
  b.restart(limits(100), &budget);
  CHECK(feed(a, rapid_reset(6), 0) == V::kOk);
  CHECK(feed(b, rapid_reset(4), 0) == V::kOk);  // 10 together: the limit
  Bytes one;
  append_frame(one, kRst, 1001, {0, 0, 0, 8});
  CHECK(feed(b, one, 10) == V::kServerResets);
  CHECK(Http2Policer::reason(V::kServerResets) == "server_resets");
  CHECK(feed(a, one, 500) == V::kServerResets);  // still the same window, for everyone
  Http2Policer c;
  c.restart(limits(100), &budget);
  CHECK(feed(c, rapid_reset(10), 1000) == V::kOk);  // a new window

  ResetBudget none(0);
  for (int k = 0; k < 100000; ++k) REQUIRE(none.take(0));
}

}  // namespace
}  // namespace zaptid::server
