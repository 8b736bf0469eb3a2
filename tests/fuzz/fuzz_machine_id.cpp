// Machine ids and machine-id ranges: --machine-id / ZAPTID_MACHINE_ID, and serve's
// --machine-id-range A-B (lib/etcd/record.h parse_id_range).
#include <fmt/format.h>

#include "core/machine_id.h"
#include "etcd/record.h"
#include "fuzz_check.h"

using namespace zaptid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks the machine bits (0 to 30: time needs 32 of the 63), the rest is the text.
  const int bits = data[0] % 31;
  const auto text = fuzz::as_text(data + 1, size - 1);
  auto layout = make_layout("sonyflake", {.unit_ms = 1, .bits_sequence = 1, .bits_machine = bits}, std::nullopt);
  FUZZ_CHECK(layout.ok());

  const std::optional<std::string> given(text);
  const auto choice = choose_machine_id(given, std::nullopt, {}, *layout);
  if (choice) {
    FUZZ_CHECK(choice->id <= layout->max_machine());
    FUZZ_CHECK(choice->source == "--machine-id");
    const auto again = choose_machine_id(fmt::format("{}", choice->id), std::nullopt, {}, *layout);
    FUZZ_CHECK(again && again->id == choice->id);
  } else {
    fuzz::check_message(choice.message());
  }

  const auto range = etcd::parse_id_range(text, layout->max_machine(), "--machine-id-range");
  if (range) {
    FUZZ_CHECK(range->first <= range->last && range->last <= layout->max_machine());
    FUZZ_CHECK(range->size() >= 1);
    const auto again = etcd::parse_id_range(fmt::format("{}-{}", range->first, range->last), layout->max_machine(),
                                            "--machine-id-range");
    FUZZ_CHECK(again && again->first == range->first && again->last == range->last);
  } else {
    fuzz::check_message(range.message());
  }
  return 0;
}
