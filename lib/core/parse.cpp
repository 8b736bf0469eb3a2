#include "core/parse.h"

#include <charconv>
#include <optional>
#include <fmt/format.h>

namespace zaptid {
namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

// Reads exactly n digits at text[pos]; false if they are not all digits.
bool take_digits(std::string_view text, size_t& pos, size_t n, unsigned& out) {
  if (pos + n > text.size() || !all_digits(text.substr(pos, n))) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) out = out * 10 + static_cast<unsigned>(text[pos + i] - '0');
  pos += n;
  return true;
}

bool take_char(std::string_view text, size_t& pos, char c) {
  if (pos < text.size() && (text[pos] == c || (c == 'T' && (text[pos] == 't' || text[pos] == ' ')))) {
    ++pos;
    return true;
  }
  return false;
}

std::optional<int64_t> parse_rfc3339(std::string_view t) {
  size_t p = 0;
  unsigned year = 0, mon = 0, day = 0, hh = 0, mm = 0, ss = 0;
  if (!take_digits(t, p, 4, year) || !take_char(t, p, '-') || !take_digits(t, p, 2, mon) ||
      !take_char(t, p, '-') || !take_digits(t, p, 2, day) || !take_char(t, p, 'T') ||
      !take_digits(t, p, 2, hh) || !take_char(t, p, ':') || !take_digits(t, p, 2, mm) ||
      !take_char(t, p, ':') || !take_digits(t, p, 2, ss)) {
    return std::nullopt;
  }
  if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hh > 23 || mm > 59 || ss > 60) {
    return std::nullopt;
  }
  int64_t ms = 0;
  if (p < t.size() && t[p] == '.') {
    ++p;
    size_t digits = 0;
    int64_t scale = 100;
    while (p < t.size() && t[p] >= '0' && t[p] <= '9') {
      ms += (t[p] - '0') * scale;  // digits past milliseconds are truncated
      scale /= 10;
      ++p;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
  }
  int64_t offset_min = 0;
  if (p < t.size() && (t[p] == 'Z' || t[p] == 'z')) {
    ++p;
  } else if (p < t.size() && (t[p] == '+' || t[p] == '-')) {
    const int sign = t[p] == '-' ? -1 : 1;
    ++p;
    unsigned oh = 0, om = 0;
    if (!take_digits(t, p, 2, oh) || !take_char(t, p, ':') || !take_digits(t, p, 2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_min = sign * static_cast<int64_t>(oh * 60 + om);
  } else {
    return std::nullopt;  // RFC 3339 requires a zone
  }
  if (p != t.size()) return std::nullopt;
  const int64_t secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + (ss == 60 ? 59 : ss) -
                       offset_min * 60;
  return secs * 1000 + ms;
}

void escape_byte(std::string& out, unsigned char c, bool quoted) {
  switch (c) {
    case '\n': out += "\\n"; return;
    case '\t': out += "\\t"; return;
    case '\r': out += "\\r"; return;
    case '\\':
      out += quoted ? "\\\\" : "\\";
      return;
    case '\'':
      out += quoted ? "\\'" : "'";
      return;
    default:
      break;
  }
  if (c < 0x20 || c == 0x7f || (quoted && c >= 0x80)) {
    fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
  } else {
    out.push_back(static_cast<char>(c));
  }
}

}  // namespace

std::string quote_input(std::string_view text) {
  std::string out = "'";
  const std::string_view shown = text.substr(0, kQuoteLimit);
  for (char c : shown) escape_byte(out, static_cast<unsigned char>(c), true);
  out.push_back('\'');
  if (shown.size() < text.size()) fmt::format_to(std::back_inserter(out), "... ({} bytes)", text.size());
  return out;
}

std::string escape_control(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) escape_byte(out, static_cast<unsigned char>(c), false);
  return out;
}

Result<uint64_t> parse_unsigned(std::string_view text, uint64_t max, std::string_view what) {
  uint64_t v = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || !all_digits(text) || ec != std::errc() || ptr != end) {
    if (ec == std::errc::result_out_of_range) {
      return invalid(fmt::format("{} {} is out of range (at most {})", what, quote_input(text), max));
    }
    return invalid(fmt::format("{} {} is not a non-negative integer", what, quote_input(text)));
  }
  if (v > max) return invalid(fmt::format("{} {} is out of range (at most {})", what, v, max));
  return v;
}

Result<uint64_t> parse_id(std::string_view text) {
  uint64_t v = 0;
  std::string_view digits = text;
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base = 16;
  }
  const auto* end = digits.data() + digits.size();
  const auto [ptr, ec] = std::from_chars(digits.data(), end, v, base);
  // Trailing junk is checked first: on overflow from_chars still stops at the first non-digit.
  if (digits.empty() || ptr != end || digits[0] == '+' || digits[0] == '-' ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return invalid(fmt::format("{} is not an ID: expected a decimal number or 0x-prefixed hex", quote_input(text)));
  }
  if (ec == std::errc::result_out_of_range) {
    return invalid(fmt::format("{} is not an ID: larger than 64 bits", quote_input(text)));
  }
  return v;
}

Result<std::chrono::microseconds> parse_duration(std::string_view text, std::string_view what) {
  const auto bad = [&] {
    return invalid(fmt::format("{} {} is not a duration (examples: 500ms, 1s, 1.5s, 2m)", what, quote_input(text)));
  };
  if (text == "0") return std::chrono::microseconds(0);
  size_t p = 0;
  while (p < text.size() && ((text[p] >= '0' && text[p] <= '9') || text[p] == '.')) ++p;
  const std::string_view number = text.substr(0, p);
  const std::string_view unit = text.substr(p);
  double scale = 0;
  if (unit == "us") scale = 1;
  else if (unit == "ms") scale = 1e3;
  else if (unit == "s") scale = 1e6;
  else if (unit == "m") scale = 60e6;
  else if (unit == "h") scale = 3600e6;
  else return bad();
  double v = 0;
  const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
  if (number.empty() || ec != std::errc() || ptr != number.data() + number.size() || v < 0) return bad();
  const double us = v * scale;
  if (us > 1e15) return invalid(fmt::format("{} {} is too long", what, quote_input(text)));
  return std::chrono::microseconds(static_cast<int64_t>(us + 0.5));
}

bool is_port_only(std::string_view address) {
  return address.size() > 1 && address[0] == ':' && address.find_first_not_of("0123456789", 1) == std::string_view::npos;
}

Result<uint64_t> parse_bytes(std::string_view text, uint64_t max, std::string_view what) {
  size_t p = 0;
  while (p < text.size() && text[p] >= '0' && text[p] <= '9') ++p;
  const std::string_view unit = text.substr(p);
  uint64_t scale = 0;
  if (unit.empty()) scale = 1;
  else if (unit == "KiB") scale = uint64_t{1} << 10;
  else if (unit == "MiB") scale = uint64_t{1} << 20;
  else if (unit == "GiB") scale = uint64_t{1} << 30;
  if (p == 0 || scale == 0) {
    return invalid(fmt::format("{} '{}' is not a size (examples: 4096, 512KiB, 64MiB, 1GiB)", what, text));
  }
  auto n = parse_unsigned(text.substr(0, p), max / scale, what);
  if (!n) return invalid(fmt::format("{} '{}' is too large (at most {} bytes)", what, text, max));
  return *n * scale;
}

Result<int64_t> parse_timestamp_ms(std::string_view text, std::string_view what) {
  if (all_digits(text)) {
    auto v = parse_unsigned(text, INT64_MAX, what);
    if (!v) return v.error();
    return static_cast<int64_t>(*v);
  }
  if (auto ms = parse_rfc3339(text)) return *ms;
  return invalid(fmt::format("{} {} is not a time: expected RFC 3339 (2014-09-01T00:00:00Z) or Unix milliseconds",
                             what, quote_input(text)));
}

std::string format_timestamp_ms(int64_t unix_ms) {
  // RFC 3339 has four-digit years: from 10000-01-01 on, the Unix milliseconds themselves, which
  // parse_timestamp_ms() (and so compose --time) reads back just as well.
  if (unix_ms >= kFirstMsPastYear9999) return fmt::format("{}", unix_ms);
  // civil_from_days, the inverse of days_from_civil.
  int64_t days = unix_ms >= 0 ? unix_ms / 86400000 : -((-unix_ms + 86399999) / 86400000);
  const int64_t rem = unix_ms - days * 86400000;
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", y, m, d, rem / 3600000, rem / 60000 % 60,
                     rem / 1000 % 60, rem % 1000);
}

std::string format_duration_ms(int64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", ms);
  return fmt::format("{:.3f}s", static_cast<double>(ms) / 1000.0);
}

}  // namespace zaptid
