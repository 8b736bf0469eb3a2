#include "cmd_gen.h"

#include <spdlog/spdlog.h>

#include "core/parse.h"
#include "option_checks.h"

namespace zaptid::cli {
void setup_gen(CLI::App& app, Action& action) {
  auto opt = std::make_shared<GenOptions>();
  auto* sub = app.add_subcommand("gen", "Generate IDs locally, without a server");
  sub->add_option("-n,--count", opt->count, "How many IDs to print, one per line")
      ->transform(decimal_only())
      ->check(CLI::Range(uint64_t{1}, UINT64_MAX))
      ->capture_default_str();
  add_id_format_option(*sub, opt->format);
  add_layout_options(*sub, opt->layout);
  add_identity_options(*sub, opt->identity);
  sub->footer("Example: zaptid gen --count 3 --machine-id 5");
  sub->callback([opt, &action] { action = [opt] { return run_gen(*opt); }; });
}

int run_gen(const GenOptions& opt) {
  const Layout layout = resolve_layout(opt.layout);
  SystemClock clock;
  // A one-shot process reserves little ahead: a crash costs the next run at most this wait.
  LocalIssuer issuer = open_local_issuer(layout, opt.identity, clock, std::chrono::milliseconds(100));
  spdlog::debug("machine id {} from {}", issuer.machine.id, issuer.machine.source);
  if (!issuer.machine.warning.empty()) spdlog::warn("{}", issuer.machine.warning);

  Generator& gen = *issuer.generator;
  // One tick's worth per block: output flows at the layout's pace instead of in bursts. At most
  // 4096, so memory stays flat for layouts with wide sequences too (2^24 IDs a tick took 690 MB).
  const uint64_t per_block = std::min({layout.max_sequence() + 1, gen.max_block(), uint64_t{4096}});
  Output out;
  std::vector<uint64_t> ids(per_block);
  for (uint64_t left = opt.count; left > 0 && !out.closed();) {
    const uint64_t n = std::min(left, per_block);
    auto block = gen.next_block(n);
    if (!block) {
      out.flush();
      issuer.release();
      throw Fatal(exit_status_for(block.error()), block.message());
    }
    gen.write_ids(*block, ids.data());
    for (uint64_t i = 0; i < n; ++i) append_id(out.buffer(), opt.format, ids[i]);
    out.maybe_flush();
    left -= n;
  }
  out.flush();
  issuer.release();
  return kExitOk;
}

}  // namespace zaptid::cli
