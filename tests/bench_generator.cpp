// Micro-benchmark of the generator's hot path, uncontended and contended. Run on demand:
//   build/tests/zaptid_bench_generator [seconds-per-run]
// It measures the cost per ID below the layout's ceiling (a layout with 22 sequence bits per
// millisecond, which no CPU reaches), so the numbers are the CPU cost of the code, not the format.
// Each figure is the median of 5 runs; see docs/BENCHMARKS.md.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/generator.h"

namespace {

using Steady = std::chrono::steady_clock;

zaptid::Layout fast_layout() {
  zaptid::LayoutOverrides o;
  o.unit_ms = 1;
  o.bits_sequence = 22;
  o.bits_machine = 0;
  auto l = zaptid::make_layout("snowflake", o, std::nullopt);
  if (!l) std::abort();
  return *l;
}

// Runs `threads` threads calling next() (block == 1) or next_block(block) for `seconds`;
// returns nanoseconds of wall time per ID across all threads.
double run(int threads, uint64_t block, double seconds) {
  zaptid::SystemClock clock;
  zaptid::GeneratorOptions opt;
  opt.layout = fast_layout();
  opt.clock = &clock;
  auto gen = zaptid::Generator::create(opt);
  if (!gen) std::abort();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::vector<std::thread> pool;
  const auto start = Steady::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      uint64_t n = 0, sink = 0;
      std::vector<uint64_t> ids(block);
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 256; ++i) {
          if (block == 1) {
            auto id = (*gen)->next();
            sink ^= *id;
          } else {
            auto b = (*gen)->next_block(block);
            (*gen)->write_ids(*b, ids.data());
            sink ^= ids[block - 1];
          }
          n += block;
        }
      }
      total.fetch_add(n + (sink & 0));
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double ns = std::chrono::duration<double, std::nano>(Steady::now() - start).count();
  return ns / static_cast<double>(total.load());
}

double median_of_5(int threads, uint64_t block, double seconds) {
  std::vector<double> v;
  for (int i = 0; i < 5; ++i) v.push_back(run(threads, block, seconds));
  std::sort(v.begin(), v.end());
  return v[2];
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.5;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("zaptid generator micro-benchmark: median of 5 runs of %.2fs, %u cores\n", seconds, cores);
  std::printf("%-34s %12s %14s\n", "case", "ns/ID", "IDs/s");
  const struct {
    const char* name;
    int threads;
    uint64_t block;
  } cases[] = {
      {"next(), 1 thread", 1, 1},
      {"next(), 2 threads (contended)", 2, 1},
      {"next(), 4 threads (contended)", 4, 1},
      {"next_block(256), 1 thread", 1, 256},
      {"next_block(4096), 2 threads", 2, 4096},
  };
  for (const auto& c : cases) {
    const double ns = median_of_5(c.threads, c.block, seconds);
    std::printf("%-34s %12.1f %14.0f\n", c.name, ns, 1e9 / ns);
  }
  return 0;
}
