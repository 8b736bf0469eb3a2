// The gRPC server side: IdGen (Gen, GenBatch, Info over one or more lanes, one generator each),
// health and reflection, on completion queues.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"
#include "core/result.h"
#include "idgen.pb.h"
#include "server/admission.h"
#include "server/metrics.h"
#include "server/waiter.h"

namespace grpc {
class Server;
class ServerBuilder;
class Status;
}  // namespace grpc

namespace zaptid::server {

/// The largest --max-batch: a full BatchResponse (about 9 bytes per ID) stays well inside
/// gRPC's default 4 MiB message limit of clients we do not control.
inline constexpr uint32_t kMaxBatchLimit = 400'000;

/// The default --max-batch for a layout: what one lane issues in 250 ms (6,400 for Sonyflake),
/// between 1 and 100,000. A full batch is then ready well inside a client's 1 s deadline, even
/// behind other callers.
uint32_t default_max_batch(const Layout& layout);

/// The trailing metadata of a call refused over capacity: how many milliseconds the client
/// should wait before it tries again (decimal).
inline constexpr std::string_view kRetryAfterKey = "retry-after-ms";

struct ServiceOptions {
  /// The generators, one per lane, all with the same layout and clock. Shared so that a lane
  /// replaced while a call waits on it stays alive; their reservers belong to the caller.
  std::vector<std::shared_ptr<Generator>> lanes;
  Clock* clock = nullptr;  ///< the generators' clock; required; must outlive the service
  uint32_t max_batch = 0;  ///< 0: default_max_batch(layout)
  /// How long a reserved call may wait past its expected ready time (the clock stepped back)
  /// before it fails with UNAVAILABLE; use the generators' max_clock_wait.
  std::chrono::milliseconds max_clock_wait{1000};
  /// Longest a call may wait for its IDs when the client set no deadline; with a deadline,
  /// calls whose IDs would be ready after it are refused at once (UNAVAILABLE) instead.
  std::chrono::milliseconds max_queue_wait{5000};
};

class Queue;
class WatchCall;
class Worker;
struct Services;

/// How the service's server handles connections and requests.
struct ServingOptions {
  /// Completion queues, one thread each; each thread polls the sockets itself and runs the
  /// handlers of the calls it reads.
  unsigned threads = 1;
  /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls one connection may have open at once; clients
  /// queue the rest. Bounds the server's memory per connection (gRPC keeps ~13 KiB per open call,
  /// and at the layout's ceiling calls stay open until their tick).
  unsigned max_streams = 32;
};

/// Serves idgen.IdGen, grpc.health.v1.Health and grpc.reflection.v1alpha.ServerReflection with
/// gRPC's asynchronous completion-queue API. Each queue has one thread that both polls the
/// sockets and runs the handlers, so a request is read, answered and written on one thread with
/// no hand-off (gRPC's callback and sync servers move every call between threads, which costs
/// more than the call itself). Gen and GenBatch first pass admission (server/admission.h: IDs
/// ready before the deadline with a margin, within what all connections may hold ahead together and
/// the connection's share of it; otherwise
/// UNAVAILABLE "over capacity" at once, with a retry-after-ms hint, before any ID is reserved),
/// then reserve IDs without blocking; a call whose IDs
/// lie in a tick the clock has not reached yet is finished by the waiter thread. Requests go
/// round-robin over the lanes. Every failure is an explicit status: UNAVAILABLE (clock behind,
/// time exhausted, unavailable, over capacity), INVALID_ARGUMENT (bad count), INTERNAL (state
/// I/O). Thread-safe.
///
/// Life cycle: create(), add_to() before grpc::ServerBuilder::BuildAndStart(), start(), and
/// shutdown() (which also stops the grpc::Server). The server must not have other services:
/// their threads would poll too.
class IdService {
 public:
  /// Checks the options: at least one lane, one layout and clock for all, max_batch in range.
  static Result<std::unique_ptr<IdService>> create(ServiceOptions options);
  /// Shuts the queues down if shutdown() was not called (the server must be gone by then).
  ~IdService();
  IdService(const IdService&) = delete;
  IdService& operator=(const IdService&) = delete;

  /// Registers the three services with `builder`, adds the completion queues and sets the
  /// connection options. Call once, before BuildAndStart().
  void add_to(grpc::ServerBuilder& builder, const ServingOptions& serving);
  /// Starts serving: one thread per queue. Call once, after BuildAndStart() succeeded.
  void start();
  /// Stops serving: health watchers get NOT_SERVING and their streams end; then
  /// `server.Shutdown(deadline)` stops accepting and waits for calls in flight (the waiter keeps
  /// finishing them) up to the deadline, after which gRPC cancels the rest; calls still waiting
  /// then get UNAVAILABLE; the queues are drained and their threads joined. Idempotent.
  void shutdown(grpc::Server& server, std::chrono::system_clock::time_point deadline);

  /// Makes Gen and GenBatch answer UNAVAILABLE with `reason` (health NOT_SERVING) until
  /// set_available(). Calls already reserved still finish. Cheap to call repeatedly.
  void set_unavailable(std::string reason);
  /// Serves again (health SERVING).
  void set_available();
  bool available() const { return available_.load(std::memory_order_acquire); }

  /// Puts a new generator (same layout, same clock) in lane `index`, e.g. after a machine id was
  /// claimed again. The old one stays alive until the service is destroyed.
  Status replace_lane(size_t index, std::shared_ptr<Generator> generator);

  /// The machine ids of the lanes, in lane order.
  std::vector<uint64_t> machine_ids() const;
  const Layout& layout() const { return layout_; }
  uint32_t max_batch() const { return max_batch_; }

  Metrics& metrics() { return metrics_; }
  /// The whole /metrics page: calls, lanes, layout, clock, build and process, in the Prometheus
  /// text format. Any thread.
  std::string metrics_text() const;
  /// Why Gen would not issue IDs now ("" when it would): unavailable, or shutting down.
  std::string not_ready_reason() const;

  /// Finishes every waiting call with UNAVAILABLE ("the server is shutting down") and stops the
  /// waiter thread; later calls that must wait get the same. Part of shutdown(). Idempotent.
  void stop_waiting();

  // For the call objects in calls.{h,cpp}.
  void issue(IssueCall& call, uint64_t count);
  /// Gives an admitted call's IDs back to its peer's share (it is delivered or failed). Idempotent.
  void settle(IssueCall& call);
  void fill_info(idgen::InfoResponse& response) const;
  /// Health of `service` ("" is the whole server): SERVING, NOT_SERVING, or SERVICE_UNKNOWN.
  int health_status(const std::string& service) const;
  /// Watchers hear every change of availability until they unwatch(); watch() reports the
  /// current status at once.
  void watch(WatchCall* watcher);
  void unwatch(WatchCall* watcher);
  Services& services() { return *services_; }
  /// A call was matched / its object is gone.
  void call_started();
  void call_ended();
  /// Requests a new call of type C on `queue`, unless the queue is closing.
  template <class C>
  void request(Queue& queue);

 private:
  IdService(ServiceOptions options, uint32_t max_batch, class Reflection answers);
  void finish(Pending& p, Outcome outcome);
  /// Counts a refusal of `call` on `lane` for `why`. One for a clock behind (clock_behind, found
  /// at admission or by the generator) is also logged as a warning with `message`, at most 5
  /// lines per lane in 10 s: a step back is the operator's to fix, and the metric alone does not
  /// say which calls it cost or what the clock read.
  void refused(const IssueCall& call, size_t lane, Refusal why, std::string_view message);
  /// Reserves the call's IDs on `generator` (lane `lane`) and finishes it now (through its
  /// queue's thread when `on_worker`) or through the waiter.
  void reserve(IssueCall& call, Generator& generator, size_t lane, uint64_t count, bool on_worker);
  void publish_health();  // under mu_
  /// Shuts every queue down and drains it (joining its thread), once no call is open. Idempotent.
  void close_queues();
  /// Waits until no matched call is left (at most `limit`); false if some still are.
  bool drain(std::chrono::milliseconds limit);

  ServiceOptions opt_;
  Layout layout_;
  uint32_t max_batch_;
  Metrics metrics_;
  std::vector<std::atomic<Generator*>> lanes_;
  std::vector<std::atomic<uint64_t>> promised_;  // per lane: IDs admitted, not reserved yet
  std::atomic<uint64_t> next_lane_{0};
  std::atomic<bool> available_{true};
  mutable std::mutex mu_;  // guards reason_, keep_, watchers_; taken to set shutting_down_
  std::string reason_;
  std::vector<std::shared_ptr<Generator>> keep_;  // every generator ever used, for waiting calls
  std::vector<WatchCall*> watchers_;
  std::condition_variable unwatched_;  // watchers_ became empty
  std::atomic<bool> shutting_down_{false};  // shutdown() began
  std::unique_ptr<Services> services_;
  std::unique_ptr<Worker> worker_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::atomic<int64_t> live_calls_{0};
  bool started_ = false;
  Admission admission_;
  Waiter waiter_;
};

/// The gRPC status for a library error: kUnavailable/kExhausted → UNAVAILABLE,
/// kInvalidArgument → INVALID_ARGUMENT, kIo/kCorrupt → INTERNAL; the message is the error's.
grpc::Status to_grpc_status(const Error& e);

}  // namespace zaptid::server
