// The HTTP/2 policer (lib/server/http2_policer.h) reads every byte a client sends: any bytes,
// cut anywhere, give the same verdict and counts as when fed at once, and a verdict once
// reached stays.
#include "fuzz_check.h"
#include "server/http2_policer.h"

using zaptid::server::Http2Policer;
using zaptid::server::PolicerLimits;
using zaptid::server::ResetBudget;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  // Small limits, so inputs reach every verdict; 0 (off) included.
  const PolicerLimits limits{uint32_t{data[0]} % 8, uint32_t{data[1]} % 8, uint32_t{data[2]} % 64,
                             static_cast<uint32_t>(data[0] >> 3) % 16};
  const size_t cut = data[3] % (size - 3);
  data += 4;
  size -= 4;
  ResetBudget shared_whole(limits.resets_per_second * 2);
  ResetBudget shared_parts(limits.resets_per_second * 2);
  Http2Policer whole;
  whole.restart(limits, &shared_whole);
  const auto at_once = whole.feed(data, size, 0);
  Http2Policer parts;
  parts.restart(limits, &shared_parts);
  const auto first = parts.feed(data, cut, 0);
  const auto then = parts.feed(data + cut, size - cut, 0);
  FUZZ_CHECK(then == at_once);
  FUZZ_CHECK(first == Http2Policer::Verdict::kOk || first == then);
  FUZZ_CHECK(whole.resets_in_window() == parts.resets_in_window());
  FUZZ_CHECK(whole.control_frames_in_window() == parts.control_frames_in_window());
  FUZZ_CHECK(whole.streams_opened() == parts.streams_opened());
  using V = Http2Policer::Verdict;
  if (at_once == V::kStreamResets) FUZZ_CHECK(whole.resets_in_window() == limits.resets_per_second + 1);
  if (at_once == V::kControlFrames) FUZZ_CHECK(whole.control_frames_in_window() > limits.control_frames_per_second);
  if (at_once == V::kStreamsBeforeAck) FUZZ_CHECK(whole.streams_opened() == limits.streams_before_ack + 1);
  FUZZ_CHECK((Http2Policer::reason(at_once).empty()) == (at_once == V::kOk || at_once == V::kNotHttp2));
  return 0;
}
