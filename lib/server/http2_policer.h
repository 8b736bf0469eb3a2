// The HTTP/2 policer of zaptid serve: what one client may send before gRPC 1.51 parses it
// (docs/ARCHITECTURE.md, "Limits"; cli/net_guard.h puts it in front of gRPC's reads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>

namespace zaptid::server {

/// What one connection may send; 0 turns a limit off.
struct PolicerLimits {
  /// RST_STREAM frames per second (HTTP/2 rapid reset, CVE-2023-44487): --max-stream-resets.
  uint32_t resets_per_second = 1000;
  /// Streams the client may open before it acknowledges the server's SETTINGS: --max-streams.
  /// gRPC 1.51 enforces its stream limit only once the client has acknowledged it.
  uint32_t streams_before_ack = 32;
  /// Bytes of one header block (HEADERS and its CONTINUATION frames): twice gRPC's 8 KiB
  /// metadata limit, more than a valid request's headers take (gRPC 1.51's HPACK parser, CVE-2023-33953,
  /// spends seconds of CPU on one endless block).
  uint32_t header_block_bytes = kHeaderBlockBytes;
  /// Frames per second that carry no request, beyond 4 for each stream opened in that second:
  /// PING, SETTINGS, WINDOW_UPDATE, PRIORITY, CONTINUATION (a valid block needs none: it fits
  /// one frame), DATA without bytes or end, HEADERS that open no stream, and unknown types. A
  /// gRPC C++ or Python client sends about 2 WINDOW_UPDATE frames per call it makes.
  uint32_t control_frames_per_second = 10000;

  static constexpr uint32_t kHeaderBlockBytes = 16384;
};

/// Stream resets per second over all connections together, so a reset flood spread over many
/// connections, each under its own limit, is bounded too. Thread-safe.
class ResetBudget {
 public:
  /// `per_second` resets in each one-second window; 0: any number.
  explicit ResetBudget(uint32_t per_second) : limit_(per_second) {}
  /// Counts one reset received at `now_ms` (a monotonic clock); false once the current window
  /// holds more than the limit.
  bool take(int64_t now_ms);
  uint32_t limit() const { return limit_; }

 private:
  const uint32_t limit_;
  std::mutex mu_;
  int64_t window_start_ms_ = INT64_MIN / 2;  // under mu_
  uint32_t count_ = 0;                       // under mu_
};

/// Follows the bytes a client sends on one connection as HTTP/2 (the connection preface, then
/// frames) and decides whether the connection must be closed before gRPC reads them. It never
/// buffers: a frame header split across reads is carried over, payloads are skipped unread, so
/// it costs a few comparisons per frame whatever the client sends.
///
/// Each verdict names an attack gRPC 1.51 does not bound itself (measured in
/// docs/BENCHMARKS.md, "HTTP/2 floods"): without it, a client that never acknowledges SETTINGS
/// opened 243,500 streams in 3 s (3.0 GB); one endless header block took 11.7 s of CPU in 15 s
/// and every probe failed; floods of WINDOW_UPDATE, empty DATA or empty CONTINUATION frames
/// kept a server thread busy so that 4 of 6 probes failed. PING and SETTINGS floods and streams
/// opened past the limit after the acknowledgement are gRPC's own to refuse, and it does.
///
/// Not thread-safe: one reader per connection, as the transport reads it.
class Http2Policer {
 public:
  enum class Verdict {
    kOk,               ///< within the limits, or not decided yet
    kNotHttp2,         ///< the bytes did not start with the HTTP/2 client preface: stop feeding them
    kStreamResets,     ///< more than resets_per_second RST_STREAM frames within one second
    kServerResets,     ///< a reset while the server-wide ResetBudget was spent
    kStreamsBeforeAck, ///< more than streams_before_ack streams opened before the SETTINGS ACK
    kHeaderBlock,      ///< a header block longer than header_block_bytes
    kControlFrames,    ///< more frames that carry no request than control_frames_per_second allows
  };

  /// Starts over for a new connection. `shared` (may be null) is the server-wide reset budget;
  /// it must outlive the policer.
  void restart(const PolicerLimits& limits, ResetBudget* shared = nullptr);

  /// Feeds the next `n` bytes the client sent, received at `now_ms` (a monotonic clock). Once it
  /// returned anything but kOk it returns the same until restart(). Fed the same bytes cut
  /// anywhere, it reaches the same verdict.
  Verdict feed(const uint8_t* data, size_t n, int64_t now_ms);

  /// RST_STREAM frames counted in the current window.
  uint32_t resets_in_window() const { return resets_; }
  /// Frames that carry no request counted in the current window.
  uint32_t control_frames_in_window() const { return control_; }
  /// Streams opened so far (stream-opening HEADERS).
  uint32_t streams_opened() const { return opened_; }

  /// The metric label of a closing verdict: "stream_resets", "server_resets",
  /// "streams_before_ack", "header_block", "control_frames"; empty for kOk and kNotHttp2.
  static std::string_view reason(Verdict v);

 private:
  Verdict frame(int64_t now_ms);  // the frame header in header_ is complete

  PolicerLimits limits_;
  ResetBudget* shared_ = nullptr;
  Verdict verdict_ = Verdict::kOk;
  uint32_t preface_seen_ = 0;  // bytes of the connection preface matched so far
  uint8_t header_[9] = {};
  uint32_t header_have_ = 0;
  uint32_t skip_ = 0;  // payload bytes of the current frame still to come
  bool acked_ = false;        // the client acknowledged a SETTINGS of the server's
  bool in_block_ = false;     // a header block waits for its END_HEADERS
  uint32_t block_bytes_ = 0;  // payload bytes of that block so far
  uint32_t highest_stream_ = 0;
  uint32_t opened_ = 0;
  int64_t window_start_ms_ = INT64_MIN / 2;
  uint32_t resets_ = 0;
  uint32_t control_ = 0;
  uint32_t opened_in_window_ = 0;
};

}  // namespace zaptid::server
