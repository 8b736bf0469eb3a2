// Certificates read on SIGHUP before one may replace the certificate served (lib/core/certificate.h):
// any bytes, as PEM text and as the DER inside a CERTIFICATE block, give a validity within the
// years a certificate can write or a one-line error; no cut of the DER reads past its end (ASan).
#include <string>

#include "core/certificate.h"
#include "fuzz_check.h"
#include "base64_encode.h"

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

using zaptid::testing::base64;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = fuzz::as_text(data, size);
  check(bytes);
  // The same bytes as DER, so that mutations reach the DER walk rather than the base64.
  check("-----BEGIN CERTIFICATE-----\n" + base64(bytes) + "\n-----END CERTIFICATE-----\n");
  has_private_key_block(bytes);
  return 0;
}
