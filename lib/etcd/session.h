// Machine ids leased from etcd: claim K free ids under one lease, keep the lease alive, stop
// issuing before it could expire, claim again after it was lost, and keep every id's high-water
// cursor in etcd so that the next holder starts strictly after it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/generator.h"
#include "core/result.h"
#include "etcd/client.h"
#include "etcd/record.h"
#include "etcd/highwater.h"

namespace zaptid::etcd {

struct SessionOptions {
  ClientOptions client;
  std::string prefix = "/zaptid/";  ///< normalized (ends in '/')
  IdRange range;                    ///< ids that may be claimed
  size_t count = 1;                 ///< how many ids to hold (lanes)
  std::chrono::seconds ttl{10};     ///< requested lease TTL, at least 2 s
  Holder holder;                    ///< host, pid, addresses, start time written into each claim
};

/// One claimed machine id and the newest cursor any earlier holder may have issued with it.
struct Claim {
  uint64_t id = 0;
  std::optional<Cursor> start_after;
  int64_t highwater_rev = 0;  ///< the record's mod_revision when claimed (0: no record)
};

/// What the session tells its owner, from its own threads. Callbacks must not block for long
/// and must not call close().
struct SessionEvents {
  /// Stop issuing now: the lease is not confirmed (reason says why). Called once per outage.
  std::function<void(const std::string& reason)> on_unavailable;
  /// The lease is confirmed again; issuing may resume.
  std::function<void()> on_available;
  /// The lease was lost and `claims` were claimed under a new one. Every generator of the old
  /// claims must be replaced (start_after in each claim) before on_available() follows; the
  /// old reservers refuse to write from now on.
  std::function<void(const std::vector<Claim>& claims)> on_reclaimed;
  /// A keep-alive was answered and confirmed the lease, `round_trip` after it was sent.
  std::function<void(std::chrono::nanoseconds round_trip)> on_keep_alive;
  /// A keep-alive got no answer: its stream failed, or was cancelled as stuck (etcd frozen or
  /// partitioned); the next endpoint is tried.
  std::function<void()> on_keep_alive_failed;
};

/// Holds the lease and its claims. Thread-safe. Destroying a session stops its threads but
/// leaves the lease to expire (as a crash would); close() is the clean way out.
class Session {
 public:
  /// Grants a lease and claims `count` ids, lowest free first. Fails (kUnavailable) when etcd
  /// cannot be reached or the range has too few free ids (the message names the holders).
  static Result<std::unique_ptr<Session>> open(SessionOptions options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// The current claims, in lane order.
  std::vector<Claim> claims() const;
  int64_t lease_id() const { return lease_.load(); }
  /// The TTL etcd granted.
  std::chrono::milliseconds ttl() const { return std::chrono::milliseconds(ttl_ms_.load()); }
  /// How long before the lease could expire issuing stops (see session.cpp for why).
  std::chrono::milliseconds margin() const;

  /// A Reserver writing lane `lane`'s high-water cursor, only while the current lease holds the
  /// lane's id. Bound to the current lease: after a re-claim it refuses, and a new one is needed.
  std::unique_ptr<Reserver> reserver(size_t lane);

  /// Starts keeping the lease alive and watching it. Call once.
  void start(SessionEvents events);

  /// True while the lease is confirmed recently enough to issue IDs: a cheap check for the
  /// request path, in addition to the on_unavailable() push.
  bool confirmed() const;
  /// How long ago the request that last confirmed the lease was sent (the lease is certain for
  /// a TTL from then); it keeps growing while etcd does not answer and while claiming again.
  std::chrono::milliseconds since_confirmed() const;

  /// The newest keep-alive and call errors, each naming its endpoint, for messages.
  std::string last_error() const;
  /// The configured endpoints, comma-separated.
  std::string endpoints() const;

  /// Stops the keep-alive and monitor threads (no more events); the lease then runs out unless
  /// close() revokes it. Idempotent.
  void stop();

  /// Clean shutdown: stops the threads, records each lane's exact last cursor (nullopt: keep the
  /// record) and revokes the lease so the ids are free at once. Call at most once.
  Status close(const std::vector<std::optional<Cursor>>& last);

 private:
  explicit Session(SessionOptions options, std::unique_ptr<Client> client);
  /// Grants a lease and claims ids, preferring `prefer`; sets lease_, claims_, confirmed_until_.
  Status claim(const std::vector<uint64_t>& prefer);
  /// The claiming part of claim(), under an already granted lease.
  Status claim_under(int64_t lease, const std::vector<uint64_t>& prefer);
  /// How long a keep-alive may go unanswered before its stream is dropped for the next endpoint.
  std::chrono::milliseconds stuck_after() const;
  void keep_alive_loop();
  void monitor_loop();
  /// Runs one keep-alive stream on endpoint `ep` until it fails, the lease is lost or stop.
  /// Returns true if the lease was found expired.
  bool run_stream(size_t ep);
  void reclaim();
  /// Sleeps up to `d`, returning early (true) when the session is stopping.
  bool wait_stop(std::chrono::milliseconds d);
  int64_t steady_ms() const;
  /// The lease is certain from `sent` (steady ms) for `ttl_ms`.
  void confirm(int64_t sent, int64_t ttl_ms);

  SessionOptions opt_;
  std::unique_ptr<Client> client_;
  SessionEvents events_;
  std::atomic<int64_t> ttl_ms_{0};  ///< the granted TTL; changes only when a new lease is granted
  std::atomic<int64_t> lease_{0};
  /// Steady-clock milliseconds until which etcd certainly keeps the lease: the time the last
  /// confirmed request was sent plus the TTL.
  std::atomic<int64_t> confirmed_until_{0};
  /// Steady-clock milliseconds when the request that last confirmed the lease was sent.
  std::atomic<int64_t> confirmed_at_{0};
  /// When the keep-alive request in flight was sent (0: none), for cancelling a stuck stream.
  std::atomic<int64_t> pending_since_{0};

  mutable std::mutex mu_;
  std::vector<Claim> claims_;
  std::vector<std::shared_ptr<HighWaterRecord>> records_;  // one per claim, under the current lease
  std::string last_error_;  // the newest keep-alive failure, "keep-alive to HOST:PORT: why"
  bool stuck_ = false;      // the monitor cancelled the open stream for want of an answer
  grpc::ClientContext* stream_ctx_ = nullptr;  // the open keep-alive stream, for cancelling it
  std::condition_variable cv_;
  bool stop_ = false;
  bool reclaiming_ = false;
  std::thread keeper_;
  std::thread monitor_;
};

}  // namespace zaptid::etcd
