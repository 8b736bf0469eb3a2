// Admission under overload: which Gen/GenBatch calls may reserve IDs when demand exceeds the
// layout's ceiling, and how the ceiling is shared between connections.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.h"

namespace zaptid::server {

struct AdmissionOptions {
  /// The service's ceiling: IDs all its lanes issue per second together (> 0).
  double ids_per_second = 0;
  /// How far ahead of the clock one connection may hold reserved IDs when it is alone; with n
  /// connections holding reservations, each may hold 1/n of it (but always one call). Bounds
  /// how long a greedy connection can make everyone else wait.
  Nanos window = std::chrono::milliseconds(500);
};

/// What admit() decided.
struct Verdict {
  bool admitted = false;
  /// When refused: how long the caller should wait before it tries again (at least 1 ms).
  std::chrono::milliseconds retry_after{0};
  /// When refused: why, for the status message ("over capacity: …").
  std::string reason;
};

/// Decides, before any ID is reserved, whether a call can get its IDs in time and whether its
/// connection already holds its share, so that IDs go only to calls that can still use them and
/// no connection starves another. It does not read a clock: the caller passes the forecast wait
/// (Generator::ready_at of the call's would-be block minus now) and the time left to its
/// deadline. A call admitted must be released (once it is delivered or failed). Thread-safe.
class Admission {
 public:
  explicit Admission(AdmissionOptions options);

  /// The time kept free between the forecast ready time and the deadline, for the waiter's
  /// wake-up, the answer's encoding and its trip to the client: a tenth of the time left,
  /// between 20 ms and 250 ms.
  static Nanos margin(Nanos to_deadline);

  /// Admits `count` IDs for a call of `peer` (the connection) that would be ready in `wait` and
  /// has `to_deadline` left, or refuses it with a retry hint. Refused when the deadline has
  /// passed, when the IDs would be ready after to_deadline - min(margin(to_deadline), wait) (IDs
  /// ready now need no margin), or when the peer already holds reservations and these would take
  /// it past its share of the window.
  Verdict admit(std::string_view peer, uint64_t count, Nanos wait, Nanos to_deadline);
  /// Ends an admitted call's claim on its peer's share: the call was delivered or failed.
  void release(std::string_view peer, uint64_t count);

  /// Peers that hold admitted calls now.
  size_t peers() const;
  /// IDs admitted and not yet released for `peer`.
  uint64_t held(std::string_view peer) const;
  /// IDs of the window: what one connection alone may hold.
  uint64_t window_ids() const { return window_ids_; }

 private:
  std::chrono::milliseconds hint(double ids) const;

  AdmissionOptions opt_;
  uint64_t window_ids_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> held_;  // peers with admitted calls only
};

}  // namespace zaptid::server
