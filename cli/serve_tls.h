// serve's TLS: the credentials each listening port serves with, and the certificate rotation
// SIGHUP asks for (re-reading --tls-cert, --tls-key and --tls-client-ca without a restart).
#pragma once

#include <grpc/grpc_security.h>
#include <grpcpp/security/server_credentials.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cmd_serve.h"
#include "core/certificate.h"
#include "core/result.h"

namespace zaptid::cli {

/// The certificate, key and client CA a TLS server presents, and their replacement. gRPC asks
/// for them through its SSL "certificate config fetcher" (grpc/grpc_security.h), at the start of
/// every connection's handshake: after reload() has returned, the next connection of every port
/// gets the new files; connections already open keep the certificate they were set up with.
/// Thread-safe: reload() and write_metrics() from any thread, gRPC's fetches from its own.
class ServeTls {
 public:
  /// Reads the files `opt` names, checked as reload() checks them but for the expiry (a server
  /// started with an expired certificate starts, as before). nullptr when TLS is off; throws
  /// Fatal(kExitUsage) for options that do not go together or a file that is not good.
  static std::unique_ptr<ServeTls> open(const ServeOptions& opt);
  ~ServeTls();

  /// Credentials for one listening port: gRPC sets up each port's TLS on its own and asks each
  /// for the files once per change, so every port needs its own. Must outlive no ServeTls.
  std::shared_ptr<grpc::ServerCredentials> port_credentials();

  /// Reads the three files again. All good (each a regular PEM file of at most 1 MiB, the
  /// certificate readable and not expired at `now_unix`, the key an unencrypted private key,
  /// the CA a certificate): new connections get them, and the new certificate's validity comes
  /// back. Anything wrong: the files served stay, and the error says which file and why (one line).
  Result<CertificateValidity> reload(int64_t now_unix);

  /// zaptid_tls_certificate_expiry_seconds and zaptid_tls_reloads_total for /metrics.
  void write_metrics(std::string& out) const;

  /// The validity of the certificate served now.
  CertificateValidity validity() const;

  /// One port's state for gRPC's fetcher callback (serve_tls.cpp).
  struct Port;
  /// gRPC's fetcher for `port`: kNew with a copy of the files when the port has not had them yet.
  grpc_ssl_certificate_config_reload_status fetch_for(Port& port, grpc_ssl_server_certificate_config** config);

 private:
  struct Files {
    std::string key;
    std::string cert;
    std::string client_ca;  ///< empty: no client certificates asked for
    CertificateValidity validity;
  };
  ServeTls(const ServeOptions& opt, Files files);
  static Result<Files> read_files(const ServeOptions& opt);

  const ServeOptions opt_;
  mutable std::mutex mu_;
  Files files_;                         // guarded by mu_
  std::atomic<uint64_t> generation_{1};  // counts the files served; each port compares its own
  std::vector<std::unique_ptr<Port>> ports_;  // guarded by mu_; gRPC holds pointers into them
  std::atomic<uint64_t> reloads_ok_{0};
  std::atomic<uint64_t> reloads_failed_{0};
};

}  // namespace zaptid::cli
