// Counting a client's HTTP/2 stream resets, for the rapid-reset guard (CVE-2023-44487).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zaptid::server {

/// Follows the bytes a client sends on one connection as HTTP/2 (the connection preface, then
/// frames) and counts its RST_STREAM frames in one-second windows. It never buffers: a frame
/// header split across reads is carried over, payloads are skipped unread.
///
/// gRPC 1.51 creates a call for every stream a client opens, and a client that resets each
/// stream at once can open them faster than the server frees them (the stream limit does not
/// count reset streams): gigabytes within seconds. Counting resets in the bytes, before gRPC
/// parses them, lets the server close such a connection before its calls exist.
///
/// Not thread-safe: one reader per connection, as the transport reads it.
class ResetCounter {
 public:
  enum class Verdict {
    kOk,        ///< within the limit, or not decided yet
    kNotHttp2,  ///< the bytes did not start with the HTTP/2 client preface: stop feeding them
    kOverLimit, ///< more than `limit` RST_STREAM frames within one second: close the connection
  };

  /// Starts over for a new connection; `limit` RST_STREAM frames per second are allowed (0: any
  /// number).
  void restart(uint32_t limit);

  /// Feeds the next `n` bytes the client sent, received at `now_ms` (a monotonic clock). Once
  /// it returned kNotHttp2 or kOverLimit it returns the same until restart().
  Verdict feed(const uint8_t* data, size_t n, int64_t now_ms);

  /// RST_STREAM frames counted in the current window.
  uint32_t resets_in_window() const { return count_; }

 private:
  uint32_t limit_ = 0;
  Verdict verdict_ = Verdict::kOk;
  uint32_t preface_seen_ = 0;  // bytes of the connection preface matched so far
  uint8_t header_[9] = {};
  uint32_t header_have_ = 0;
  uint32_t skip_ = 0;  // payload bytes of the current frame still to come
  int64_t window_start_ms_ = 0;
  uint32_t count_ = 0;
};

}  // namespace zaptid::server
