// Certificates read on SIGHUP before one may replace the certificate served (lib/core/certificate.h):
// any bytes, as PEM text and as the DER inside a CERTIFICATE block, give a validity within the
// years a certificate can write or a one-line error; no cut of the DER reads past its end (ASan).
#include <string>

#include "core/certificate.h"
#include "fuzz_check.h"

using namespace zaptid;

namespace {
// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: what GeneralizedTime can write.
constexpr int64_t kYearZero = -62167219200;
constexpr int64_t kLastOfYear9999 = 253402300799;

void check(std::string_view pem) {
  const auto v = certificate_validity(pem);
  if (!v) {
    fuzz::check_message(v.message());
    return;
  }
  FUZZ_CHECK(v->not_before >= kYearZero && v->not_before <= kLastOfYear9999);
  FUZZ_CHECK(v->not_after >= kYearZero && v->not_after <= kLastOfYear9999);
}

std::string base64(std::string_view bytes) {
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t group = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) group |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) group |= static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[group >> 18];
    out += kAlphabet[(group >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(group >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[group & 63] : '=';
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = fuzz::as_text(data, size);
  check(bytes);
  // The same bytes as DER, so that mutations reach the DER walk rather than the base64.
  check("-----BEGIN CERTIFICATE-----\n" + base64(bytes) + "\n-----END CERTIFICATE-----\n");
  has_private_key_block(bytes);
  return 0;
}
