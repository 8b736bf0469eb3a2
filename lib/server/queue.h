// The completion queues of IdService: the Tag every queue event carries, a Queue and the thread
// that serves it, and the Worker thread that records new high-water marks off those threads.
#pragma once

#include <grpc/grpc.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "server/id_service.h"
#include "server/waiter.h"

namespace zaptid::server {

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

template <class C>
void IdService::request(Queue& queue) {
  std::lock_guard lock(queue.mu);
  if (queue.open) new C(*this, queue);  // owns itself from here; deletes itself when done
}

}  // namespace zaptid::server
