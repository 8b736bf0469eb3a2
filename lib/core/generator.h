// The ID generator: unique, strictly increasing IDs for one layout and one machine id.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "core/clock.h"
#include "core/layout.h"
#include "core/result.h"

namespace zaptid {

/// A cursor is an ID's time and sequence as one number, time << bits_sequence | sequence.
/// Cursors order exactly as the IDs of one machine id do, so "strictly after" is one comparison.
using Cursor = uint64_t;

/// Persists how far a generator may have issued, so that a successor (a restart, another
/// process, another host through etcd) starts strictly after it. Called rarely: once per
/// reserved window, never per ID.
class Reserver {
 public:
  virtual ~Reserver() = default;
  /// Durably records that cursors up to and including `high` may be issued. Must not return
  /// before the record would survive a crash. On error the generator issues nothing past
  /// what was recorded before.
  virtual Status reserve_through(Cursor high) = 0;
};

/// Makes a Reserver that passes each call on to `inner` (which outlives it), doing something
/// around it: the server measures its writes this way (server/store_metrics.h).
using ReserverWrapper = std::function<std::unique_ptr<Reserver>(Reserver& inner)>;

struct GeneratorOptions {
  Layout layout;
  uint64_t machine_id = 0;  ///< must fit layout.bits_machine
  Clock* clock = nullptr;   ///< required; not owned; must outlive the generator
  /// How far the clock may be behind the newest time this generator has seen (its own IDs, or
  /// start_after) before a request fails instead of waiting for the clock to catch up.
  std::chrono::milliseconds max_clock_wait{1000};
  /// The newest cursor a predecessor may have issued; the first ID comes strictly after it.
  std::optional<Cursor> start_after;
  /// Where reservations are persisted; may be null (nothing outlives the process).
  Reserver* reserver = nullptr;
  /// How far past the current need each reservation reaches: fewer writes, longer wait for a
  /// successor after a crash.
  std::chrono::milliseconds reserve_ahead{500};
  /// How far start_after may lie ahead of the clock before a request fails instead of waiting;
  /// the larger of this and max_clock_wait applies. A record reserved ahead by a predecessor (or
  /// by this server before it lost its etcd lease) is up to reserve_ahead in the future although
  /// no clock is wrong.
  std::chrono::milliseconds max_start_wait{0};
};

/// A reserved run of `count` consecutive cursors starting at `first`. Its IDs may be handed out
/// once the clock has shown the tick of its last cursor (see Generator::wait_ready()). After the
/// clock stepped back, a tick it showed before counts: IDs are never from a time not yet reached.
struct Block {
  Cursor first = 0;
  uint64_t count = 0;
  /// The clock had already shown the last cursor's tick when the block was reserved, so it
  /// may be handed out without reading the clock again.
  bool ready = false;
  Cursor last() const { return first + count - 1; }
};

/// What a generator saw of its clock stepping back: readings behind a tick the clock had already
/// shown. A step back within one tick does not matter to IDs and is not seen.
struct ClockStepBacks {
  uint64_t count = 0;  ///< step-backs seen; the readings while the clock catches up count once
  /// Their sizes added up, and the largest. A step back from the newest tick is measured from
  /// that tick's start (the generator keeps ticks, not readings), so it may be up to one tick
  /// short; a further step back while catching up is measured between the two readings.
  Nanos total{0};
  Nanos largest{0};
};

/// Issues IDs. Thread-safe: any number of threads may call any method at once; no two calls
/// ever get the same ID, and the IDs of successive reservations strictly increase.
/// The hot path is one compare-and-swap; no lock is held while waiting for time.
class Generator {
 public:
  /// Checks the options (machine id fits, clock given). Does not read the clock.
  static Result<std::unique_ptr<Generator>> create(GeneratorOptions options);

  /// Reserves `count` IDs in one atomic step, without sleeping. Fails (kUnavailable) when the
  /// clock is more than max_clock_wait behind, (kExhausted) when the IDs would need time past
  /// the layout's end, (kInvalidArgument) for count 0 or over max_block(), or with the
  /// reserver's error. The IDs may not be ready yet: see ready_at() and wait_ready().
  Result<Block> reserve(uint64_t count);

  /// True when reserve(count) now would first record a new high-water with the reserver (a
  /// file write, or an etcd round trip), so a caller that must not block can hand the call to a
  /// thread that may. A hint: other threads move the cursor meanwhile. Reads the clock.
  bool needs_reservation(uint64_t count) const;

  /// Records a new high-water ahead of time when less than `low` of the reserved window is left
  /// ahead of the clock (or of the next free cursor, if later), so that reserve() does not wait
  /// for the reserver: a slow store (etcd over a slow link) then delays nobody as long as one
  /// write takes less than `low`. Does nothing (Ok) without a reserver or when enough is left.
  /// Any thread; serialized with reserve()'s own writes.
  Status top_up(std::chrono::milliseconds low);

  /// The wall-clock time at which every ID of `block` may be handed out: the start of its last
  /// tick. The block may be ready earlier when the clock showed that tick and then stepped back.
  Nanos ready_at(const Block& block) const;
  /// A forecast: the ready_at() of the block reserve(count) would return now (from the next
  /// free cursor, or the current tick when the generator is idle). Reserves nothing; a hint,
  /// since other threads reserve meanwhile. Reads the clock, and sees a step back of it as
  /// reserve() does (a server that refuses the call on this forecast never calls reserve()).
  Nanos ready_at_next(uint64_t count) const;
  /// How far the clock now reads behind the start of the newest tick it has shown this generator
  /// (zero when it is not behind): a step back that every new reservation must wait out. Reads
  /// the clock.
  Nanos clock_behind() const;
  /// True when the clock has shown the tick of the block's last cursor (now or before).
  bool is_ready(const Block& block) const;
  /// Sleeps (through the clock) until `block` is ready. Fails, and the block's IDs are then
  /// discarded unused, if the clock stepped back further than max_clock_wait meanwhile.
  Status wait_ready(const Block& block);

  /// reserve(count) + wait_ready(): a block ready to hand out.
  Result<Block> next_block(uint64_t count);
  /// One ready ID.
  Result<uint64_t> next();

  /// The ID of a cursor of this generator.
  uint64_t id_at(Cursor c) const;
  /// Writes block.count IDs of a ready block into out (which must hold that many).
  void write_ids(const Block& block, uint64_t* out) const;

  /// The clock's step-backs this generator saw in reserve(), wait_ready() and ready_at_next(). Costs the request
  /// path nothing unless the clock reads behind the newest tick. Any thread.
  ClockStepBacks clock_step_backs() const;

  /// The newest cursor reserved so far (issued or about to be), or start_after, or nullopt if none.
  std::optional<Cursor> last_reserved() const;

  const Layout& layout() const { return opt_.layout; }
  uint64_t machine_id() const { return opt_.machine_id; }
  /// The largest count reserve() takes: 2^24, and at most what fits the time field.
  uint64_t max_block() const;

 private:
  explicit Generator(GeneratorOptions options);
  /// The current tick, or an error if the clock is before the epoch.
  Result<uint64_t> current_tick() const;
  /// Records that the clock showed tick `now`; fails if it is too far behind the newest tick
  /// the clock has shown or a predecessor used.
  Status check_behind(uint64_t now);
  Status persist_through(Cursor last);
  /// Writes a reservation reaching reserve_ahead past cursor `from`'s tick; persist_mu_ held.
  Status write_reservation(Cursor from);
  /// Called when a reading (tick `now`) was behind the newest tick shown: re-reads the clock and
  /// counts a step back if it still is (a reading taken before another thread's newer one is not).
  void note_behind() const;

  GeneratorOptions opt_;
  int seq_bits_;
  uint64_t unit_ns_;
  int64_t epoch_ns_;
  std::atomic<Cursor> next_;          // the next cursor that may be reserved
  uint64_t start_tick_;                // the tick of start_after (0 if none)
  std::atomic<uint64_t> seen_tick_{0};  // the newest tick the clock has shown this generator
  std::atomic<Cursor> persisted_;     // cursors below this are durably reserved (if reserver)
  std::mutex persist_mu_;             // serializes reserver calls only
  mutable std::mutex step_mu_;         // guards the step-back state below; taken only when behind
  mutable uint64_t step_from_tick_ = 0;    // seen_tick_ when the current step back was seen
  mutable int64_t behind_reading_ns_ = 0;  // the last reading taken under step_mu_ while behind
  mutable ClockStepBacks step_backs_;
};

}  // namespace zaptid
