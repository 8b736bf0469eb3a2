// Durations of options (--max-clock-wait, --lock-timeout, --time-unit, --timeout, …).
#include <fmt/format.h>

#include "core/parse.h"
#include "fuzz_check.h"

using namespace zaptid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto d = parse_duration(fuzz::as_text(data, size), "--timeout");
  if (!d) {
    fuzz::check_message(d.message());
    return 0;
  }
  FUZZ_CHECK(d->count() >= 0);
  FUZZ_CHECK(d->count() <= 1'000'000'000'000'000);
  // The value in microseconds reads back exactly.
  const auto again = parse_duration(fmt::format("{}us", d->count()), "--timeout");
  FUZZ_CHECK(again && *again == *d);
  const auto ms = format_duration_ms(d->count() / 1000);
  FUZZ_CHECK(!ms.empty());
  return 0;
}
