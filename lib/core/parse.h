// Parsers and formatters for what users type: numbers, IDs, durations and timestamps.
// Every parser returns the value or an invalid() error whose message names the input.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace zaptid {

/// A decimal unsigned integer <= max. `what` names the input in the error ("--count").
Result<uint64_t> parse_unsigned(std::string_view text, uint64_t max, std::string_view what);

/// An ID: decimal, or hexadecimal with a 0x prefix; any 64-bit value.
Result<uint64_t> parse_id(std::string_view text);

/// A duration such as "10ms", "1s", "1.5s", "2m", "250us"; "0" alone means zero.
Result<std::chrono::microseconds> parse_duration(std::string_view text, std::string_view what);

/// A size in bytes: "4096", "512KiB", "64MiB", "1GiB" (binary units; "0" alone is zero), <= max.
Result<uint64_t> parse_bytes(std::string_view text, uint64_t max, std::string_view what);

/// A point in time as Unix milliseconds: RFC 3339 ("2014-09-01T00:00:00Z", fractions and
/// offsets allowed) or an integer number of Unix milliseconds.
Result<int64_t> parse_timestamp_ms(std::string_view text, std::string_view what);

/// Unix milliseconds as RFC 3339 UTC with milliseconds: "2026-11-26T06:12:37.370Z".
std::string format_timestamp_ms(int64_t unix_ms);

/// A duration for messages: "250ms" below a second, else seconds with 3 decimals ("1.500s").
std::string format_duration_ms(int64_t ms);

}  // namespace zaptid
