// Pure pieces of the etcd machine-id lease: key names, the holder record, the high-water value
// and the --machine-id-range syntax. No I/O, so they are unit-tested directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/generator.h"
#include "core/result.h"

namespace zaptid::etcd {

/// An inclusive range of machine ids, as in --machine-id-range A-B.
struct IdRange {
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t size() const { return last - first + 1; }
};

/// Parses "A-B" (A <= B <= max_id) or a single "A". `what` names the option in errors.
Result<IdRange> parse_id_range(std::string_view text, uint64_t max_id, std::string_view what);

/// "<prefix>machines/<id>": the lease-bound key that says who holds an id (absent: free).
std::string machine_key(std::string_view prefix, uint64_t id);
/// "<prefix>highwater/<id>": the durable cursor (no lease), so it outlives its holder.
std::string highwater_key(std::string_view prefix, uint64_t id);
/// The prefix made to end in exactly one '/', e.g. "/zaptid" -> "/zaptid/". Refuses "".
Result<std::string> normalize_prefix(std::string_view prefix);
/// The key just past every key starting with `prefix` (etcd's range_end for a prefix scan).
std::string prefix_end(std::string_view prefix);

/// Who holds a machine id, stored as the value of its machines key.
struct Holder {
  std::string host;
  int64_t pid = 0;
  std::string addresses;   ///< comma-separated listen addresses; may be empty
  int64_t started_ms = 0;  ///< Unix milliseconds when the holder claimed the id
  std::optional<Cursor> high_water;
};

/// One line: "host=web1 pid=42 addr=10.0.0.5:50051 started=2026-11-26T07:00:00.000Z high_water=123".
/// Empty fields are left out; spaces in fields are replaced by '_' so the line stays parseable.
std::string format_holder(const Holder& h);
/// Parses format_holder()'s line; unknown fields are ignored, a bad number is an error.
Result<Holder> parse_holder(std::string_view text);
/// "id 3 (web1 pid 42 since 2026-11-26T07:00:00.000Z)" for messages.
std::string describe_holder(uint64_t id, const Holder& h);

/// The high-water key's value: the cursor in decimal, optionally followed by whitespace.
Result<Cursor> parse_high_water(std::string_view text, std::string_view key);
std::string format_high_water(Cursor c);

}  // namespace zaptid::etcd
