// A certificate's validity read without OpenSSL (lib/core/certificate.h): real certificates made by
// openssl, hand-built DER for the forms openssl does not write, and every cut of good input.
#include <doctest/doctest.h>

#include <string>

#include "core/certificate.h"
#include "base64_encode.h"

using namespace std::string_view_literals;  // DER with zero bytes in it
using zaptid::certificate_validity;
using zaptid::has_private_key_block;

namespace {

// openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 20000 -subj /CN=g:
// v3, notBefore a UTCTime (261207180118Z), notAfter a GeneralizedTime (20810909180118Z).
constexpr std::string_view kEcV3 =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBbzCCARWgAwIBAgIUG7Bgrn8mlk6F49hoILAMkPLYY30wCgYIKoZIzj0EAwIw\n"
    "DDEKMAgGA1UEAwwBZzAgFw0yNjEyMDcxODAxMThaGA8yMDgxMDkwOTE4MDExOFow\n"
    "DDEKMAgGA1UEAwwBZzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABF6mTAWxru4J\n"
    "nY0skf24F8aR9y80NCCQObQXhk6KtVrHLohlfP59edF0td6GSE4+9Iu3nrxnDmZM\n"
    "yUUvMvmVDiSjUzBRMB0GA1UdDgQWBBTcasDBxghdo+XB6fdd9RTIBKXGNTAfBgNV\n"
    "HSMEGDAWgBTcasDBxghdo+XB6fdd9RTIBKXGNTAPBgNVHRMBAf8EBTADAQH/MAoG\n"
    "CCqGSM49BAMCA0gAMEUCIQCtOpa03HXkwg9yLN0m+fw0tWyQ6mYvbeoz7W9lP85B\n"
    "uAIgQbSMKE8PuIGLlGZWBIQ+12DpqAxwtFWo8qjqd3L7mDg=\n"
    "-----END CERTIFICATE-----\n";

using zaptid::testing::base64;

std::string pem(std::string_view der) {
  return "-----BEGIN CERTIFICATE-----\n" + base64(der) + "\n-----END CERTIFICATE-----\n";
}

std::string tlv(uint8_t tag, const std::string& contents) {
  std::string out(1, static_cast<char>(tag));
  if (contents.size() < 128) {
    out += static_cast<char>(contents.size());
  } else {
    out += static_cast<char>(0x82);
    out += static_cast<char>(contents.size() >> 8);
    out += static_cast<char>(contents.size() & 0xff);
  }
  return out + contents;
}

// A certificate whose tbsCertificate holds `tbs_fields`, with a dummy signature after it.
std::string certificate(const std::string& tbs_fields) {
  return tlv(0x30, tlv(0x30, tbs_fields) + tlv(0x30, tlv(0x06, "\x2a\x03")) + tlv(0x03, std::string("\0"sv)));
}

std::string before_validity() {
  return tlv(0x02, "\x01") + tlv(0x30, tlv(0x06, "\x2a\x03")) + tlv(0x30, "");
}

std::string validity(uint8_t from_tag, const std::string& from, uint8_t until_tag, const std::string& until) {
  return tlv(0x30, tlv(from_tag, from) + tlv(until_tag, until));
}

std::string message(std::string_view text) {
  auto r = certificate_validity(text);
  REQUIRE_FALSE(r.ok());
  return r.message();
}

}  // namespace

TEST_CASE("certificate::certificate_validity") {
  SUBCASE("a certificate made by openssl") {
    auto v = certificate_validity(kEcV3);
    REQUIRE_MESSAGE(v.ok(), v.message());
    CHECK(v->not_before == 1796666478);  // 2026-12-07T18:01:18Z
    CHECK(v->not_after == 3524666478);   // 2081-09-09T18:01:18Z
    // The first certificate of a chain counts; text around the blocks does not.
    auto chain = certificate_validity("subject=/CN=g\n" + std::string(kEcV3) + pem(certificate("")));
    REQUIRE(chain.ok());
    CHECK(chain->not_after == 3524666478);
  }
  SUBCASE("v1 (no [0] version) and the UTCTime century rule") {
    const auto v = certificate_validity(pem(certificate(
        before_validity() + validity(0x17, "500101000000Z", 0x17, "491231235959Z") + tlv(0x30, ""))));
    REQUIRE_MESSAGE(v.ok(), v.message());
    CHECK(v->not_before == -631152000);  // 1950-01-01T00:00:00Z
    CHECK(v->not_after == 2524607999);   // 2049-12-31T23:59:59Z
  }
  SUBCASE("long lengths") {
    const std::string issuer = tlv(0x30, tlv(0x31, std::string(300, 'x')));
    const std::string tbs = tlv(0xa0, tlv(0x02, "\x02")) + tlv(0x02, "\x01") + tlv(0x30, "") + issuer +
                            validity(0x18, "19700101000000Z", 0x18, "99991231235959Z");
    const auto v = certificate_validity(pem(certificate(tbs)));
    REQUIRE_MESSAGE(v.ok(), v.message());
    CHECK(v->not_before == 0);
    CHECK(v->not_after == 253402300799);
  }
  SUBCASE("no certificate") {
    CHECK(message("") == "holds no certificate");
    CHECK(message("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") == "holds no certificate");
    CHECK(message("-----BEGIN CERTIFICATE-----\nMIIB") == "its certificate has no END line");
  }
  SUBCASE("not base64") {
    for (const char* body : {"MII*", "MIIB=A", "M===", "MIIBb", "MIIBbz=", "MIIBb===", "\xff"}) {
      CAPTURE(body);
      CHECK(message(std::string("-----BEGIN CERTIFICATE-----\n") + body + "\n-----END CERTIFICATE-----") ==
            "its certificate is not base64");
    }
  }
  SUBCASE("every cut of a good certificate is refused, never read past") {
    const std::string der = certificate(before_validity() + validity(0x17, "260101000000Z", 0x17, "270101000000Z"));
    REQUIRE(certificate_validity(pem(der)).ok());
    for (size_t n = 0; n < der.size(); ++n) {
      CAPTURE(n);
      CHECK(message(pem(der.substr(0, n))).starts_with("its certificate is not DER ("));
    }
  }
  SUBCASE("not DER, or not a certificate") {
    const std::string good_validity = validity(0x17, "260101000000Z", 0x17, "270101000000Z");
    CHECK(message(pem(tlv(0x31, ""))) == "its certificate is not DER (not a SEQUENCE)");
    CHECK(message(pem("\x30\x80\x00\x00"sv)) == "its certificate is not DER (an indefinite length)");
    CHECK(message(pem("\x30\x85\x00\x00\x00\x00\x01"sv)) == "its certificate is not DER (a length over 4 bytes)");
    CHECK(message(pem("\x3f\x01\x00"sv)) == "its certificate is not DER (a multi-byte tag)");
    CHECK(message(pem("\x30\x84\xff\xff\xff\xff"sv)) == "its certificate is not DER (cut short)");
    CHECK(message(pem(tlv(0x30, tlv(0x02, "")))) == "its certificate is not DER (tbsCertificate is not a SEQUENCE)");
    CHECK(message(pem(certificate(tlv(0x30, "") + good_validity))) ==
          "its certificate is not DER (serialNumber is not where RFC 5280 puts it)");
    CHECK(message(pem(certificate(tlv(0x02, "\x01") + tlv(0x30, "") + tlv(0x30, "") + tlv(0x02, "\x05")))) ==
          "its certificate is not DER (validity is not where RFC 5280 puts it)");
    // A v1 certificate that lost its issuer: the validity is read as the issuer, and then none follows.
    CHECK(message(pem(certificate(tlv(0x02, "\x01") + tlv(0x30, "") + good_validity))) ==
          "its certificate is not DER (cut short)");
    CHECK(message(pem(certificate(before_validity() + tlv(0x30, tlv(0x17, "260101000000Z"))))) ==
          "its certificate is not DER (cut short)");
  }
  SUBCASE("times") {
    const auto until = [](uint8_t tag, const std::string& text) {
      return message(pem(certificate(before_validity() + validity(0x17, "260101000000Z", tag, text))));
    };
    const std::string bad = "its certificate is not DER (notAfter is not a UTCTime or GeneralizedTime in UTC)";
    CHECK(until(0x17, "2601010000Z") == bad);           // no seconds
    CHECK(until(0x17, "260101000000+0100") == bad);     // not UTC
    CHECK(until(0x18, "20260101000000.5Z") == bad);     // fractions
    CHECK(until(0x17, "20260101000000Z") == bad);       // a GeneralizedTime's text as a UTCTime
    CHECK(until(0x18, "260101000000Z") == bad);         // and the other way round
    CHECK(until(0x0c, "260101000000Z") == bad);         // a UTF8String
    CHECK(until(0x17, "260230000000Z") == bad);         // February 30th
    CHECK(until(0x17, "261301000000Z") == bad);         // month 13
    CHECK(until(0x17, "260101240000Z") == bad);         // hour 24
    CHECK(until(0x17, "260101006000Z") == bad);         // minute 60
    CHECK(until(0x17, "2601010000-1Z") == bad);         // not a digit
    CHECK(message(pem(certificate(before_validity() + validity(0x17, "26010100000Z", 0x17, "270101000000Z")))) ==
          "its certificate is not DER (notBefore is not a UTCTime or GeneralizedTime in UTC)");
  }
}

TEST_CASE("certificate::has_private_key_block") {
  CHECK(has_private_key_block("-----BEGIN PRIVATE KEY-----\nMIG\n-----END PRIVATE KEY-----\n"));
  CHECK(has_private_key_block("-----BEGIN EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\n"));
  CHECK(has_private_key_block("-----BEGIN RSA PRIVATE KEY-----\n"));
  CHECK_FALSE(has_private_key_block("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
  CHECK_FALSE(has_private_key_block(kEcV3));
  CHECK_FALSE(has_private_key_block(""));
}
