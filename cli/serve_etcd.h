// zaptid serve --machine-id-from etcd: the options, and lanes over machine ids leased from etcd.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "core/clock.h"
#include "core/layout.h"

namespace zaptid::cli {

struct Lanes;
struct ServeOptions;

/// --machine-id-from, --etcd-endpoints, --etcd-prefix, --lease-ttl, --machine-id-range, --etcd-ca,
/// --etcd-cert, --etcd-key (each with a ZAPTID_* twin).
struct EtcdOptions {
  std::string machine_id_from = "local";  ///< "local" (--machine-id or the host's IPv4) or "etcd"
  std::string endpoints;
  std::string prefix = "/zaptid/";
  std::string lease_ttl = "10s";
  std::string machine_id_range;  ///< empty: the whole machine field
  std::string ca;
  std::string cert;
  std::string key;
  bool enabled() const { return machine_id_from == "etcd"; }
};
void add_etcd_options(CLI::App& app, EtcdOptions& opt);

/// Refuses etcd-only options without --machine-id-from etcd (Fatal kExitUsage).
void check_etcd_options(const ServeOptions& opt);

/// Leases opt.lanes machine ids from etcd and makes a generator for each. Throws Fatal:
/// kExitUsage for bad options, kExitFailure when etcd cannot be reached, the range is full or a
/// recorded high-water is too far ahead of the clock.
Lanes open_etcd_lanes(const ServeOptions& opt, const Layout& layout, Clock& clock);

}  // namespace zaptid::cli
