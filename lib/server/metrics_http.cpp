#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <type_traits>

#include <fmt/format.h>

#include "core/parse.h"
#include "server/listen.h"

namespace zaptid::server {

namespace {

// libmicrohttpd is opened when serve is asked to serve metrics, not linked: linked, it and the
// GnuTLS it needs (ten libraries with their own) would load at every start of zaptid-net, a
// one-shot `get` included, for an endpoint only serve uses (docs/ARCHITECTURE.md).
constexpr const char* kMhdLibrary = "libmicrohttpd.so.12";

struct Mhd {
  decltype(&MHD_start_daemon) start_daemon = nullptr;
  decltype(&MHD_stop_daemon) stop_daemon = nullptr;
  decltype(&MHD_create_response_from_buffer) create_response_from_buffer = nullptr;
  decltype(&MHD_add_response_header) add_response_header = nullptr;
  decltype(&MHD_queue_response) queue_response = nullptr;
  decltype(&MHD_destroy_response) destroy_response = nullptr;
};

// The library's functions, opened once (thread-safe); the error says what is missing.
Result<const Mhd*> open_mhd() {
  static const Result<Mhd> loaded = []() -> Result<Mhd> {
    void* lib = ::dlopen(kMhdLibrary, RTLD_NOW | RTLD_LOCAL);  // kept open for the process
    if (lib == nullptr) {
      return Error{ErrorKind::kIo, fmt::format("--metrics-listen needs {}: {} (install libmicrohttpd12)", kMhdLibrary,
                                               ::dlerror())};
    }
    Mhd m;
    bool missing = false;
    auto load = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      missing = missing || fn == nullptr;
    };
    load(m.start_daemon, "MHD_start_daemon");
    load(m.stop_daemon, "MHD_stop_daemon");
    load(m.create_response_from_buffer, "MHD_create_response_from_buffer");
    load(m.add_response_header, "MHD_add_response_header");
    load(m.queue_response, "MHD_queue_response");
    load(m.destroy_response, "MHD_destroy_response");
    if (missing) return Error{ErrorKind::kIo, fmt::format("{} lacks a function zaptid needs", kMhdLibrary)};
    return m;
  }();
  if (!loaded) return loaded.error();
  return &*loaded;
}

// Set by MetricsHttp::start() before the first daemon, so before any request is handled.
const Mhd* mhd = nullptr;

Result<HostPort> split(const std::string& address) {
  constexpr std::string_view kForms = "host:port or [v6]:port";
  auto hp = split_host_port(address, "--metrics-listen", kForms);
  // A bare v6 address needs brackets.
  if (hp && address.front() != '[' && hp->host.find(':') != std::string::npos) {
    return invalid(fmt::format("--metrics-listen {} is not {}", quote_input(address), kForms));
  }
  return hp;
}

// A listening socket on `address`, and the address with its real port.
Result<std::pair<int, std::string>> listen_on(const std::string& address) {
  auto hp = split(address);
  if (!hp) return hp.error();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(hp->host.empty() ? nullptr : hp->host.c_str(), hp->port.c_str(), &hints, &res); rc != 0) {
    return Error{ErrorKind::kIo, fmt::format("cannot listen on {}: {}", address, ::gai_strerror(rc))};
  }
  std::string err = "no address";
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 64) == 0) break;
    err = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) return Error{ErrorKind::kIo, fmt::format("cannot listen on {}: {}", address, err)};
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const uint16_t port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                                 : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return std::pair{fd, fmt::format("{}:{}", address.substr(0, address.rfind(':')), port)};
}

MHD_Result respond(MHD_Connection* connection, unsigned status, const std::string& body, const char* type) {
  MHD_Response* r = mhd->create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  mhd->add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  mhd->add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) mhd->add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  const MHD_Result ret = mhd->queue_response(connection, status, r);
  mhd->destroy_response(r);
  return ret;
}

constexpr const char* kText = "text/plain; charset=utf-8";

MHD_Result handle(void* cls, MHD_Connection* connection, const char* url, const char* method, const char* /*version*/,
                  const char* /*upload_data*/, size_t* upload_data_size, void** /*req_cls*/) {
  const auto& opt = *static_cast<const MetricsHttpOptions*>(cls);
  const std::string_view m(method);
  if (m != MHD_HTTP_METHOD_GET && m != MHD_HTTP_METHOD_HEAD) {
    *upload_data_size = 0;  // whatever body it sends is not read
    return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", kText);
  }
  const std::string_view path(url);
  if (path == "/metrics") {
    return respond(connection, MHD_HTTP_OK, opt.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (path == "/healthz") return respond(connection, MHD_HTTP_OK, "ok\n", kText);
  if (path == "/readyz") {
    const std::string reason = opt.not_ready();
    if (reason.empty()) return respond(connection, MHD_HTTP_OK, "ready\n", kText);
    std::string line = reason;
    for (char& c : line) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return respond(connection, MHD_HTTP_SERVICE_UNAVAILABLE, line + "\n", kText);
  }
  return respond(connection, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz, /readyz\n", kText);
}

void log_mhd(void* cls, const char* format, va_list ap) {
  const auto& opt = *static_cast<const MetricsHttpOptions*>(cls);
  if (!opt.log) return;
  char buf[512];
  std::vsnprintf(buf, sizeof buf, format, ap);
  std::string line(buf);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  opt.log(format, line);
}

}  // namespace

Status MetricsHttp::check_address(const std::string& address) {
  if (auto hp = split(address); !hp) return hp.error();
  return Ok{};
}

Result<std::unique_ptr<MetricsHttp>> MetricsHttp::start(MetricsHttpOptions options) {
  auto lib = open_mhd();
  if (!lib) return lib.error();
  mhd = *lib;
  std::unique_ptr<MetricsHttp> http(new MetricsHttp(std::move(options)));
  for (const auto& address : http->opt_.addresses) {
    auto sock = listen_on(address);
    if (!sock) return sock.error();
    auto [fd, bound] = *sock;
    MHD_Daemon* d = mhd->start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &handle, &http->opt_,
        // The logger first: libmicrohttpd reports problems with the options after it through it.
        MHD_OPTION_EXTERNAL_LOGGER, &log_mhd, &http->opt_, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        http->opt_.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, http->opt_.max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, http->opt_.timeout_seconds, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        http->opt_.memory_per_connection, MHD_OPTION_END);
    if (d == nullptr) {
      ::close(fd);
      return Error{ErrorKind::kIo, fmt::format("cannot serve metrics on {}: libmicrohttpd did not start", address)};
    }
    http->daemons_.push_back(d);
    http->bound_.push_back(bound);
  }
  return http;
}

MetricsHttp::~MetricsHttp() {
  for (MHD_Daemon* d : daemons_) mhd->stop_daemon(d);
}

}  // namespace zaptid::server
