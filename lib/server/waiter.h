// The waiter: finishes calls whose IDs are reserved but not yet ready, without holding a gRPC thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"

namespace zaptid::server {

class IssueCall;

/// A call waiting for the clock to reach the tick of its block's last ID.
struct Pending {
  Nanos ready_at{0};  ///< clock time at which the block may be handed out
  /// Real (steady) time after which the call gives up: the clock stepped back meanwhile.
  std::chrono::steady_clock::time_point give_up;
  IssueCall* call = nullptr;  ///< the Gen or GenBatch call the IDs are for; the finisher's business
  const Generator* generator = nullptr;
  size_t lane = 0;  ///< the generator's lane in the service, for its counters
  Block block;
};

/// Why the waiter hands a call back.
enum class Outcome {
  kReady,     ///< the clock reached ready_at: hand the IDs out
  kGaveUp,    ///< give_up passed first: the clock stepped back too far
  kStopping,  ///< stop() was called
};

/// One thread and a queue ordered by ready_at. At the layout's ceiling many calls wait for the
/// same next tick: they are woken together, in one pass, by a single wake-up per distinct
/// ready_at. Thread-safe; the finisher runs on the waiter's thread without the queue lock held.
class Waiter {
 public:
  using Finisher = std::function<void(Pending&, Outcome)>;

  /// Starts the thread. `clock` is the generators' clock; it must outlive the waiter.
  Waiter(Clock& clock, Finisher finish);
  /// Calls stop().
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  /// Queues a call; its finisher runs exactly once: from the waiter's thread, or at once from the
  /// caller's thread (with kStopping) once stop() began.
  void add(Pending p);
  /// Re-examines the queue now (after a clock change in tests).
  void poke();
  /// Hands every queued call to the finisher with kStopping, refuses new ones the same way and
  /// joins the thread. Idempotent.
  void stop();
  /// Calls queued right now.
  size_t size() const;

 private:
  struct Later {
    bool operator()(const Pending& a, const Pending& b) const { return a.ready_at > b.ready_at; }
  };
  void run();

  Clock& clock_;
  Finisher finish_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Pending, std::vector<Pending>, Later> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace zaptid::server
