// server::IdService over an in-process gRPC channel, with a fake clock: statuses, lanes,
// availability, waiting calls and stop. The wire itself is tested by tests/cli/test_wire.py.
#include <doctest/doctest.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fmt/format.h>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "idgen.grpc.pb.h"
#include "server/id_service.h"

namespace zaptid::server {
namespace {

using namespace std::chrono_literals;

// 2026-01-01T00:00:00Z
constexpr Nanos kNow = 1'767'225'600'000'000'000ns;

// A reserver that holds every reserve_through() until released, like etcd during an election.
class GateReserver final : public Reserver {
 public:
  Status reserve_through(Cursor /*through*/) override {
    std::unique_lock lock(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
    return Ok{};
  }
  bool wait_entered(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return entered_ >= n; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  bool open_ = false;
};

struct Fixture {
  FakeClock clock{kNow};
  Reserver* reserver = nullptr;
  Layout layout = make_layout("sonyflake", {}, std::nullopt).value();
  std::unique_ptr<IdService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<idgen::IdGen::Stub> stub;

  std::shared_ptr<Generator> generator(uint64_t machine_id) {
    GeneratorOptions g;
    g.layout = layout;
    g.machine_id = machine_id;
    g.clock = &clock;
    g.reserver = reserver;
    return std::shared_ptr<Generator>(Generator::create(g).value().release());
  }

  explicit Fixture(std::vector<uint64_t> machine_ids, Reserver* r = nullptr) : reserver(r) {
    ServiceOptions o;
    for (uint64_t id : machine_ids) o.lanes.push_back(generator(id));
    o.clock = &clock;
    service = IdService::create(std::move(o)).value();
    grpc::ServerBuilder builder;
    service->add_to(builder, {});
    server = builder.BuildAndStart();
    service->start();
    stub = idgen::IdGen::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }
  ~Fixture() {
    service->shutdown(*server, std::chrono::system_clock::now() + 5s);
  }

  grpc::Status gen(uint64_t& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    idgen::IdResponse resp;
    auto st = stub->Gen(&ctx, {}, &resp);
    id = resp.id();
    return st;
  }
  grpc::Status batch(uint32_t count, idgen::BatchResponse& resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    idgen::BatchRequest req;
    req.set_count(count);
    return stub->GenBatch(&ctx, req, &resp);
  }
};

TEST_CASE("server::IdService answers Gen, GenBatch and Info") {
  Fixture f({5});
  uint64_t id = 0;
  REQUIRE(f.gen(id).ok());
  CHECK(f.layout.decompose(id).machine == 5);
  CHECK(f.layout.tick_start_ms(f.layout.decompose(id).time) == kNow.count() / 1'000'000);

  idgen::BatchResponse resp;
  REQUIRE(f.batch(100, resp).ok());
  REQUIRE(resp.ids_size() == 100);
  CHECK(resp.ids(0) > id);
  for (int i = 1; i < 100; ++i) CHECK(resp.ids(i) > resp.ids(i - 1));

  for (uint32_t bad : {0u, 6401u}) {
    idgen::BatchResponse none;
    const auto st = f.batch(bad, none);
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message() == fmt::format("count must be from 1 to 6400 (the server's --max-batch), not {}", bad));
    CHECK(none.ids_size() == 0);
  }

  grpc::ClientContext ctx;
  idgen::InfoResponse info;
  REQUIRE(f.stub->Info(&ctx, {}, &info).ok());
  CHECK(info.layout() == "sonyflake");
  CHECK(info.epoch_unix_ms() == 1409529600000);
  CHECK(info.bits_sequence() == 8);
  CHECK(info.machine_ids_size() == 1);
  CHECK(info.machine_ids(0) == 5);
  CHECK(info.max_batch() == 6400);
  CHECK(info.time_exhausted_unix_ms() == f.layout.exhausted_at_ms());
}

TEST_CASE("server::IdService spreads calls over its lanes") {
  Fixture f({7, 8, 9});
  std::map<uint64_t, std::vector<uint64_t>> by_lane;
  for (int i = 0; i < 30; ++i) {
    uint64_t id = 0;
    REQUIRE(f.gen(id).ok());
    by_lane[f.layout.decompose(id).machine].push_back(id);
  }
  REQUIRE(by_lane.size() == 3);
  for (const auto& [machine, ids] : by_lane) {
    CHECK(ids.size() == 10);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
  }
  CHECK(f.service->machine_ids() == std::vector<uint64_t>{7, 8, 9});
  REQUIRE(f.service->replace_lane(1, f.generator(42)).ok());
  CHECK(f.service->machine_ids() == std::vector<uint64_t>{7, 42, 9});
  CHECK(!f.service->replace_lane(3, f.generator(43)).ok());
  CHECK(!IdService::create({{f.generator(1), f.generator(1)}, &f.clock}).ok());
}

TEST_CASE("server::IdService availability") {
  Fixture f({5});
  f.service->set_unavailable("the machine-id lease is not confirmed");
  CHECK(!f.service->available());
  uint64_t id = 0;
  auto st = f.gen(id);
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(st.error_message() == "the machine-id lease is not confirmed");
  CHECK(id == 0);
  idgen::BatchResponse resp;
  CHECK(f.batch(10, resp).error_code() == grpc::StatusCode::UNAVAILABLE);
  f.service->set_available();
  CHECK(f.gen(id).ok());
  CHECK(id != 0);
}

TEST_CASE("server::IdService keeps serving while a reservation blocks") {
  // The first Gen must record a high-water first; the reserver holds it (etcd electing a
  // leader). Meanwhile the one serving thread still answers health checks and Info.
  GateReserver gate;
  Fixture f({5}, &gate);
  std::promise<grpc::Status> done;
  grpc::ClientContext ctx;
  idgen::IdRequest req;
  idgen::IdResponse resp;
  f.stub->async()->Gen(&ctx, &req, &resp, [&](grpc::Status st) { done.set_value(st); });
  REQUIRE(gate.wait_entered(1));
  auto health = grpc::health::v1::Health::NewStub(f.server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext hctx;
  hctx.set_deadline(std::chrono::system_clock::now() + 10s);
  grpc::health::v1::HealthCheckResponse hresp;
  CHECK(health->Check(&hctx, {}, &hresp).ok());
  CHECK(hresp.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  grpc::ClientContext ictx;
  idgen::InfoResponse info;
  CHECK(f.stub->Info(&ictx, {}, &info).ok());
  auto result = done.get_future();
  CHECK(result.wait_for(0s) == std::future_status::timeout);
  gate.open();
  REQUIRE(result.wait_for(10s) == std::future_status::ready);
  CHECK(result.get().ok());
  CHECK((resp.id() & 0xFFFF) == 5);
}

TEST_CASE("server::IdService health: Check, and Watch following availability until shutdown") {
  namespace health = grpc::health::v1;
  using Serving = health::HealthCheckResponse;
  Fixture f({5});
  auto stub = health::Health::NewStub(f.server->InProcessChannel(grpc::ChannelArguments()));
  auto check = [&](const std::string& service) {
    grpc::ClientContext ctx;
    health::HealthCheckRequest req;
    req.set_service(service);
    health::HealthCheckResponse resp;
    const auto st = stub->Check(&ctx, req, &resp);
    return st.ok() ? static_cast<int>(resp.status()) : -static_cast<int>(st.error_code());
  };
  CHECK(check("") == Serving::SERVING);
  CHECK(check("idgen.IdGen") == Serving::SERVING);
  CHECK(check("no.Such") == -grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext ctx;
  health::HealthCheckRequest req;
  req.set_service("idgen.IdGen");
  auto watch = stub->Watch(&ctx, req);
  health::HealthCheckResponse resp;
  REQUIRE(watch->Read(&resp));
  CHECK(resp.status() == Serving::SERVING);
  f.service->set_unavailable("lease lost");
  REQUIRE(watch->Read(&resp));
  CHECK(resp.status() == Serving::NOT_SERVING);
  CHECK(check("") == Serving::NOT_SERVING);
  f.service->set_unavailable("still lost");  // no change, nothing sent
  f.service->set_available();
  REQUIRE(watch->Read(&resp));
  CHECK(resp.status() == Serving::SERVING);

  // Shutdown ends the stream: NOT_SERVING, then UNAVAILABLE; the server stops at once rather
  // than waiting out the deadline for the open stream.
  std::thread stopper([&] { f.service->shutdown(*f.server, std::chrono::system_clock::now() + 60s); });
  REQUIRE(watch->Read(&resp));
  CHECK(resp.status() == Serving::NOT_SERVING);
  CHECK(!watch->Read(&resp));
  const auto st = watch->Finish();
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(st.error_message() == "the server is shutting down");
  stopper.join();
}

TEST_CASE("server::IdService maps generator errors") {
  Fixture f({5});
  uint64_t id = 0;
  REQUIRE(f.gen(id).ok());
  f.clock.set(kNow - 2s);  // stepped back past the generator's 1 s clock wait
  const auto st = f.gen(id);
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(st.error_message().find("the clock is 2.000s behind") != std::string::npos);
  CHECK(to_grpc_status({ErrorKind::kExhausted, "x"}).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(to_grpc_status({ErrorKind::kIo, "x"}).error_code() == grpc::StatusCode::INTERNAL);
  CHECK(to_grpc_status({ErrorKind::kCorrupt, "x"}).error_code() == grpc::StatusCode::INTERNAL);
  CHECK(to_grpc_status(invalid("x")).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

// The default logger's lines while it lives, at every level.
class LogCapture {
 public:
  LogCapture() : old_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
    logger->set_pattern("%l %v");
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(old_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  /// The lines so far; call when no other thread logs.
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> old_;
  std::ostringstream out_;
};

// The refusals of one lane and reason on the /metrics page.
std::string refusals(const IdService& s, uint64_t machine_id, const char* reason) {
  const std::string page = s.metrics_text();
  const std::string key = fmt::format("zaptid_refusals_total{{machine_id=\"{}\",reason=\"{}\"}} ", machine_id, reason);
  const auto at = page.find(key);
  return at == std::string::npos ? "none" : page.substr(at + key.size(), page.find('\n', at) - at - key.size());
}

TEST_CASE("server::IdService names a clock step back as the cause of a refusal, not capacity") {
  LogCapture log;
  Fixture f({5});
  uint64_t id = 0;
  REQUIRE(f.gen(id).ok());
  f.clock.set(kNow - 600ms);  // within the 1 s clock wait, but longer than the call's deadline
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 300ms);
  idgen::IdResponse resp;
  const auto st = f.stub->Gen(&ctx, {}, &resp);
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(st.error_message().rfind("the clock stepped back: it reads 600ms behind the newest time already used", 0) == 0);
  CHECK(st.error_message().find("over capacity") == std::string::npos);
  CHECK(refusals(*f.service, 5, "clock_behind") == "1");
  CHECK(refusals(*f.service, 5, "over_capacity") == "0");
  CHECK(log.text().find("warning Gen refused on machine id 5 (clock_behind): the clock stepped back: it reads 600ms "
                        "behind") != std::string::npos);
  f.clock.set(kNow + 10ms);
  CHECK(f.gen(id).ok());
}

// Found by the generator rather than by admission (a deadline long enough to wait the step out,
// but the step is past the clock wait limit): the same cause in the message, the metric and the log.
TEST_CASE("server::IdService names a clock behind found by the generator in the metric and the log") {
  LogCapture log;
  Fixture f({5});
  uint64_t id = 0;
  REQUIRE(f.gen(id).ok());
  f.clock.set(kNow - 3s);  // past the 1 s clock wait limit
  idgen::BatchResponse resp;
  const auto st = f.batch(10, resp);  // 10 s to its deadline: admission lets it wait 3 s
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_MESSAGE(st.error_message().rfind("the clock is 3.000s behind the newest time already used", 0) == 0, st.error_message());
  CHECK(resp.ids_size() == 0);
  CHECK(refusals(*f.service, 5, "clock_behind") == "1");
  CHECK(refusals(*f.service, 5, "over_capacity") == "0");
  CHECK(log.text().find("warning GenBatch refused on machine id 5 (clock_behind): the clock is 3.000s behind the newest "
                        "time already used") != std::string::npos);
  f.clock.set(kNow + 10ms);
  CHECK(f.gen(id).ok());
}

TEST_CASE("server::IdService finishes waiting calls when their tick comes, or on stop") {
  Fixture f({5});
  // 512 IDs span two 10 ms ticks: the call waits for the second, which the fake clock never
  // reaches until the test moves it.
  std::promise<grpc::Status> done;
  grpc::ClientContext ctx;
  idgen::BatchRequest req;
  req.set_count(512);
  idgen::BatchResponse resp;
  f.stub->async()->GenBatch(&ctx, &req, &resp, [&](grpc::Status st) { done.set_value(st); });
  auto result = done.get_future();
  CHECK(result.wait_for(50ms) == std::future_status::timeout);
  f.clock.advance(10ms);
  REQUIRE(result.wait_for(10s) == std::future_status::ready);
  CHECK(result.get().ok());
  CHECK(resp.ids_size() == 512);

  std::promise<grpc::Status> stopped;
  grpc::ClientContext ctx2;
  idgen::BatchResponse resp2;
  req.set_count(6400);
  f.stub->async()->GenBatch(&ctx2, &req, &resp2, [&](grpc::Status st) { stopped.set_value(st); });
  auto result2 = stopped.get_future();
  CHECK(result2.wait_for(50ms) == std::future_status::timeout);
  f.service->stop_waiting();
  REQUIRE(result2.wait_for(10s) == std::future_status::ready);
  const auto st = result2.get();
  CHECK(st.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(st.error_message() == "the server is shutting down");
  CHECK(resp2.ids_size() == 0);
}

}  // namespace
}  // namespace zaptid::server
