#include "server/id_service.h"

#include <fmt/format.h>
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "core/parse.h"
#include "core/version.h"
#include "server/calls.h"
#include "server/log_limit.h"
#include "server/queue.h"
#include "server/reflection.h"

namespace zaptid::server {

namespace {

constexpr const char* kServiceName = "idgen.IdGen";

}  // namespace

// Why Generator::reserve() failed, for the refusal counters: its own unavailable errors are
// about the clock (and say so first); the rest come from the reserver (a record, etcd).
Refusal refusal_of(const Error& e) {
  if (e.kind == ErrorKind::kExhausted) return Refusal::kTimeExhausted;
  if (e.kind == ErrorKind::kUnavailable && e.message.rfind("the clock ", 0) == 0) return Refusal::kClockBehind;
  return Refusal::kUnavailable;
}

grpc::Status to_grpc_status(const Error& e) {
  switch (e.kind) {
    case ErrorKind::kUnavailable:
    case ErrorKind::kExhausted:
      return {grpc::StatusCode::UNAVAILABLE, e.message};
    case ErrorKind::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, e.message};
    case ErrorKind::kIo:
    case ErrorKind::kCorrupt:
      break;
  }
  return {grpc::StatusCode::INTERNAL, e.message};
}

uint32_t default_max_batch(const Layout& layout) {
  const double quarter_second = layout.ceiling_per_second() / 4;
  return static_cast<uint32_t>(std::clamp(quarter_second, 1.0, 100'000.0));
}

Result<std::unique_ptr<IdService>> IdService::create(ServiceOptions options) {
  if (options.lanes.empty()) return invalid("the service needs at least one generator");
  if (options.clock == nullptr) return invalid("the service needs the generators' clock");
  std::vector<uint64_t> ids;
  for (const auto& g : options.lanes) {
    if (!g) return invalid("a lane has no generator");
    if (std::find(ids.begin(), ids.end(), g->machine_id()) != ids.end()) {
      return invalid(fmt::format("machine id {} is in two lanes", g->machine_id()));
    }
    ids.push_back(g->machine_id());
    if (g->layout().key() != options.lanes.front()->layout().key()) return invalid("all lanes must share one layout");
  }
  uint32_t max_batch = options.max_batch == 0 ? default_max_batch(options.lanes.front()->layout()) : options.max_batch;
  const uint64_t block_limit = options.lanes.front()->max_block();
  if (max_batch > kMaxBatchLimit || max_batch > block_limit) {
    return invalid(fmt::format("--max-batch {} is too large (at most {})", max_batch,
                               std::min<uint64_t>(kMaxBatchLimit, block_limit)));
  }
  auto answers =
      Reflection::create({kServiceName, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"});
  if (!answers) return answers.error();
  return std::unique_ptr<IdService>(new IdService(std::move(options), max_batch, std::move(*answers)));
}

IdService::IdService(ServiceOptions options, uint32_t max_batch, Reflection answers)
    : opt_(std::move(options)),
      layout_(opt_.lanes.front()->layout()),
      max_batch_(max_batch),
      metrics_(opt_.lanes.size()),
      lanes_(opt_.lanes.size()),
      promised_(opt_.lanes.size()),
      keep_(opt_.lanes),
      services_(std::make_unique<Services>(std::move(answers))),
      worker_(std::make_unique<Worker>()),
      admission_(AdmissionOptions{
          .ids_per_second = layout_.ceiling_per_second() * static_cast<double>(opt_.lanes.size()),
          // At least two of the largest batches, so that a connection alone keeps its pipeline full.
          .window = std::max<Nanos>(std::chrono::milliseconds(500),
                                    std::chrono::duration_cast<Nanos>(std::chrono::duration<double>(
                                        2.0 * max_batch / layout_.ceiling_per_second())))}),
      waiter_(*opt_.clock, [](Pending& p, Outcome o) { p.call->queue().post(p, o); }) {
  for (size_t i = 0; i < opt_.lanes.size(); ++i) lanes_[i].store(opt_.lanes[i].get(), std::memory_order_release);
}

IdService::~IdService() {
  stop_waiting();
  close_queues();
}

void IdService::call_started() { live_calls_.fetch_add(1, std::memory_order_relaxed); }

void IdService::call_ended() { live_calls_.fetch_sub(1, std::memory_order_acq_rel); }

bool IdService::drain(std::chrono::milliseconds limit) {
  // Shutdown only, so a short poll is simpler than waking on every call's end.
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (live_calls_.load(std::memory_order_acquire) > 0) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void IdService::close_queues() {
  // Calls that gRPC cancelled at the shutdown deadline may still be waiting in a queue to be
  // seen; they finish (or end) on its thread first.
  if (started_ && !drain(std::chrono::seconds(10))) {
    spdlog::warn("{} calls still open after 10s of draining; stopping anyway", live_calls_.load());
  }
  for (auto& q : queues_) {
    std::lock_guard lock(q->mu);
    if (!q->open) continue;
    q->open = false;
    q->cq->Shutdown();
  }
  for (auto& q : queues_) {
    if (q->thread.joinable()) {
      q->thread.join();
    } else {
      q->run();  // never started: drain it here
    }
  }
}

void IdService::add_to(grpc::ServerBuilder& builder, const ServingOptions& serving) {
  builder.RegisterService(&services_->idgen);
  builder.RegisterService(&services_->health);
  builder.RegisterService(&services_->reflection);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(std::max(serving.max_streams, 1u)));
  // Per-call channelz counters that nothing here can read (no channelz service is served).
  builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
  for (unsigned i = 0; i < std::max(serving.threads, 1u); ++i) {
    auto q = std::make_unique<Queue>([this](Pending& p, Outcome o) { finish(p, o); });
    q->cq = builder.AddCompletionQueue();
    queues_.push_back(std::move(q));
  }
}

void IdService::start() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue& q = *queues_[i];
    request_calls(*this, q);
    q.thread = std::thread([&q, i] {
      pthread_setname_np(pthread_self(), fmt::format("zaptid-cq{}", i).c_str());
      q.run();
    });
  }
  started_ = true;
}

void IdService::shutdown(grpc::Server& server, std::chrono::system_clock::time_point deadline) {
  {
    std::unique_lock lock(mu_);
    if (shutting_down_.exchange(true, std::memory_order_acq_rel)) return;
    for (WatchCall* w : watchers_) {
      w->notify(health::HealthCheckResponse::NOT_SERVING);
      w->end();
    }
    // Let the watchers' last words reach their clients before the connections close.
    unwatched_.wait_until(lock, deadline, [this] { return watchers_.empty(); });
  }
  // Server::Shutdown(deadline) waits for every connection to close, and a client with no call
  // open has no reason to close its own: one idle connection would hold a stop until the deadline.
  // So: stop accepting and send GOAWAY, wait only for the calls in flight, then close what is left.
  grpc_completion_queue* notified = grpc_completion_queue_create_for_pluck(nullptr);
  int tag = 0;
  grpc_server_shutdown_and_notify(server.c_server(), notified, &tag);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::system_clock::now());
  if (drain(std::max(left, std::chrono::milliseconds(0)))) grpc_server_cancel_all_calls(server.c_server());
  server.Shutdown(deadline);
  // Server::Shutdown() returned, so gRPC has posted our notification too.
  grpc_completion_queue_pluck(notified, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), nullptr);
  grpc_completion_queue_shutdown(notified);
  grpc_completion_queue_destroy(notified);
  stop_waiting();
  close_queues();
}

void IdService::stop_waiting() {
  worker_->stop();  // its calls either finish now or join the waiter's queue
  waiter_.stop();
}

void IdService::set_unavailable(std::string reason) {
  std::lock_guard lock(mu_);
  reason_ = std::move(reason);
  available_.store(false, std::memory_order_release);
  publish_health();
}

void IdService::set_available() {
  std::lock_guard lock(mu_);
  available_.store(true, std::memory_order_release);
  publish_health();
}

int IdService::health_status(const std::string& service) const {
  if (!service.empty() && service != kServiceName) return health::HealthCheckResponse::SERVICE_UNKNOWN;
  const bool serving = available() && !shutting_down_.load(std::memory_order_acquire);
  return serving ? health::HealthCheckResponse::SERVING : health::HealthCheckResponse::NOT_SERVING;
}

void IdService::publish_health() {
  for (WatchCall* w : watchers_) w->notify(health_status(w->service_name()));
}

void IdService::watch(WatchCall* watcher) {
  std::lock_guard lock(mu_);
  watcher->notify(health_status(watcher->service_name()));
  if (shutting_down_.load(std::memory_order_acquire)) {
    watcher->end();
  } else {
    watchers_.push_back(watcher);
  }
}

void IdService::unwatch(WatchCall* watcher) {
  std::lock_guard lock(mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), watcher), watchers_.end());
  if (watchers_.empty()) unwatched_.notify_all();
}

Status IdService::replace_lane(size_t index, std::shared_ptr<Generator> generator) {
  if (index >= lanes_.size()) return invalid(fmt::format("no lane {}", index));
  if (!generator || generator->layout().key() != layout_.key())
    return invalid("a lane needs a generator of the layout");
  std::lock_guard lock(mu_);
  lanes_[index].store(generator.get(), std::memory_order_release);
  keep_.push_back(std::move(generator));
  return Ok{};
}

std::vector<uint64_t> IdService::machine_ids() const {
  std::vector<uint64_t> ids;
  for (const auto& lane : lanes_) ids.push_back(lane.load(std::memory_order_acquire)->machine_id());
  return ids;
}

void IdService::fill_info(idgen::InfoResponse& response) const {
  response.set_version(std::string(kVersion));
  response.set_layout(layout_.name);
  response.set_epoch_unix_ms(layout_.epoch_ms);
  response.set_time_unit_ms(static_cast<uint32_t>(layout_.unit_ms));
  response.set_bits_time(static_cast<uint32_t>(layout_.bits_time));
  response.set_bits_sequence(static_cast<uint32_t>(layout_.bits_sequence));
  response.set_bits_machine(static_cast<uint32_t>(layout_.bits_machine));
  response.set_machine_above_sequence(layout_.machine_above_sequence);
  for (uint64_t id : machine_ids()) response.add_machine_ids(static_cast<uint32_t>(id));
  response.set_max_batch(max_batch_);
  response.set_time_exhausted_unix_ms(layout_.exhausted_at_ms());
}

std::string IdService::not_ready_reason() const {
  if (shutting_down_.load(std::memory_order_acquire)) return "the server is shutting down";
  if (available()) return "";
  std::lock_guard lock(mu_);
  return reason_.empty() ? "unavailable" : reason_;
}

std::string IdService::metrics_text() const {
  std::string out;
  out.reserve(16 << 10);
  metrics_.write_calls(out);
  metrics_.write_lanes(out, [this](size_t i) { return lanes_[i].load(std::memory_order_acquire)->machine_id(); });

  const Nanos now = opt_.clock->now();
  write_family(out, "zaptid_newest_id_ahead_seconds", "gauge",
               "How far the tick of the newest ID reserved is ahead of the clock (negative: behind; it grows "
               "when calls outrun the ceiling or the clock stepped back).");
  for (size_t i = 0; i < lanes_.size(); ++i) {
    const Generator* g = lanes_[i].load(std::memory_order_acquire);
    const auto last = g->last_reserved();
    if (!last) continue;
    const double ahead = std::chrono::duration<double>(g->ready_at(Block{*last, 1}) - now).count();
    write_sample(out, "zaptid_newest_id_ahead_seconds", fmt::format("machine_id=\"{}\"", g->machine_id()), ahead);
  }
  std::vector<const Generator*> generators;
  for (const auto& lane : lanes_) generators.push_back(lane.load(std::memory_order_acquire));
  write_clock_step_backs(out, generators);
  write_family(out, "zaptid_lane_ceiling_ids_per_second", "gauge", "The most IDs one lane (machine id) can issue per second.");
  write_sample(out, "zaptid_lane_ceiling_ids_per_second", "", layout_.ceiling_per_second());
  write_family(out, "zaptid_time_left_seconds", "gauge", "Seconds until the layout's time field runs out.");
  const double now_ms = std::chrono::duration<double, std::milli>(now).count();
  write_sample(out, "zaptid_time_left_seconds", "", (static_cast<double>(layout_.exhausted_at_ms()) - now_ms) / 1000);
  write_family(out, "zaptid_ready", "gauge", "1 while the server would issue IDs (lease confirmed, not shutting down).");
  write_sample(out, "zaptid_ready", "", static_cast<uint64_t>(not_ready_reason().empty() ? 1 : 0));
  write_family(out, "zaptid_build_info", "gauge", "The version and the layout of this server; always 1.");
  write_sample(out, "zaptid_build_info",
               fmt::format("version=\"{}\",layout=\"{}\",layout_key=\"{}\"", escape_label(kVersion),
                           escape_label(layout_.name), escape_label(layout_.key())),
               uint64_t{1});
  write_process_metrics(out);
  return out;
}

void IdService::issue(IssueCall& call, uint64_t count) {
  if (!available_.load(std::memory_order_acquire)) {
    std::string reason;
    {
      std::lock_guard lock(mu_);
      reason = reason_;
    }
    metrics_.refused(0, Refusal::kUnavailable);
    call.fail(unavailable_status(std::move(reason)));
    return;
  }
  const size_t lane = lanes_.size() == 1 ? 0 : next_lane_.fetch_add(1, std::memory_order_relaxed) % lanes_.size();
  Generator* gen = lanes_[lane].load(std::memory_order_acquire);
  const Nanos now = opt_.clock->now();

  // Over capacity, reservations run ahead of the clock. Admit only a call whose IDs will be ready
  // before its deadline with a margin, and only within its connection's share, rather than
  // reserve IDs nobody will receive and push every later caller further back; UNAVAILABLE lets
  // a client back off (retry-after-ms) or try another server.
  auto to_deadline = std::chrono::duration_cast<Nanos>(call.deadline() - std::chrono::system_clock::now());
  // gRPC would already have ended a call whose deadline passed long ago: one "an hour in the past"
  // is a deadline too far ahead for the clock's nanoseconds (grpc-timeout: 99999999H), which
  // wrapped around. It means no deadline.
  if (to_deadline < -Nanos(std::chrono::hours(1))) to_deadline = Nanos::max();
  const Nanos budget = std::min<Nanos>(to_deadline, opt_.max_queue_wait);
  // Admitted calls the worker has not reserved for yet (a new high-water being recorded) count
  // as reserved: otherwise every call arriving meanwhile would see the old cursor.
  std::atomic<uint64_t>& promised = promised_[lane];
  const Nanos wait =
      std::max(Nanos(0), gen->ready_at_next(promised.load(std::memory_order_acquire) + count) - now);
  std::string peer = call.peer();
  const Verdict verdict = admission_.admit(peer, count, wait, budget);
  if (!verdict.admitted) {
    // A clock that stepped back makes every reservation wait, however idle the server: when the
    // step is most of the wait, that is the cause to name, in the message and in the metric.
    if (const Nanos behind = gen->clock_behind(); behind > Nanos(0) && 2 * behind >= wait) {
      const auto behind_ms = std::chrono::ceil<std::chrono::milliseconds>(behind);
      const std::string message = fmt::format(
          "the clock stepped back: it reads {} behind the newest time already used, more than this call's deadline "
          "leaves to wait; retry in {} ms",
          format_duration_ms(behind_ms.count()), behind_ms.count());
      refused(call, lane, Refusal::kClockBehind, message);
      call.refuse(message, behind_ms);
      return;
    }
    metrics_.refused(lane, Refusal::kOverCapacity);
    call.refuse(fmt::format("{}; the layout issues at most {:.0f} IDs/s per machine id; retry in {} ms",
                            verdict.reason, layout_.ceiling_per_second(), verdict.retry_after.count()),
                verdict.retry_after);
    return;
  }
  call.admitted = count;
  call.admitted_peer = std::move(peer);
  promised.fetch_add(count, std::memory_order_acq_rel);

  if (gen->needs_reservation(count)) {
    // Once per reserve-ahead window: record the new high-water on the worker thread.
    if (!worker_->post([this, &call, gen, lane, count, &promised] {
          reserve(call, *gen, lane, count, /*on_worker=*/true);
          promised.fetch_sub(count, std::memory_order_acq_rel);
        })) {
      promised.fetch_sub(count, std::memory_order_acq_rel);
      metrics_.refused(lane, Refusal::kShuttingDown);
      call.fail(unavailable_status("the server is shutting down"));
    }
    return;
  }
  reserve(call, *gen, lane, count, /*on_worker=*/false);
  promised.fetch_sub(count, std::memory_order_acq_rel);
}

void IdService::settle(IssueCall& call) {
  if (call.admitted == 0) return;
  admission_.release(call.admitted_peer, call.admitted);
  call.admitted = 0;
}

void IdService::reserve(IssueCall& call, Generator& gen, size_t lane, uint64_t count, bool on_worker) {
  const Nanos now = opt_.clock->now();
  auto block = gen.reserve(count);
  if (!block) {
    spdlog::debug("reserve({}) on machine id {} failed: {}", count, gen.machine_id(), block.message());
    refused(call, lane, refusal_of(block.error()), block.message());
    if (on_worker) {
      call.queue().run_soon([&call, status = to_grpc_status(block.error())] { call.fail(status); });
    } else {
      call.fail(to_grpc_status(block.error()));
    }
    return;
  }
  Pending p;
  p.call = &call;
  p.generator = &gen;
  p.lane = lane;
  p.block = *block;
  p.ready_at = gen.ready_at(*block);
  if (p.ready_at <= now || gen.is_ready(*block)) {
    if (on_worker) {
      call.queue().post(p, Outcome::kReady);
    } else {
      finish(p, Outcome::kReady);
    }
    return;
  }
  const auto wait = std::chrono::duration_cast<std::chrono::steady_clock::duration>(p.ready_at - now);
  p.give_up = std::chrono::steady_clock::now() + wait + opt_.max_clock_wait;
  spdlog::debug("{} of {} on machine id {} waits {}us for its tick", call.name(), count, gen.machine_id(),
                std::chrono::duration_cast<std::chrono::microseconds>(wait).count());
  metrics_.waited(lane, p.ready_at - now);
  waiter_.add(p);
}

void IdService::finish(Pending& p, Outcome outcome) {
  if (outcome == Outcome::kStopping) {
    metrics_.refused(p.lane, Refusal::kShuttingDown);
    p.call->fail(unavailable_status("the server is shutting down"));
    return;
  }
  if (outcome == Outcome::kReady && !p.generator->is_ready(p.block) && std::chrono::steady_clock::now() < p.give_up) {
    waiter_.add(p);  // the clock stepped back a little between the waiter's look and ours
    return;
  }
  if (outcome == Outcome::kGaveUp || !p.generator->is_ready(p.block)) {
    const std::string message = fmt::format("the clock stepped back more than {} while the call waited for its IDs",
                                            format_duration_ms(opt_.max_clock_wait.count()));
    refused(*p.call, p.lane, Refusal::kClockBehind, message);
    p.call->fail(unavailable_status(message));
    return;
  }
  metrics_.issued(p.lane, p.block.count);
  p.call->deliver(*p.generator, p.block);
}

void IdService::refused(const IssueCall& call, size_t lane, Refusal why, std::string_view message) {
  metrics_.refused(lane, why);
  if (why != Refusal::kClockBehind) return;
  const uint64_t machine_id = lanes_[lane].load(std::memory_order_acquire)->machine_id();
  // Keyed by this service and lane: a client can cause these lines, one per refused call.
  log_limited(spdlog::level::warn, fmt::format("clock_behind {} {}", static_cast<const void*>(this), lane),
              fmt::format("{} refused on machine id {} (clock_behind): {}", call.name(), machine_id, message));
}

}  // namespace zaptid::server
