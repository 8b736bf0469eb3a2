// --layout and its overrides, shared by gen, decode, compose and serve.
#pragma once

#include <optional>
#include <string>

#include "core/layout.h"
#include "subcommand.h"

namespace zaptid::cli {

/// --layout, --epoch, --time-unit, --bits-sequence, --bits-machine.
struct LayoutOptions {
  std::string layout = "sonyflake";
  std::string epoch;
  std::string time_unit;
  std::optional<int> bits_sequence;
  std::optional<int> bits_machine;
};
void add_layout_options(CLI::App& app, LayoutOptions& opt);
/// The layout, or Fatal(kExitUsage). Refuses an epoch in the future.
Layout resolve_layout(const LayoutOptions& opt);

}  // namespace zaptid::cli
