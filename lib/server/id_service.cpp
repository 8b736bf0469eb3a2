#include "server/id_service.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/parse.h"
#include "core/version.h"

namespace zaptid::server {
namespace {

constexpr const char* kServiceName = "idgen.IdGen";

grpc::Status unavailable_status(std::string message) { return {grpc::StatusCode::UNAVAILABLE, std::move(message)}; }

}  // namespace

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
  return std::unique_ptr<IdService>(new IdService(std::move(options), max_batch));
}

IdService::IdService(ServiceOptions options, uint32_t max_batch)
    : opt_(std::move(options)),
      layout_(opt_.lanes.front()->layout()),
      max_batch_(max_batch),
      lanes_(opt_.lanes.size()),
      keep_(opt_.lanes),
      waiter_(*opt_.clock, [this](Pending& p, Outcome o) { finish(p, o); }) {
  for (size_t i = 0; i < opt_.lanes.size(); ++i) lanes_[i].store(opt_.lanes[i].get(), std::memory_order_release);
}

IdService::~IdService() { stop(); }

void IdService::stop() { waiter_.stop(); }

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

void IdService::attach_health(grpc::HealthCheckServiceInterface* health) {
  std::lock_guard lock(mu_);
  health_ = health;
  publish_health();
}

void IdService::publish_health() {
  if (health_ == nullptr) return;
  const bool serving = available_.load(std::memory_order_acquire);
  health_->SetServingStatus(serving);
  health_->SetServingStatus(kServiceName, serving);
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

grpc::ServerUnaryReactor* IdService::Gen(grpc::CallbackServerContext* ctx, const idgen::IdRequest* /*request*/,
                                         idgen::IdResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  issue(ctx, reactor, 1, response, false);
  return reactor;
}

grpc::ServerUnaryReactor* IdService::GenBatch(grpc::CallbackServerContext* ctx, const idgen::BatchRequest* request,
                                              idgen::BatchResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  const uint32_t count = request->count();
  if (count == 0 || count > max_batch_) {
    reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT,
                     fmt::format("count must be from 1 to {} (the server's --max-batch), not {}", max_batch_, count)});
    return reactor;
  }
  issue(ctx, reactor, count, response, true);
  return reactor;
}

grpc::ServerUnaryReactor* IdService::Info(grpc::CallbackServerContext* ctx, const idgen::InfoRequest* /*request*/,
                                          idgen::InfoResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  response->set_version(std::string(kVersion));
  response->set_layout(layout_.name);
  response->set_epoch_unix_ms(layout_.epoch_ms);
  response->set_time_unit_ms(static_cast<uint32_t>(layout_.unit_ms));
  response->set_bits_time(static_cast<uint32_t>(layout_.bits_time));
  response->set_bits_sequence(static_cast<uint32_t>(layout_.bits_sequence));
  response->set_bits_machine(static_cast<uint32_t>(layout_.bits_machine));
  response->set_machine_above_sequence(layout_.machine_above_sequence);
  for (uint64_t id : machine_ids()) response->add_machine_ids(static_cast<uint32_t>(id));
  response->set_max_batch(max_batch_);
  response->set_time_exhausted_unix_ms(layout_.exhausted_at_ms());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void IdService::issue(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor, uint64_t count,
                      void* response, bool batch) {
  if (!available_.load(std::memory_order_acquire)) {
    std::string reason;
    {
      std::lock_guard lock(mu_);
      reason = reason_;
    }
    reactor->Finish(unavailable_status(std::move(reason)));
    return;
  }
  const size_t lane = lanes_.size() == 1 ? 0 : next_lane_.fetch_add(1, std::memory_order_relaxed) % lanes_.size();
  Generator* gen = lanes_[lane].load(std::memory_order_acquire);
  const Nanos now = opt_.clock->now();

  // Over capacity, reservations run ahead of the clock. Refuse a call whose IDs could not be
  // ready before its deadline rather than reserve IDs nobody will receive and push every later
  // caller further back; UNAVAILABLE lets a balanced client try another server.
  const auto to_deadline = std::chrono::duration_cast<Nanos>(ctx->deadline() - std::chrono::system_clock::now());
  const Nanos max_wait = std::clamp<Nanos>(to_deadline, Nanos(0), opt_.max_queue_wait);
  if (auto last = gen->last_reserved()) {
    const Block probe{*last + 1, count};
    const Nanos wait = gen->ready_at(probe) - now;
    if (wait > max_wait) {
      reactor->Finish(unavailable_status(fmt::format(
          "over capacity: IDs would be ready in {}, after the call's deadline; the layout issues at most {:.0f} IDs/s "
          "per machine id",
          format_duration_ms(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()),
          layout_.ceiling_per_second())));
      return;
    }
  }

  auto block = gen->reserve(count);
  if (!block) {
    spdlog::debug("reserve({}) on machine id {} failed: {}", count, gen->machine_id(), block.message());
    reactor->Finish(to_grpc_status(block.error()));
    return;
  }
  Pending p;
  p.reactor = reactor;
  p.generator = gen;
  p.block = *block;
  p.response = response;
  p.batch = batch;
  p.ready_at = gen->ready_at(*block);
  if (p.ready_at <= now || gen->is_ready(*block)) {
    finish(p, Outcome::kReady);
    return;
  }
  const auto wait = std::chrono::duration_cast<std::chrono::steady_clock::duration>(p.ready_at - now);
  p.give_up = std::chrono::steady_clock::now() + wait + opt_.max_clock_wait;
  spdlog::debug("{} of {} on machine id {} waits {}us for its tick", batch ? "GenBatch" : "Gen", count,
                gen->machine_id(), std::chrono::duration_cast<std::chrono::microseconds>(wait).count());
  waiter_.add(p);
}

void IdService::finish(Pending& p, Outcome outcome) {
  if (outcome == Outcome::kStopping) {
    p.reactor->Finish(unavailable_status("the server is shutting down"));
    return;
  }
  if (outcome == Outcome::kReady && !p.generator->is_ready(p.block) && std::chrono::steady_clock::now() < p.give_up) {
    waiter_.add(p);  // the clock stepped back a little between the waiter's look and ours
    return;
  }
  if (outcome == Outcome::kGaveUp || !p.generator->is_ready(p.block)) {
    p.reactor->Finish(
        unavailable_status(fmt::format("the clock stepped back more than {} while the call waited for its IDs",
                                       format_duration_ms(opt_.max_clock_wait.count()))));
    return;
  }
  if (p.batch) {
    auto* ids = static_cast<idgen::BatchResponse*>(p.response)->mutable_ids();
    ids->Resize(static_cast<int>(p.block.count), 0);
    p.generator->write_ids(p.block, ids->mutable_data());
  } else {
    static_cast<idgen::IdResponse*>(p.response)->set_id(p.generator->id_at(p.block.first));
  }
  p.reactor->Finish(grpc::Status::OK);
}

}  // namespace zaptid::server
