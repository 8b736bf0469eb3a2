#include "server/id_service.h"

#include <fmt/format.h>
#include <grpc/grpc.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>

#include "core/parse.h"
#include "core/version.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "idgen.grpc.pb.h"
#include "server/reflection.h"

namespace zaptid::server {

namespace health = grpc::health::v1;
namespace reflection = grpc::reflection::v1alpha;

namespace {

constexpr const char* kServiceName = "idgen.IdGen";

// Calls requested ahead on each queue, per method: gRPC hands an incoming call to a requested
// one at once and queues it otherwise. Each match requests a replacement.
constexpr int kGenAhead = 32;
constexpr int kBatchAhead = 8;
constexpr int kOtherAhead = 2;

grpc::Status unavailable_status(std::string message) { return {grpc::StatusCode::UNAVAILABLE, std::move(message)}; }

}  // namespace

/// Runs the rare reservations that must first record a new high-water (a file write, or an
/// etcd round trip that can take seconds while etcd elects a leader) off the completion-queue
/// threads, so that those keep answering health checks and every other call meanwhile. One
/// thread, in order; stop() runs what is queued and joins.
class Worker {
 public:
  Worker() : thread_([this] { run(); }) { pthread_setname_np(thread_.native_handle(), "zaptid-reserve"); }
  ~Worker() { stop(); }
  /// Queues `job`; false (and `job` dropped) once stop() began.
  bool post(std::function<void()> job) {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    jobs_.push_back(std::move(job));
    cv_.notify_one();
    return true;
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

/// Everything a completion queue hands back is a Tag: proceed() gets the event's `ok`.
class Tag {
 public:
  virtual void proceed(bool ok) = 0;

 protected:
  ~Tag() = default;
};

/// Counts a call from its match until its object is gone (IdService::drain() waits for none), so
/// no queue is shut down while a call may still start an operation on it: gRPC aborts on that.
class Live {
 public:
  explicit Live(IdService& service) : service_(service) {}
  ~Live() {
    if (counted_) service_.call_ended();
  }
  Live(const Live&) = delete;
  Live& operator=(const Live&) = delete;
  void matched() {
    counted_ = true;
    service_.call_started();
  }

 private:
  IdService& service_;
  bool counted_ = false;
};

/// A completion queue, the thread that serves it, and whether new calls may still be requested
/// on it (requesting on a shut-down queue is a crash, so it is checked under `mu`). Its inbox
/// brings calls the waiter finished back to this thread, so that all of a connection's writes
/// happen on one thread instead of two threads contending for the transport.
class Queue final : public Tag {
 public:
  using Finisher = std::function<void(Pending&, Outcome)>;
  explicit Queue(Finisher finish) : finish_(std::move(finish)) {}

  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  std::mutex mu;
  bool open = true;
  std::thread thread;

  void run() {
    void* tag = nullptr;
    bool ok = false;
    while (cq->Next(&tag, &ok)) static_cast<Tag*>(tag)->proceed(ok);
  }

  /// Has this queue's thread call the finisher with (p, outcome) soon: one alarm wakes it for
  /// everything posted meanwhile (at the ceiling, a whole tick's calls at once). Any thread;
  /// the queue must not be shut down yet.
  void post(const Pending& p, Outcome outcome) {
    std::lock_guard lock(inbox_mu_);
    inbox_.emplace_back(p, outcome);
    arm();
  }
  /// Has this queue's thread run `job` soon (a call the worker reserved for is finished here,
  /// never on the worker: gRPC's writes and the call's deletion then happen on one thread, and
  /// the inbox's mutex is the hand-off ThreadSanitizer can see). Any thread, as post().
  void run_soon(std::function<void()> job) {
    std::lock_guard lock(inbox_mu_);
    jobs_.push_back(std::move(job));
    arm();
  }

  // The alarm fired (or was cancelled at shutdown): finish what was posted.
  void proceed(bool /*ok*/) override {
    std::vector<std::pair<Pending, Outcome>> batch;
    std::vector<std::function<void()>> jobs;
    {
      std::lock_guard lock(inbox_mu_);
      batch.swap(inbox_);
      jobs.swap(jobs_);
      armed_ = false;
    }
    for (auto& [p, outcome] : batch) finish_(p, outcome);
    for (auto& job : jobs) job();
  }

 private:
  void arm() {  // under inbox_mu_
    if (armed_) return;
    armed_ = true;
    alarm_.Set(cq.get(), gpr_inf_past(GPR_CLOCK_MONOTONIC), static_cast<Tag*>(this));
  }

  Finisher finish_;
  std::mutex inbox_mu_;
  std::vector<std::pair<Pending, Outcome>> inbox_;
  std::vector<std::function<void()>> jobs_;
  bool armed_ = false;
  grpc::Alarm alarm_;
};

struct Services {
  explicit Services(Reflection r) : answers(std::move(r)) {}
  idgen::IdGen::AsyncService idgen;
  health::Health::AsyncService health;
  // Raw: ReflectionCall parses the requests itself, to answer INVALID_ARGUMENT to bad ones.
  reflection::ServerReflection::WithRawMethod_ServerReflectionInfo<reflection::ServerReflection::Service> reflection;
  const Reflection answers;
};

template <class C>
void IdService::request(Queue& queue) {
  std::lock_guard lock(queue.mu);
  if (queue.open) new C(*this, queue);  // owns itself from here; deletes itself when done
}

/// A unary call: requested in the constructor, handled once matched, deleted once finished.
/// Derived classes implement handle(), which must lead to exactly one finish(), from any thread.
template <class Derived, class Request, class Response>
class UnaryCall : public Tag {
 public:
  void proceed(bool ok) override {
    if (finishing_ || !ok) {  // finished (sent or not), or never matched: the server is stopping
      delete static_cast<Derived*>(this);
      return;
    }
    live_.matched();
    service_.request<Derived>(queue_);
    started_ = std::chrono::steady_clock::now();
    service_.metrics().started(Derived::kMethod);
    static_cast<Derived*>(this)->handle();
  }

 protected:
  UnaryCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {}
  ~UnaryCall() = default;

  void finish(const grpc::Status& status) {
    finishing_ = true;
    service_.metrics().handled(Derived::kMethod, status.error_code(), std::chrono::steady_clock::now() - started_);
    if (status.ok()) {
      writer_.Finish(response_, status, static_cast<Tag*>(this));
    } else {
      writer_.FinishWithError(status, static_cast<Tag*>(this));
    }
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> writer_{&ctx_};
  bool finishing_ = false;
  std::chrono::steady_clock::time_point started_;
  Live live_;
};

/// A call that asks for IDs (Gen or GenBatch): IdService::issue() reserves them and then calls
/// deliver() or fail(), now or from another thread.
class IssueCall {
 public:
  virtual void deliver(const Generator& generator, const Block& block) = 0;
  virtual void fail(const grpc::Status& status) = 0;
  /// Fails with UNAVAILABLE over capacity: `message`, and the trailing metadata retry-after-ms.
  virtual void refuse(const std::string& message, std::chrono::milliseconds retry_after) = 0;
  virtual std::chrono::system_clock::time_point deadline() const = 0;
  /// The connection the call came on (the key of its fair share).
  virtual std::string peer() const = 0;
  virtual const char* name() const = 0;
  /// The queue whose thread serves this call.
  virtual Queue& queue() = 0;

  /// The IDs admission counted for this call against its peer's share, until it is settled.
  uint64_t admitted = 0;
  std::string admitted_peer;

 protected:
  ~IssueCall() = default;
};

namespace {

/// What Gen and GenBatch share: a unary call that is also an IssueCall.
template <class Derived, class Request, class Response>
class UnaryIssueCall : public UnaryCall<Derived, Request, Response>, public IssueCall {
 public:
  void fail(const grpc::Status& status) override {
    this->service_.settle(*this);
    this->finish(status);
  }
  void refuse(const std::string& message, std::chrono::milliseconds retry_after) override {
    this->ctx_.AddTrailingMetadata(std::string(kRetryAfterKey), std::to_string(retry_after.count()));
    fail(unavailable_status(message));
  }
  std::chrono::system_clock::time_point deadline() const override { return this->ctx_.deadline(); }
  std::string peer() const override { return this->ctx_.peer(); }
  Queue& queue() override { return this->queue_; }

 protected:
  using UnaryCall<Derived, Request, Response>::UnaryCall;
  ~UnaryIssueCall() = default;
};

class GenCall final : public UnaryIssueCall<GenCall, idgen::IdRequest, idgen::IdResponse> {
 public:
  static constexpr Method kMethod = Method::kGen;
  GenCall(IdService& service, Queue& queue) : UnaryIssueCall(service, queue) {
    service.services().idgen.RequestGen(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                        static_cast<Tag*>(this));
  }
  void handle() { service_.issue(*this, 1); }
  void deliver(const Generator& generator, const Block& block) override {
    service_.settle(*this);
    response_.set_id(generator.id_at(block.first));
    finish(grpc::Status::OK);
  }
  const char* name() const override { return "Gen"; }
};

class BatchCall final : public UnaryIssueCall<BatchCall, idgen::BatchRequest, idgen::BatchResponse> {
 public:
  static constexpr Method kMethod = Method::kGenBatch;
  BatchCall(IdService& service, Queue& queue) : UnaryIssueCall(service, queue) {
    service.services().idgen.RequestGenBatch(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                             static_cast<Tag*>(this));
  }
  void handle() {
    const uint32_t count = request_.count();
    if (count == 0 || count > service_.max_batch()) {
      finish({grpc::StatusCode::INVALID_ARGUMENT,
              fmt::format("count must be from 1 to {} (the server's --max-batch), not {}", service_.max_batch(),
                          count)});
      return;
    }
    service_.issue(*this, count);
  }
  void deliver(const Generator& generator, const Block& block) override {
    service_.settle(*this);
    auto* ids = response_.mutable_ids();
    ids->Resize(static_cast<int>(block.count), 0);
    generator.write_ids(block, ids->mutable_data());
    finish(grpc::Status::OK);
  }
  const char* name() const override { return "GenBatch"; }
};

class InfoCall final : public UnaryCall<InfoCall, idgen::InfoRequest, idgen::InfoResponse> {
 public:
  static constexpr Method kMethod = Method::kInfo;
  InfoCall(IdService& service, Queue& queue) : UnaryCall(service, queue) {
    service.services().idgen.RequestInfo(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                         static_cast<Tag*>(this));
  }
  void handle() {
    service_.fill_info(response_);
    finish(grpc::Status::OK);
  }
};

class CheckCall final : public UnaryCall<CheckCall, health::HealthCheckRequest, health::HealthCheckResponse> {
 public:
  static constexpr Method kMethod = Method::kHealthCheck;
  CheckCall(IdService& service, Queue& queue) : UnaryCall(service, queue) {
    service.services().health.RequestCheck(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                           static_cast<Tag*>(this));
  }
  void handle() {
    const int status = service_.health_status(request_.service());
    if (status == health::HealthCheckResponse::SERVICE_UNKNOWN) {
      finish({grpc::StatusCode::NOT_FOUND, fmt::format("unknown service {}", quote_input(request_.service()))});
      return;
    }
    response_.set_status(static_cast<health::HealthCheckResponse::ServingStatus>(status));
    finish(grpc::Status::OK);
  }
};

/// ServerReflectionInfo: a stream of requests, each answered in turn, until the client closes.
class ReflectionCall final : public Tag {
 public:
  ReflectionCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {
    service.services().reflection.RequestServerReflectionInfo(&ctx_, &stream_, queue.cq.get(), queue.cq.get(),
                                                              static_cast<Tag*>(this));
  }
  void proceed(bool ok) override {
    switch (state_) {
      case State::kRequested:
        if (!ok) break;
        live_.matched();
        service_.request<ReflectionCall>(queue_);
        read();
        return;
      case State::kReading:
        if (!ok) {  // the client closed its side (or the call broke): done
          finish();
          return;
        }
        // Parsed here rather than by gRPC, which would end the call like a client's half-close
        // (status OK, no answer) when the bytes are not a request.
        if (!grpc::SerializationTraits<reflection::ServerReflectionRequest>::Deserialize(&request_bytes_, &request_)
                 .ok()) {
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "the request is not a grpc.reflection.v1alpha.ServerReflectionRequest"),
                         static_cast<Tag*>(this));
          return;
        }
        {
          bool own = false;
          response_bytes_.Clear();  // the serializer wants an empty buffer; the last Write copied it
          const auto response = service_.services().answers.answer(request_);
          grpc::SerializationTraits<reflection::ServerReflectionResponse>::Serialize(response, &response_bytes_, &own);
        }
        state_ = State::kWriting;
        stream_.Write(response_bytes_, static_cast<Tag*>(this));
        return;
      case State::kWriting:
        if (ok) {
          read();
        } else {
          finish();
        }
        return;
      case State::kFinishing:
        break;
    }
    delete this;
  }

 private:
  enum class State { kRequested, kReading, kWriting, kFinishing };
  void read() {
    state_ = State::kReading;
    stream_.Read(&request_bytes_, static_cast<Tag*>(this));
  }
  void finish() {
    state_ = State::kFinishing;
    stream_.Finish(grpc::Status::OK, static_cast<Tag*>(this));
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer> stream_{&ctx_};
  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_bytes_;
  reflection::ServerReflectionRequest request_;
  State state_ = State::kRequested;
  Live live_;
};

}  // namespace

/// Health Watch: writes the service's status at once and again on every change, until the
/// client cancels or the server stops (which ends the stream with UNAVAILABLE). One write is in
/// flight at a time; a change during a write is sent after it. The object goes away once gRPC
/// reported the call done and no operation of ours is outstanding.
class WatchCall final : public Tag {
 public:
  WatchCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {
    ctx_.AsyncNotifyWhenDone(static_cast<Tag*>(&done_));
    service.services().health.RequestWatch(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                           static_cast<Tag*>(this));
  }
  const std::string& service_name() const { return request_.service(); }

  /// Sends `status` unless it is what the client last got. Called under the service's lock.
  void notify(int status) {
    std::lock_guard lock(mu_);
    wanted_ = status;
    pump();
  }
  /// Ends the stream with UNAVAILABLE after any pending write. Called under the service's lock.
  void end() {
    std::lock_guard lock(mu_);
    ending_ = true;
    pump();
  }

  void proceed(bool ok) override {
    bool gone = false;
    {
      std::unique_lock lock(mu_);
      if (!matched_) {
        if (!ok) {  // never matched: the server is stopping, and no done event will come
          lock.unlock();
          delete this;
          return;
        }
        matched_ = true;
        live_.matched();
        lock.unlock();
        service_.request<WatchCall>(queue_);
        service_.watch(this);  // reports the current status through notify()
        return;
      }
      busy_ = false;
      if (!ok) broken_ = true;  // the call is over; the done event follows
      pump();
      gone = done_seen_ && !busy_;
    }
    if (gone) delete this;
  }

 private:
  // The done event: the call ended (finished or cancelled).
  class Done final : public Tag {
   public:
    explicit Done(WatchCall& call) : call_(call) {}
    void proceed(bool /*ok*/) override { call_.on_done(); }

   private:
    WatchCall& call_;
  };

  void on_done() {
    service_.unwatch(this);  // before taking mu_: the service's lock comes first
    bool gone = false;
    {
      std::lock_guard lock(mu_);
      done_seen_ = true;
      gone = !busy_;
    }
    if (gone) delete this;
  }

  // Starts the next operation if none is in flight. Under mu_.
  void pump() {
    if (busy_ || finished_ || broken_ || done_seen_) return;
    if (wanted_ >= 0 && wanted_ != sent_) {
      response_.set_status(static_cast<health::HealthCheckResponse::ServingStatus>(wanted_));
      sent_ = wanted_;
      busy_ = true;
      writer_.Write(response_, static_cast<Tag*>(this));
    } else if (ending_) {
      finished_ = true;
      busy_ = true;
      writer_.Finish(unavailable_status("the server is shutting down"), static_cast<Tag*>(this));
    }
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  health::HealthCheckRequest request_;
  health::HealthCheckResponse response_;
  grpc::ServerAsyncWriter<health::HealthCheckResponse> writer_{&ctx_};
  Done done_{*this};
  std::mutex mu_;
  bool matched_ = false;
  bool busy_ = false;       // a Write or Finish is in flight
  bool broken_ = false;     // a Write failed: the client is gone
  bool finished_ = false;   // Finish was started
  bool ending_ = false;     // the server is stopping
  bool done_seen_ = false;  // gRPC reported the call done
  int wanted_ = -1;
  int sent_ = -1;
  Live live_;
};

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
    for (int k = 0; k < kGenAhead; ++k) request<GenCall>(q);
    for (int k = 0; k < kBatchAhead; ++k) request<BatchCall>(q);
    for (int k = 0; k < kOtherAhead; ++k) {
      request<InfoCall>(q);
      request<CheckCall>(q);
      request<WatchCall>(q);
      request<ReflectionCall>(q);
    }
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
  const auto to_deadline = std::chrono::duration_cast<Nanos>(call.deadline() - std::chrono::system_clock::now());
  const Nanos budget = std::min<Nanos>(to_deadline, opt_.max_queue_wait);
  // Admitted calls the worker has not reserved for yet (a new high-water being recorded) count
  // as reserved: otherwise every call arriving meanwhile would see the old cursor.
  std::atomic<uint64_t>& promised = promised_[lane];
  const Nanos wait =
      std::max(Nanos(0), gen->ready_at_next(promised.load(std::memory_order_acquire) + count) - now);
  std::string peer = call.peer();
  const Verdict verdict = admission_.admit(peer, count, wait, budget);
  if (!verdict.admitted) {
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
    metrics_.refused(lane, refusal_of(block.error()));
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
    metrics_.refused(p.lane, Refusal::kClockBehind);
    p.call->fail(
        unavailable_status(fmt::format("the clock stepped back more than {} while the call waited for its IDs",
                                       format_duration_ms(opt_.max_clock_wait.count()))));
    return;
  }
  metrics_.issued(p.lane, p.block.count);
  p.call->deliver(*p.generator, p.block);
}

}  // namespace zaptid::server
