// The rapid-reset counter (lib/server/reset_counter.h) reads every byte a client sends: any
// bytes, cut anywhere, give the same verdict as when fed at once, and a verdict once reached
// stays.
#include "fuzz_check.h"
#include "server/reset_counter.h"

using zaptid::server::ResetCounter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint32_t limit = data[0] % 8;  // small limits, so inputs reach kOverLimit
  const size_t cut = data[1] % (size - 1);
  data += 2;
  size -= 2;
  ResetCounter whole;
  whole.restart(limit);
  const auto at_once = whole.feed(data, size, 0);
  ResetCounter parts;
  parts.restart(limit);
  const auto first = parts.feed(data, cut, 0);
  const auto then = parts.feed(data + cut, size - cut, 0);
  FUZZ_CHECK(then == at_once);
  FUZZ_CHECK(first == ResetCounter::Verdict::kOk || first == then);
  FUZZ_CHECK(whole.resets_in_window() == parts.resets_in_window());
  if (at_once == ResetCounter::Verdict::kOverLimit) FUZZ_CHECK(whole.resets_in_window() == limit + 1);
  return 0;
}
