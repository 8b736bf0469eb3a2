#include "bench_load.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

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
// run stops. Slots complete on gRPC's threads; each owns its records, so no locks are needed.
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
  std::vector<uint32_t> latencies_us;
  std::vector<uint64_t> ids;
  std::map<std::string, uint64_t> errors;
  uint64_t ok = 0;
  uint64_t failed = 0;

  void start() {
    ctx = std::make_unique<grpc::ClientContext>();
    started = Steady::now();
    ctx->set_deadline(std::chrono::system_clock::now() + opt->timeout);
    auto cb = [this](grpc::Status s) { finish(s); };
    if (opt->batch) {
      batch_resp.Clear();
      stub->async()->GenBatch(ctx.get(), &batch_req, &batch_resp, std::move(cb));
    } else {
      stub->async()->Gen(ctx.get(), &gen_req, &gen_resp, std::move(cb));
    }
  }

  void finish(const grpc::Status& s) {
    const auto now = Steady::now();
    latencies_us.push_back(static_cast<uint32_t>(
        std::min<int64_t>(UINT32_MAX, std::chrono::duration_cast<std::chrono::microseconds>(now - started).count())));
    if (s.ok()) {
      ++ok;
      if (opt->batch) {
        ids.insert(ids.end(), batch_resp.ids().begin(), batch_resp.ids().end());
      } else {
        ids.push_back(gen_resp.id());
      }
    } else {
      ++failed;
      ++errors[std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message()];
    }
    if (!run->stop.load(std::memory_order_relaxed)) {
      start();
      return;
    }
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
