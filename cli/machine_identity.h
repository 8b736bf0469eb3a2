// Who issues IDs on this host: the machine id and identity options, and the generator that
// holds this host's claim on it (gen, serve).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "core/generator.h"
#include "core/host_claim.h"
#include "core/layout.h"
#include "core/machine_id.h"
#include "subcommand.h"

namespace zaptid::cli {

/// --machine-id, --state-dir, --max-clock-wait, --lock-timeout: who issues IDs on this host.
struct IdentityOptions {
  std::optional<std::string> machine_id;
  std::string state_dir;
  std::string max_clock_wait = "1s";
  std::string lock_timeout = "5s";
};
void add_identity_options(CLI::App& app, IdentityOptions& opt);

/// A generator that holds this host's claim on its machine id.
struct LocalIssuer {
  MachineIdChoice machine;
  std::unique_ptr<HostClaim> claim;
  std::unique_ptr<Generator> generator;
  std::unique_ptr<Reserver> wrapped;  ///< the claim as the generator's reserver, if wrapped
  /// Records exactly what was issued and gives up the claim; for a clean exit.
  void release();
};
/// The folder every zaptid on this host shares: $ZAPTID_HOST_DIR, else HostClaim's default.
std::filesystem::path host_dir();
/// Chooses the machine id, takes the host claim and starts a generator above the records, which
/// writes them through `wrap` if given. Throws Fatal (kExitUsage for bad options, kExitFailure
/// otherwise).
LocalIssuer open_local_issuer(const Layout& layout, const IdentityOptions& opt, Clock& clock,
                              std::chrono::milliseconds reserve_ahead, const ReserverWrapper& wrap = {});

}  // namespace zaptid::cli
