// Generators over machine ids leased from etcd: one per lane, each persisting its high-water
// cursor to etcd, replaced when the lease was lost and the ids were claimed again.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"
#include "core/layout.h"
#include "core/result.h"
#include "etcd/session.h"

namespace zaptid::etcd {

struct LanesOptions {
  Layout layout;
  Clock* clock = nullptr;  ///< required; must outlive the lanes
  std::chrono::milliseconds max_clock_wait{1000};
  /// How far ahead of the clock each lane's high-water is recorded. A background thread records
  /// a new one whenever less than top_up_below is left, so that callers never wait for etcd
  /// while one write takes less than that. A successor may have to wait out up to this much of a
  /// record reserved ahead (not after a clean release, which lowers the record).
  std::chrono::milliseconds reserve_ahead{500};
  std::chrono::milliseconds top_up_below{375};
  /// Optional: wraps each lane's etcd reserver (the server measures its writes this way).
  ReserverWrapper wrap_reserver;
};

/// What the lanes tell the server that issues with them (called from the session's threads).
struct LaneHooks {
  std::function<void(const std::string& reason)> set_unavailable;
  std::function<void()> set_available;
  /// Puts a new generator into lane `index` (after the ids were claimed again).
  std::function<Status(size_t index, std::shared_ptr<Generator> generator)> replace_lane;
  /// Optional: each keep-alive answered, and each one that was not (see SessionEvents).
  std::function<void(std::chrono::nanoseconds round_trip)> kept_alive;
  std::function<void()> keep_alive_failed;
};

/// Owns the etcd session and every reserver it made. Thread-safe.
class LeasedLanes {
 public:
  /// Claims the ids (see Session::open) and makes one generator per id, starting strictly after
  /// each id's recorded high-water. Fails (kUnavailable) if a recorded high-water lies further
  /// ahead of the clock than max_clock_wait: issuing would have to wait longer than allowed.
  static Result<std::unique_ptr<LeasedLanes>> open(SessionOptions session, LanesOptions lanes);
  ~LeasedLanes();

  /// The generators, in lane order (the initial ones until start()).
  std::vector<std::shared_ptr<Generator>> generators() const;
  std::vector<uint64_t> machine_ids() const;
  const Session& session() const { return *session_; }

  /// Starts keeping the lease and reporting through `hooks`.
  void start(LaneHooks hooks);
  /// Clean exit: records each lane's exact last cursor and revokes the lease. Call once, after
  /// the server stopped issuing.
  Status release();

 private:
  LeasedLanes(std::unique_ptr<Session> session, LanesOptions lanes) : session_(std::move(session)), opt_(lanes) {}
  /// Generators for `claims` under the session's current lease.
  Result<std::vector<std::shared_ptr<Generator>>> make(const std::vector<Claim>& claims);
  void reclaimed(const std::vector<Claim>& claims);
  /// Keeps every lane's reservation ahead of the clock while the lease is confirmed.
  void top_up_loop();
  void stop_top_up();

  std::unique_ptr<Session> session_;
  LanesOptions opt_;
  LaneHooks hooks_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Generator>> generators_;
  std::vector<std::unique_ptr<Reserver>> reservers_;  // every one ever made: old generators may still call theirs
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread topper_;
};

/// Fails if cursor `c` of `layout` lies more than `max_wait` + `reserved_ahead` ahead of
/// `now_ms` (a record may be a window reserved ahead by a predecessor that crashed or whose
/// release failed); the message names the machine id, the recorded time and how far ahead it is.
Status check_high_water(const Layout& layout, uint64_t machine_id, Cursor c, int64_t now_ms,
                        std::chrono::milliseconds max_wait, std::chrono::milliseconds reserved_ahead);

}  // namespace zaptid::etcd
