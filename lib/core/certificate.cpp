#include "core/certificate.h"

#include <array>
#include <chrono>
#include <string>

namespace zaptid {
namespace {

constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
constexpr std::string_view kEnd = "-----END CERTIFICATE-----";

Error not_der(std::string_view why) { return invalid("its certificate is not DER (" + std::string(why) + ")"); }

// RFC 4648 base64 with "=" padding into `out`; the line breaks and spaces of PEM are skipped.
// False for any other byte, padding anywhere but at the end, or a final group cut short.
bool decode_base64(std::string_view text, std::string& out) {
  static constexpr auto kValues = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < kAlphabet.size(); ++i) v[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
    return v;
  }();
  out.clear();
  out.reserve(text.size() / 4 * 3);
  uint32_t bits = 0;
  int count = 0;    // sextets in `bits`
  int padding = 0;  // "=" seen; nothing but more "=" and spaces may follow
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      if (++padding > 2) return false;
      continue;
    }
    const int8_t value = kValues[static_cast<unsigned char>(c)];
    if (value < 0 || padding > 0) return false;
    bits = (bits << 6) | static_cast<uint32_t>(value);
    if (++count == 4) {
      out.push_back(static_cast<char>(bits >> 16));
      out.push_back(static_cast<char>(bits >> 8));
      out.push_back(static_cast<char>(bits));
      bits = 0;
      count = 0;
    }
  }
  // What a final, padded group holds: 2 sextets are one byte, 3 are two.
  if (count + padding != 0 && count + padding != 4) return false;
  if (count == 1) return false;
  if (count == 2) out.push_back(static_cast<char>(bits >> 4));
  if (count == 3) {
    out.push_back(static_cast<char>(bits >> 10));
    out.push_back(static_cast<char>(bits >> 2));
  }
  return true;
}

struct Tlv {
  uint8_t tag = 0;
  std::string_view contents;
};

// The DER element at the front of `der`, which is then left behind it; or why there is none.
// Only what a certificate's first fields use: one-byte tags, definite lengths of up to 4 bytes.
const char* read_tlv(std::string_view& der, Tlv& out) {
  if (der.size() < 2) return "cut short";
  out.tag = static_cast<uint8_t>(der[0]);
  if ((out.tag & 0x1f) == 0x1f) return "a multi-byte tag";
  size_t length = static_cast<uint8_t>(der[1]);
  size_t header = 2;
  if (length & 0x80) {
    const size_t bytes = length & 0x7f;
    if (bytes == 0) return "an indefinite length";
    if (bytes > 4) return "a length over 4 bytes";
    if (der.size() < 2 + bytes) return "cut short";
    length = 0;
    for (size_t i = 0; i < bytes; ++i) length = (length << 8) | static_cast<uint8_t>(der[2 + i]);
    header += bytes;
  }
  if (der.size() - header < length) return "cut short";
  out.contents = der.substr(header, length);
  der.remove_prefix(header + length);
  return nullptr;
}

constexpr uint8_t kSequence = 0x30;
constexpr uint8_t kInteger = 0x02;
constexpr uint8_t kExplicit0 = 0xa0;
constexpr uint8_t kUtcTime = 0x17;
constexpr uint8_t kGeneralizedTime = 0x18;

// "YYMMDDHHMMSSZ" (UTCTime: 50-99 are 19xx, as RFC 5280 says) or "YYYYMMDDHHMMSSZ".
Result<int64_t> read_time(const Tlv& t, std::string_view name) {
  const size_t year_digits = t.tag == kUtcTime ? 2 : t.tag == kGeneralizedTime ? 4 : 0;
  const auto bad = [&] { return not_der(std::string(name) + " is not a UTCTime or GeneralizedTime in UTC"); };
  if (year_digits == 0 || t.contents.size() != year_digits + 11 || t.contents.back() != 'Z') return bad();
  int fields[6] = {};
  size_t at = 0;
  for (int f = 0; f < 6; ++f) {
    const size_t digits = f == 0 ? year_digits : 2;
    for (size_t i = 0; i < digits; ++i, ++at) {
      const char c = t.contents[at];
      if (c < '0' || c > '9') return bad();
      fields[f] = fields[f] * 10 + (c - '0');
    }
  }
  if (year_digits == 2) fields[0] += fields[0] >= 50 ? 1900 : 2000;
  const std::chrono::year_month_day date{std::chrono::year{fields[0]},
                                         std::chrono::month{static_cast<unsigned>(fields[1])},
                                         std::chrono::day{static_cast<unsigned>(fields[2])}};
  if (!date.ok() || fields[3] > 23 || fields[4] > 59 || fields[5] > 59) return bad();
  const int64_t days = std::chrono::sys_days(date).time_since_epoch().count();
  return days * 86400 + fields[3] * 3600 + fields[4] * 60 + fields[5];
}

}  // namespace

Result<CertificateValidity> certificate_validity(std::string_view pem) {
  const size_t begin = pem.find(kBegin);
  if (begin == std::string_view::npos) return invalid("holds no certificate");
  const size_t body = begin + kBegin.size();
  const size_t end = pem.find(kEnd, body);
  if (end == std::string_view::npos) return invalid("its certificate has no END line");
  std::string der;
  if (!decode_base64(pem.substr(body, end - body), der)) return invalid("its certificate is not base64");

  std::string_view rest = der;
  Tlv certificate;
  Tlv tbs;
  if (const char* why = read_tlv(rest, certificate)) return not_der(why);
  if (certificate.tag != kSequence) return not_der("not a SEQUENCE");
  std::string_view fields = certificate.contents;
  if (const char* why = read_tlv(fields, tbs)) return not_der(why);
  if (tbs.tag != kSequence) return not_der("tbsCertificate is not a SEQUENCE");
  fields = tbs.contents;
  // [0] version is left out for v1 certificates; then the serial number comes first.
  const std::array<std::pair<uint8_t, const char*>, 4> before_validity = {
      {{kInteger, "serialNumber"}, {kSequence, "signature"}, {kSequence, "issuer"}, {kSequence, "validity"}}};
  Tlv field;
  if (const char* why = read_tlv(fields, field)) return not_der(why);
  if (field.tag == kExplicit0) {
    if (const char* why = read_tlv(fields, field)) return not_der(why);
  }
  for (size_t i = 0;; ++i) {
    if (field.tag != before_validity[i].first) {
      return not_der(std::string(before_validity[i].second) + " is not where RFC 5280 puts it");
    }
    if (i + 1 == before_validity.size()) break;
    if (const char* why = read_tlv(fields, field)) return not_der(why);
  }
  std::string_view validity = field.contents;
  Tlv not_before;
  Tlv not_after;
  if (const char* why = read_tlv(validity, not_before)) return not_der(why);
  if (const char* why = read_tlv(validity, not_after)) return not_der(why);
  auto from = read_time(not_before, "notBefore");
  if (!from) return from.error();
  auto until = read_time(not_after, "notAfter");
  if (!until) return until.error();
  return CertificateValidity{*from, *until};
}

bool has_private_key_block(std::string_view pem) {
  for (const std::string_view kind : {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"}) {
    if (pem.find("-----BEGIN " + std::string(kind) + "-----") != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace zaptid
