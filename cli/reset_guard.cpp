#include "reset_guard.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "server/reset_counter.h"

#ifdef ZAPTID_GUARD_TLS
#include <openssl/ssl.h>
#endif

namespace zaptid::cli {
namespace {

using server::ResetCounter;

/// One descriptor's counter. Made on the first accept of its number and kept (a table slot per
/// possible descriptor), so a reader never meets a freed one; `active` says whether the
/// descriptor is currently a connection to watch. gRPC reads one connection at a time, but not
/// always on the same thread (any thread polling for gRPC may do the read: a completion queue's,
/// or the etcd session's in a blocking call); what orders those reads is inside gRPC, which
/// ThreadSanitizer cannot see in Debian's build. The mutex, never contended, makes that order
/// ours, and costs tens of nanoseconds beside the system call.
struct Watched {
  std::atomic<bool> active{false};
  std::mutex mu;
  ResetCounter counter;  // under mu
};

std::atomic<uint32_t> g_limit{0};
std::atomic<bool> g_armed{false};
std::vector<std::atomic<Watched*>>* g_table = nullptr;  // set once by arm_reset_guard()
std::atomic<uint64_t> g_closed{0};
std::atomic<int64_t> g_last_log_ms{-100'000};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
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

/// The table slot of `fd`, or nullptr when the guard is off or the number is past the table.
std::atomic<Watched*>* slot_of(int fd) {
  if (!g_armed.load(std::memory_order_acquire) || fd < 0 || static_cast<size_t>(fd) >= g_table->size()) return nullptr;
  return &(*g_table)[static_cast<size_t>(fd)];
}

Watched* watched(int fd) {
  auto* slot = slot_of(fd);
  return slot == nullptr ? nullptr : slot->load(std::memory_order_acquire);
}

void closed_one(const std::string& peer) {
  const uint64_t total = g_closed.fetch_add(1, std::memory_order_relaxed) + 1;
  // One line per 10 s at most: an attacker reconnecting in a loop must not flood the log.
  const int64_t now = now_ms();
  int64_t last = g_last_log_ms.load(std::memory_order_relaxed);
  if (now - last < 10'000 || !g_last_log_ms.compare_exchange_strong(last, now)) return;
  spdlog::warn(
      "closed a connection{}{}: more than {} stream resets within 1s (HTTP/2 rapid reset; --max-stream-resets); "
      "{} closed so far",
      peer.empty() ? "" : " from ", peer, g_limit.load(std::memory_order_relaxed), total);
}

/// Feeds what a connection's client sent; true if the connection must be closed now.
bool over_limit(Watched& w, const uint8_t* data, size_t n) {
  ResetCounter::Verdict verdict;
  {
    std::lock_guard lock(w.mu);
    verdict = w.counter.feed(data, n, now_ms());
  }
  switch (verdict) {
    case ResetCounter::Verdict::kOk:
      return false;
    case ResetCounter::Verdict::kNotHttp2:  // TLS (watched after decryption), or not gRPC at all
      w.active.store(false, std::memory_order_relaxed);
      return false;
    case ResetCounter::Verdict::kOverLimit:
      w.active.store(false, std::memory_order_relaxed);
      return true;
  }
  return false;
}

template <class F>
F next_symbol(const char* name) {
  // The definition after this executable's: libc's or OpenSSL's (or a sanitizer's interceptor).
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

void arm_reset_guard(uint32_t max_resets_per_second) {
  if (max_resets_per_second == 0 || g_armed.load()) return;
  rlimit rl{};
  const rlim_t fds = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  g_table = new std::vector<std::atomic<Watched*>>(std::min<rlim_t>(fds, rlim_t{1} << 20));  // lives to exit
  g_limit.store(max_resets_per_second);
  g_armed.store(true, std::memory_order_release);
}

uint64_t reset_guard_closed() { return g_closed.load(std::memory_order_relaxed); }

void reset_guard_accepted(int fd) {
  auto* slot = slot_of(fd);
  if (slot == nullptr) return;
  Watched* w = slot->load(std::memory_order_acquire);
  if (w == nullptr) {
    w = new Watched;  // kept for the descriptor number's later connections
    slot->store(w, std::memory_order_release);
  }
  {
    std::lock_guard lock(w->mu);
    w->counter.restart(g_limit.load(std::memory_order_relaxed));
  }
  w->active.store(true, std::memory_order_release);
}

}  // namespace zaptid::cli

using zaptid::cli::watched;

// gRPC's transport reads every connection with recvmsg().
extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  static const auto next = zaptid::cli::next_symbol<ssize_t (*)(int, msghdr*, int)>("recvmsg");
  const ssize_t n = next(fd, msg, flags);
  if (n <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)) != 0) return n;  // not the byte stream, or read again later
  zaptid::cli::Watched* w = watched(fd);
  if (w == nullptr || !w->active.load(std::memory_order_acquire)) return n;
  size_t left = static_cast<size_t>(n);
  for (size_t i = 0; i < msg->msg_iovlen && left > 0; ++i) {
    const size_t len = std::min(left, msg->msg_iov[i].iov_len);
    if (zaptid::cli::over_limit(*w, static_cast<const uint8_t*>(msg->msg_iov[i].iov_base), len)) {
      // The peer's address first: once shut down, getpeername() may fail (ENOTCONN) when the
      // client's own FIN or RST has arrived, and the warning lost the address (test_limits, 1 in 8).
      const std::string peer = zaptid::cli::peer_of(fd);
      ::shutdown(fd, SHUT_RDWR);
      zaptid::cli::closed_one(peer);
      errno = ECONNRESET;  // gRPC drops the bytes read and closes the connection
      return -1;
    }
    left -= len;
  }
  return n;
}

// A descriptor closed is no longer the connection that was watched, whatever its number becomes.
extern "C" int close(int fd) {
  static const auto next = zaptid::cli::next_symbol<int (*)(int)>("close");
  if (zaptid::cli::Watched* w = watched(fd)) w->active.store(false, std::memory_order_release);
  return next(fd);
}

#ifdef ZAPTID_GUARD_TLS
namespace zaptid::cli {
namespace {

// A TLS connection's counter lives with its SSL object (OpenSSL frees it with the SSL).
int tls_index() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* p, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<Watched*>(p);
      });
  return index;
}

}  // namespace
}  // namespace zaptid::cli

// gRPC decrypts what a TLS client sent with SSL_read(): the frames are watched there.
extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto next = zaptid::cli::next_symbol<int (*)(SSL*, void*, int)>("SSL_read");
  const int n = next(ssl, buf, num);
  if (n <= 0 || !zaptid::cli::g_armed.load(std::memory_order_acquire) || SSL_is_server(ssl) == 0) return n;
  const int index = zaptid::cli::tls_index();
  zaptid::cli::Watched* w = nullptr;
  {
    // Publishing the counter through OpenSSL's ex-data is ordered by this lock, not by
    // OpenSSL's internals (which ThreadSanitizer cannot see); it is held for a look-up.
    static std::mutex publish_mu;
    std::lock_guard lock(publish_mu);
    w = static_cast<zaptid::cli::Watched*>(SSL_get_ex_data(ssl, index));
    if (w == nullptr) {
      w = new zaptid::cli::Watched;
      w->counter.restart(zaptid::cli::g_limit.load(std::memory_order_relaxed));
      w->active.store(true, std::memory_order_relaxed);
      SSL_set_ex_data(ssl, index, w);
    }
  }
  if (!w->active.load(std::memory_order_relaxed)) return n;
  if (!zaptid::cli::over_limit(*w, static_cast<const uint8_t*>(buf), static_cast<size_t>(n))) return n;
  zaptid::cli::closed_one("");
  return -1;  // SSL_ERROR_SYSCALL: gRPC fails the read and closes the connection
}
#endif
