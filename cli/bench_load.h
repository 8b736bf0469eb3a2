// The load engine behind `zaptid bench`: many calls in flight over several connections,
// every latency and every ID kept for the report and the uniqueness check.
#pragma once

#include <grpcpp/channel.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace zaptid::cli {

struct LoadOptions {
  std::vector<std::shared_ptr<grpc::Channel>> channels;  ///< one per connection
  int concurrency = 1;                                   ///< calls in flight per connection
  std::chrono::milliseconds duration{5000};
  bool batch = false;       ///< GenBatch instead of Gen
  uint32_t batch_size = 1;  ///< IDs per GenBatch call
  std::chrono::milliseconds timeout{1000};  ///< deadline of each call, its retries included
};

struct LoadResult {
  double seconds = 0;           ///< from the first call to the last completion
  uint64_t ok = 0;              ///< calls that returned OK
  uint64_t failed = 0;          ///< calls that did not
  /// Tries refused over capacity (UNAVAILABLE with a retry-after-ms hint); each was tried again
  /// after the hint while its deadline allowed, else it counts as failed.
  uint64_t refused = 0;
  uint64_t abandoned = 0;       ///< calls refused over capacity when the run ended, not tried again
  std::map<std::string, uint64_t> errors;  ///< "CODE: message" → count
  uint64_t ids = 0;             ///< IDs received
  uint64_t duplicates = 0;      ///< IDs received more than once
  uint64_t zero_ids = 0;        ///< OK responses carrying ID 0 (a made-up ID)
  std::vector<uint32_t> latencies_us;  ///< sorted, one per completed call
};

/// Runs the load for opt.duration, then waits (up to one call timeout) for calls in flight.
/// Thread-safe to call from one thread at a time.
LoadResult run_load(const LoadOptions& opt);

/// The q-quantile (0..1) of sorted latencies, in microseconds; 0 when there are none.
uint32_t quantile_us(const std::vector<uint32_t>& sorted, double q);

}  // namespace zaptid::cli
