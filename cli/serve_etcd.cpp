#include "serve_etcd.h"

#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <memory>

#include "cmd_serve.h"
#include "core/parse.h"
#include "etcd/leased_lanes.h"
#include "option_checks.h"
#include "server/log_limit.h"
#include "server/id_service.h"
#include "server/store_metrics.h"

namespace zaptid::cli {

void add_etcd_options(CLI::App& app, EtcdOptions& opt) {
  const std::string group = "Machine ids from etcd";
  app.add_option("--machine-id-from", opt.machine_id_from,
                 "Where the machine ids come from: local (--machine-id or the host's IPv4) or etcd (leased, "
                 "never shared by two servers)")
      ->envname("ZAPTID_MACHINE_ID_FROM")
      ->check(CLI::IsMember({"local", "etcd"}))
      ->capture_default_str()
      ->group(group);
  app.add_option("--etcd-endpoints", opt.endpoints, "etcd members to use, host:port[,host:port...]")
      ->envname("ZAPTID_ETCD_ENDPOINTS")
      ->group(group);
  app.add_option("--etcd-prefix", opt.prefix, "Key prefix for zaptid's keys in etcd; one prefix per layout")
      ->envname("ZAPTID_ETCD_PREFIX")
      ->capture_default_str()
      ->group(group);
  app.add_option("--lease-ttl", opt.lease_ttl,
                 "etcd lease TTL in whole seconds, at least 2s; issuing stops when the lease has not been "
                 "confirmed for TTL minus max(TTL/5, 500ms)")
      ->envname("ZAPTID_LEASE_TTL")
      ->capture_default_str()
      ->group(group);
  app.add_option("--machine-id-range", opt.machine_id_range,
                 "Machine ids this server may claim, A-B; default the whole machine field")
      ->envname("ZAPTID_MACHINE_ID_RANGE")
      ->group(group);
  app.add_option("--etcd-ca", opt.ca, "Talk to etcd over TLS, trusting this PEM CA")
      ->envname("ZAPTID_ETCD_CA")
      ->group(group);
  app.add_option("--etcd-cert", opt.cert, "PEM client certificate for etcd (with --etcd-key)")
      ->envname("ZAPTID_ETCD_CERT")
      ->group(group);
  app.add_option("--etcd-key", opt.key, "PEM private key of --etcd-cert")->envname("ZAPTID_ETCD_KEY")->group(group);
}

void check_etcd_options(const ServeOptions& opt) {
  const auto& e = opt.etcd;
  if (e.enabled()) {
    if (opt.identity.machine_id) throw Fatal(kExitUsage, "--machine-id and --machine-id-from etcd exclude each other");
    return;
  }
  for (const auto& [value, name] :
       {std::pair{e.endpoints, "--etcd-endpoints"}, std::pair{e.machine_id_range, "--machine-id-range"},
        std::pair{e.ca, "--etcd-ca"}, std::pair{e.cert, "--etcd-cert"}, std::pair{e.key, "--etcd-key"}}) {
    if (!value.empty()) throw Fatal(kExitUsage, fmt::format("{} needs --machine-id-from etcd", name));
  }
}

namespace {

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::chrono::seconds lease_ttl(const std::string& text) {
  const auto d = take(parse_duration(text, "--lease-ttl"), kExitUsage);
  if (d.count() % 1'000'000 != 0 || d < std::chrono::seconds(2)) {
    throw Fatal(kExitUsage, fmt::format("--lease-ttl {} must be whole seconds, at least 2s (etcd's minimum)", quote_input(text)));
  }
  return std::chrono::duration_cast<std::chrono::seconds>(d);
}

}  // namespace

Lanes open_etcd_lanes(const ServeOptions& opt, const Layout& layout, Clock& clock) {
  const auto& e = opt.etcd;
  etcd::SessionOptions so;
  so.client.endpoints = take(etcd::parse_endpoints(e.endpoints), kExitUsage);
  so.client.tls = {e.ca, e.cert, e.key};
  so.prefix = take(etcd::normalize_prefix(e.prefix), kExitUsage);
  so.ttl = lease_ttl(e.lease_ttl);
  // Every deadline follows from the TTL (docs/CLUSTER.md, "Timing"). A call that hangs (etcd
  // frozen) gives up after a third of it, so the next endpoint is tried well inside the TTL; a
  // connection attempt may take half of it, so a slow link still connects.
  const auto ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(so.ttl);
  so.client.call_timeout = std::max(std::chrono::milliseconds(500), ttl_ms / 3);
  so.client.connect_timeout = std::max(std::chrono::milliseconds(1000), ttl_ms / 2);
  so.range =
      e.machine_id_range.empty()
          ? etcd::IdRange{0, layout.max_machine()}
          : take(etcd::parse_id_range(e.machine_id_range, layout.max_machine(), "--machine-id-range"), kExitUsage);
  if (so.range.size() < opt.lanes) {
    throw Fatal(kExitUsage, fmt::format("--lanes {} needs at least {} ids in --machine-id-range {}-{}", opt.lanes,
                                        opt.lanes, so.range.first, so.range.last));
  }
  so.count = opt.lanes;
  so.holder.host = host_name();
  so.holder.pid = getpid();
  so.holder.addresses = fmt::format("{}", fmt::join(opt.listen, ","));
  so.holder.started_ms = clock.now().count() / 1'000'000;

  etcd::LanesOptions lo;
  lo.layout = layout;
  lo.clock = &clock;
  lo.max_clock_wait = duration_ms(opt.identity.max_clock_wait, "--max-clock-wait");
  // Half the TTL reserved ahead, topped up when a quarter of it is used: one write may take up
  // to three eighths of the TTL before a caller waits. A successor after a crash claims the id
  // a TTL later, when that window has passed.
  lo.reserve_ahead = std::max(std::chrono::milliseconds(500), ttl_ms / 2);
  lo.top_up_below = lo.reserve_ahead * 3 / 4;
  auto writes = std::make_shared<server::StoreMetrics>("etcd");
  auto lease = std::make_shared<server::LeaseMetrics>();
  lo.wrap_reserver = server::measure_into(*writes);

  // A failed claim is reported below in one line; gRPC's own lines about it stay at debug.
  server::route_grpc_logs(spdlog::level::debug);
  auto opened = etcd::LeasedLanes::open(std::move(so), lo);
  if (!opened) throw Fatal(exit_status_for(opened.error()), opened.message());
  // The metrics outlive the lanes, whose reservers (LeasedLanes keeps every one) and session
  // hooks write into them.
  std::shared_ptr<etcd::LeasedLanes> leased(opened->release(),
                                            [writes, lease](etcd::LeasedLanes* l) { delete l; });
  const auto ids = leased->machine_ids();
  spdlog::info("claimed machine id {} from etcd {} (lease {:x}, TTL {}s)", fmt::join(ids, ","), e.endpoints,
               leased->session().lease_id(), leased->session().ttl().count() / 1000);

  Lanes lanes;
  lanes.generators = leased->generators();
  lanes.source = "etcd";
  lanes.on_service = [leased, lease](server::IdService& service) {
    etcd::LaneHooks hooks;
    hooks.kept_alive = [lease](std::chrono::nanoseconds rtt) { lease->kept_alive(rtt); };
    hooks.keep_alive_failed = [lease] { lease->keep_alive_failed(); };
    hooks.set_unavailable = [&service](const std::string& reason) { service.set_unavailable(reason); };
    hooks.set_available = [&service] { service.set_available(); };
    hooks.replace_lane = [&service](size_t i, std::shared_ptr<Generator> g) { return service.replace_lane(i, g); };
    leased->start(std::move(hooks));
  };
  lanes.write_metrics = [leased, writes, lease](std::string& out) {
    writes->write(out);
    const auto& s = leased->session();
    lease->write(out, {s.confirmed(), s.since_confirmed(), s.ttl()});
  };
  lanes.release = [leased] {
    auto st = leased->release();
    if (!st) throw Fatal(kExitFailure, fmt::format("releasing the etcd lease: {}", st.message()));
    spdlog::info("etcd lease released; machine id {} free", fmt::join(leased->machine_ids(), ","));
  };
  return lanes;
}

}  // namespace zaptid::cli
