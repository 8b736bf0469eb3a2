#include "output.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "fatal.h"
#include "option_checks.h"

namespace zaptid::cli {

std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

void add_id_format_option(CLI::App& app, IdFormat& format) {
  app.add_option("--format", format, "Output format: dec, hex (0x, 16 digits) or json")
      ->transform(names_only({{"dec", static_cast<int>(IdFormat::kDec)},
                              {"hex", static_cast<int>(IdFormat::kHex)},
                              {"json", static_cast<int>(IdFormat::kJson)}}))
      ->type_name("dec|hex|json")
      ->default_str("dec");
}

void append_id(std::string& out, IdFormat format, uint64_t id) {
  switch (format) {
    case IdFormat::kDec: {
      const fmt::format_int s(id);
      out.append(s.data(), s.size());
      out.push_back('\n');
      break;
    }
    case IdFormat::kHex:
      fmt::format_to(std::back_inserter(out), "0x{:016x}\n", id);
      break;
    case IdFormat::kJson:
      fmt::format_to(std::back_inserter(out), "{{\"id\":\"{}\"}}\n", id);
      break;
  }
}

void Output::flush() {
  if (closed_) {
    buf_.clear();
    return;
  }
  std::string_view rest = buf_;
  while (!rest.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) {
      closed_ = true;
      break;
    }
    if (n <= 0) {
      buf_.clear();
      throw Fatal(kExitFailure, fmt::format("cannot write to standard output: {}", std::strerror(errno)));
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  buf_.clear();
}

}  // namespace zaptid::cli
