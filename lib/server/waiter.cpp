#include "server/waiter.h"

#include <algorithm>

namespace zaptid::server {

Waiter::Waiter(Clock& clock, Finisher finish) : clock_(clock), finish_(std::move(finish)) {
  thread_ = std::thread([this] { run(); });
}

Waiter::~Waiter() { stop(); }

void Waiter::add(Pending p) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      // Only a new earliest entry changes how long the thread sleeps.
      wake = queue_.empty() || p.ready_at < queue_.top().ready_at;
      queue_.push(p);
      if (wake) cv_.notify_one();
      return;
    }
  }
  finish_(p, Outcome::kStopping);
}

void Waiter::poke() {
  std::lock_guard lock(mu_);
  cv_.notify_one();
}

size_t Waiter::size() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void Waiter::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Waiter::run() {
  std::vector<std::pair<Pending, Outcome>> due;
  std::unique_lock lock(mu_);
  for (;;) {
    if (stopping_) {
      while (!queue_.empty()) {
        due.emplace_back(queue_.top(), Outcome::kStopping);
        queue_.pop();
      }
    } else if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    } else {
      const Nanos now = clock_.now();
      const auto steady_now = std::chrono::steady_clock::now();
      while (!queue_.empty() && queue_.top().ready_at <= now) {
        due.emplace_back(queue_.top(), Outcome::kReady);
        queue_.pop();
      }
      if (due.empty()) {
        // The head is not ready. If the clock stepped back, entries behind the head may have
        // given up; they are checked when the head is, which is at most give_up away.
        const Pending& head = queue_.top();
        if (steady_now >= head.give_up) {
          due.emplace_back(head, Outcome::kGaveUp);
          queue_.pop();
        } else {
          const auto until_ready = std::chrono::duration_cast<std::chrono::steady_clock::duration>(head.ready_at - now);
          cv_.wait_until(lock, std::min(steady_now + until_ready, head.give_up));
          continue;
        }
      }
    }
    const bool last = stopping_;
    lock.unlock();
    for (auto& [p, outcome] : due) finish_(p, outcome);
    due.clear();
    if (last) return;  // add() finishes late arrivals itself once stopping_ is set
    lock.lock();
  }
}

}  // namespace zaptid::server
