#include "option_checks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <vector>

#include "core/parse.h"
#include "fatal.h"

namespace zaptid::cli {

std::chrono::milliseconds duration_ms(const std::string& text, std::string_view option) {
  auto d = take(parse_duration(text, option), kExitUsage);
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

// Maps each name to its enum value for CLI11. Unlike CLI::CheckedTransformer it accepts only the
// names (not the numbers behind them), and its help and errors show only the names.
CLI::Validator names_only(const std::map<std::string, int>& names) {
  std::vector<std::string> keys;
  for (const auto& [name, value] : names) keys.push_back(name);
  const std::string list = fmt::format("{}", fmt::join(keys, ", "));
  return CLI::Validator(
      [names, list](std::string& text) {
        const auto it = names.find(text);
        if (it == names.end()) return fmt::format("{} is not one of {}", quote_input(text), list);
        text = std::to_string(it->second);
        return std::string();
      },
      fmt::format("{{{}}}", fmt::join(keys, ",")));
}


const CLI::Validator& not_empty() {
  static const CLI::Validator check(
      [](std::string& text) {
        return text.empty() ? std::string("an empty value is not allowed (leave the option out for its default)")
                            : std::string();
      },
      "", "not empty");
  return check;
}

const CLI::Validator& decimal_only() {
  static const CLI::Validator check(
      [](std::string& text) {
        auto v = parse_unsigned(text, UINT64_MAX, "value");
        if (!v) return v.message();
        // CLI11 converts with base 0: "010" would be eight. Hand it the number in plain decimal.
        text = std::to_string(*v);
        return std::string();
      },
      "", "decimal");
  return check;
}

}  // namespace zaptid::cli
