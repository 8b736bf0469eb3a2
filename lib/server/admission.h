// Admission under overload: which Gen/GenBatch calls may reserve IDs when demand exceeds the
// layout's ceiling, and how the IDs held ahead of the clock are shared between connections.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.h"

namespace zaptid::server {

struct AdmissionOptions {
  /// The service's ceiling: IDs all its lanes issue per second together (> 0).
  double ids_per_second = 0;
  /// How far ahead of the clock all admitted calls together may hold IDs (one connection alone
  /// may hold all of it; with n connections holding, each holds at most 1/n). Since the cursor
  /// only moves forward, this bounds how long any newcomer waits, whatever the number of
  /// connections.
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

/// Decides, before any ID is reserved, whether a call can get its IDs in time and whether they
/// fit what the calls in flight already hold, so that IDs go only to calls that can still use
/// them and a caller holding nothing is never stuck behind batches, however many connections
/// send them. Fair by IDs, not by calls: what counts is how many IDs a connection holds
/// (admitted, not yet released). It does not read a clock: the caller passes the forecast wait
/// (Generator::ready_at of the call's would-be block minus now) and the time left to its
/// deadline. A call admitted must be released (once it is delivered or failed). Thread-safe.
///
/// The rule, with W = window_ids() and R = reserve_ids() = W / 8:
///  - a call whose deadline has passed, or whose IDs would be ready too close to it (see
///    admit()), is refused;
///  - when nothing is held, a call is admitted whatever its count (a --max-batch larger than
///    the window is still served, alone);
///  - a connection that holds IDs may take more only within its share, W / (connections
///    holding), and while all held stays within W;
///  - a connection holding nothing is admitted while all held stays within W, and a call of
///    at most R IDs also while it stays within W + R.
/// So all held stays within W + R (or one call), which bounds every admitted call's wait:
/// (W + R) / ids_per_second, 562 ms with the default window, well inside a 1 s deadline. And
/// since batches of more than R IDs never use the reserve, a Gen call of a connection holding
/// nothing is refused only while other newcomers' small calls fill it.
class Admission {
 public:
  explicit Admission(AdmissionOptions options);

  /// The time kept free between the forecast ready time and the deadline, for the waiter's
  /// wake-up, the answer's encoding and its trip to the client: a tenth of the time left,
  /// between 20 ms and 250 ms.
  static Nanos margin(Nanos to_deadline);

  /// Admits `count` IDs for a call of `peer` (the connection) that would be ready in `wait` and
  /// has `to_deadline` left, or refuses it with a retry hint: the time until it would fit. Refused
  /// when the deadline has passed, when the IDs would be ready after to_deadline -
  /// min(margin(to_deadline), wait) (IDs ready now need no margin), or when they do not fit what
  /// is held (the rule above). Held IDs leave a call at a time, when it is delivered, and calls
  /// are taken to be ready in the order they were admitted, so the hint of a refusal for the
  /// window is when the oldest calls that make room should be ready (from `wait`: the held calls
  /// end count IDs before it), and never less than the excess at the ceiling's rate.
  Verdict admit(std::string_view peer, uint64_t count, Nanos wait, Nanos to_deadline);
  /// Ends an admitted call's claim on its peer's share: the call was delivered or failed. The
  /// IDs are taken from the peer's oldest calls first.
  void release(std::string_view peer, uint64_t count);

  /// Peers that hold admitted calls now.
  size_t peers() const;
  /// IDs admitted and not yet released for `peer`.
  uint64_t held(std::string_view peer) const;
  /// IDs admitted and not yet released, all peers together.
  uint64_t held_total() const;
  /// IDs of the window: what all connections together may hold (W).
  uint64_t window_ids() const { return window_ids_; }
  /// IDs above the window that small calls of connections holding nothing may use (R).
  uint64_t reserve_ids() const { return reserve_ids_; }

 private:
  std::chrono::milliseconds hint(double ids) const;

  AdmissionOptions opt_;
  uint64_t window_ids_;
  uint64_t reserve_ids_;
  /// When `over` more IDs than fit are held, how long until enough of the oldest calls are
  /// delivered for a call of `count` that would be ready in `wait`. Under mu_.
  std::chrono::milliseconds window_hint(uint64_t over, uint64_t count, Nanos wait) const;

  struct Peer {
    uint64_t ids = 0;                // held
    std::deque<uint64_t> calls;      // the tickets of its admitted calls, oldest first
  };
  mutable std::mutex mu_;
  std::unordered_map<std::string, Peer> held_;  // peers with admitted calls only
  std::map<uint64_t, uint64_t> calls_;          // every admitted call: ticket (admission order) -> IDs held
  uint64_t next_ticket_ = 0;
  uint64_t total_ = 0;                          // IDs held, all peers
};

}  // namespace zaptid::server
