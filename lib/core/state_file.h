// The host lock: one process at a time per (layout, machine id) on a host, and a durable record
// of the newest cursor that may have been issued, so the next process starts strictly after it.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/generator.h"
#include "core/result.h"

namespace zaptid {

/// An exclusive lock on `<dir>/<name>.lock` plus the state record `<dir>/<name>.state`.
/// The record is written by replacing the file (write, fsync, rename, fsync the folder) and
/// carries a checksum: a torn or edited record is refused, never silently reset.
/// Not thread-safe by itself; the Generator serializes its reserve_through() calls.
class HostLock final : public Reserver {
 public:
  /// The default state folder: $ZAPTID_STATE_DIR is the caller's business; this is
  /// $XDG_STATE_HOME/zaptid, else $HOME/.local/state/zaptid, else /var/lib/zaptid.
  static std::filesystem::path default_dir();

  /// The file name stem for a layout key and machine id.
  static std::string name_for(const std::string& layout_key, uint64_t machine_id);

  /// Creates `dir` if needed, takes the lock (waiting up to `timeout`; kUnavailable naming the
  /// holder after that) and reads the record. `holder` (e.g. "gen" or "serve") is written into
  /// the lock file so a waiting process can say who holds it.
  static Result<std::unique_ptr<HostLock>> acquire(const std::filesystem::path& dir, const std::string& name,
                                                   std::chrono::milliseconds timeout, const std::string& holder);

  ~HostLock() override;
  HostLock(const HostLock&) = delete;
  HostLock& operator=(const HostLock&) = delete;

  /// The newest cursor a previous holder may have issued (nullopt: no record yet).
  std::optional<Cursor> recorded() const { return recorded_; }

  /// Durably records `high` (see Reserver).
  Status reserve_through(Cursor high) override;

  /// On clean exit: records exactly the newest cursor this process reserved (nullopt: leaves the
  /// record as it is), so the next process need not wait out the window reserved ahead, then
  /// unlocks. Call at most once; the destructor unlocks regardless (keeping the reserved window).
  Status release(std::optional<Cursor> last_issued);

  const std::filesystem::path& state_path() const { return state_path_; }

 private:
  HostLock(int lock_fd, std::filesystem::path dir, std::filesystem::path state_path);
  Status write_record(Cursor c);

  int lock_fd_;
  std::filesystem::path dir_;
  std::filesystem::path state_path_;
  std::optional<Cursor> recorded_;
};

}  // namespace zaptid
