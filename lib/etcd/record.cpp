#include "etcd/record.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "core/parse.h"

namespace zaptid::etcd {

Result<IdRange> parse_id_range(std::string_view text, uint64_t max_id, std::string_view what) {
  const auto dash = text.find('-');
  const auto first_text = text.substr(0, dash);
  const auto last_text = dash == std::string_view::npos ? first_text : text.substr(dash + 1);
  auto first = parse_unsigned(first_text, max_id, what);
  if (!first) return invalid(fmt::format("{} {} must be A-B with 0 <= A <= B <= {}", what, quote_input(text), max_id));
  auto last = parse_unsigned(last_text, max_id, what);
  if (!last || *last < *first) {
    return invalid(fmt::format("{} {} must be A-B with 0 <= A <= B <= {}", what, quote_input(text), max_id));
  }
  return IdRange{*first, *last};
}

std::string machine_key(std::string_view prefix, uint64_t id) { return fmt::format("{}machines/{}", prefix, id); }

std::string highwater_key(std::string_view prefix, uint64_t id) { return fmt::format("{}highwater/{}", prefix, id); }

Result<std::string> normalize_prefix(std::string_view prefix) {
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  if (prefix.empty()) return invalid("--etcd-prefix must name a key prefix such as /zaptid/");
  return std::string(prefix) + "/";
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  // Increment the last byte that is not 0xff, dropping the 0xff bytes after it (etcd's rule).
  while (!end.empty()) {
    auto& c = end.back();
    if (static_cast<unsigned char>(c) < 0xff) {
      c = static_cast<char>(static_cast<unsigned char>(c) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

namespace {

std::string clean(std::string s) {
  std::replace_if(
      s.begin(), s.end(), [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '='; }, '_');
  return s;
}

}  // namespace

std::string format_holder(const Holder& h) {
  std::string out = fmt::format("host={} pid={}", clean(h.host.empty() ? "?" : h.host), h.pid);
  if (!h.addresses.empty()) out += fmt::format(" addr={}", clean(h.addresses));
  out += fmt::format(" started={}", format_timestamp_ms(h.started_ms));
  if (h.high_water) out += fmt::format(" high_water={}", *h.high_water);
  return out;
}

Result<Holder> parse_holder(std::string_view text) {
  Holder h;
  while (!text.empty()) {
    const auto space = text.find(' ');
    const auto field = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view{} : text.substr(space + 1);
    const auto eq = field.find('=');
    if (eq == std::string_view::npos) continue;
    const auto name = field.substr(0, eq);
    const auto value = field.substr(eq + 1);
    if (name == "host") {
      h.host = value;
    } else if (name == "addr") {
      h.addresses = value;
    } else if (name == "pid") {
      auto n = parse_unsigned(value, std::numeric_limits<int32_t>::max(), "pid");
      if (!n) return invalid(fmt::format("holder record has a bad pid {}", quote_input(value)));
      h.pid = static_cast<int64_t>(*n);
    } else if (name == "started") {
      auto t = parse_timestamp_ms(value, "started");
      if (!t) return invalid(fmt::format("holder record has a bad start time {}", quote_input(value)));
      h.started_ms = *t;
    } else if (name == "high_water") {
      auto n = parse_unsigned(value, std::numeric_limits<uint64_t>::max(), "high_water");
      if (!n) return invalid(fmt::format("holder record has a bad high_water {}", quote_input(value)));
      h.high_water = *n;
    }
  }
  return h;
}

std::string describe_holder(uint64_t id, const Holder& h) {
  std::string who = h.host.empty() ? "unknown host" : h.host;
  if (h.pid != 0) who += fmt::format(" pid {}", h.pid);
  if (!h.addresses.empty()) who += fmt::format(" at {}", h.addresses);
  if (h.started_ms != 0) who += fmt::format(" since {}", format_timestamp_ms(h.started_ms));
  return fmt::format("id {} ({})", id, who);
}

Result<Cursor> parse_high_water(std::string_view text, std::string_view key) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.remove_suffix(1);
  auto n = parse_unsigned(text, std::numeric_limits<uint64_t>::max(), key);
  if (!n) return Error{ErrorKind::kCorrupt, fmt::format("{} holds {}, not a cursor (a decimal number)", key, quote_input(text))};
  return *n;
}

std::string format_high_water(Cursor c) { return fmt::format("{}", c); }

}  // namespace zaptid::etcd
