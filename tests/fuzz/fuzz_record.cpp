// The host and state records (lib/core/record.h): whatever bytes a record file holds, parsing
// never reads past them, and a record accepted is exactly one zaptid writes.
#include <cstring>

#include "core/record.h"
#include "fuzz_check.h"

using namespace zaptid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = fuzz::as_text(data, size);
  const auto v = parse_record(text);
  if (v) {
    FUZZ_CHECK(format_record(*v) == text);
    FUZZ_CHECK(text.size() == kRecordSize);
  } else {
    fuzz::check_message(v.message());
  }
  // The 0.1.0 record: a cursor, or nothing.
  (void)parse_legacy_record(text);
  // A record written from any value reads back as that value.
  if (size >= 16) {
    RecordValue w;
    std::memcpy(&w.machine_id, data, 8);
    std::memcpy(&w.id, data + 8, 8);
    w.layout_key = "e1409529600000-u10-t39-s8-m16-sm";
    const auto back = parse_record(format_record(w));
    FUZZ_CHECK(back && back->machine_id == w.machine_id && back->id == w.id && back->layout_key == w.layout_key);
  }
  return 0;
}
