// Layouts from options and from record keys: make_layout() with any preset name and overrides,
// and layout_from_key() with any text. Every layout accepted must keep its invariants.
#include <cstring>
#include <string>

#include "core/layout.h"
#include "core/parse.h"
#include "core/record.h"
#include "fuzz_check.h"

using namespace zaptid;

namespace {

bool same(const Layout& a, const Layout& b) {
  return a.epoch_ms == b.epoch_ms && a.unit_ms == b.unit_ms && a.bits_time == b.bits_time &&
         a.bits_sequence == b.bits_sequence && a.bits_machine == b.bits_machine &&
         a.machine_above_sequence == b.machine_above_sequence;
}

void check_layout(const Layout& l, uint64_t probe) {
  FUZZ_CHECK(l.bits_time + l.bits_sequence + l.bits_machine == 63);
  FUZZ_CHECK(l.bits_time >= 32 && l.bits_sequence >= 1 && l.bits_machine >= 0);
  FUZZ_CHECK(l.unit_ms >= 1 && l.epoch_ms >= 0);
  // The key names the layout: it reads back to the same parts.
  const auto again = layout_from_key(l.key());
  FUZZ_CHECK(again && same(*again, l) && again->key() == l.key());
  // decompose and compose are inverses on the 63 usable bits.
  const uint64_t id = probe & INT64_MAX;
  const Parts p = l.decompose(id);
  FUZZ_CHECK(p.msb == 0 && p.time <= l.max_time() && p.sequence <= l.max_sequence() && p.machine <= l.max_machine());
  FUZZ_CHECK(l.compose(p.time, p.sequence, p.machine) == id);
  // Every tick's start is a time decode prints and compose --time reads back to that tick.
  for (const uint64_t tick : {p.time, l.max_time()}) {
    const int64_t ms = l.tick_start_ms(tick);
    FUZZ_CHECK(ms >= l.epoch_ms);
    const auto back = parse_timestamp_ms(format_timestamp_ms(ms), "--time");
    FUZZ_CHECK(back && *back == ms);
    FUZZ_CHECK(static_cast<uint64_t>((*back - l.epoch_ms) / l.unit_ms) == tick);
  }
  FUZZ_CHECK(l.exhausted_at_ms() > l.tick_start_ms(l.max_time()));
}

template <typename T>
T take(const uint8_t*& data, size_t& size) {
  T v{};
  const size_t n = std::min(size, sizeof v);
  std::memcpy(&v, data, n);
  data += n;
  size -= n;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The whole input as a record's layout key.
  if (const auto l = layout_from_key(fuzz::as_text(data, size))) check_layout(*l, size);

  // Then: flags, overrides, an ID to probe, and the rest as the preset name.
  const auto flags = take<uint8_t>(data, size);
  LayoutOverrides o;
  const auto epoch = take<int64_t>(data, size);
  const auto unit = take<int64_t>(data, size);
  const auto seq = take<int8_t>(data, size);
  const auto machine = take<int8_t>(data, size);
  const auto probe = take<uint64_t>(data, size);
  if (flags & 1) o.epoch_ms = epoch;
  if (flags & 2) o.unit_ms = unit;
  if (flags & 4) o.bits_sequence = seq;
  if (flags & 8) o.bits_machine = machine;
  const std::string presets[] = {"sonyflake", "sonyflake-v2", "snowflake"};
  const std::string preset = (flags & 16) ? std::string(fuzz::as_text(data, size)) : presets[(flags >> 5) % 3];
  const auto l = make_layout(preset, o, (flags & 128) ? std::optional<int64_t>(epoch / 2) : std::nullopt);
  if (!l) {
    fuzz::check_message(l.message());
    return 0;
  }
  check_layout(*l, probe);
  return 0;
}
