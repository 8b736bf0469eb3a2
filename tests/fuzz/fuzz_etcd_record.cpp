// What zaptid reads from etcd (lib/etcd/record.h): the holder line of a machines key and the
// high-water cursor. Anyone with write access to etcd controls these bytes.
#include "etcd/record.h"
#include "fuzz_check.h"

using namespace zaptid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = fuzz::as_text(data, size);
  const auto h = etcd::parse_holder(text);
  if (h) {
    // Formatting is stable: what format_holder() writes parses to what formats the same again.
    const std::string line = etcd::format_holder(*h);
    FUZZ_CHECK(line.find('\n') == std::string::npos);
    const auto again = etcd::parse_holder(line);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(etcd::format_holder(*again) == line);
    FUZZ_CHECK(again->pid == h->pid && again->started_ms == h->started_ms && again->high_water == h->high_water);
    (void)etcd::describe_holder(3, *h);
  } else {
    fuzz::check_message(h.message());
  }
  const auto c = etcd::parse_high_water(text, "/zaptid/highwater/3");
  if (c) {
    const auto again = etcd::parse_high_water(etcd::format_high_water(*c), "/zaptid/highwater/3");
    FUZZ_CHECK(again && *again == *c);
  } else {
    fuzz::check_message(c.message());
  }
  return 0;
}
