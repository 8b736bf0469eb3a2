#include "bench_load.h"

#include <grpcpp/alarm.h>
#include <grpcpp/client_context.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "client/channel.h"
#include "idgen.grpc.pb.h"

namespace zaptid::cli {
namespace {

using Steady = std::chrono::steady_clock;

// Shared by every slot of one run.
struct Run {
  std::atomic<bool> stop{false};
  std::atomic<int> in_flight{0};
  std::mutex mu;
  std::condition_variable done;
  Steady::time_point last_completion;
};

// One call slot: issues a call, and on completion records it and issues the next, until the
// run stops. A call refused over capacity is tried again after the server's retry-after-ms hint
// (with jitter) while its deadline leaves room, as `zaptid get` does. Slots complete on gRPC's
// threads; each owns its records, so no locks are needed.
struct Slot {
  idgen::IdGen::Stub* stub = nullptr;
  const LoadOptions* opt = nullptr;
  Run* run = nullptr;
  std::unique_ptr<grpc::ClientContext> ctx;
  idgen::IdRequest gen_req;
  idgen::IdResponse gen_resp;
  idgen::BatchRequest batch_req;
  idgen::BatchResponse batch_resp;
  Steady::time_point started;
  std::chrono::system_clock::time_point deadline;
  std::unique_ptr<grpc::Alarm> alarms[2];  // the retry timer; two, so none is freed while it fires
  int next_alarm = 0;
  std::vector<uint32_t> latencies_us;
  std::vector<uint64_t> ids;
  std::map<std::string, uint64_t> errors;
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t refused = 0;
  uint64_t abandoned = 0;

  // A new logical call: one deadline for it and its retries.
  void start() {
    started = Steady::now();
    deadline = std::chrono::system_clock::now() + opt->timeout;
    attempt();
  }

  void attempt() {
    ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(deadline);
    auto cb = [this](grpc::Status s) { finish(s); };
    if (opt->batch) {
      batch_resp.Clear();
      stub->async()->GenBatch(ctx.get(), &batch_req, &batch_resp, std::move(cb));
    } else {
      stub->async()->Gen(ctx.get(), &gen_req, &gen_resp, std::move(cb));
    }
  }

  void finish(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      if (const auto hint = client::retry_after(*ctx)) {
        ++refused;
        const auto pause = client::with_jitter(*hint);
        if (run->stop.load(std::memory_order_relaxed)) {
          ++abandoned;  // the run is over: neither a success nor a failure
          end(Steady::now());
          return;
        }
        if (std::chrono::system_clock::now() + pause < deadline) {
          later(pause, [this] { attempt(); });
          return;
        }
        // No room left before the deadline: the call failed, and the next one waits the hint
        // out instead of asking again at once.
        record_failure(s, Steady::now(), "14: over capacity until the call's deadline");
        later(pause, [this] {
          if (run->stop.load(std::memory_order_relaxed)) {
            end(Steady::now());
          } else {
            start();
          }
        });
        return;
      }
    }
    const auto now = Steady::now();
    if (s.ok()) {
      record_latency(now);
      ++ok;
      if (opt->batch) {
        ids.insert(ids.end(), batch_resp.ids().begin(), batch_resp.ids().end());
      } else {
        ids.push_back(gen_resp.id());
      }
    } else {
      record_failure(s, now);
    }
    if (!run->stop.load(std::memory_order_relaxed)) {
      start();
      return;
    }
    end(now);
  }

  void record_latency(Steady::time_point now) {
    latencies_us.push_back(static_cast<uint32_t>(
        std::min<int64_t>(UINT32_MAX, std::chrono::duration_cast<std::chrono::microseconds>(now - started).count())));
  }

  void record_failure(const grpc::Status& s, Steady::time_point now, const char* kind = nullptr) {
    record_latency(now);
    ++failed;
    ++errors[kind ? kind : std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message()];
  }

  // Runs `then` on a gRPC thread after `pause`.
  void later(std::chrono::milliseconds pause, std::function<void()> then) {
    auto& alarm = alarms[next_alarm ^= 1];
    alarm = std::make_unique<grpc::Alarm>();
    alarm->Set(std::chrono::system_clock::now() + pause, [then = std::move(then)](bool) { then(); });
  }

  void end(Steady::time_point now) {
    std::lock_guard lock(run->mu);
    run->last_completion = std::max(run->last_completion, now);
    if (--run->in_flight == 0) run->done.notify_all();
  }
};

}  // namespace

uint32_t quantile_us(const std::vector<uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

LoadResult run_load(const LoadOptions& opt) {
  Run run;
  std::vector<std::unique_ptr<idgen::IdGen::Stub>> stubs;
  std::vector<std::unique_ptr<Slot>> slots;
  for (const auto& channel : opt.channels) {
    stubs.push_back(idgen::IdGen::NewStub(channel));
    for (int i = 0; i < opt.concurrency; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->stub = stubs.back().get();
      slot->opt = &opt;
      slot->run = &run;
      slot->batch_req.set_count(opt.batch_size);
      slots.push_back(std::move(slot));
    }
  }
  const auto begin = Steady::now();
  run.last_completion = begin;
  run.in_flight = static_cast<int>(slots.size());
  for (auto& slot : slots) slot->start();
  std::this_thread::sleep_for(opt.duration);  // the load itself runs on gRPC threads meanwhile
  run.stop = true;
  {
    std::unique_lock lock(run.mu);
    run.done.wait(lock, [&] { return run.in_flight == 0; });
  }

  LoadResult r;
  r.seconds = std::chrono::duration<double>(run.last_completion - begin).count();
  std::vector<uint64_t> ids;
  for (auto& slot : slots) {
    r.ok += slot->ok;
    r.failed += slot->failed;
    r.refused += slot->refused;
    r.abandoned += slot->abandoned;
    for (const auto& [k, v] : slot->errors) r.errors[k] += v;
    r.latencies_us.insert(r.latencies_us.end(), slot->latencies_us.begin(), slot->latencies_us.end());
    ids.insert(ids.end(), slot->ids.begin(), slot->ids.end());
    slot->ids = {};
  }
  std::sort(r.latencies_us.begin(), r.latencies_us.end());
  std::sort(ids.begin(), ids.end());
  r.ids = ids.size();
  r.zero_ids = static_cast<uint64_t>(std::count(ids.begin(), ids.end(), uint64_t{0}));
  for (size_t i = 1; i < ids.size(); ++i) r.duplicates += ids[i] == ids[i - 1] ? 1u : 0u;
  return r;
}

}  // namespace zaptid::cli
