#include "server/reset_counter.h"

#include <algorithm>
#include <string_view>

namespace zaptid::server {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr uint8_t kRstStream = 0x3;
constexpr int64_t kWindowMs = 1000;

}  // namespace

void ResetCounter::restart(uint32_t limit) {
  *this = ResetCounter{};
  limit_ = limit;
}

ResetCounter::Verdict ResetCounter::feed(const uint8_t* data, size_t n, int64_t now_ms) {
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
      skip_ = uint32_t{header_[0]} << 16 | uint32_t{header_[1]} << 8 | header_[2];
      if (header_[3] != kRstStream) continue;
      if (now_ms - window_start_ms_ >= kWindowMs) {
        window_start_ms_ = now_ms;
        count_ = 0;
      }
      if (++count_ > limit_ && limit_ != 0) verdict_ = Verdict::kOverLimit;
    }
  }
  return verdict_;
}

}  // namespace zaptid::server
