#include "core/generator.h"

#include <algorithm>
#include <fmt/format.h>

#include "core/parse.h"

namespace zaptid {
namespace {

constexpr uint64_t kMaxBlock = uint64_t{1} << 24;

Error exhausted(const Layout& l) {
  return {ErrorKind::kExhausted,
          fmt::format("the layout's time field ran out at {}; no more IDs can be issued with this layout",
                      format_timestamp_ms(l.exhausted_at_ms()))};
}

}  // namespace

Result<std::unique_ptr<Generator>> Generator::create(GeneratorOptions options) {
  if (options.clock == nullptr) return invalid("generator needs a clock");
  const Layout& l = options.layout;
  if (options.machine_id > l.max_machine()) {
    return invalid(fmt::format("machine id {} does not fit the layout's {} machine bits (0 to {})", options.machine_id,
                               l.bits_machine, l.max_machine()));
  }
  // At or past the layout's last cursor nothing is left; a cursor past it (a damaged or foreign
  // record) must not reach the tick arithmetic either.
  if (options.start_after && *options.start_after >= (l.max_time() << l.bits_sequence | l.max_sequence())) {
    return exhausted(l);
  }
  return std::unique_ptr<Generator>(new Generator(std::move(options)));
}

Generator::Generator(GeneratorOptions options)
    : opt_(std::move(options)),
      seq_bits_(opt_.layout.bits_sequence),
      unit_ns_(static_cast<uint64_t>(opt_.layout.unit_ms) * 1'000'000),
      epoch_ns_(opt_.layout.epoch_ms * 1'000'000),
      next_(opt_.start_after ? *opt_.start_after + 1 : 0),
      start_tick_(opt_.start_after ? *opt_.start_after >> seq_bits_ : 0),
      persisted_(opt_.start_after ? *opt_.start_after + 1 : 0) {}

uint64_t Generator::max_block() const {
  return std::min(kMaxBlock, opt_.layout.max_time() << seq_bits_);
}

Result<uint64_t> Generator::current_tick() const {
  const int64_t now = opt_.clock->now().count();
  if (now < epoch_ns_) {
    return unavailable(fmt::format("the clock ({}) is before the layout's epoch ({}); correct the clock",
                                   format_timestamp_ms(now / 1'000'000), format_timestamp_ms(opt_.layout.epoch_ms)));
  }
  return static_cast<uint64_t>(now - epoch_ns_) / unit_ns_;
}

Status Generator::check_behind(uint64_t now) {
  uint64_t seen = seen_tick_.load(std::memory_order_relaxed);
  // Release: a thread that sees this tick and then reads the clock reads it after this reading.
  while (now > seen && !seen_tick_.compare_exchange_weak(seen, now, std::memory_order_release,
                                                        std::memory_order_relaxed)) {
  }
  if (now < seen) note_behind();
  const uint64_t newest = std::max(seen, start_tick_);
  if (now >= newest) return Ok{};
  const auto behind_ms = static_cast<int64_t>(newest - now) * opt_.layout.unit_ms;
  if (behind_ms <= opt_.max_clock_wait.count()) return Ok{};
  // Behind only the predecessor's record, not a tick this clock showed: that may be a window
  // reserved ahead, which max_start_wait allows for.
  if (now >= seen && behind_ms <= opt_.max_start_wait.count()) return Ok{};
  return unavailable(fmt::format(
      "the clock is {} behind the newest time already used ({}); refusing to wait longer than the clock "
      "wait limit of {}",
      format_duration_ms(behind_ms), format_timestamp_ms(opt_.layout.tick_start_ms(newest)),
      format_duration_ms(opt_.max_clock_wait.count())));
}

void Generator::note_behind() const {
  std::lock_guard lock(step_mu_);
  // Read again, under the lock: readings taken here are in the lock's order, and each is later
  // than the reading behind the tick loaded now.
  const uint64_t seen = seen_tick_.load(std::memory_order_acquire);
  const int64_t reading = opt_.clock->now().count();
  const int64_t seen_start = epoch_ns_ + static_cast<int64_t>(seen * unit_ns_);
  if (reading >= seen_start) return;  // the first reading only lost a race with a newer one
  int64_t size = 0;
  if (seen != step_from_tick_) {
    size = seen_start - reading;  // a new step back from the newest tick
  } else if (reading < behind_reading_ns_) {
    size = behind_reading_ns_ - reading;  // back again while catching up
  }
  step_from_tick_ = seen;
  behind_reading_ns_ = reading;
  if (size <= 0) return;  // catching up
  ++step_backs_.count;
  step_backs_.total += Nanos(size);
  step_backs_.largest = std::max(step_backs_.largest, Nanos(size));
}

ClockStepBacks Generator::clock_step_backs() const {
  std::lock_guard lock(step_mu_);
  return step_backs_;
}

Result<Block> Generator::reserve(uint64_t count) {
  if (count == 0 || count > max_block()) {
    return invalid(fmt::format("cannot reserve {} IDs at once (1 to {})", count, max_block()));
  }
  auto now = current_tick();
  if (!now) return now.error();
  if (*now > opt_.layout.max_time()) return exhausted(opt_.layout);
  if (auto st = check_behind(*now); !st) return st.error();

  const Cursor floor = *now << seq_bits_;
  Cursor cur = next_.load(std::memory_order_relaxed);
  Block block;
  for (;;) {
    block.first = std::max(cur, floor);
    block.count = count;
    if ((block.last() >> seq_bits_) > opt_.layout.max_time() || block.last() < block.first) {
      return exhausted(opt_.layout);
    }
    if (next_.compare_exchange_weak(cur, block.last() + 1, std::memory_order_relaxed)) break;
  }
  // After a step back the clock's newest tick still counts: the rest of that tick's sequence is
  // handed out at once, and only a tick the clock has never shown is waited for.
  block.ready = (block.last() >> seq_bits_) <= seen_tick_.load(std::memory_order_relaxed);
  if (opt_.reserver != nullptr && block.last() >= persisted_.load(std::memory_order_acquire)) {
    if (auto st = persist_through(block.last()); !st) return st.error();
  }
  return block;
}

bool Generator::needs_reservation(uint64_t count) const {
  if (opt_.reserver == nullptr || count == 0) return false;
  auto now = current_tick();
  const Cursor floor = now ? *now << seq_bits_ : 0;
  const Cursor last = std::max(next_.load(std::memory_order_relaxed), floor) + (count - 1);
  return last >= persisted_.load(std::memory_order_acquire);
}

Status Generator::persist_through(Cursor last) {
  std::lock_guard lock(persist_mu_);
  if (last < persisted_.load(std::memory_order_relaxed)) return Ok{};  // another thread covered it
  return write_reservation(last);
}

Status Generator::write_reservation(Cursor from) {
  const Layout& l = opt_.layout;
  const auto ahead = static_cast<uint64_t>(std::max<int64_t>(1, opt_.reserve_ahead.count() / l.unit_ms));
  const uint64_t tick = std::min(l.max_time(), (from >> seq_bits_) + ahead);
  const Cursor high = (tick << seq_bits_) | l.max_sequence();
  if (high < persisted_.load(std::memory_order_relaxed)) return Ok{};  // never record less than before
  if (auto st = opt_.reserver->reserve_through(high); !st) return st;
  persisted_.store(high + 1, std::memory_order_release);
  return Ok{};
}

Status Generator::top_up(std::chrono::milliseconds low) {
  if (opt_.reserver == nullptr) return Ok{};
  auto now = current_tick();
  if (!now) return now.error();
  if (*now > opt_.layout.max_time()) return Ok{};  // nothing left to reserve
  const auto low_ticks = static_cast<uint64_t>(std::max<int64_t>(0, low.count() / opt_.layout.unit_ms));
  auto short_of_low = [&] {
    const Cursor from = std::max(next_.load(std::memory_order_relaxed), *now << seq_bits_);
    // Enough is left when the window reaches past `from`'s tick plus low_ticks.
    return (persisted_.load(std::memory_order_acquire) >> seq_bits_) <= (from >> seq_bits_) + low_ticks;
  };
  if (!short_of_low()) return Ok{};
  std::lock_guard lock(persist_mu_);
  if (!short_of_low()) return Ok{};  // reserve() wrote meanwhile
  return write_reservation(std::max(next_.load(std::memory_order_relaxed), *now << seq_bits_));
}

Nanos Generator::ready_at(const Block& block) const {
  return Nanos(epoch_ns_ + static_cast<int64_t>((block.last() >> seq_bits_) * unit_ns_));
}

Nanos Generator::ready_at_next(uint64_t count) const {
  const Nanos now = opt_.clock->now();
  const int64_t since_epoch = now.count() - epoch_ns_;
  const uint64_t tick = since_epoch <= 0 ? 0 : static_cast<uint64_t>(since_epoch) / unit_ns_;
  if (tick < seen_tick_.load(std::memory_order_relaxed)) note_behind();
  const Cursor first = std::max(next_.load(std::memory_order_relaxed), tick << seq_bits_);
  return ready_at(Block{first, std::max<uint64_t>(count, 1)});
}

Nanos Generator::clock_behind() const {
  const int64_t seen_start = epoch_ns_ + static_cast<int64_t>(seen_tick_.load(std::memory_order_acquire) * unit_ns_);
  return Nanos(std::max<int64_t>(0, seen_start - opt_.clock->now().count()));
}

bool Generator::is_ready(const Block& block) const {
  return block.ready || (block.last() >> seq_bits_) <= seen_tick_.load(std::memory_order_relaxed) ||
         opt_.clock->now() >= ready_at(block);
}

Status Generator::wait_ready(const Block& block) {
  if (block.ready) return Ok{};
  const uint64_t ready_tick = block.last() >> seq_bits_;
  for (;;) {
    auto now = current_tick();
    if (!now) return now.error();
    const auto behind = check_behind(*now);  // records the tick, even when far behind
    if (ready_tick <= seen_tick_.load(std::memory_order_relaxed)) return Ok{};
    if (!behind) return behind;
    opt_.clock->sleep_until(ready_at(block));
  }
}

Result<Block> Generator::next_block(uint64_t count) {
  auto block = reserve(count);
  if (!block) return block;
  if (auto st = wait_ready(*block); !st) return st.error();
  return block;
}

Result<uint64_t> Generator::next() {
  auto block = next_block(1);
  if (!block) return block.error();
  return id_at(block->first);
}

uint64_t Generator::id_at(Cursor c) const {
  return opt_.layout.compose(c >> seq_bits_, c & opt_.layout.max_sequence(), opt_.machine_id);
}

void Generator::write_ids(const Block& block, uint64_t* out) const {
  for (uint64_t i = 0; i < block.count; ++i) out[i] = id_at(block.first + i);
}

std::optional<Cursor> Generator::last_reserved() const {
  const Cursor next = next_.load(std::memory_order_relaxed);
  if (next == 0) return std::nullopt;
  return next - 1;
}

}  // namespace zaptid
