#include "cmd_serve.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <malloc.h>

#include <limits>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include "client/channel.h"
#include "core/parse.h"
#include "core/version.h"
#include "option_checks.h"
#include "serve_limits.h"
#include "server/log_limit.h"
#include "server/id_service.h"
#include "server/listen.h"
#include "server/metrics_http.h"
#include "server/store_metrics.h"
#include "net_guard.h"
#include "serve_tls.h"

namespace zaptid::cli {
namespace {

/// The connection guard's counts (net_guard.h) for /metrics.
void write_guard_metrics(std::string& out) {
  constexpr std::string_view kName = "zaptid_connections_closed_total";
  server::write_family(out, kName, "counter",
                       "Connections the server closed itself, by reason: stream_resets (a client reset more calls "
                       "than --max-stream-resets within a second), server_resets (it reset a call while all clients "
                       "together had reset more than 2 x --max-stream-resets within a second), streams_before_ack "
                       "(it opened more than --max-streams calls before acknowledging the server's settings), "
                       "header_block (one request's headers over 16KiB), control_frames (more than "
                       "--max-control-frames frames carrying no request within a second), out_of_descriptors "
                       "(accepted and closed at once while no descriptor was free).");
  for (std::string_view reason : kGuardReasons) {
    server::write_sample(out, kName, fmt::format("reason=\"{}\"", reason), guard_closed(reason));
  }
}

}  // namespace

void setup_serve(CLI::App& app, Action& action) {
  auto opt = std::make_shared<ServeOptions>();
  auto* sub = app.add_subcommand("serve", "Serve IDs over gRPC (zaptidgen-compatible IdGen service)");
  sub->add_option("--listen", opt->listen,
                  "Address to listen on, repeatable: host:port, [::]:port, :port (every address, as zaptidgen's "
                  "\":8888\") or unix:/path; port 0 picks a free port and the log names it")
      ->envname("ZAPTID_LISTEN")
      ->transform([](std::string address) { return server::expand_listen_address(address); }, "", "")
      ->delimiter(',')
      ->capture_default_str()
      ->group("Server");
  sub->add_option("--lanes", opt->lanes,
                  "Generators in this server, one machine id each, from --machine-id A-B (A, A+1, ...); requests "
                  "are spread round-robin, so IDs from different lanes interleave and only each lane's IDs "
                  "increase")
      ->envname("ZAPTID_LANES")
      ->transform(decimal_only())
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str()
      ->group("Server");
  sub->add_option("--max-batch", opt->max_batch,
                  "Most IDs one GenBatch call may ask for; default what one lane issues in 250ms (6400 for "
                  "sonyflake), at most 100000")
      ->envname("ZAPTID_MAX_BATCH")
      ->transform(decimal_only())
      ->check(CLI::Range(1u, server::kMaxBatchLimit))
      ->group("Server");
  sub->add_option("--threads", opt->threads,
                  "Threads that serve requests, each polling the sockets itself: 1 answers each request on one "
                  "thread with no hand-offs (fastest per request, and ample for one lane); more help only "
                  "several lanes under heavy unary load")
      ->envname("ZAPTID_THREADS")
      ->transform(decimal_only())
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str()
      ->group("Server");
  sub->add_option("--max-streams", opt->max_streams,
                  "Calls one client connection may have open at once (HTTP/2 max concurrent streams); clients "
                  "queue the rest. Bounds memory per connection: each open call holds about 13KiB")
      ->envname("ZAPTID_MAX_STREAMS")
      ->transform(decimal_only())
      ->check(CLI::Range(1u, 100000u))
      ->capture_default_str()
      ->group("Server");
  sub->add_option("--shutdown-timeout", opt->shutdown_timeout,
                  "On SIGINT/SIGTERM, how long calls in flight may take before they are cancelled")
      ->envname("ZAPTID_SHUTDOWN_TIMEOUT")
      ->capture_default_str()
      ->group("Server");
  sub->add_option("--handshake-timeout", opt->handshake_timeout,
                  "Closes a connection that has not completed its TLS handshake and sent its HTTP/2 preface "
                  "within this time")
      ->envname("ZAPTID_HANDSHAKE_TIMEOUT")
      ->capture_default_str()
      ->group("Limits");
  sub->add_option("--idle-timeout", opt->idle_timeout,
                  "Closes a connection that has had no call open for this long (0: never); clients reconnect "
                  "when they next call")
      ->envname("ZAPTID_IDLE_TIMEOUT")
      ->capture_default_str()
      ->group("Limits");
  sub->add_option("--max-memory", opt->max_memory,
                  "Memory gRPC may use for connections and calls (e.g. 64MiB, 1GiB); near it, gRPC shrinks "
                  "read buffers and closes the most demanding connections instead of the server running out")
      ->envname("ZAPTID_MAX_MEMORY")
      ->capture_default_str()
      ->group("Limits");
  sub->add_option("--max-stream-resets", opt->max_stream_resets,
                  "Closes a connection whose client resets more than this many calls (HTTP/2 RST_STREAM) "
                  "within one second: HTTP/2 rapid reset (CVE-2023-44487); 0: no limit")
      ->envname("ZAPTID_MAX_STREAM_RESETS")
      ->transform(decimal_only())
      ->capture_default_str()
      ->group("Limits");
  sub->add_option("--max-control-frames", opt->max_control_frames,
                  "Closes a connection whose client sends more than this many frames that carry no request "
                  "(PING, SETTINGS, WINDOW_UPDATE, PRIORITY, CONTINUATION, empty DATA) within one second, beyond 4 "
                  "per call it opened: they cost the server CPU and gRPC does not bound them; 0: no limit")
      ->envname("ZAPTID_MAX_CONTROL_FRAMES")
      ->transform(decimal_only())
      ->capture_default_str()
      ->group("Limits");
  sub->add_option("--tls-cert", opt->tls_cert,
                  "Serve TLS with this PEM certificate (chain); needs --tls-key. SIGHUP reads it, the key and "
                  "the client CA again for new connections (a bad file keeps the old ones)")
      ->envname("ZAPTID_TLS_CERT")
      ->group("TLS");
  sub->add_option("--tls-key", opt->tls_key, "PEM private key of --tls-cert")->envname("ZAPTID_TLS_KEY")->group("TLS");
  sub->add_option("--tls-client-ca", opt->tls_client_ca,
                  "Mutual TLS: refuse clients without a certificate signed by this PEM CA")
      ->envname("ZAPTID_TLS_CLIENT_CA")
      ->group("TLS");
  sub->add_option("--metrics-listen", opt->metrics_listen,
                  "Serve HTTP on host:port (repeatable; port 0 picks one): GET /metrics (Prometheus), /healthz, "
                  "/readyz (503 with the reason while IDs are not issued); default off")
      ->envname("ZAPTID_METRICS_LISTEN")
      ->delimiter(',')
      ->group("Monitoring");
  add_layout_options(*sub, opt->layout);
  add_identity_options(*sub, opt->identity);
  add_etcd_options(*sub, opt->etcd);
  sub->footer(
      "--machine-id takes one id or, with --lanes, a range A-B (env ZAPTID_MACHINE_ID).\n"
      "Stops on SIGINT/SIGTERM: finishes calls in flight, records what was issued, exits 0.\n"
      "SIGHUP re-reads --tls-cert, --tls-key and --tls-client-ca (without TLS it is logged and ignored).\n"
      "Example: zaptid serve --listen 127.0.0.1:8888 --machine-id 5");
  sub->callback([opt, &action] { action = [opt] { return run_serve(*opt); }; });
}

namespace {

struct IdRange {
  uint64_t first = 0;
  uint64_t last = 0;
  std::string source;
};

// "A-B" from --machine-id or ZAPTID_MACHINE_ID; nullopt for a single id (or none).
std::optional<IdRange> machine_id_range(const ServeOptions& opt, const Layout& layout) {
  std::string text;
  std::string source;
  if (opt.identity.machine_id) {
    text = *opt.identity.machine_id;
    source = "--machine-id";
  } else if (const char* e = std::getenv("ZAPTID_MACHINE_ID"); e != nullptr && e[0] != '\0') {
    text = e;
    source = "ZAPTID_MACHINE_ID";
  }
  const auto dash = text.find('-');
  if (dash == std::string::npos) return std::nullopt;
  const std::string what = fmt::format("{} {}", source, quote_input(text));
  const auto first = parse_unsigned(std::string_view(text).substr(0, dash), layout.max_machine(), what);
  const auto last = parse_unsigned(std::string_view(text).substr(dash + 1), layout.max_machine(), what);
  if (!first) throw Fatal(kExitUsage, first.message());
  if (!last) throw Fatal(kExitUsage, last.message());
  if (*last < *first) throw Fatal(kExitUsage, fmt::format("{}: the range is empty", what));
  return IdRange{*first, *last, source};
}

}  // namespace

Lanes open_lanes(const ServeOptions& opt, const Layout& layout, Clock& clock) {
  check_etcd_options(opt);
  if (opt.etcd.enabled()) return open_etcd_lanes(opt, layout, clock);
  const auto reserve_ahead = std::chrono::milliseconds(500);
  const auto range = machine_id_range(opt, layout);
  if (opt.lanes > 1 && (!range || range->last - range->first + 1 < opt.lanes)) {
    throw Fatal(kExitUsage,
                fmt::format("--lanes {} needs --machine-id A-B with at least {} ids", opt.lanes, opt.lanes));
  }
  // The issuers' measuring reservers write into `writes`, which so outlives them.
  struct Issuers {
    server::StoreMetrics writes{"file"};
    std::vector<LocalIssuer> all;
  };
  auto local = std::make_shared<Issuers>();
  auto* issuers = &local->all;
  const auto measure = server::measure_into(local->writes);
  Lanes lanes;
  if (range) {
    for (uint64_t i = 0; i < opt.lanes; ++i) {
      IdentityOptions identity = opt.identity;
      identity.machine_id = std::to_string(range->first + i);
      issuers->push_back(open_local_issuer(layout, identity, clock, reserve_ahead, measure));
    }
    lanes.source = range->source;
  } else {
    issuers->push_back(open_local_issuer(layout, opt.identity, clock, reserve_ahead, measure));
    lanes.source = issuers->front().machine.source;
    if (!issuers->front().machine.warning.empty()) spdlog::warn("{}", issuers->front().machine.warning);
  }
  for (auto& issuer : *issuers) lanes.generators.push_back(std::shared_ptr<Generator>(std::move(issuer.generator)));
  const auto generators = lanes.generators;
  lanes.write_metrics = [local](std::string& out) { local->writes.write(out); };
  lanes.release = [local, issuers, generators] {
    for (size_t i = 0; i < issuers->size(); ++i) {
      auto& claim = (*issuers)[i].claim;
      if (!claim) continue;
      auto st = claim->release(generators[i]->last_reserved());
      claim.reset();
      if (!st) throw Fatal(kExitFailure, st.message());
    }
  };
  return lanes;
}

namespace {

std::string describe_layout(const Layout& l) {
  return fmt::format("layout={} epoch={} unit={}ms bits={}/{}/{}", l.name, format_timestamp_ms(l.epoch_ms), l.unit_ms,
                     l.bits_time, l.bits_sequence, l.bits_machine);
}

// The largest request any served method accepts, with room to spare: Gen/GenBatch/Info and
// health requests are a few bytes, reflection requests name one file or symbol.
constexpr int kMaxRequestBytes = 4096;
// Below this, gRPC could not hold even a few connections' buffers.
constexpr uint64_t kMinMemory = uint64_t{4} << 20;

int clamp_ms(std::chrono::milliseconds ms) {
  return static_cast<int>(std::min<int64_t>(ms.count(), std::numeric_limits<int>::max()));
}

// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started after, so that only
// the sigwait() below receives them (SIGHUP's default action would kill the server).
sigset_t block_serve_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// SIGHUP: the TLS files read again; a bad one keeps those served, and the log says why.
void reload_tls(ServeTls* tls) {
  if (tls == nullptr) {
    spdlog::info("SIGHUP received: ignored (serve has no TLS files to read again)");
    return;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const auto validity = tls->reload(now);
  if (!validity) {
    spdlog::warn("SIGHUP received: TLS files not replaced, new connections keep the old ones: {}",
                 validity.message());
    return;
  }
  spdlog::info("SIGHUP received: TLS files read again; new connections get the certificate valid until {}",
               format_timestamp_ms(validity->not_after * 1000));
}

}  // namespace

int run_serve(const ServeOptions& opt) {
  // Before anything can start a thread (gRPC starts its own as soon as it is first touched): a
  // SIGTERM that reached such a thread would kill the server without a clean stop. A signal that
  // arrives while starting stays pending and stops the server right after it started.
  const sigset_t serve_signals = block_serve_signals();
  // One malloc arena: requests are served on one thread, and each extra arena keeps megabytes
  // of freed call memory resident.
  mallopt(M_ARENA_MAX, 1);
  const Layout layout = resolve_layout(opt.layout);
  const auto shutdown_timeout = duration_ms(opt.shutdown_timeout, "--shutdown-timeout");
  const auto max_clock_wait = duration_ms(opt.identity.max_clock_wait, "--max-clock-wait");
  const auto handshake_timeout = duration_ms(opt.handshake_timeout, "--handshake-timeout");
  const auto idle_timeout = duration_ms(opt.idle_timeout, "--idle-timeout");
  const uint64_t max_memory = take(parse_bytes(opt.max_memory, uint64_t{1} << 40, "--max-memory"), kExitUsage);
  if (handshake_timeout.count() <= 0) throw Fatal(kExitUsage, "--handshake-timeout must be more than 0");
  if (max_memory < kMinMemory) {
    throw Fatal(kExitUsage, fmt::format("--max-memory {} is too small (at least 4MiB)", opt.max_memory));
  }
  if (opt.listen.empty()) throw Fatal(kExitUsage, "--listen needs at least one address");
  for (const auto& addr : opt.listen) {
    if (auto st = server::check_listen_address(addr); !st) throw Fatal(kExitUsage, st.message());
  }
  for (const auto& addr : opt.metrics_listen) {
    if (auto st = server::MetricsHttp::check_address(addr); !st) throw Fatal(kExitUsage, st.message());
  }
  // Declared before the server, which so stops before the files gRPC fetches from go away.
  const std::unique_ptr<ServeTls> tls = ServeTls::open(opt);
  // What gRPC binds: unix: sockets under a private name first, moved onto their path once bound.
  std::vector<std::string> bind_to = opt.listen;
  std::vector<server::UnixSocket> unix_sockets;
  for (auto& addr : bind_to) {
    const std::string path = server::unix_path(addr);
    if (path.empty()) continue;
    unix_sockets.push_back(take(server::prepare_unix_socket(path), kExitFailure));
    addr = "unix:" + unix_sockets.back().temp;
  }
  const auto remove_unix_sockets = [&unix_sockets] {
    for (const auto& u : unix_sockets) server::remove_unix_socket(u);
  };
  const uint64_t max_fds = raise_descriptor_limit();
  GuardOptions guard;
  guard.limits.resets_per_second = opt.max_stream_resets;
  guard.limits.streams_before_ack = opt.max_streams;
  guard.limits.control_frames_per_second = opt.max_control_frames;
  // Two connections at their limit at once: far more than honest clients cancel (they reset a call
  // only when they give it up), and a load gRPC carries on one core beside its callers.
  guard.server_resets_per_second = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{2} * opt.max_stream_resets, UINT32_MAX));
  arm_net_guard(guard);
  SystemClock clock;
  Lanes lanes = open_lanes(opt, layout, clock);

  server::ServiceOptions so;
  so.lanes = lanes.generators;
  so.clock = &clock;
  so.max_batch = opt.max_batch;
  so.max_clock_wait = max_clock_wait;
  auto service = take(server::IdService::create(std::move(so)), kExitUsage);
  if (lanes.on_service) lanes.on_service(*service);

  server::route_grpc_logs(spdlog::level::debug);  // a failed bind is reported below, in one line
  grpc::ServerBuilder builder;
  // Two servers must never share a port: SO_REUSEPORT would let a second one bind silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Limits (docs/ARCHITECTURE.md, "Limits"): the largest valid request is a few dozen bytes.
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, clamp_ms(handshake_timeout));
  if (idle_timeout.count() > 0) builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, clamp_ms(idle_timeout));
  grpc::ResourceQuota quota("zaptid");
  quota.Resize(static_cast<size_t>(max_memory));
  builder.SetResourceQuota(quota);
  std::vector<int> ports(bind_to.size(), 0);
  for (size_t i = 0; i < bind_to.size(); ++i) {
    builder.AddListeningPort(bind_to[i], tls ? tls->port_credentials() : grpc::InsecureServerCredentials(), &ports[i]);
  }
  service->add_to(builder, {opt.threads, opt.max_streams});
  std::unique_ptr<grpc::Server> server;
  {
    GrpcListeners grpc_listeners;  // the sockets BuildAndStart() listens on are the guard's
    server = builder.BuildAndStart();
  }
  std::vector<std::string> bound;
  for (size_t i = 0; server && i < opt.listen.size(); ++i) {
    if (ports[i] == 0) break;
    bound.push_back(server::with_port(opt.listen[i], ports[i]));
  }
  std::string placing_failed;
  for (auto& u : unix_sockets) {
    if (!server || bound.size() != opt.listen.size() || !placing_failed.empty()) break;
    if (auto st = server::place_unix_socket(u); !st) placing_failed = st.message();
  }
  if (!server || bound.size() != opt.listen.size() || !placing_failed.empty()) {
    if (server) service->shutdown(*server, std::chrono::system_clock::now());
    remove_unix_sockets();
    lanes.release();
    throw Fatal(kExitFailure, placing_failed.empty() ? server::listen_failure(opt.listen) : placing_failed);
  }
  server::route_grpc_logs(spdlog::level::warn);
  service->start();
  // Gives back what a spike of connections or calls left free (one arena never shrinks by itself).
  start_memory_trimmer(std::chrono::seconds(2), uint64_t{4} << 20);

  std::unique_ptr<server::MetricsHttp> metrics;
  if (!opt.metrics_listen.empty()) {
    server::MetricsHttpOptions mo;
    mo.addresses = opt.metrics_listen;
    mo.metrics = [s = service.get(), &lanes, t = tls.get()] {
      std::string out = s->metrics_text();
      if (lanes.write_metrics) lanes.write_metrics(out);
      write_guard_metrics(out);
      if (t != nullptr) t->write_metrics(out);
      return out;
    };
    mo.not_ready = [s = service.get()] { return s->not_ready_reason(); };
    // A client causes most of these (an oversized header: one line per request), so they are limited.
    mo.log = [](const std::string& format, const std::string& line) {
      server::log_limited(spdlog::level::warn, "metrics http: " + format, "metrics http: " + line);
    };
    auto started = server::MetricsHttp::start(std::move(mo));
    if (!started) {
      service->shutdown(*server, std::chrono::system_clock::now());
      remove_unix_sockets();
      lanes.release();
      throw Fatal(kExitFailure, started.message());
    }
    metrics = std::move(*started);
  }

  const auto ids = service->machine_ids();
  // logfmt: a value with spaces is quoted, so every key=value stays machine-readable.
  const std::string source = lanes.source.find(' ') == std::string::npos ? lanes.source : '"' + lanes.source + '"';
  spdlog::info(
      "zaptid {} serving listen={} {} machine-id={} source={} lanes={} max-batch={} threads={} max-streams={} tls={} "
      "handshake-timeout={} idle-timeout={} max-memory={} max-stream-resets={} max-control-frames={} max-fds={} metrics={}",
      kVersion, fmt::join(bound, ","), describe_layout(layout), fmt::join(ids, ","), source, ids.size(),
      service->max_batch(), opt.threads, opt.max_streams,
      opt.tls_cert.empty() ? "off" : (opt.tls_client_ca.empty() ? "on" : "mutual"), opt.handshake_timeout,
      opt.idle_timeout, opt.max_memory, opt.max_stream_resets, opt.max_control_frames, max_fds,
      metrics ? fmt::format("{}", fmt::join(metrics->bound(), ",")) : std::string("off"));

  int signal = 0;
  while (sigwait(&serve_signals, &signal) == 0 && signal == SIGHUP) reload_tls(tls.get());
  spdlog::info("{} received: stopping (calls in flight get up to {})", signal == SIGINT ? "SIGINT" : "SIGTERM",
               format_duration_ms(shutdown_timeout.count()));
  // Reports NOT_SERVING, stops accepting, waits for calls in flight up to the deadline (the
  // waiter keeps finishing them meanwhile), then cancels the rest.
  service->shutdown(*server, std::chrono::system_clock::now() + shutdown_timeout);
  server->Wait();
  metrics.reset();  // /readyz said 503 "shutting down" while calls drained
  remove_unix_sockets();
  lanes.release();
  spdlog::info("stopped; machine id {} released", fmt::join(ids, ","));
  return kExitOk;
}

}  // namespace zaptid::cli
