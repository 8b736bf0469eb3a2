#include "cmd_compose.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "core/parse.h"
#include "option_checks.h"

namespace zaptid::cli {
void setup_compose(CLI::App& app, Action& action) {
  auto opt = std::make_shared<ComposeOptions>();
  auto* sub = app.add_subcommand("compose", "Build the ID of given parts (the inverse of decode)");
  auto* time = sub->add_option("--time", opt->time, "Time: RFC 3339, Unix milliseconds, or 'now'");
  auto* tick = sub->add_option("--tick", opt->tick, "The raw time field (units since the epoch), as decode prints it")
                   ->transform(decimal_only());
  time->excludes(tick);
  sub->add_option("--sequence", opt->sequence, "Sequence (default 0, or the largest with --max)")
      ->transform(decimal_only());
  sub->add_option("--machine-id", opt->machine_id, "Machine id (default 0, or the largest with --max)")
      ->transform(decimal_only());
  sub->add_flag("--max", opt->max, "Give unset parts their largest value: the last ID of that time");
  add_id_format_option(*sub, opt->format);
  add_layout_options(*sub, opt->layout);
  sub->footer(
      "Examples: zaptid compose --time 2026-11-26T00:00:00Z        # first ID at that time\n"
      "          zaptid compose --time 2026-11-26T00:00:00Z --max  # last ID at that time");
  sub->callback([opt, &action] { action = [opt] { return run_compose(*opt); }; });
}

int run_compose(const ComposeOptions& opt) {
  const Layout layout = resolve_layout(opt.layout);
  uint64_t tick = 0;
  if (opt.tick) {
    tick = *opt.tick;
  } else if (!opt.time.empty()) {
    const int64_t ms = opt.time == "now" ? SystemClock().now().count() / 1'000'000
                                         : take(parse_timestamp_ms(opt.time, "--time"), kExitUsage);
    if (ms < layout.epoch_ms) {
      throw Fatal(kExitUsage, fmt::format("--time {} is before the layout's epoch {}", format_timestamp_ms(ms),
                                          format_timestamp_ms(layout.epoch_ms)));
    }
    tick = static_cast<uint64_t>((ms - layout.epoch_ms) / layout.unit_ms);
  } else {
    throw Fatal(kExitUsage, "compose needs --time or --tick");
  }
  if (tick > layout.max_time()) {
    throw Fatal(kExitUsage, fmt::format("time field {} does not fit the layout's {} time bits (the layout ends at {})",
                                        tick, layout.bits_time, format_timestamp_ms(layout.exhausted_at_ms())));
  }
  const auto part = [&](const std::optional<uint64_t>& v, uint64_t max, std::string_view name) {
    if (!v) return opt.max ? max : 0;
    if (*v > max) throw Fatal(kExitUsage, fmt::format("{} {} does not fit the layout (0 to {})", name, *v, max));
    return *v;
  };
  const uint64_t seq = part(opt.sequence, layout.max_sequence(), "--sequence");
  const uint64_t machine = part(opt.machine_id, layout.max_machine(), "--machine-id");
  Output out;
  append_id(out.buffer(), opt.format, layout.compose(tick, seq, machine));
  out.flush();
  return kExitOk;
}

}  // namespace zaptid::cli
