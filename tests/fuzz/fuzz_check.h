// What every fuzz target shares: a check that aborts (libFuzzer then saves the input), and the
// rule every error message must keep whatever the input: one line, bad input quoted short.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

namespace zaptid::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// An error message for any input: one line, no control bytes, and short, since it quotes at
/// most kQuoteLimit bytes of the input (times 4 once escaped) besides its own words.
inline void check_message(std::string_view message) {
  FUZZ_CHECK(!message.empty());
  FUZZ_CHECK(message.size() <= 512);
  for (char c : message) FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
}

}  // namespace zaptid::fuzz
