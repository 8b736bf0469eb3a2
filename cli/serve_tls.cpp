#include "serve_tls.h"

#include <fmt/format.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "core/parse.h"
#include "core/pem_file.h"
#include "exit_status.h"
#include "fatal.h"
#include "server/metrics.h"

namespace zaptid::cli {

// What gRPC's fetcher callback gets for one port: the files served, and which of their
// generations this port's handshakes use now.
struct ServeTls::Port {
  ServeTls* tls = nullptr;
  std::atomic<uint64_t> served{0};
};

namespace {

// Called by gRPC when a port's TLS is set up (which then needs kNew) and at the start of every
// handshake on it, under that port's own lock: a changed generation hands over the new files,
// which gRPC copies. Should gRPC fail to use them (a key that does not match its certificate),
// it logs why and keeps the pair it had.
grpc_ssl_certificate_config_reload_status fetch(void* user_data, grpc_ssl_server_certificate_config** config) {
  auto* port = static_cast<ServeTls::Port*>(user_data);
  return port->tls->fetch_for(*port, config);
}

// grpc::SslServerCredentials() takes its files once; these take gRPC's C credentials with a
// fetcher instead. The C++ API has no wrapper for those, and a port is added with them just as
// SslServerCredentials' own class adds it.
class FetchingCredentials final : public grpc::ServerCredentials {
 public:
  explicit FetchingCredentials(grpc_server_credentials* creds) : creds_(creds) {}
  ~FetchingCredentials() override { grpc_server_credentials_release(creds_); }
  FetchingCredentials(const FetchingCredentials&) = delete;
  FetchingCredentials& operator=(const FetchingCredentials&) = delete;
  // serve sets no metadata processor.
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {}

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }
  grpc_server_credentials* creds_;
};

}  // namespace

grpc_ssl_certificate_config_reload_status ServeTls::fetch_for(Port& port, grpc_ssl_server_certificate_config** config) {
  const uint64_t now = generation_.load(std::memory_order_acquire);
  if (port.served.exchange(now, std::memory_order_acq_rel) == now) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  std::lock_guard lock(mu_);
  grpc_ssl_pem_key_cert_pair pair{files_.key.c_str(), files_.cert.c_str()};
  // Without --tls-client-ca no client certificate is asked for, so the CA is never used; but
  // Debian's gRPC checks its debug assertions, one of which aborts on a fetched config without
  // one, and an empty one fails to load. The server's own chain stands in.
  const std::string& roots = files_.client_ca.empty() ? files_.cert : files_.client_ca;
  *config = grpc_ssl_server_certificate_config_create(roots.c_str(), &pair, 1);
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

Result<ServeTls::Files> ServeTls::read_files(const ServeOptions& opt) {
  Files f;
  auto cert = read_pem_file(opt.tls_cert, "--tls-cert");
  if (!cert) return cert.error();
  auto key = read_pem_file(opt.tls_key, "--tls-key");
  if (!key) return key.error();
  const auto named = [](std::string_view option, const std::string& path) {
    return fmt::format("{} {}", option, escape_control(path));
  };
  auto validity = certificate_validity(*cert);
  if (!validity) return invalid(fmt::format("{}: {}", named("--tls-cert", opt.tls_cert), validity.message()));
  if (!has_private_key_block(*key)) {
    return invalid(fmt::format("{} holds no unencrypted private key", named("--tls-key", opt.tls_key)));
  }
  if (!opt.tls_client_ca.empty()) {
    auto ca = read_pem_file(opt.tls_client_ca, "--tls-client-ca");
    if (!ca) return ca.error();
    if (auto ok = certificate_validity(*ca); !ok) {
      return invalid(fmt::format("{}: {}", named("--tls-client-ca", opt.tls_client_ca), ok.message()));
    }
    f.client_ca = std::move(*ca);
  }
  f.cert = std::move(*cert);
  f.key = std::move(*key);
  f.validity = *validity;
  return f;
}

std::unique_ptr<ServeTls> ServeTls::open(const ServeOptions& opt) {
  if (opt.tls_cert.empty() && opt.tls_key.empty()) {
    if (!opt.tls_client_ca.empty()) throw Fatal(kExitUsage, "--tls-client-ca needs --tls-cert and --tls-key");
    return nullptr;
  }
  if (opt.tls_cert.empty() || opt.tls_key.empty()) throw Fatal(kExitUsage, "--tls-cert and --tls-key go together");
  return std::unique_ptr<ServeTls>(new ServeTls(opt, take(read_files(opt), kExitUsage)));
}

ServeTls::ServeTls(const ServeOptions& opt, Files files) : opt_(opt), files_(std::move(files)) {}

ServeTls::~ServeTls() = default;

std::shared_ptr<grpc::ServerCredentials> ServeTls::port_credentials() {
  Port* port = nullptr;
  {
    std::lock_guard lock(mu_);
    ports_.push_back(std::make_unique<Port>());
    port = ports_.back().get();
    port->tls = this;
  }
  // Mutual TLS asks for, requires and verifies a client certificate, as SslServerCredentials did.
  const auto request = opt_.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                  : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  auto* options = grpc_ssl_server_credentials_create_options_using_config_fetcher(request, fetch, port);
  return std::make_shared<FetchingCredentials>(grpc_ssl_server_credentials_create_with_options(options));
}

Result<CertificateValidity> ServeTls::reload(int64_t now_unix) {
  auto files = read_files(opt_);
  if (files && files->validity.not_after <= now_unix) {
    files = invalid(fmt::format("--tls-cert {} expired at {}", escape_control(opt_.tls_cert),
                                format_timestamp_ms(files->validity.not_after * 1000)));
  }
  if (!files) {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    return files.error();
  }
  const CertificateValidity validity = files->validity;
  {
    std::lock_guard lock(mu_);
    files_ = std::move(*files);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  reloads_ok_.fetch_add(1, std::memory_order_relaxed);
  return validity;
}

CertificateValidity ServeTls::validity() const {
  std::lock_guard lock(mu_);
  return files_.validity;
}

void ServeTls::write_metrics(std::string& out) const {
  constexpr std::string_view kExpiry = "zaptid_tls_certificate_expiry_seconds";
  server::write_family(out, kExpiry, "gauge",
                       "When the certificate new TLS connections get (--tls-cert, the first of its chain) expires, "
                       "as Unix time (its notAfter); SIGHUP replaces it.");
  server::write_sample(out, kExpiry, "", static_cast<double>(validity().not_after));
  constexpr std::string_view kReloads = "zaptid_tls_reloads_total";
  server::write_family(out, kReloads, "counter",
                       "SIGHUPs that re-read --tls-cert, --tls-key and --tls-client-ca, by result: ok (new "
                       "connections get the new files) or failed (a file was bad; the old ones stay, and the log "
                       "says why).");
  server::write_sample(out, kReloads, "result=\"ok\"", reloads_ok_.load(std::memory_order_relaxed));
  server::write_sample(out, kReloads, "result=\"failed\"", reloads_failed_.load(std::memory_order_relaxed));
}

}  // namespace zaptid::cli
