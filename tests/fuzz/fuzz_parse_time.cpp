// Times (--epoch, compose --time, etcd holder records): RFC 3339 or Unix milliseconds. Checks
// that format_timestamp_ms() and parse_timestamp_ms() are inverses: decode's timestamp is always
// something compose --time reads back.
#include <cstring>

#include "core/parse.h"
#include "fuzz_check.h"

using namespace zaptid;

namespace {
// 0000-01-01T00:00:00Z: the earliest time RFC 3339 can write.
constexpr int64_t kYearZeroMs = -62167219200000;

void check_round_trip(int64_t ms) {
  if (ms < kYearZeroMs) return;
  const std::string text = format_timestamp_ms(ms);
  const auto back = parse_timestamp_ms(text, "--time");
  if (!back || *back != ms) {
    std::fprintf(stderr, "%lld formats as %s, which reads back as %s\n", static_cast<long long>(ms), text.c_str(),
                 back ? std::to_string(*back).c_str() : back.message().c_str());
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto t = parse_timestamp_ms(fuzz::as_text(data, size), "--time");
  if (t) {
    check_round_trip(*t);
  } else {
    fuzz::check_message(t.message());
  }
  // Any 64-bit millisecond value from the same bytes.
  if (size >= 8) {
    int64_t ms = 0;
    std::memcpy(&ms, data, sizeof ms);
    check_round_trip(ms);
  }
  return 0;
}
