// What serve needs to know of a PEM certificate without asking OpenSSL (which zaptid-net loads
// only when gRPC first calls it, and whose functions zaptid does not call itself): whether the
// file holds a certificate at all, and when it expires. A small bounded DER walk over the first
// CERTIFICATE block, checked before a certificate rotated with SIGHUP may replace the one served.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/result.h"

namespace zaptid {

/// A certificate's validity, in Unix seconds (UTC).
struct CertificateValidity {
  int64_t not_before = 0;
  int64_t not_after = 0;
};

/// The validity of the first "-----BEGIN CERTIFICATE-----" block of `pem`: its base64 decoded,
/// then Certificate → tbsCertificate → [0] version (optional), serialNumber, signature, issuer,
/// validity {notBefore, notAfter} read as DER (UTCTime or GeneralizedTime, as RFC 5280 writes them:
/// seconds and "Z"). Nothing past the validity is read, nor the signature checked: that stays
/// OpenSSL's, through gRPC. Reads at most `pem.size()` bytes and allocates at most that much.
/// Errors (kInvalidArgument, one line, no input quoted) say what is wrong: "holds no certificate",
/// "its certificate is not base64", "its certificate is not DER (…)".
Result<CertificateValidity> certificate_validity(std::string_view pem);

/// Whether `pem` holds an unencrypted private key block ("-----BEGIN PRIVATE KEY-----",
/// "… RSA PRIVATE KEY-----", "… EC PRIVATE KEY-----"): gRPC reads no encrypted key.
bool has_private_key_block(std::string_view pem);

}  // namespace zaptid
