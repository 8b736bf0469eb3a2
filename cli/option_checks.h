// Checks and conversions of option values that CLI11 lacks: durations, names, plain decimals.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <map>
#include <string>
#include <string_view>

namespace zaptid::cli {

/// A millisecond duration option value, or Fatal(kExitUsage) naming the option.
std::chrono::milliseconds duration_ms(const std::string& text, std::string_view option);

/// A CLI11 transform that maps each name to its enum value and accepts only the names
/// (not CLI::CheckedTransformer's numbers); help and errors show only the names.
CLI::Validator names_only(const std::map<std::string, int>& names);

/// A CLI11 transform for integer options: only plain decimal digits, handed on as a plain decimal
/// number (CLI11 itself turns "-1" into 2^64-1, "0x10" into 16 and "010" into 8). Use with
/// transform(), not check(): a check cannot change the text.
const CLI::Validator& decimal_only();

/// A CLI11 check that refuses an empty value: `--epoch ''` is a mistake, not the default.
const CLI::Validator& not_empty();

}  // namespace zaptid::cli
