#include "cmd_bench.h"

#include <fmt/format.h>

#include <iostream>

#include "bench_load.h"
#include "client/channel.h"
#include "cmd_get.h"
#include "idgen.grpc.pb.h"
#include "option_checks.h"
#include "output.h"

namespace zaptid::cli {
namespace {

// The server's ceiling in IDs/s and how it was learned. zaptidgen has no Info method: it is
// Sonyflake with one machine id.
struct Ceiling {
  double ids_per_second = 25600;
  std::string source = "sonyflake, 1 machine id (server has no Info method)";
};

Ceiling learn_ceiling(const std::shared_ptr<grpc::Channel>& channel, const std::string& server,
                      std::chrono::milliseconds timeout) {
  auto stub = idgen::IdGen::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  idgen::InfoResponse info;
  const grpc::Status s = stub->Info(&ctx, idgen::InfoRequest(), &info);
  Ceiling c;
  if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) return c;
  if (!s.ok()) throw Fatal(kExitServer, fmt::format("{}: {}", server, s.error_message()));
  const auto lanes = std::max(1, info.machine_ids_size());
  c.ids_per_second = static_cast<double>(uint64_t{1} << info.bits_sequence()) * 1000.0 /
                     static_cast<double>(std::max(1u, info.time_unit_ms())) * lanes;
  c.source = fmt::format("{}, {} machine id{}", info.layout(), lanes, lanes == 1 ? "" : "s");
  return c;
}

void print_text(const BenchOptions& opt, const LoadResult& r, const Ceiling& c) {
  const double rps = r.seconds > 0 ? static_cast<double>(r.ok) / r.seconds : 0;
  const double ips = r.seconds > 0 ? static_cast<double>(r.ids) / r.seconds : 0;
  const auto& l = r.latencies_us;
  fmt::print("zaptid bench: {} method {}{}, {} connection(s) x {} in flight, {:.2f}s\n", opt.channel.server,
             opt.method, opt.method == "batch" ? fmt::format(" ({} IDs per call)", opt.batch_size) : "",
             opt.connections, opt.concurrency, r.seconds);
  fmt::print("requests  {} ok, {} failed, {:.0f} req/s\n", r.ok, r.failed, rps);
  if (r.refused > 0) {
    fmt::print("refused   {} tries over capacity, tried again after the server's hint ({} left at the end)\n",
               r.refused, r.abandoned);
  }
  fmt::print("IDs       {}, {:.0f} IDs/s, {:.1f}% of the ceiling ({:.0f} IDs/s: {})\n", r.ids, ips,
             100.0 * ips / c.ids_per_second, c.ids_per_second, c.source);
  fmt::print("latency   p50 {}us  p90 {}us  p99 {}us  p99.9 {}us  max {}us\n", quantile_us(l, 0.5), quantile_us(l, 0.9),
             quantile_us(l, 0.99), quantile_us(l, 0.999), l.empty() ? 0 : l.back());
  fmt::print("unique    {}\n", r.duplicates == 0 && r.zero_ids == 0
                                   ? fmt::format("yes, all {} IDs distinct and non-zero", r.ids)
                                   : fmt::format("NO: {} duplicates, {} zero IDs", r.duplicates, r.zero_ids));
  for (const auto& [e, n] : r.errors) fmt::print("error     {} x {}\n", n, e);
}

void print_json(const BenchOptions& opt, const LoadResult& r, const Ceiling& c) {
  const double rps = r.seconds > 0 ? static_cast<double>(r.ok) / r.seconds : 0;
  const double ips = r.seconds > 0 ? static_cast<double>(r.ids) / r.seconds : 0;
  const auto& l = r.latencies_us;
  std::string errors;
  for (const auto& [e, n] : r.errors) {
    errors += fmt::format("{}\"{}\":{}", errors.empty() ? "" : ",", json_escape(e), n);
  }
  fmt::print(
      R"({{"server":"{}","method":"{}","batch_size":{},"connections":{},"concurrency":{},"seconds":{:.3f},)"
      R"("requests_ok":{},"requests_failed":{},"requests_refused":{},"requests_abandoned":{},)"
      R"("requests_per_second":{:.1f},"ids":{},"ids_per_second":{:.1f},)"
      R"("ceiling_ids_per_second":{:.1f},"ceiling_share":{:.4f},"latency_us":{{"p50":{},"p90":{},"p99":{},)"
      R"("p99.9":{},"max":{}}},"duplicates":{},"zero_ids":{},"errors":{{{}}}}})"
      "\n",
      json_escape(opt.channel.server), opt.method, opt.method == "batch" ? opt.batch_size : 1, opt.connections,
      opt.concurrency, r.seconds, r.ok, r.failed, r.refused, r.abandoned, rps, r.ids, ips, c.ids_per_second,
      ips / c.ids_per_second,
      quantile_us(l, 0.5), quantile_us(l, 0.9), quantile_us(l, 0.99), quantile_us(l, 0.999), l.empty() ? 0 : l.back(),
      r.duplicates, r.zero_ids, errors);
}

}  // namespace

void setup_bench(CLI::App& app, Action& action) {
  auto opt = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand("bench", "Load-test a zaptid or zaptidgen server and check every ID is unique");
  add_client_options(*sub, opt->channel, /*retries=*/false);
  sub->add_option("-c,--connections", opt->connections, "Connections (like h2load -c)")
      ->transform(decimal_only())
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("-m,--concurrency", opt->concurrency, "Calls in flight per connection (like h2load -m)")
      ->transform(decimal_only())
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option("-d,--duration", opt->duration, "How long to send load")->capture_default_str();
  sub->add_option("--method", opt->method, "gen (one ID per call) or batch (GenBatch)")
      ->check(CLI::IsMember({"gen", "batch"}))
      ->capture_default_str();
  sub->add_option("--batch-size", opt->batch_size, "IDs per GenBatch call")
      ->transform(decimal_only())
      ->check(CLI::Range(uint32_t{1}, uint32_t{16777216}))
      ->capture_default_str();
  sub->add_option("--timeout", opt->timeout, "Deadline of each call, retries after an over-capacity refusal included")
      ->capture_default_str();
  sub->add_option("--format", opt->format, "Report format: text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  sub->footer("Example: zaptid bench --server localhost:8888 -c 4 -m 16 --duration 10s");
  sub->callback([opt, &action] { action = [opt] { return run_bench(*opt); }; });
}

int run_bench(const BenchOptions& opt) {
  LoadOptions load;
  load.concurrency = opt.concurrency;
  load.duration = duration_ms(opt.duration, "--duration");
  load.timeout = duration_ms(opt.timeout, "--timeout");
  load.batch = opt.method == "batch";
  load.batch_size = load.batch ? opt.batch_size : 1;
  if (load.duration.count() <= 0) throw Fatal(kExitUsage, "--duration must be longer than 0");
  if (load.timeout.count() <= 0) throw Fatal(kExitUsage, "--timeout must be longer than 0");
  // Same resolver, target and TLS rules as get (a comma list of host:port is balanced
  // round-robin), but no retries: a failed call counts as failed.
  client::use_native_dns_resolver();
  for (int i = 0; i < opt.connections; ++i) {
    load.channels.push_back(open_channel(opt.channel, {.retries = false, .own_connection = i}));
  }
  const Ceiling ceiling = learn_ceiling(load.channels.front(), opt.channel.server, load.timeout);
  const LoadResult r = run_load(load);
  if (opt.format == "json") {
    print_json(opt, r, ceiling);
  } else {
    print_text(opt, r, ceiling);
  }
  std::cout.flush();
  if (r.duplicates > 0 || r.zero_ids > 0) {
    throw Fatal(kExitFailure, fmt::format("{}: {} duplicate and {} zero IDs received", opt.channel.server,
                                          r.duplicates, r.zero_ids));
  }
  if (r.ok == 0) {
    throw Fatal(kExitServer, fmt::format("{}: every call failed ({})", opt.channel.server,
                                         r.errors.empty() ? "no calls" : r.errors.begin()->first));
  }
  if (r.failed > 0) {
    throw Fatal(kExitServer, fmt::format("{}: {} of {} calls failed", opt.channel.server, r.failed, r.ok + r.failed));
  }
  return kExitOk;
}

}  // namespace zaptid::cli
