// ID layouts: how time, sequence and machine id share the 63 usable bits of an ID.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace zaptid {

/// The parts of an ID. `time` counts layout time units since the layout's epoch.
struct Parts {
  uint64_t msb = 0;  ///< the top bit; 0 for every ID zaptid issues
  uint64_t time = 0;
  uint64_t sequence = 0;
  uint64_t machine = 0;
};

/// A layout: bits_time + bits_sequence + bits_machine == 63, the top bit is always 0, so every
/// ID fits a signed 64-bit column. Value type; immutable after construction by make_layout().
struct Layout {
  std::string name;  ///< preset name, or "custom" once any part was overridden
  int64_t epoch_ms = 0;  ///< start of the time field, Unix milliseconds
  int64_t unit_ms = 1;   ///< one tick of the time field, milliseconds (>= 1)
  int bits_time = 0;
  int bits_sequence = 0;
  int bits_machine = 0;
  bool machine_above_sequence = false;  ///< Snowflake order; Sonyflake puts sequence above machine

  uint64_t max_time() const { return (uint64_t{1} << bits_time) - 1; }
  uint64_t max_sequence() const { return (uint64_t{1} << bits_sequence) - 1; }
  uint64_t max_machine() const { return (uint64_t{1} << bits_machine) - 1; }

  /// The ID of these parts. Precondition: each part fits its field.
  uint64_t compose(uint64_t time, uint64_t sequence, uint64_t machine) const;
  /// Splits any 64-bit value into parts (msb is the top bit).
  Parts decompose(uint64_t id) const;

  /// Unix milliseconds at which a tick starts.
  int64_t tick_start_ms(uint64_t tick) const { return epoch_ms + static_cast<int64_t>(tick) * unit_ms; }
  /// Unix milliseconds after which no ID can be issued: the start of tick max_time() + 1.
  int64_t exhausted_at_ms() const;
  /// IDs per second one machine id can issue at most.
  double ceiling_per_second() const;
  /// A canonical name of the parts (not the preset name): records name the layout that wrote
  /// them, and zaptid 0.1.0 named its state files by it. Equal keys, equal layouts.
  std::string key() const;
};

/// The preset names, in the order help text lists them.
std::vector<std::string> layout_preset_names();

/// Overrides of a preset's parts; unset fields keep the preset's value.
struct LayoutOverrides {
  std::optional<int64_t> epoch_ms;
  std::optional<int64_t> unit_ms;
  std::optional<int> bits_sequence;
  std::optional<int> bits_machine;
};

/// Builds a layout from a preset and overrides. bits_time is what the others leave of 63 and must
/// be at least 32. `now_ms`, when given, refuses an epoch in the future. Errors name the bad part.
Result<Layout> make_layout(std::string_view preset, const LayoutOverrides& overrides,
                           std::optional<int64_t> now_ms);

}  // namespace zaptid
