#include "cmd_get.h"

#include <malloc.h>

#include <cstdlib>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "cmd_decode.h"
#include "core/parse.h"
#include "idgen.grpc.pb.h"
#include "option_checks.h"
#include "server/log_limit.h"

namespace zaptid::cli {

void add_client_options(CLI::App& app, client::ChannelOptions& opt, bool retries) {
  app.add_option("-s,--server", opt.server,
                 std::string("Server: host:port (:port is this host's; a host without a port gets 8888), a gRPC "
                             "target such as dns:///host:port or unix:/path, or a comma list of host:port; several "
                             "addresses are balanced round-robin") +
                     (retries ? " and a call refused as UNAVAILABLE is retried on the next" : ""))
      ->envname("ZAPTID_SERVER")
      ->capture_default_str()
      ->group("Server");
  app.add_flag("--tls", opt.tls, "Use TLS, trusting the system's root certificates")
      ->envname("ZAPTID_TLS")
      ->group("TLS");
  app.add_option("--tls-ca", opt.tls_ca, "Use TLS, trusting only this PEM CA certificate")
      ->envname("ZAPTID_TLS_CA")
      ->group("TLS");
  // Not ZAPTID_TLS_CERT/KEY: those are the server's own certificate on a host that runs both.
  app.add_option("--tls-cert", opt.tls_cert, "Mutual TLS: this PEM client certificate (needs --tls-key)")
      ->envname("ZAPTID_TLS_CLIENT_CERT")
      ->group("TLS");
  app.add_option("--tls-key", opt.tls_key, "PEM private key of --tls-cert")
      ->envname("ZAPTID_TLS_CLIENT_KEY")
      ->group("TLS");
  app.add_option("--tls-server-name", opt.tls_server_name,
                 "Name to check the server's certificate against, instead of the host in --server")
      ->envname("ZAPTID_TLS_SERVER_NAME")
      ->group("TLS");
}

std::shared_ptr<grpc::Channel> open_channel(const client::ChannelOptions& opt, const client::ChannelTuning& tuning) {
  auto ch = client::make_channel(opt, tuning);
  if (ch) return std::move(*ch);
  if (ch.error().kind == ErrorKind::kUnavailable) {
    throw Fatal(kExitServer, fmt::format("{}: {}", opt.server, ch.message()));
  }
  throw Fatal(kExitUsage, ch.message());
}

void setup_get(CLI::App& app, Action& action) {
  auto opt = std::make_shared<GetOptions>();
  auto* sub = app.add_subcommand("get", "Get IDs from a zaptid (or zaptidgen) server");
  sub->add_option("-n,--count", opt->count,
                  "How many IDs to print, one per line; fetched in batches within the server's limit")
      ->transform(decimal_only())
      ->check(CLI::Range(uint64_t{1}, UINT64_MAX))
      ->capture_default_str();
  add_id_format_option(*sub, opt->format);
  sub->add_flag("--decode", opt->decode,
                "Print each ID's time, sequence and machine id, decoded with the server's layout "
                "(--format json for JSON)");
  sub->add_flag("--info", opt->info,
                "Print the server's Info instead of IDs: version, layout, machine ids, limits (--format json "
                "for one JSON object)");
  sub->add_option("--timeout", opt->timeout,
                  "Deadline of each call to the server, retries of a call refused as UNAVAILABLE included")
      ->envname("ZAPTID_TIMEOUT")
      ->capture_default_str();
  add_client_options(*sub, opt->channel);
  sub->footer(
      "Example: zaptid get --server localhost:8888 --count 3\n"
      "         zaptid get --server 10.0.0.1:8888,10.0.0.2:8888 --count 100000 > ids.txt");
  sub->callback([opt, &action] { action = [opt] { return run_get(*opt); }; });
}

namespace {

// One server conversation: every call has its own deadline; every failure is Fatal(kExitServer).
class Getter {
 public:
  Getter(const GetOptions& opt, std::chrono::milliseconds timeout)
      : opt_(opt), timeout_(timeout), stub_(idgen::IdGen::NewStub(open_channel(opt.channel))) {}


  // The server's Info, or nullopt for a server without it (zaptidgen).
  std::optional<idgen::InfoResponse> info() {
    idgen::InfoResponse resp;
    const auto st = call([&](grpc::ClientContext& ctx) { return stub_->Info(&ctx, idgen::InfoRequest{}, &resp); });
    if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) return std::nullopt;
    check(st);
    return resp;
  }

  // A batch of `n` IDs, or nullopt when the server has no GenBatch (zaptidgen).
  std::optional<idgen::BatchResponse> batch(uint32_t n) {
    idgen::BatchRequest req;
    req.set_count(n);
    idgen::BatchResponse resp;
    const auto st = call([&](grpc::ClientContext& ctx) { return stub_->GenBatch(&ctx, req, &resp); });
    if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) return std::nullopt;
    check(st);
    if (resp.ids_size() != static_cast<int>(n)) {
      fail(fmt::format("asked for {} IDs, got {}", n, resp.ids_size()));
    }
    return resp;
  }

  uint64_t one() {
    idgen::IdResponse resp;
    check(call([&](grpc::ClientContext& ctx) { return stub_->Gen(&ctx, idgen::IdRequest{}, &resp); }));
    // zaptidgen signals some failures in-band; zaptid never does.
    if (resp.error() || resp.id() == 0) fail("the server answered with an error instead of an ID");
    return resp.id();
  }

  [[noreturn]] void fail(const std::string& reason) const {
    throw Fatal(kExitServer, fmt::format("{}: {}", opt_.channel.server, reason));
  }

 private:
  // One logical call: --timeout bounds it, retries on UNAVAILABLE included.
  template <typename Attempt>
  grpc::Status call(Attempt&& attempt) const {
    return client::call_with_retries(std::chrono::system_clock::now() + timeout_, std::forward<Attempt>(attempt));
  }
  void check(const grpc::Status& st) const {
    if (st.ok()) return;
    std::string reason = client::describe(st, timeout_);
    // A TLS server hangs up on a plaintext client (or one without the certificate it requires)
    // before saying anything; the bare "Socket closed" does not tell the user what to try.
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
        st.error_message().find("Socket closed") != std::string::npos) {
      const bool tls = opt_.channel.tls || !opt_.channel.tls_ca.empty() || !opt_.channel.tls_server_name.empty();
      reason +=
          tls ? (opt_.channel.tls_cert.empty() ? "; does the server require a client certificate (--tls-cert)?" : "")
              : "; does the server use TLS (--tls-ca or --tls)?";
    }
    fail(reason);
  }

  const GetOptions& opt_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<idgen::IdGen::Stub> stub_;
};

Layout layout_from(const idgen::InfoResponse& info) {
  Layout l;
  l.name = info.layout();
  l.epoch_ms = info.epoch_unix_ms();
  l.unit_ms = info.time_unit_ms();
  l.bits_time = static_cast<int>(info.bits_time());
  l.bits_sequence = static_cast<int>(info.bits_sequence());
  l.bits_machine = static_cast<int>(info.bits_machine());
  l.machine_above_sequence = info.machine_above_sequence();
  return l;
}

void print_info(const idgen::InfoResponse& info, bool json) {
  std::string ids;
  for (int i = 0; i < info.machine_ids_size(); ++i) ids += fmt::format("{}{}", i ? json ? "," : " " : "", info.machine_ids(i));
  std::string text;
  if (json) {
    text = fmt::format(
        R"({{"version":"{}","layout":"{}","epoch":"{}","epoch-unix-ms":{},"time-unit-ms":{},"bits-time":{},)"
        R"("bits-sequence":{},"bits-machine":{},"machine-above-sequence":{},"machine-ids":[{}],"max-batch":{},)"
        R"("time-exhausted":"{}","time-exhausted-unix-ms":{}}})"
        "\n",
        json_escape(info.version()), json_escape(info.layout()), format_timestamp_ms(info.epoch_unix_ms()),
        info.epoch_unix_ms(), info.time_unit_ms(), info.bits_time(), info.bits_sequence(), info.bits_machine(),
        info.machine_above_sequence(), ids, info.max_batch(), format_timestamp_ms(info.time_exhausted_unix_ms()),
        info.time_exhausted_unix_ms());
  } else {
    text = fmt::format(
        "version {}\nlayout {}\nepoch {}\ntime-unit {}ms\nbits {}/{}/{} (time/sequence/machine)\norder {}\n"
        "machine-ids {}\nmax-batch {}\ntime-exhausted {}\n",
        info.version(), info.layout(), format_timestamp_ms(info.epoch_unix_ms()), info.time_unit_ms(), info.bits_time(),
        info.bits_sequence(), info.bits_machine(),
        info.machine_above_sequence() ? "time, machine, sequence" : "time, sequence, machine", ids, info.max_batch(),
        format_timestamp_ms(info.time_exhausted_unix_ms()));
  }
  Output out;
  out.buffer() += text;
  out.flush();
}

}  // namespace

int run_get(const GetOptions& opt) {
  // One malloc arena: gRPC's six threads would each map and trim one of their own (64 MiB of
  // address space each) for the few allocations they make in a one-shot get.
  mallopt(M_ARENA_MAX, 1);
  client::use_native_dns_resolver();
  const auto timeout = duration_ms(opt.timeout, "--timeout");
  if (timeout.count() <= 0) throw Fatal(kExitUsage, "--timeout must be at least 1ms");
  // gRPC's own error lines (a refused handshake, …) would break the one-line error rule.
  server::route_grpc_logs(spdlog::level::debug);
  Getter getter(opt, timeout);

  if (opt.info) {
    if (opt.decode) throw Fatal(kExitUsage, "--info and --decode do not go together");
    const auto info = getter.info();
    if (!info) getter.fail("the server has no Info method (a zaptidgen server?)");
    print_info(*info, opt.format == IdFormat::kJson);
    return kExitOk;
  }
  // One ID needs no Info: a single Gen call, exactly what a zaptidgen client does.
  std::optional<idgen::InfoResponse> info;
  if (opt.count > 1 || opt.decode) info = getter.info();
  Layout layout;
  if (opt.decode) {
    if (info) {
      layout = layout_from(*info);
      if (layout.bits_time + layout.bits_sequence + layout.bits_machine != 63 || layout.unit_ms <= 0) {
        getter.fail("the server's Info describes an impossible layout");
      }
    } else {
      // zaptidgen has no Info: its layout is Sonyflake's.
      layout = take(make_layout("sonyflake", {}, std::nullopt), kExitFailure);
    }
  }
  const DecodeFormat decode_format = opt.format == IdFormat::kJson ? DecodeFormat::kJson : DecodeFormat::kText;
  Output out;
  const auto print = [&](uint64_t id) {
    if (opt.decode) {
      append_decoded(out.buffer(), decode_format, layout, id);
    } else {
      append_id(out.buffer(), opt.format, id);
    }
  };

  bool batches = info.has_value() && info->max_batch() > 0;
  try {
    uint64_t left = opt.count;
    while (left > 0 && !out.closed()) {
      if (batches) {
        const auto n = static_cast<uint32_t>(std::min<uint64_t>(left, info->max_batch()));
        auto resp = getter.batch(n);
        if (!resp) {
          spdlog::debug("the server has no GenBatch; falling back to Gen");
          batches = false;
          continue;
        }
        for (uint64_t id : resp->ids()) print(id);
        left -= n;
        out.flush();  // stream each batch as it arrives
      } else {
        print(getter.one());
        --left;
        out.maybe_flush();
      }
    }
  } catch (const Fatal&) {
    out.flush();  // the IDs received before the failure are valid: keep them
    throw;
  }
  out.flush();
  // Done: every ID is written (Output writes straight to fd 1; spdlog flushes every line). A
  // clean return would now close the channel and shut gRPC down, joining its threads, which
  // costs a one-shot get about as much as its call; the kernel closes the connection as well.
  std::_Exit(kExitOk);
}

}  // namespace zaptid::cli
