#include "net_guard.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "server/log_limit.h"

#ifdef ZAPTID_GUARD_TLS
#include <openssl/ssl.h>
#endif

namespace zaptid::cli {
namespace {

using server::Http2Policer;

/// One descriptor's policer. Made on the first accept of its number and kept (a table slot per
/// possible descriptor), so a reader never meets a freed one; `active` says whether the
/// descriptor is currently a connection to police. gRPC reads one connection at a time, but not
/// always on the same thread (any thread polling for gRPC may do the read: a completion queue's,
/// or the etcd session's in a blocking call); what orders those reads is inside gRPC, which
/// ThreadSanitizer cannot see in Debian's build. The mutex, never contended, makes that order
/// ours, and costs tens of nanoseconds beside the system call.
struct Watched {
  std::atomic<bool> active{false};
  std::mutex mu;
  Http2Policer policer;  // under mu
};

GuardOptions g_options;  // set before g_armed, read only after
server::ResetBudget* g_budget = nullptr;
std::atomic<bool> g_armed{false};
std::vector<std::atomic<Watched*>>* g_table = nullptr;  // set once by arm_net_guard()

constexpr size_t kReasons = std::size(kGuardReasons);
std::array<std::atomic<uint64_t>, kReasons> g_closed{};
std::atomic<uint64_t> g_exhausted{0};

// gRPC's listening sockets (a few: one per --listen address and family), each as its descriptor
// + 1; 0 in free slots.
constexpr size_t kMaxListeners = 64;
std::array<std::atomic<int>, kMaxListeners> g_listeners{};
thread_local bool t_grpc_binds = false;

std::mutex g_spare_mu;
int g_spare = -1;  // under g_spare_mu

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t reason_index(std::string_view reason) {
  return static_cast<size_t>(std::find(std::begin(kGuardReasons), std::end(kGuardReasons), reason) -
                             std::begin(kGuardReasons));
}

/// host:port of a TCP connection's client, for the log; empty for other sockets.
std::string peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {  // an IPv4 client of a [::] listener
      ::inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof host);
      return fmt::format("{}:{}", host, ntohs(a->sin6_port));
    }
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    // fmt, not operator+: g++ 12 at -O3 warns falsely (-Wrestrict) on "[" + std::string.
    return fmt::format("[{}]:{}", host, ntohs(a->sin6_port));
  }
  return "";
}

/// What the log says a connection did, for each closing verdict.
std::string why(Http2Policer::Verdict v) {
  const server::PolicerLimits& l = g_options.limits;
  switch (v) {
    case Http2Policer::Verdict::kStreamResets:
      return fmt::format("more than {} stream resets within 1s (HTTP/2 rapid reset; --max-stream-resets)",
                         l.resets_per_second);
    case Http2Policer::Verdict::kServerResets:
      return fmt::format(
          "it reset a call while all connections together had reset more than {} within 1s (HTTP/2 rapid reset "
          "spread over connections; 2 x --max-stream-resets)",
          g_options.server_resets_per_second);
    case Http2Policer::Verdict::kStreamsBeforeAck:
      return fmt::format("it opened more than {} streams before acknowledging the server's SETTINGS (--max-streams)",
                         l.streams_before_ack);
    case Http2Policer::Verdict::kHeaderBlock:
      return fmt::format("a header block over {} bytes (HEADERS and CONTINUATION frames)", l.header_block_bytes);
    case Http2Policer::Verdict::kControlFrames:
      return fmt::format(
          "more than {} frames that carry no request within 1s (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, "
          "CONTINUATION, empty DATA; --max-control-frames)",
          l.control_frames_per_second);
    case Http2Policer::Verdict::kOk:
    case Http2Policer::Verdict::kNotHttp2:
      break;
  }
  return "";
}

void closed_one(Http2Policer::Verdict v, const std::string& peer) {
  const std::string_view reason = Http2Policer::reason(v);
  const uint64_t total = g_closed[reason_index(reason)].fetch_add(1, std::memory_order_relaxed) + 1;
  server::log_limited(spdlog::level::warn, fmt::format("guard:{}", reason),
                      fmt::format("closed a connection{}{}: {}; {} closed for this so far", peer.empty() ? "" : " from ",
                                  peer, why(v), total),
                      1);  // one line per reason per 10 s: it carries the running count
}

/// The table slot of `fd`, or nullptr when the guard is off or the number is past the table.
std::atomic<Watched*>* slot_of(int fd) {
  if (!g_armed.load(std::memory_order_acquire) || fd < 0 || static_cast<size_t>(fd) >= g_table->size()) return nullptr;
  return &(*g_table)[static_cast<size_t>(fd)];
}

Watched* watched(int fd) {
  auto* slot = slot_of(fd);
  return slot == nullptr ? nullptr : slot->load(std::memory_order_acquire);
}

/// Feeds what a connection's client sent; the closing verdict, or kOk to go on.
Http2Policer::Verdict police(Watched& w, const uint8_t* data, size_t n) {
  Http2Policer::Verdict verdict;
  {
    std::lock_guard lock(w.mu);
    verdict = w.policer.feed(data, n, now_ms());
  }
  if (verdict == Http2Policer::Verdict::kOk) return verdict;
  w.active.store(false, std::memory_order_relaxed);  // TLS (policed after decryption), not gRPC, or closed
  return verdict == Http2Policer::Verdict::kNotHttp2 ? Http2Policer::Verdict::kOk : verdict;
}

bool is_grpc_listener(int fd) {
  if (fd < 0) return false;
  for (const auto& l : g_listeners) {
    if (l.load(std::memory_order_acquire) == fd + 1) return true;
  }
  return false;
}

void note_listener(int fd) {
  for (auto& l : g_listeners) {
    int free_slot = 0;
    if (l.compare_exchange_strong(free_slot, fd + 1, std::memory_order_acq_rel)) return;
  }
  // More listeners than slots: the rest are served, only without the descriptor guard.
}

void forget_listener(int fd) {
  if (fd < 0) return;
  for (auto& l : g_listeners) {
    int expected = fd + 1;
    if (l.load(std::memory_order_relaxed) == expected) l.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
  }
}

int raw_accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  return static_cast<int>(::syscall(SYS_accept4, fd, addr, len, flags));
}

bool out_of_descriptors(int err) { return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM; }

// Accepts and closes what waits on `listener`, using the spare descriptor's slot.
void shed(int listener, int err) {
  uint64_t closed = 0;
  {
    std::lock_guard lock(g_spare_mu);
    if (g_spare >= 0) {
      ::close(g_spare);
      g_spare = -1;
    }
    // Bounded, so a connection flood cannot keep this thread here.
    for (int i = 0; i < 4096; ++i) {
      const int c = raw_accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      ::close(c);
      ++closed;
    }
    g_spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  const uint64_t total =
      g_closed[reason_index("out_of_descriptors")].fetch_add(closed, std::memory_order_relaxed) + closed;
  const uint64_t times = g_exhausted.fetch_add(1, std::memory_order_relaxed) + 1;
  server::log_limited(spdlog::level::warn, "guard:out_of_descriptors",
                      fmt::format("out of file descriptors ({}): closing new connections at once until some are free "
                                  "({} closed in {} episodes so far); raise LimitNOFILE or lower --idle-timeout",
                                  std::strerror(err), total, times),
                      1);
}

/// Starts policing a connection: accept4() below calls this for every connection accepted on gRPC's listeners.
void police_connection(int fd) {
  auto* slot = slot_of(fd);
  if (slot == nullptr) return;
  Watched* w = slot->load(std::memory_order_acquire);
  if (w == nullptr) {
    w = new Watched;  // kept for the descriptor number's later connections
    slot->store(w, std::memory_order_release);
  }
  {
    std::lock_guard lock(w->mu);
    w->policer.restart(g_options.limits, g_budget);
  }
  w->active.store(true, std::memory_order_release);
}

template <class F>
F next_symbol(const char* name) {
  // The definition after this executable's: libc's or OpenSSL's (or a sanitizer's interceptor).
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

void arm_net_guard(const GuardOptions& options) {
  if (g_armed.load()) return;
  {
    std::lock_guard lock(g_spare_mu);
    if (g_spare < 0) g_spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  rlimit rl{};
  const rlim_t fds = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  g_table = new std::vector<std::atomic<Watched*>>(std::min<rlim_t>(fds, rlim_t{1} << 20));  // lives to exit
  g_options = options;
  g_budget = new server::ResetBudget(options.server_resets_per_second);  // lives to exit
  g_armed.store(true, std::memory_order_release);
}

GrpcListeners::GrpcListeners() { t_grpc_binds = true; }
GrpcListeners::~GrpcListeners() { t_grpc_binds = false; }

uint64_t guard_closed(std::string_view reason) {
  const size_t i = reason_index(reason);
  return i < kReasons ? g_closed[i].load(std::memory_order_relaxed) : 0;
}

uint64_t guard_descriptor_exhaustions() { return g_exhausted.load(std::memory_order_relaxed); }

}  // namespace zaptid::cli

namespace guard = zaptid::cli;

extern "C" int listen(int fd, int backlog) {
  const int r = static_cast<int>(::syscall(SYS_listen, fd, backlog));
  if (r == 0 && guard::t_grpc_binds) guard::note_listener(fd);
  return r;
}

extern "C" int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  const int c = guard::raw_accept4(fd, addr, len, flags);
  if (!guard::is_grpc_listener(fd)) return c;
  if (c >= 0) guard::police_connection(c);
  if (c >= 0 || !guard::out_of_descriptors(errno)) return c;
  const int err = errno;
  guard::shed(fd, err);
  errno = EAGAIN;  // gRPC re-arms the listener on EAGAIN
  return -1;
}

// gRPC's transport reads every connection with recvmsg().
extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  static const auto next = guard::next_symbol<ssize_t (*)(int, msghdr*, int)>("recvmsg");
  const ssize_t n = next(fd, msg, flags);
  if (n <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)) != 0) return n;  // not the byte stream, or read again later
  guard::Watched* w = guard::watched(fd);
  if (w == nullptr || !w->active.load(std::memory_order_acquire)) return n;
  size_t left = static_cast<size_t>(n);
  for (size_t i = 0; i < msg->msg_iovlen && left > 0; ++i) {
    const size_t len = std::min(left, msg->msg_iov[i].iov_len);
    const auto verdict = guard::police(*w, static_cast<const uint8_t*>(msg->msg_iov[i].iov_base), len);
    if (verdict != guard::Http2Policer::Verdict::kOk) {
      // The peer's address first: once shut down, getpeername() may fail (ENOTCONN) when the
      // client's own FIN or RST has arrived, and the warning lost the address (test_limits, 1 in 8).
      const std::string peer = guard::peer_of(fd);
      ::shutdown(fd, SHUT_RDWR);
      guard::closed_one(verdict, peer);
      errno = ECONNRESET;  // gRPC drops the bytes read and closes the connection
      return -1;
    }
    left -= len;
  }
  return n;
}

// A descriptor closed is no longer the connection that was policed or a listener of gRPC's,
// whatever its number becomes.
extern "C" int close(int fd) {
  static const auto next = guard::next_symbol<int (*)(int)>("close");
  if (guard::Watched* w = guard::watched(fd)) w->active.store(false, std::memory_order_release);
  guard::forget_listener(fd);
  return next(fd);
}

#ifdef ZAPTID_GUARD_TLS
namespace zaptid::cli {
namespace {

// A TLS connection's policer lives with its SSL object (OpenSSL frees it with the SSL).
int tls_index() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* p, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<Watched*>(p);
      });
  return index;
}

}  // namespace
}  // namespace zaptid::cli

// gRPC decrypts what a TLS client sent with SSL_read(): the frames are policed there.
extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto next = guard::next_symbol<int (*)(SSL*, void*, int)>("SSL_read");
  const int n = next(ssl, buf, num);
  if (n <= 0 || !guard::g_armed.load(std::memory_order_acquire) || SSL_is_server(ssl) == 0) return n;
  const int index = guard::tls_index();
  guard::Watched* w = nullptr;
  {
    // Publishing the policer through OpenSSL's ex-data is ordered by this lock, not by
    // OpenSSL's internals (which ThreadSanitizer cannot see); it is held for a look-up.
    static std::mutex publish_mu;
    std::lock_guard lock(publish_mu);
    w = static_cast<guard::Watched*>(SSL_get_ex_data(ssl, index));
    if (w == nullptr) {
      w = new guard::Watched;
      w->policer.restart(guard::g_options.limits, guard::g_budget);
      w->active.store(true, std::memory_order_relaxed);
      SSL_set_ex_data(ssl, index, w);
    }
  }
  if (!w->active.load(std::memory_order_relaxed)) return n;
  const auto verdict = guard::police(*w, static_cast<const uint8_t*>(buf), static_cast<size_t>(n));
  if (verdict == guard::Http2Policer::Verdict::kOk) return n;
  guard::closed_one(verdict, "");
  return -1;  // SSL_ERROR_SYSCALL: gRPC fails the read and closes the connection
}
#endif
