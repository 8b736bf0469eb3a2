// The high-water record: a small file that holds the largest 64-bit ID that may have been issued
// with one machine id, in any layout, so that whoever uses that machine id next starts above it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/layout.h"
#include "core/result.h"

namespace zaptid {

/// What a record says.
struct RecordValue {
  uint64_t machine_id = 0;
  uint64_t id = 0;          ///< the largest ID that may have been issued with machine_id
  std::string layout_key;   ///< Layout::key() of the layout that wrote it (for messages)
};

/// A record file is exactly this many bytes: the text, then padding. It is rewritten in place
/// with one write at offset 0, which stays inside one disk sector (the reason PostgreSQL keeps
/// pg_control under 512 bytes), so a crash leaves the old record or the new one, never a mix.
inline constexpr size_t kRecordSize = 256;

/// The bytes of a record, padded to kRecordSize.
std::string format_record(const RecordValue& v);

/// Parses a record's bytes; an error (kCorrupt, the reason in a few words) when they are not
/// exactly a record zaptid writes. Never reads past `text`.
Result<RecordValue> parse_record(std::string_view text);

/// Parses a record of zaptid 0.1.0 (`<layout-key>-machine-<id>.state`, a cursor of that layout);
/// nullopt when `text` is not one.
std::optional<uint64_t> parse_legacy_record(std::string_view text);

/// The layout a Layout::key() names; nullopt for anything else.
std::optional<Layout> layout_from_key(std::string_view key);

/// Creates `dir` if needed (and its parents) with `mode`, less the umask unless `exact_mode`
/// (01777 for a folder every user shares). `what` names it in errors ("state folder").
Status make_folder(const std::filesystem::path& dir, unsigned mode, bool exact_mode, std::string_view what);

/// Where a record lives, and how its folder and file are made when missing.
struct RecordPlace {
  std::filesystem::path dir;
  std::string name;
  unsigned dir_mode = 0777;
  bool exact_dir_mode = false;      ///< see make_folder()
  unsigned file_mode = 0644;        ///< exactly, whatever the umask
  std::string folder_noun = "folder";  ///< for messages: "cannot create state folder …"
};

/// One record file, open for reading and rewriting.
///
/// Opening never follows a symbolic link, never blocks (a FIFO or device is refused before any
/// read), and refuses a file larger than a record. Writes check first that the path still
/// names the open file, and create it again if it was deleted or replaced, so deleting records
/// while zaptid runs loses nothing it wrote later. Not thread-safe.
class RecordFile {
 public:
  /// Opens the record, creating its folder if needed. A missing or empty file is not an error:
  /// value() is then nullopt and the first write() creates it. A damaged record, or one of
  /// another machine id, is kCorrupt; a folder that cannot be made, or a file that is not a
  /// regular file or cannot be opened for writing, is kIo.
  static Result<std::unique_ptr<RecordFile>> open(RecordPlace place, uint64_t machine_id);

  ~RecordFile();
  RecordFile(const RecordFile&) = delete;
  RecordFile& operator=(const RecordFile&) = delete;

  /// What the file held when opened, or last wrote; nullopt when there was no file.
  const std::optional<RecordValue>& value() const { return value_; }
  const std::filesystem::path& path() const { return path_; }

  /// How a write reaches the disk.
  enum class Sync {
    kDurable,  ///< write, then fdatasync: on success it survives a crash
    /// Write only: after a crash of the machine (not of the process) the file may still hold what
    /// it held before. Only for lowering a record to a value as true as the durable one it
    /// replaces, where either surviving is safe.
    kLazy,
  };

  /// Replaces the record. A record (or folder) deleted meanwhile is made again.
  Status write(const RecordValue& v, Sync sync = Sync::kDurable);

 private:
  explicit RecordFile(RecordPlace place);
  /// Opens the file (creating it when `create`); sets fd_. kIo/kCorrupt errors name the path.
  Status open_file(bool create);

  RecordPlace place_;
  std::filesystem::path path_;
  int fd_ = -1;
  std::optional<RecordValue> value_;
};

}  // namespace zaptid
