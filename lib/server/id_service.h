// The IdGen gRPC service: Gen, GenBatch and Info over one or more lanes (one generator each).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"
#include "idgen.grpc.pb.h"
#include "server/waiter.h"

namespace grpc {
class HealthCheckServiceInterface;
}

namespace zaptid::server {

/// The largest --max-batch: a full BatchResponse (about 9 bytes per ID) stays well inside
/// gRPC's default 4 MiB message limit of clients we do not control.
inline constexpr uint32_t kMaxBatchLimit = 400'000;

/// The default --max-batch for a layout: what one lane issues in 250 ms (6,400 for Sonyflake),
/// between 1 and 100,000. A full batch is then ready well inside a client's 1 s deadline, even
/// behind other callers.
uint32_t default_max_batch(const Layout& layout);

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

/// Implements idgen.IdGen with the callback API. Gen and GenBatch reserve IDs without blocking;
/// a call whose IDs lie in a tick the clock has not reached yet is finished by the waiter thread.
/// Requests go round-robin over the lanes. Every failure is an explicit status: UNAVAILABLE
/// (clock behind, time exhausted, unavailable, over capacity), INVALID_ARGUMENT (bad count),
/// INTERNAL (state I/O). Thread-safe.
class IdService final : public idgen::IdGen::CallbackService {
 public:
  /// Checks the options: at least one lane, one layout and clock for all, max_batch in range.
  static Result<std::unique_ptr<IdService>> create(ServiceOptions options);
  ~IdService() override;

  /// Makes Gen and GenBatch answer UNAVAILABLE with `reason` (health NOT_SERVING) until
  /// set_available(). Calls already reserved still finish. Cheap to call repeatedly.
  void set_unavailable(std::string reason);
  /// Serves again (health SERVING).
  void set_available();
  bool available() const { return available_.load(std::memory_order_acquire); }

  /// Reports availability through `health` (the server's default health service) from now on,
  /// for the whole server ("") and for "idgen.IdGen". Call once after BuildAndStart().
  void attach_health(grpc::HealthCheckServiceInterface* health);

  /// Puts a new generator (same layout, same clock) in lane `index`, e.g. after a machine id was
  /// claimed again. The old one stays alive until the service is destroyed.
  Status replace_lane(size_t index, std::shared_ptr<Generator> generator);

  /// The machine ids of the lanes, in lane order.
  std::vector<uint64_t> machine_ids() const;
  const Layout& layout() const { return layout_; }
  uint32_t max_batch() const { return max_batch_; }

  /// Finishes every waiting call with UNAVAILABLE and stops the waiter thread. Call after
  /// grpc::Server::Shutdown() returned, before the generators' reservers are released.
  void stop();

  grpc::ServerUnaryReactor* Gen(grpc::CallbackServerContext* ctx, const idgen::IdRequest* request,
                                idgen::IdResponse* response) override;
  grpc::ServerUnaryReactor* GenBatch(grpc::CallbackServerContext* ctx, const idgen::BatchRequest* request,
                                     idgen::BatchResponse* response) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* ctx, const idgen::InfoRequest* request,
                                 idgen::InfoResponse* response) override;

 private:
  explicit IdService(ServiceOptions options, uint32_t max_batch);
  /// Reserves `count` IDs for the call and finishes it now or through the waiter.
  void issue(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor, uint64_t count, void* response,
             bool batch);
  void finish(Pending& p, Outcome outcome);
  void publish_health();

  ServiceOptions opt_;
  Layout layout_;
  uint32_t max_batch_;
  std::vector<std::atomic<Generator*>> lanes_;
  std::atomic<uint64_t> next_lane_{0};
  std::atomic<bool> available_{true};
  mutable std::mutex mu_;  // guards reason_, keep_, health_
  std::string reason_;
  std::vector<std::shared_ptr<Generator>> keep_;  // every generator ever used, for waiting calls
  grpc::HealthCheckServiceInterface* health_ = nullptr;
  Waiter waiter_;
};

/// The gRPC status for a library error: kUnavailable/kExhausted → UNAVAILABLE,
/// kInvalidArgument → INVALID_ARGUMENT, kIo/kCorrupt → INTERNAL; the message is the error's.
grpc::Status to_grpc_status(const Error& e);

}  // namespace zaptid::server
