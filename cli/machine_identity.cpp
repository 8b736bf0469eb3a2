#include "machine_identity.h"

#include <cstdlib>
#include <vector>

#include "option_checks.h"

namespace zaptid::cli {

void add_identity_options(CLI::App& app, IdentityOptions& opt) {
  const std::string group = "Identity";
  app.add_option("--machine-id", opt.machine_id,
                 "Machine id (env ZAPTID_MACHINE_ID); default: low bits of the host's private IPv4")
      ->group(group);
  app.add_option("--state-dir", opt.state_dir,
                 "Folder for this user's record of the IDs issued; default $XDG_STATE_HOME/zaptid, else "
                 "~/.local/state/zaptid, else /var/lib/zaptid. (The host's record, shared by every user, is in "
                 "/var/tmp/zaptid, or ZAPTID_HOST_DIR)")
      ->check(not_empty())
      ->envname("ZAPTID_STATE_DIR")
      ->group(group);
  app.add_option("--max-clock-wait", opt.max_clock_wait,
                 "How long to wait for a clock that stepped back before failing")
      ->envname("ZAPTID_MAX_CLOCK_WAIT")
      ->capture_default_str()
      ->group(group);
  app.add_option("--lock-timeout", opt.lock_timeout,
                 "How long to wait while another process on this host (any user) uses the same machine id")
      ->envname("ZAPTID_LOCK_TIMEOUT")
      ->capture_default_str()
      ->group(group);
}

std::filesystem::path host_dir() {
  if (const char* e = std::getenv("ZAPTID_HOST_DIR"); e != nullptr && e[0] != '\0') return e;
  return HostClaim::default_host_dir();
}

LocalIssuer open_local_issuer(const Layout& layout, const IdentityOptions& opt, Clock& clock,
                              std::chrono::milliseconds reserve_ahead, const ReserverWrapper& wrap) {
  const auto max_wait = duration_ms(opt.max_clock_wait, "--max-clock-wait");
  const auto lock_timeout = duration_ms(opt.lock_timeout, "--lock-timeout");
  std::optional<std::string> env;
  if (const char* e = std::getenv("ZAPTID_MACHINE_ID"); e != nullptr && e[0] != '\0') env = e;
  // Only derive from addresses when nothing explicit was given: getifaddrs is not free.
  const auto addresses = (opt.machine_id || env) ? std::vector<HostAddress>{} : host_ipv4_addresses();
  LocalIssuer issuer;
  issuer.machine = take(choose_machine_id(opt.machine_id, env, addresses, layout), kExitUsage);

  HostClaimOptions c;
  c.layout = layout;
  c.machine_id = issuer.machine.id;
  c.state_dir = opt.state_dir.empty() ? HostClaim::default_state_dir() : std::filesystem::path(opt.state_dir);
  c.host_dir = host_dir();
  c.timeout = lock_timeout;
  c.clock = &clock;
  c.max_clock_wait = max_wait;
  issuer.claim = take(HostClaim::acquire(c), kExitFailure);

  GeneratorOptions g;
  g.layout = layout;
  g.machine_id = issuer.machine.id;
  g.clock = &clock;
  g.max_clock_wait = max_wait;
  g.start_after = issuer.claim->start_after();
  if (wrap) issuer.wrapped = wrap(*issuer.claim);
  g.reserver = issuer.wrapped ? issuer.wrapped.get() : issuer.claim.get();
  g.reserve_ahead = reserve_ahead;
  issuer.generator = take(Generator::create(std::move(g)), kExitUsage);
  return issuer;
}

void LocalIssuer::release() {
  if (!claim) return;
  auto st = claim->release(generator ? generator->last_reserved() : std::nullopt);
  if (!st) throw Fatal(kExitFailure, st.message());
}

}  // namespace zaptid::cli
