// Who may issue IDs with a machine id on this host, and where they must start: the host-wide
// claim, and the records of the largest ID issued with that machine id so far.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/claim.h"
#include "core/clock.h"
#include "core/generator.h"
#include "core/layout.h"
#include "core/record.h"
#include "core/result.h"

namespace zaptid {

struct HostClaimOptions {
  Layout layout;
  uint64_t machine_id = 0;
  /// This user's (or deployment's) own record folder: `<state_dir>/machine-<id>.state`.
  std::filesystem::path state_dir;
  /// The folder every zaptid on the host shares (mode 01777): `<host_dir>/machine-<id>`.
  std::filesystem::path host_dir;
  /// Bounds the wait for another process's claim.
  std::chrono::milliseconds timeout{5000};
  Clock* clock = nullptr;  ///< required; not owned
  /// How far ahead of the clock a record may make this process start before it refuses.
  std::chrono::milliseconds max_clock_wait{1000};
};

/// The right to issue IDs with one machine id on this host, in one layout.
///
/// Holds the machine id's MachineClaim (whatever the user, state folder or layout), and keeps two
/// records of the largest 64-bit ID that may have been issued with that machine id: the host's,
/// shared by every user, and the state folder's own. A new holder starts strictly above the
/// largest ID either records (and above any record of zaptid 0.1.0 in the state folder), in
/// whatever layout it uses; with no record at all it starts at the clock's next tick, after
/// everything a previous holder (whose records it cannot see) issued before it took the claim.
/// Not thread-safe by itself; the Generator serializes its reserve_through() calls.
class HostClaim final : public Reserver {
 public:
  /// $XDG_STATE_HOME/zaptid, else $HOME/.local/state/zaptid, else /var/lib/zaptid.
  static std::filesystem::path default_state_dir();
  /// /var/tmp/zaptid: a folder that persists across reboots and that every user can write.
  static std::filesystem::path default_host_dir();

  /// Takes the claim (kUnavailable naming the holder after options.timeout), reads the records
  /// (kCorrupt or kIo naming the file) and works out where this layout starts: kUnavailable
  /// when that is further ahead of the clock than max_clock_wait, kExhausted when no ID of this
  /// layout is above the records.
  static Result<std::unique_ptr<HostClaim>> acquire(const HostClaimOptions& options);

  ~HostClaim() override = default;
  HostClaim(const HostClaim&) = delete;
  HostClaim& operator=(const HostClaim&) = delete;

  /// The generator's start_after: its first cursor is the one after this (nullopt: any).
  std::optional<Cursor> start_after() const { return start_after_; }

  /// Durably records the ID of `high` in both records (see Reserver).
  Status reserve_through(Cursor high) override;

  /// On clean exit: records exactly the ID of the newest cursor this process reserved (nullopt:
  /// leaves the records as they are), so the next process need not wait out the window reserved
  /// ahead, then gives up the claim. That write lowers the records and is not synced: if the
  /// machine crashes before it reaches the disk, the records keep the reserved window, which is
  /// as safe and costs the next process only the wait (a one-ID gen saves two disk syncs). Call
  /// at most once; destroying without it also gives up the claim and keeps the reserved window.
  Status release(std::optional<Cursor> last_issued);

  const std::filesystem::path& state_path() const { return state_->path(); }
  const std::filesystem::path& host_path() const { return host_->path(); }

 private:
  HostClaim() = default;
  /// Records the ID of `c` in both records.
  Status write(Cursor c, RecordFile::Sync sync);

  Layout layout_;
  uint64_t machine_id_ = 0;
  std::unique_ptr<MachineClaim> claim_;
  std::unique_ptr<RecordFile> host_;
  std::unique_ptr<RecordFile> state_;
  std::optional<uint64_t> floor_;  // the largest ID the records held at start
  std::optional<Cursor> start_after_;
};

/// The largest cursor of `layout` whose ID with `machine_id` is at most `id`; nullopt when every
/// ID of the layout is above it. Used to start a layout above an ID any layout issued.
std::optional<Cursor> last_cursor_at_most(const Layout& layout, uint64_t machine_id, uint64_t id);

}  // namespace zaptid
