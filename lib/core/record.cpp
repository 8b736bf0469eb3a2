#include "core/record.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "core/parse.h"

namespace zaptid {
namespace {

constexpr std::string_view kMagic = "zaptid-record 2\n";
constexpr std::string_view kLegacyMagic = "zaptid-state 1\n";

uint32_t crc32(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (char c : data) {
    crc ^= static_cast<unsigned char>(c);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

bool is_key_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

// Takes "<label> <value>\n" off the front of `text`; the value, or nullopt.
std::optional<std::string_view> take_field(std::string_view& text, std::string_view label) {
  if (text.substr(0, label.size()) != label || text.size() <= label.size() || text[label.size()] != ' ') {
    return std::nullopt;
  }
  const auto end = text.find('\n');
  if (end == std::string_view::npos) return std::nullopt;
  const auto value = text.substr(label.size() + 1, end - label.size() - 1);
  text.remove_prefix(end + 1);
  return value;
}

std::optional<uint64_t> decimal(std::optional<std::string_view> text) {
  if (!text) return std::nullopt;
  auto v = parse_unsigned(*text, UINT64_MAX, "value");
  if (!v) return std::nullopt;
  return *v;
}

Error corrupt(std::string why) { return {ErrorKind::kCorrupt, std::move(why)}; }

std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// "owner uid 1001, mode 0644" of a path, for messages about permissions; empty if unknown.
std::string owner_of(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "";
  return fmt::format(" (owner uid {}, mode {:04o})", st.st_uid, st.st_mode & 07777);
}

Error io_error(std::string_view what, const std::filesystem::path& path) {
  const int err = errno;
  std::string extra = err == EACCES || err == EPERM ? owner_of(path) : "";
  return {ErrorKind::kIo, fmt::format("{} {}: {}{}", what, path.string(), std::strerror(err), extra)};
}

}  // namespace

std::string format_record(const RecordValue& v) {
  const std::string body = fmt::format("{}machine-id {}\nid {}\nlayout {}\n", kMagic, v.machine_id, v.id, v.layout_key);
  std::string text = fmt::format("{}crc32 {:08x}\n", body, crc32(body));
  if (text.size() < kRecordSize) text.append(kRecordSize - text.size() - 1, ' ').push_back('\n');
  return text;
}

Result<RecordValue> parse_record(std::string_view text) {
  if (text.size() != kRecordSize) return corrupt(fmt::format("{} bytes, not {}", text.size(), kRecordSize));
  const auto crc_pos = text.find("\ncrc32 ");
  if (crc_pos == std::string_view::npos || crc_pos + 16 > text.size() || text[crc_pos + 15] != '\n') {
    return corrupt("no checksum");
  }
  const auto body = text.substr(0, crc_pos + 1);
  if (text.substr(crc_pos + 7, 8) != fmt::format("{:08x}", crc32(body))) return corrupt("checksum mismatch");
  const auto padding = text.substr(crc_pos + 16);
  if (padding.back() != '\n' || padding.find_first_not_of(' ') != padding.size() - 1) {
    return corrupt("trailing bytes");
  }
  std::string_view rest = body;
  if (rest.substr(0, kMagic.size()) != kMagic) return corrupt("unknown format");
  rest.remove_prefix(kMagic.size());
  RecordValue v;
  const auto machine = decimal(take_field(rest, "machine-id"));
  const auto id = decimal(take_field(rest, "id"));
  const auto key = take_field(rest, "layout");
  if (!machine || !id || !key || !rest.empty() || key->empty() || key->size() > 64) return corrupt("unknown format");
  for (char c : *key) {
    if (!is_key_char(c)) return corrupt("unknown format");
  }
  v.machine_id = *machine;
  v.id = *id;
  v.layout_key = std::string(*key);
  return v;
}

std::optional<uint64_t> parse_legacy_record(std::string_view text) {
  const auto crc_pos = text.rfind("crc32 ");
  if (crc_pos == std::string_view::npos || text.size() != crc_pos + 15 || text.back() != '\n') return std::nullopt;
  const auto body = text.substr(0, crc_pos);
  if (text.substr(crc_pos + 6, 8) != fmt::format("{:08x}", crc32(body))) return std::nullopt;
  if (body.substr(0, kLegacyMagic.size()) != kLegacyMagic) return std::nullopt;
  std::string_view rest = body.substr(kLegacyMagic.size());
  const auto cursor = decimal(take_field(rest, "cursor"));
  if (!cursor || !rest.empty()) return std::nullopt;
  return cursor;
}

std::optional<Layout> layout_from_key(std::string_view key) {
  // e<epoch>-u<unit>-t<bits>-s<bits>-m<bits>-<ms|sm>
  std::array<uint64_t, 5> n{};
  constexpr std::string_view kLetters = "eutsm";
  for (size_t i = 0; i < n.size(); ++i) {
    const auto dash = key.find('-');
    if (dash == std::string_view::npos || key.empty() || key[0] != kLetters[i]) return std::nullopt;
    auto v = parse_unsigned(key.substr(1, dash - 1), INT64_MAX, "key");
    if (!v) return std::nullopt;
    n[i] = *v;
    key.remove_prefix(dash + 1);
  }
  if (key != "ms" && key != "sm") return std::nullopt;
  if (n[3] > 31 || n[4] > 31) return std::nullopt;
  LayoutOverrides o;
  o.epoch_ms = static_cast<int64_t>(n[0]);
  o.unit_ms = static_cast<int64_t>(n[1]);
  o.bits_sequence = static_cast<int>(n[3]);
  o.bits_machine = static_cast<int>(n[4]);
  auto l = make_layout("sonyflake", o, std::nullopt);
  if (!l || static_cast<uint64_t>(l->bits_time) != n[2]) return std::nullopt;
  l->machine_above_sequence = key == "ms";
  return *l;
}

Status make_folder(const std::filesystem::path& dir, unsigned mode, bool exact_mode, std::string_view what) {
  std::error_code ec;
  if (!dir.parent_path().empty()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (!ec) {
    if (::mkdir(dir.c_str(), static_cast<mode_t>(mode)) == 0) {
      // mkdir() applies the umask; a shared folder needs exactly its mode (01777).
      if (exact_mode && ::chmod(dir.c_str(), static_cast<mode_t>(mode)) != 0) {
        return io_error("cannot set the mode of", dir);
      }
    } else if (errno != EEXIST) {
      ec = std::error_code(errno, std::generic_category());
    }
  }
  if (!ec && !std::filesystem::is_directory(dir, ec) && !ec) ec = std::make_error_code(std::errc::not_a_directory);
  if (ec) return Error{ErrorKind::kIo, fmt::format("cannot create {} {}: {}", what, dir.string(), ec.message())};
  return Ok{};
}

Result<std::unique_ptr<RecordFile>> RecordFile::open(RecordPlace place, uint64_t machine_id) {
  if (auto st = make_folder(place.dir, place.dir_mode, place.exact_dir_mode, place.folder_noun); !st) return st.error();
  std::unique_ptr<RecordFile> f(new RecordFile(std::move(place)));
  if (auto st = f->open_file(false); !st) return st.error();
  if (f->value_ && f->value_->machine_id != machine_id) {
    return corrupt(fmt::format("record {} is damaged (it belongs to machine id {}, not {})", f->path_.string(),
                               f->value_->machine_id, machine_id));
  }
  return f;
}

RecordFile::RecordFile(RecordPlace place) : place_(std::move(place)), path_(place_.dir / place_.name) {}

RecordFile::~RecordFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status RecordFile::open_file(bool create) {
  // O_NONBLOCK: a FIFO put in a record's place must not block the open; fstat() refuses it next.
  int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  if (create) flags |= O_CREAT | O_EXCL;
  const int fd = ::open(path_.c_str(), flags, static_cast<mode_t>(place_.file_mode));
  if (fd < 0) {
    if (errno == ENOENT && !create) return Ok{};
    if (errno == EEXIST && create) return open_file(false);  // created meanwhile (another namespace)
    if (errno == ELOOP) {
      return Error{ErrorKind::kIo,
                   fmt::format("record {} is a symbolic link; refusing to follow it", path_.string())};
    }
    if (errno == EISDIR) return Error{ErrorKind::kIo, fmt::format("record {} is a folder", path_.string())};
    return io_error("cannot open record", path_);
  }
  fd_ = fd;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error("cannot read record", path_);
  if (!S_ISREG(st.st_mode)) {
    return Error{ErrorKind::kIo,
                 fmt::format("record {} is {}, not a regular file; refusing to read it", path_.string(),
                             file_kind(st.st_mode))};
  }
  if (create) {
    // The umask must not take away the write access another user needs (0666 in a shared folder).
    if (::fchmod(fd, static_cast<mode_t>(place_.file_mode)) != 0) return io_error("cannot set the mode of", path_);
    const int dfd = ::open(place_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const bool synced = dfd >= 0 && ::fsync(dfd) == 0;
    if (dfd >= 0) ::close(dfd);
    if (!synced) return io_error("cannot sync folder", place_.dir);
    return Ok{};
  }
  if (st.st_size > static_cast<off_t>(kRecordSize)) {
    return corrupt(fmt::format("record {} is larger than a record can be ({} bytes, at most {})", path_.string(),
                               st.st_size, kRecordSize));
  }
  std::array<char, kRecordSize + 1> buf{};
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("cannot read record", path_);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0) return Ok{};  // created, but its first write never finished: nothing was issued
  auto v = parse_record(std::string_view(buf.data(), got));
  if (!v) {
    return corrupt(fmt::format("record {} is damaged ({}); refusing to guess which IDs were issued. Remove it only "
                               "when no zaptid with this machine id has run for longer than the clock wait limit",
                               path_.string(), v.message()));
  }
  value_ = std::move(*v);
  return Ok{};
}

Status RecordFile::write(const RecordValue& v, Sync sync) {
  if (fd_ >= 0) {
    // Deleted or replaced since it was opened (an operator "cleaning up")? Then write a new one.
    struct stat open_st {}, path_st {};
    if (::fstat(fd_, &open_st) != 0 || ::lstat(path_.c_str(), &path_st) != 0 || open_st.st_ino != path_st.st_ino ||
        open_st.st_dev != path_st.st_dev) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  if (fd_ < 0) {
    value_.reset();
    if (auto st = open_file(false); !st) return st;
    if (fd_ < 0) {
      auto st = make_folder(place_.dir, place_.dir_mode, place_.exact_dir_mode, place_.folder_noun);
      if (st) st = open_file(true);
      if (!st) return st;
    }
  }
  const std::string text = format_record(v);
  const ssize_t n = ::pwrite(fd_, text.data(), text.size(), 0);
  if (n != static_cast<ssize_t>(text.size())) {
    if (n >= 0) errno = ENOSPC;
    return io_error("cannot write record", path_);
  }
  if (sync == Sync::kDurable && ::fdatasync(fd_) != 0) return io_error("cannot write record", path_);
  value_ = v;
  return Ok{};
}

}  // namespace zaptid
