#include "layout_options.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "core/parse.h"
#include "option_checks.h"

namespace zaptid::cli {

void add_layout_options(CLI::App& app, LayoutOptions& opt) {
  const std::string group = "Layout";
  app.add_option("--layout", opt.layout, "ID layout preset: sonyflake, sonyflake-v2 or snowflake")
      ->envname("ZAPTID_LAYOUT")
      ->capture_default_str()
      ->group(group);
  app.add_option("--epoch", opt.epoch, "Override the epoch: RFC 3339 or Unix milliseconds")
      ->check(not_empty())
      ->envname("ZAPTID_EPOCH")
      ->group(group);
  app.add_option("--time-unit", opt.time_unit, "Override the time unit, at least 1ms (e.g. 10ms)")
      ->check(not_empty())
      ->envname("ZAPTID_TIME_UNIT")
      ->group(group);
  app.add_option("--bits-sequence", opt.bits_sequence, "Override the sequence bits (1-31)")
      ->transform(decimal_only())
      ->envname("ZAPTID_BITS_SEQUENCE")
      ->group(group);
  app.add_option("--bits-machine", opt.bits_machine, "Override the machine id bits (0-31)")
      ->transform(decimal_only())
      ->envname("ZAPTID_BITS_MACHINE")
      ->group(group);
}

Layout resolve_layout(const LayoutOptions& opt) {
  LayoutOverrides o;
  if (!opt.epoch.empty()) o.epoch_ms = take(parse_timestamp_ms(opt.epoch, "--epoch"), kExitUsage);
  if (!opt.time_unit.empty()) {
    const auto unit = take(parse_duration(opt.time_unit, "--time-unit"), kExitUsage);
    if (unit.count() % 1000 != 0) {
      throw Fatal(kExitUsage, fmt::format("--time-unit {} must be a whole number of milliseconds", quote_input(opt.time_unit)));
    }
    o.unit_ms = unit.count() / 1000;
  }
  o.bits_sequence = opt.bits_sequence;
  o.bits_machine = opt.bits_machine;
  // Only an --epoch the user chose can be "in the future" (a usage error); a preset's epoch ahead of
  // the clock means the clock is wrong, which the generator reports as such (exit 1), and decode
  // and compose never need the clock at all.
  std::optional<int64_t> now_ms;
  if (o.epoch_ms) now_ms = SystemClock().now().count() / 1'000'000;
  return take(make_layout(opt.layout, o, now_ms), kExitUsage);
}

}  // namespace zaptid::cli
