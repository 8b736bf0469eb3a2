#include "server/http2_policer.h"

#include <algorithm>

namespace zaptid::server {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr int64_t kWindowMs = 1000;
constexpr uint32_t kControlFramesPerStream = 4;

// Frame types and flags (RFC 9113, section 6).
constexpr uint8_t kData = 0x0;
constexpr uint8_t kHeaders = 0x1;
constexpr uint8_t kRstStream = 0x3;
constexpr uint8_t kSettings = 0x4;
constexpr uint8_t kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1;
constexpr uint8_t kAck = 0x1;
constexpr uint8_t kEndHeaders = 0x4;

bool over(uint32_t count, uint32_t limit) { return limit != 0 && count > limit; }

}  // namespace

bool ResetBudget::take(int64_t now_ms) {
  if (limit_ == 0) return true;
  std::lock_guard lock(mu_);
  if (now_ms - window_start_ms_ >= kWindowMs) {
    window_start_ms_ = now_ms;
    count_ = 0;
  }
  if (count_ <= limit_) ++count_;  // saturates: the window is spent either way
  return count_ <= limit_;
}

void Http2Policer::restart(const PolicerLimits& limits, ResetBudget* shared) {
  *this = Http2Policer{};
  limits_ = limits;
  shared_ = shared;
}

std::string_view Http2Policer::reason(Verdict v) {
  switch (v) {
    case Verdict::kStreamResets: return "stream_resets";
    case Verdict::kServerResets: return "server_resets";
    case Verdict::kStreamsBeforeAck: return "streams_before_ack";
    case Verdict::kHeaderBlock: return "header_block";
    case Verdict::kControlFrames: return "control_frames";
    case Verdict::kOk:
    case Verdict::kNotHttp2: break;
  }
  return "";
}

Http2Policer::Verdict Http2Policer::frame(int64_t now_ms) {
  const uint32_t length = uint32_t{header_[0]} << 16 | uint32_t{header_[1]} << 8 | header_[2];
  const uint8_t type = header_[3];
  const uint8_t flags = header_[4];
  const uint32_t stream =
      (uint32_t{header_[5]} << 24 | uint32_t{header_[6]} << 16 | uint32_t{header_[7]} << 8 | header_[8]) & 0x7fffffffu;
  skip_ = length;
  if (now_ms - window_start_ms_ >= kWindowMs) {
    window_start_ms_ = now_ms;
    resets_ = 0;
    control_ = 0;
    opened_in_window_ = 0;
  }

  // A header block: its bytes add up over CONTINUATION frames until END_HEADERS.
  if (type == kHeaders || (type == kContinuation && in_block_)) {
    block_bytes_ = type == kHeaders ? length : block_bytes_ + std::min<uint32_t>(length, limits_.header_block_bytes + 1);
    in_block_ = (flags & kEndHeaders) == 0;
    if (over(block_bytes_, limits_.header_block_bytes)) return Verdict::kHeaderBlock;
  }

  bool request = false;  // does the frame carry (part of) a request?
  switch (type) {
    case kHeaders:
      // A stream opens with HEADERS on a client stream id above every earlier one.
      if (stream % 2 == 1 && stream > highest_stream_) {
        highest_stream_ = stream;
        ++opened_;
        ++opened_in_window_;
        request = true;
        if (!acked_ && over(opened_, limits_.streams_before_ack)) return Verdict::kStreamsBeforeAck;
      }
      break;
    case kData:
      request = length > 0 || (flags & kEndStream) != 0;
      break;
    case kRstStream:
      if (over(++resets_, limits_.resets_per_second)) return Verdict::kStreamResets;
      if (shared_ != nullptr && !shared_->take(now_ms)) return Verdict::kServerResets;
      request = true;  // counted above, not as a control frame
      break;
    case kSettings:
      if ((flags & kAck) != 0) acked_ = true;
      break;
    default:
      break;
  }
  // Clients answer the server's DATA with WINDOW_UPDATE frames: each call earns a few.
  if (!request && ++control_ > limits_.control_frames_per_second +
                                   uint64_t{kControlFramesPerStream} * opened_in_window_ &&
      limits_.control_frames_per_second != 0) {
    return Verdict::kControlFrames;
  }
  return Verdict::kOk;
}

Http2Policer::Verdict Http2Policer::feed(const uint8_t* data, size_t n, int64_t now_ms) {
  size_t i = 0;
  while (verdict_ == Verdict::kOk && i < n) {
    if (preface_seen_ < kPreface.size()) {
      if (static_cast<char>(data[i]) != kPreface[preface_seen_]) verdict_ = Verdict::kNotHttp2;
      ++preface_seen_;
      ++i;
    } else if (skip_ > 0) {
      const size_t take = std::min<size_t>(skip_, n - i);
      skip_ -= static_cast<uint32_t>(take);
      i += take;
    } else {
      header_[header_have_++] = data[i++];
      if (header_have_ < sizeof header_) continue;
      header_have_ = 0;
      verdict_ = frame(now_ms);
    }
  }
  return verdict_;
}

}  // namespace zaptid::server
