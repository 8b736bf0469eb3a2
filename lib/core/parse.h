// Parsers and formatters for what users type: numbers, IDs, durations and timestamps.
// Every parser returns the value or an invalid() error whose message names the input.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace zaptid {

/// How many bytes of a bad input an error message quotes at most.
inline constexpr size_t kQuoteLimit = 64;

/// `text` as error messages quote it: in single quotes, at most kQuoteLimit bytes of it (then
/// "... (N bytes)"), always one line: control bytes, bytes past ASCII, the quote and the backslash
/// are escaped (\n, \t, \r, \xNN, \', \\). Every parser quotes bad input with it.
std::string quote_input(std::string_view text);

/// `text` on one line: control bytes escaped as in quote_input(), nothing else changed.
std::string escape_control(std::string_view text);

/// A decimal unsigned integer <= max. `what` names the input in the error ("--count").
Result<uint64_t> parse_unsigned(std::string_view text, uint64_t max, std::string_view what);

/// An ID: decimal, or hexadecimal with a 0x prefix; any 64-bit value.
Result<uint64_t> parse_id(std::string_view text);

/// A duration such as "10ms", "1s", "1.5s", "2m", "250us"; "0" alone means zero.
Result<std::chrono::microseconds> parse_duration(std::string_view text, std::string_view what);

/// A size in bytes: "4096", "512KiB", "64MiB", "1GiB" (binary units; "0" alone is zero), <= max.
Result<uint64_t> parse_bytes(std::string_view text, uint64_t max, std::string_view what);

/// Whether `address` is ":PORT", zaptidgen's form of an address with no host (Go's): a colon and
/// decimal digits only. serve reads it as every address, get as this host.
bool is_port_only(std::string_view address);

/// A point in time as Unix milliseconds: RFC 3339 ("2014-09-01T00:00:00Z", fractions and
/// offsets allowed) or an integer number of Unix milliseconds.
Result<int64_t> parse_timestamp_ms(std::string_view text, std::string_view what);

/// 10000-01-01T00:00:00Z in Unix milliseconds: the first time RFC 3339 cannot write.
inline constexpr int64_t kFirstMsPastYear9999 = 253402300800000;

/// Unix milliseconds as RFC 3339 UTC with milliseconds: "2026-11-26T06:12:37.370Z"; from year
/// 10000 on, which RFC 3339 cannot write, the decimal Unix milliseconds. Either way
/// parse_timestamp_ms() reads the text back to the same value (for unix_ms >= 0).
std::string format_timestamp_ms(int64_t unix_ms);

/// A duration for messages: "250ms" below a second, else seconds with 3 decimals ("1.500s").
std::string format_duration_ms(int64_t ms);

}  // namespace zaptid
