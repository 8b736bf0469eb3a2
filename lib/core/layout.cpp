#include "core/layout.h"

#include <fmt/format.h>

#include "core/parse.h"

namespace zaptid {
namespace {

constexpr int kUsableBits = 63;
constexpr int kMinTimeBits = 32;

struct Preset {
  std::string_view name;
  Layout layout;
};

// 2014-09-01T00:00:00Z (sonyflake v1), 2025-01-01T00:00:00Z (sonyflake v2), 1288834974657 (Twitter).
const Preset kPresets[] = {
    {"sonyflake", {"sonyflake", 1409529600000, 10, 39, 8, 16, false}},
    {"sonyflake-v2", {"sonyflake-v2", 1735689600000, 10, 39, 8, 16, false}},
    {"snowflake", {"snowflake", 1288834974657, 1, 41, 12, 10, true}},
};

}  // namespace

uint64_t Layout::compose(uint64_t time, uint64_t sequence, uint64_t machine) const {
  const auto low = machine_above_sequence ? (machine << bits_sequence) | sequence
                                          : (sequence << bits_machine) | machine;
  return (time << (bits_sequence + bits_machine)) | low;
}

Parts Layout::decompose(uint64_t id) const {
  Parts p;
  p.msb = id >> 63;
  p.time = (id >> (bits_sequence + bits_machine)) & max_time();
  if (machine_above_sequence) {
    p.machine = (id >> bits_sequence) & max_machine();
    p.sequence = id & max_sequence();
  } else {
    p.sequence = (id >> bits_machine) & max_sequence();
    p.machine = id & max_machine();
  }
  return p;
}

int64_t Layout::exhausted_at_ms() const {
  // (max_time()+1) * unit_ms can exceed int64 for wide time fields with coarse units; saturate.
  const uint64_t ticks = max_time() + 1;
  const auto room = static_cast<uint64_t>(INT64_MAX - epoch_ms) / static_cast<uint64_t>(unit_ms);
  if (ticks > room) return INT64_MAX;
  return epoch_ms + static_cast<int64_t>(ticks) * unit_ms;
}

double Layout::ceiling_per_second() const {
  return static_cast<double>(max_sequence() + 1) * 1000.0 / static_cast<double>(unit_ms);
}

std::string Layout::key() const {
  return fmt::format("e{}-u{}-t{}-s{}-m{}-{}", epoch_ms, unit_ms, bits_time, bits_sequence, bits_machine,
                     machine_above_sequence ? "ms" : "sm");
}

std::vector<std::string> layout_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

Result<Layout> make_layout(std::string_view preset, const LayoutOverrides& o, std::optional<int64_t> now_ms) {
  const Layout* base = nullptr;
  for (const auto& p : kPresets) {
    if (p.name == preset) base = &p.layout;
  }
  if (base == nullptr) {
    return invalid(fmt::format("unknown layout {} (known: {})", quote_input(preset), fmt::join(layout_preset_names(), ", ")));
  }
  Layout l = *base;
  const bool custom = o.epoch_ms || o.unit_ms || o.bits_sequence || o.bits_machine;
  if (o.unit_ms) {
    if (*o.unit_ms < 1) return invalid("time unit must be at least 1ms");
    l.unit_ms = *o.unit_ms;
  }
  if (o.bits_sequence) {
    if (*o.bits_sequence < 1 || *o.bits_sequence > 31) {
      return invalid(fmt::format("--bits-sequence {} is out of range (1 to 31)", *o.bits_sequence));
    }
    l.bits_sequence = *o.bits_sequence;
  }
  if (o.bits_machine) {
    if (*o.bits_machine < 0 || *o.bits_machine > 31) {
      return invalid(fmt::format("--bits-machine {} is out of range (0 to 31)", *o.bits_machine));
    }
    l.bits_machine = *o.bits_machine;
  }
  l.bits_time = kUsableBits - l.bits_sequence - l.bits_machine;
  if (l.bits_time < kMinTimeBits) {
    return invalid(fmt::format("{} sequence bits and {} machine bits leave {} bits of time; time needs at least {} "
                               "(sequence + machine at most {})",
                               l.bits_sequence, l.bits_machine, l.bits_time, kMinTimeBits,
                               kUsableBits - kMinTimeBits));
  }
  if (o.epoch_ms) l.epoch_ms = *o.epoch_ms;
  if (l.epoch_ms < 0) return invalid("epoch must not be before 1970-01-01T00:00:00Z");
  // Every tick's start must be a Unix millisecond that fits int64: decode prints it for any ID.
  const auto room = static_cast<uint64_t>(INT64_MAX - l.epoch_ms) / static_cast<uint64_t>(l.unit_ms);
  if (l.max_time() + 1 > room) {
    return invalid(fmt::format("a time unit of {}ms with {} bits of time ends past the largest time zaptid can "
                               "represent; use a shorter --time-unit or fewer time bits",
                               l.unit_ms, l.bits_time));
  }
  if (now_ms && l.epoch_ms > *now_ms) {
    return invalid(fmt::format("epoch {} is in the future", format_timestamp_ms(l.epoch_ms)));
  }
  if (custom) l.name = "custom";
  return l;
}

}  // namespace zaptid
