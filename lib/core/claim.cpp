#include "core/claim.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fmt/format.h>
#include <thread>

#include "core/parse.h"

namespace zaptid {
namespace {

struct AbstractAddress {
  sockaddr_un addr{};
  socklen_t len = 0;
};

AbstractAddress address_for(uint64_t machine_id) {
  AbstractAddress a;
  a.addr.sun_family = AF_UNIX;
  const std::string name = MachineClaim::name_for(machine_id);
  // sun_path[0] stays NUL: an abstract name, with no file behind it.
  std::memcpy(a.addr.sun_path + 1, name.data(), name.size());
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

Error socket_error(std::string_view what) {
  return {ErrorKind::kIo, fmt::format("cannot {} the machine id's claim socket: {}", what, std::strerror(errno))};
}

// The command line of a process, printable and short, or "" if it cannot be read.
std::string command_line(pid_t pid) {
  const int fd = ::open(fmt::format("/proc/{}/cmdline", pid).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::array<char, 256> buf{};
  const ssize_t n = ::read(fd, buf.data(), buf.size());
  ::close(fd);
  if (n <= 0) return "";
  std::string s;
  for (ssize_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(buf[static_cast<size_t>(i)]);
    s.push_back(c == 0 ? ' ' : (c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c)));
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  constexpr size_t kMax = 64;
  if (s.size() > kMax || n == static_cast<ssize_t>(buf.size())) s = s.substr(0, std::min(s.size(), kMax)) + "...";
  return s;
}

std::string user_name(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::array<char, 1024> buf{};
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) return pw.pw_name;
  return fmt::format("uid {}", uid);
}

}  // namespace

std::string MachineClaim::name_for(uint64_t machine_id) { return fmt::format("zaptid/machine-id/{}", machine_id); }

Result<std::unique_ptr<MachineClaim>> MachineClaim::acquire(uint64_t machine_id, std::chrono::milliseconds timeout) {
  const AbstractAddress a = address_for(machine_id);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return socket_error("create");
  // Only contended starts wait; they poll with a short, growing pause, bounded by `timeout`.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(200);
  while (::bind(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0) {
    if (errno != EADDRINUSE) {
      auto err = socket_error("bind");
      ::close(fd);
      return err;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fd);
      return unavailable(fmt::format("machine id {} is in use on this host by {}; gave up after waiting {}", machine_id,
                                     describe_claim_holder(machine_id), format_duration_ms(timeout.count())));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(10));
  }
  // Listening lets a waiting process ask the kernel who holds the claim (SO_PEERCRED at connect).
  // A thread of the holder accepts and closes each such connection at once, so questions never
  // fill the backlog, however long the holder runs.
  if (::listen(fd, 8) != 0) {
    auto err = socket_error("listen on");
    ::close(fd);
    return err;
  }
  return std::unique_ptr<MachineClaim>(new MachineClaim(fd, machine_id));
}

MachineClaim::MachineClaim(int fd, uint64_t machine_id) : fd_(fd), machine_id_(machine_id) {
  answering_ = std::thread([fd] {
    for (;;) {
      const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        ::close(c);
      } else if (errno != EINTR && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE) {
        return;  // shut down by the destructor
      }
    }
  });
}

MachineClaim::~MachineClaim() {
  ::shutdown(fd_, SHUT_RDWR);  // wakes the blocked accept4() with an error
  answering_.join();
  ::close(fd_);
}

std::string describe_claim_holder(uint64_t machine_id) {
  const AbstractAddress a = address_for(machine_id);
  const std::string unknown = fmt::format("a process that cannot be named (`ss -xlp | grep {}` shows it)",
                                          MachineClaim::name_for(machine_id));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return unknown;
  ucred cred{};
  socklen_t len = sizeof(cred);
  const bool known = ::connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0 &&
                     ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0;
  ::close(fd);
  if (!known) return unknown;
  const std::string cmd = command_line(cred.pid);
  return fmt::format("pid {} (user {}){}", cred.pid, user_name(cred.uid), cmd.empty() ? "" : ": " + cmd);
}

}  // namespace zaptid
