#include "server/admission.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace zaptid::server {

Admission::Admission(AdmissionOptions options)
    : opt_(options),
      window_ids_(static_cast<uint64_t>(
          std::max(1.0, std::floor(opt_.ids_per_second * std::chrono::duration<double>(opt_.window).count())))),
      // An eighth: a Gen caller's wait grows by at most 62 ms of the default window, and a few
      // hundred small calls of newcomers fit in at once at any ceiling worth serving.
      reserve_ids_(std::max<uint64_t>(1, window_ids_ / 8)) {}

Nanos Admission::margin(Nanos to_deadline) {
  return std::clamp<Nanos>(to_deadline / 10, std::chrono::milliseconds(20), std::chrono::milliseconds(250));
}

std::chrono::milliseconds Admission::hint(double ids) const {
  const double ms = std::ceil(1000.0 * ids / opt_.ids_per_second);
  return std::chrono::milliseconds(static_cast<int64_t>(std::clamp(ms, 1.0, 60'000.0)));
}

Verdict Admission::admit(std::string_view peer, uint64_t count, Nanos wait, Nanos to_deadline) {
  Verdict v;
  // The margin keeps time free after the IDs are ready, for the wake-up and the answer's trip:
  // only a call that waits needs it, and never more than its wait. IDs ready now are handed out
  // to any deadline not yet past.
  const Nanos usable = to_deadline - std::min(margin(to_deadline), std::max(wait, Nanos(0)));
  if (to_deadline <= Nanos(0) || (wait > Nanos(0) && wait > usable)) {
    // The reservations ahead drain at the ceiling: one second of them per second.
    const auto late = std::chrono::ceil<std::chrono::milliseconds>(wait - usable);
    v.retry_after = std::max(late, std::chrono::milliseconds(1));
    v.reason = fmt::format("over capacity: IDs would be ready in {} ms, too close to the call's deadline ({} ms)",
                           std::chrono::ceil<std::chrono::milliseconds>(wait).count(),
                           std::chrono::floor<std::chrono::milliseconds>(to_deadline).count());
    return v;
  }
  std::lock_guard lock(mu_);
  auto it = held_.find(std::string(peer));
  const uint64_t mine = it == held_.end() ? 0 : it->second.ids;
  // Nothing held: the call cannot delay anyone already admitted, so even a batch larger than the
  // window is served; everyone else waits for it to be released.
  if (total_ > 0) {
    if (mine > 0) {
      const size_t peers = held_.size();  // this peer is one of them
      const uint64_t share = std::max<uint64_t>(1, window_ids_ / peers);
      if (mine + count > share) {
        v.retry_after = hint(static_cast<double>(mine + count - share));
        v.reason = fmt::format("over capacity: this connection already waits for {} IDs, its share of {} among {}",
                               mine, share, peers);
        return v;
      }
    }
    // What is held bounds every newcomer's wait, because the cursor only moves forward: keep it
    // within the window, and let only small calls of connections holding nothing use the
    // reserve above it, so that batches cannot fill it however many connections send them.
    const bool may_use_reserve = mine == 0 && count <= reserve_ids_;
    const uint64_t limit = window_ids_ + (may_use_reserve ? reserve_ids_ : 0);
    if (total_ + count > limit) {
      v.retry_after = window_hint(total_ + count - limit, count, wait);
      v.reason = fmt::format("over capacity: calls in flight hold {} IDs ahead; {} more would pass the {} allowed",
                             total_, count, limit);
      return v;
    }
  }
  if (it == held_.end()) it = held_.emplace(std::string(peer), Peer{}).first;
  it->second.ids += count;
  it->second.calls.push_back(next_ticket_);
  calls_.emplace(next_ticket_++, count);
  total_ += count;
  v.admitted = true;
  return v;
}

std::chrono::milliseconds Admission::window_hint(uint64_t over, uint64_t count, Nanos wait) const {
  // The held calls end `count` IDs before `wait`; the call whose delivery brings the excess
  // back to zero ends as many IDs before that as are held behind it.
  uint64_t freed = 0;
  for (const auto& [ticket, ids] : calls_) {
    freed += ids;
    if (freed >= over) break;
  }
  const double behind = static_cast<double>(total_ - std::min(total_, freed) + count);
  const double ready_in = std::chrono::duration<double>(wait).count() - behind / opt_.ids_per_second;
  const std::chrono::milliseconds by_rate = hint(static_cast<double>(over));
  if (ready_in <= 0) return by_rate;
  const auto by_calls = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(std::min(ready_in, 60.0) * 1000)));
  return std::max(by_rate, by_calls);
}

void Admission::release(std::string_view peer, uint64_t count) {
  std::lock_guard lock(mu_);
  auto it = held_.find(std::string(peer));
  if (it == held_.end()) return;
  Peer& p = it->second;
  for (uint64_t left = std::min(p.ids, count); left > 0 && !p.calls.empty();) {
    auto call = calls_.find(p.calls.front());
    const uint64_t gone = std::min(call->second, left);
    call->second -= gone;
    p.ids -= gone;
    total_ -= gone;
    left -= gone;
    if (call->second == 0) {
      calls_.erase(call);
      p.calls.pop_front();
    }
  }
  if (p.ids == 0) held_.erase(it);
}

size_t Admission::peers() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

uint64_t Admission::held(std::string_view peer) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(std::string(peer));
  return it == held_.end() ? 0 : it->second.ids;
}

uint64_t Admission::held_total() const {
  std::lock_guard lock(mu_);
  return total_;
}

}  // namespace zaptid::server
