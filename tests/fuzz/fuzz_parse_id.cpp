// IDs as decode and the gRPC clients read them: decimal or 0x hex, any 64-bit value.
#include <fmt/format.h>

#include "core/parse.h"
#include "fuzz_check.h"

using namespace zaptid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = fuzz::as_text(data, size);
  const auto id = parse_id(text);
  if (!id) {
    fuzz::check_message(id.message());
    return 0;
  }
  // Whatever was accepted reads back the same from both spellings decode accepts.
  FUZZ_CHECK(*parse_id(fmt::format("{}", *id)) == *id);
  FUZZ_CHECK(*parse_id(fmt::format("0x{:016x}", *id)) == *id);
  // parse_unsigned agrees with parse_id on plain decimal.
  const auto u = parse_unsigned(text, UINT64_MAX, "value");
  if (u) FUZZ_CHECK(*u == *id);
  else fuzz::check_message(u.message());
  return 0;
}
