#include "core/state_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/parse.h"

namespace zaptid {
namespace {

constexpr std::string_view kMagic = "zaptid-state 1";

uint32_t crc32(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (char c : data) {
    crc ^= static_cast<unsigned char>(c);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::string record_body(Cursor c) { return fmt::format("{}\ncursor {}\n", kMagic, c); }

Error io_error(std::string_view what, const std::filesystem::path& path) {
  return {ErrorKind::kIo, fmt::format("{} {}: {}", what, path.string(), std::strerror(errno))};
}

// Parses a record; nullopt-with-reason on damage.
Result<Cursor> parse_record(const std::string& text, const std::filesystem::path& path) {
  const auto corrupt = [&](std::string_view why) {
    return Error{ErrorKind::kCorrupt,
                 fmt::format("state file {} is damaged ({}); refusing to guess where the previous process stopped. "
                             "Remove it only when no zaptid with this machine id has run for longer than the clock "
                             "wait limit",
                             path.string(), why)};
  };
  const auto crc_pos = text.rfind("crc32 ");
  if (crc_pos == std::string::npos || text.empty() || text.back() != '\n') return corrupt("incomplete");
  const std::string body = text.substr(0, crc_pos);
  const std::string crc_hex = text.substr(crc_pos + 6, text.size() - crc_pos - 7);
  if (crc_hex != fmt::format("{:08x}", crc32(body))) return corrupt("checksum mismatch");
  const std::string prefix = fmt::format("{}\ncursor ", kMagic);
  if (body.rfind(prefix, 0) != 0 || body.back() != '\n') return corrupt("unknown format");
  auto c = parse_unsigned(std::string_view(body).substr(prefix.size(), body.size() - prefix.size() - 1), UINT64_MAX,
                          "cursor");
  if (!c) return corrupt("bad cursor");
  return *c;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string read_holder(int fd) {
  std::array<char, 256> buf{};
  const ssize_t n = ::pread(fd, buf.data(), buf.size() - 1, 0);
  std::string s = n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

}  // namespace

std::filesystem::path HostLock::default_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && xdg[0] == '/') {
    return std::filesystem::path(xdg) / "zaptid";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] == '/') {
    return std::filesystem::path(home) / ".local" / "state" / "zaptid";
  }
  return "/var/lib/zaptid";
}

std::string HostLock::name_for(const std::string& layout_key, uint64_t machine_id) {
  return fmt::format("{}-machine-{}", layout_key, machine_id);
}

Result<std::unique_ptr<HostLock>> HostLock::acquire(const std::filesystem::path& dir, const std::string& name,
                                                    std::chrono::milliseconds timeout, const std::string& holder) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error{ErrorKind::kIo, fmt::format("cannot create state folder {}: {}", dir.string(), ec.message())};
  const auto lock_path = dir / (name + ".lock");
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot open lock file", lock_path);

  // flock() has no timeout; poll with a short, growing pause. Only contended starts pay it.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(200);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      auto err = io_error("cannot lock", lock_path);
      ::close(fd);
      return err;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      auto msg = fmt::format("this machine id is in use by another zaptid process on this host ({}); gave up after "
                             "waiting {} for {}",
                             read_holder(fd), format_duration_ms(timeout.count()), lock_path.string());
      ::close(fd);
      return unavailable(std::move(msg));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(10));
  }
  const auto who = fmt::format("pid {}, zaptid {}\n", ::getpid(), holder);
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, who.data(), who.size(), 0) < 0) {
    // The holder note is advisory; the lock itself is what matters.
  }

  std::unique_ptr<HostLock> lock(new HostLock(fd, dir, dir / (name + ".state")));
  std::ifstream in(lock->state_path_, std::ios::binary);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    auto c = parse_record(ss.str(), lock->state_path_);
    if (!c) return c.error();
    lock->recorded_ = *c;
  } else if (std::filesystem::exists(lock->state_path_, ec)) {
    return io_error("cannot read state file", lock->state_path_);
  }
  return lock;
}

HostLock::HostLock(int lock_fd, std::filesystem::path dir, std::filesystem::path state_path)
    : lock_fd_(lock_fd), dir_(std::move(dir)), state_path_(std::move(state_path)) {}

HostLock::~HostLock() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing the descriptor releases the flock
}

Status HostLock::write_record(Cursor c) {
  const std::string body = record_body(c);
  const std::string text = fmt::format("{}crc32 {:08x}\n", body, crc32(body));
  auto tmp = state_path_;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot write state file", tmp);
  const bool ok = write_all(fd, text) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return io_error("cannot write state file", tmp);
  if (::rename(tmp.c_str(), state_path_.c_str()) != 0) return io_error("cannot replace state file", state_path_);
  const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    ::close(dfd);
    if (rc != 0) return io_error("cannot sync state folder", dir_);
  }
  recorded_ = c;
  return Ok{};
}

Status HostLock::reserve_through(Cursor high) {
  if (lock_fd_ < 0) return unavailable("the host lock was released");
  return write_record(high);
}

Status HostLock::release(std::optional<Cursor> last_issued) {
  if (lock_fd_ < 0) return Ok{};
  Status st = Ok{};
  if (last_issued) st = write_record(*last_issued);
  ::close(lock_fd_);
  lock_fd_ = -1;
  return st;
}

}  // namespace zaptid
