// Standard output: how IDs are printed, and buffered writes that fail the command on a write
// error.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zaptid::cli {

/// `text` escaped for the inside of a JSON string (quotes, backslashes, control characters).
std::string json_escape(std::string_view text);

/// How IDs are printed: decimal, 0x-prefixed 16-digit hex, or one JSON object per line.
enum class IdFormat { kDec, kHex, kJson };
/// CLI11 transform mapping "dec"/"hex"/"json".
void add_id_format_option(CLI::App& app, IdFormat& format);
/// Appends one formatted ID and a newline.
void append_id(std::string& out, IdFormat format, uint64_t id);

/// Buffered writes to stdout. A closed pipe (EPIPE) is not an error: closed() turns true and
/// further output is dropped, so `zaptid gen | head -1` ends quietly. Any other write error
/// throws Fatal(kExitFailure).
class Output {
 public:
  Output() { buf_.reserve(kFlushAt + 4096); }
  /// The buffer to append to; call maybe_flush() after appending.
  std::string& buffer() { return buf_; }
  void maybe_flush() {
    if (buf_.size() >= kFlushAt) flush();
  }
  void flush();
  bool closed() const { return closed_; }

 private:
  static constexpr size_t kFlushAt = 64 * 1024;
  std::string buf_;
  bool closed_ = false;
};

}  // namespace zaptid::cli
