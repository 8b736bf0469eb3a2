#include "server/listen.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <string_view>

#include "core/parse.h"

namespace zaptid::server {

Result<HostPort> split_host_port(const std::string& address, std::string_view option, std::string_view forms) {
  const auto bad = [&] { return invalid(fmt::format("{} {} is not {}", option, quote_input(address), forms)); };
  std::string_view a = address;
  size_t colon = 0;
  std::string host;
  if (!a.empty() && a.front() == '[') {
    const auto close = a.find("]:");
    if (close == std::string_view::npos) return bad();
    host = std::string(a.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = a.rfind(':');
    if (colon == std::string_view::npos) return bad();
    host = std::string(a.substr(0, colon));
  }
  const std::string port(a.substr(colon + 1));
  if (port.empty()) return bad();
  if (auto p = parse_unsigned(port, 65535, fmt::format("{} {} port", option, quote_input(address))); !p) {
    return p.error();
  }
  return HostPort{host, port};
}

namespace {

Result<HostPort> split(const std::string& address) {
  return split_host_port(address, "--listen", "host:port, [::]:port or unix:/path");
}

// Why binding `address` fails right now; empty if it would succeed.
std::string bind_error(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) {
    // Where zaptid binds before moving the socket onto its path (see prepare_unix_socket()).
    const std::string path = fmt::format("{}.{}.new", unix_path(address), ::getpid());
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof sun.sun_path) return "the socket path is too long";
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return std::strerror(errno);
    std::string err;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&sun), sizeof sun) != 0) {
      err = std::strerror(errno);
    } else {
      ::unlink(path.c_str());
    }
    ::close(fd);
    return err;
  }
  auto hp = split(address);
  if (!hp) return hp.message();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const char* host = hp->host.empty() ? nullptr : hp->host.c_str();
  if (int rc = ::getaddrinfo(host, hp->port.c_str(), &hints, &res); rc != 0) return ::gai_strerror(rc);
  std::string err;
  for (addrinfo* ai = res; ai != nullptr && err.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) err = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return err;
}

}  // namespace

std::string expand_listen_address(const std::string& address) {
  return is_port_only(address) ? fmt::format("[::]{}", address) : address;
}

Status check_listen_address(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) {
    if (address.size() == 5) return invalid(fmt::format("--listen {} has no socket path", quote_input(address)));
    return Ok{};
  }
  if (auto hp = split(address); !hp) return hp.error();
  return Ok{};
}

std::string unix_path(const std::string& address) {
  if (address.rfind("unix://", 0) == 0) return address.substr(7);
  if (address.rfind("unix:", 0) == 0) return address.substr(5);
  return {};
}

Result<UnixSocket> prepare_unix_socket(const std::string& path) {
  UnixSocket s;
  s.path = path;
  s.temp = fmt::format("{}.{}.new", path, ::getpid());
  sockaddr_un sun{};
  if (s.temp.size() >= sizeof sun.sun_path) {
    return invalid(fmt::format("cannot listen on unix:{}: the socket path is too long", path));
  }
  ::unlink(s.temp.c_str());  // ours by name: this process id's, left by a crash of an earlier one
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return s;
    return Error{ErrorKind::kIo, fmt::format("cannot listen on unix:{}: {}", path, std::strerror(errno))};
  }
  if (!S_ISSOCK(st.st_mode)) {
    return invalid(fmt::format("cannot listen on unix:{}: the path exists and is not a socket", path));
  }
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{ErrorKind::kIo, fmt::format("cannot listen on unix:{}: {}", path, std::strerror(errno))};
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sun), sizeof sun);
  const int err = errno;
  ::close(fd);
  if (rc == 0 || err == EAGAIN) {  // EAGAIN: a live server whose backlog is full
    return Error{ErrorKind::kIo, fmt::format("unix:{} is in use by a running server", path)};
  }
  if (err != ECONNREFUSED) {
    return Error{ErrorKind::kIo, fmt::format("cannot listen on unix:{}: {}", path, std::strerror(err))};
  }
  return s;  // stale: nothing accepts on it; place_unix_socket() replaces it
}

Status place_unix_socket(UnixSocket& socket) {
  if (::rename(socket.temp.c_str(), socket.path.c_str()) != 0) {
    const int err = errno;
    ::unlink(socket.temp.c_str());
    return Error{ErrorKind::kIo, fmt::format("cannot listen on unix:{}: {}", socket.path, std::strerror(err))};
  }
  struct stat st {};
  if (::lstat(socket.path.c_str(), &st) == 0) {
    socket.dev = st.st_dev;
    socket.ino = st.st_ino;
  }
  socket.placed = true;
  return Ok{};
}

void remove_unix_socket(const UnixSocket& socket) {
  if (!socket.placed) {
    ::unlink(socket.temp.c_str());
    return;
  }
  struct stat st {};
  if (::lstat(socket.path.c_str(), &st) == 0 && st.st_dev == socket.dev && st.st_ino == socket.ino) {
    ::unlink(socket.path.c_str());
  }
}

std::string with_port(const std::string& address, int port) {
  if (address.rfind("unix:", 0) == 0) return address;
  const auto colon = address.rfind(':');
  return fmt::format("{}:{}", address.substr(0, colon), port);
}

std::string listen_failure(const std::vector<std::string>& addresses) {
  for (const auto& a : addresses) {
    if (std::string err = bind_error(a); !err.empty()) return fmt::format("cannot listen on {}: {}", a, err);
  }
  std::string all;
  for (const auto& a : addresses) all += (all.empty() ? "" : ", ") + a;
  return fmt::format("cannot listen on {}: gRPC refused the address (run with --log-level debug for its reason)",
                     all);
}

}  // namespace zaptid::server
