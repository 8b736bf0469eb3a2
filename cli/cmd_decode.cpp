#include "cmd_decode.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>

#include "core/parse.h"
#include "option_checks.h"
#include "output.h"
#include "std_fds.h"

namespace zaptid::cli {
void setup_decode(CLI::App& app, Action& action) {
  auto opt = std::make_shared<DecodeOptions>();
  auto* sub = app.add_subcommand("decode", "Split IDs into time, sequence and machine id");
  sub->add_option("ids", opt->ids, "IDs, decimal or 0x hex; none or '-' reads one per line from stdin");
  sub->add_option("--format", opt->format,
                  "Output format: text, json (one object per line, id as a string) or tsv "
                  "(id, time, timestamp, sequence, machine-id)")
      ->transform(names_only({{"text", static_cast<int>(DecodeFormat::kText)},
                              {"json", static_cast<int>(DecodeFormat::kJson)},
                              {"tsv", static_cast<int>(DecodeFormat::kTsv)}}))
      ->type_name("text|json|tsv")
      ->default_str("text");
  add_layout_options(*sub, opt->layout);
  sub->footer("Example: zaptid decode 647842057989128197\n         zaptid gen --count 5 | zaptid decode --format json");
  sub->callback([opt, &action] { action = [opt] { return run_decode(*opt); }; });
}

void append_decoded(std::string& out, DecodeFormat format, const Layout& layout, uint64_t id) {
  const Parts p = layout.decompose(id);
  const std::string ts = format_timestamp_ms(layout.tick_start_ms(p.time));
  auto it = std::back_inserter(out);
  switch (format) {
    case DecodeFormat::kJson:
      fmt::format_to(it, R"({{"id":"{}","msb":{},"time":{},"timestamp":"{}","sequence":{},"machine-id":{}}})", id,
                     p.msb, p.time, ts, p.sequence, p.machine);
      break;
    case DecodeFormat::kTsv:
      fmt::format_to(it, "{}\t{}\t{}\t{}\t{}", id, p.time, ts, p.sequence, p.machine);
      break;
    case DecodeFormat::kText:
      fmt::format_to(it, "{} time={} ({}) sequence={} machine-id={}", id, p.time, ts, p.sequence, p.machine);
      // Sonyflake derives a 16-bit machine id from the last two octets of a private IPv4.
      if (layout.bits_machine == 16) fmt::format_to(it, " ({}.{})", p.machine >> 8, p.machine & 0xFF);
      if (p.msb != 0) out += " msb=1 (not an ID zaptid issues)";
      break;
  }
  out.push_back('\n');
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Lines of standard input, read with read(2) so that a read error is an error (a stream would
// report it as a clean end). A line longer than kMaxLine keeps only its first kMaxLine bytes
// (enough to quote it): a line without end never grows memory.
class StdinLines {
 public:
  static constexpr size_t kMaxLine = 4096;

  /// The next line without its newline; false at the end. `too_long` tells that bytes were cut.
  /// Throws Fatal(kExitFailure) when standard input cannot be read.
  bool next(std::string& line, bool& too_long) {
    line.clear();
    too_long = false;
    for (;;) {
      if (pos_ == end_) {
        if (eof_) return !line.empty() || too_long;
        fill();
        continue;
      }
      const char* start = buf_ + pos_;
      const auto* nl = static_cast<const char*>(std::memchr(start, '\n', end_ - pos_));
      const size_t n = nl != nullptr ? static_cast<size_t>(nl - start) : end_ - pos_;
      const size_t room = kMaxLine - line.size();
      line.append(start, std::min(n, room));
      if (n > room) too_long = true;
      pos_ += n;
      if (nl != nullptr) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  void fill() {
    pos_ = end_ = 0;
    for (;;) {
      const ssize_t n = ::read(STDIN_FILENO, buf_, sizeof buf_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Fatal(kExitFailure, fmt::format("cannot read standard input: {}", std::strerror(errno)));
      if (n == 0) eof_ = true;
      end_ = static_cast<size_t>(n);
      return;
    }
  }

  char buf_[64 * 1024];
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
};

}  // namespace

int run_decode(const DecodeOptions& opt) {
  const Layout layout = resolve_layout(opt.layout);
  Output out;
  int status = kExitOk;
  // Bad input is reported where it stands and the rest still decodes; stdout and stderr stay
  // in order because stdout is flushed before each message.
  const auto decode_one = [&](std::string_view text, const std::string& where) {
    auto id = parse_id(text);
    if (!id) {
      out.flush();
      std::cerr << "zaptid: " << where << id.message() << std::endl;
      status = kExitBadInput;
      return;
    }
    append_decoded(out.buffer(), opt.format, layout, *id);
    out.maybe_flush();
  };
  const bool from_stdin = opt.ids.empty() || (opt.ids.size() == 1 && opt.ids[0] == "-");
  if (from_stdin) {
    // A closed standard input is not an empty one: it is now /dev/null (std_fds.cpp), which
    // would read as a clean end and hide the mistake.
    if (stdin_was_closed()) throw Fatal(kExitFailure, "cannot read standard input: it is closed");
    const bool interactive = ::isatty(STDIN_FILENO) != 0;  // answer each typed line at once
    auto lines = std::make_unique<StdinLines>();
    std::string line;
    bool too_long = false;
    for (uint64_t n = 1; !out.closed() && lines->next(line, too_long); ++n) {
      if (too_long) {
        out.flush();
        std::cerr << "zaptid: line " << n << ": " << quote_input(std::string_view(line).substr(0, kQuoteLimit))
                  << "... is not an ID: longer than "
                  << StdinLines::kMaxLine << " bytes" << std::endl;
        status = kExitBadInput;
        continue;
      }
      const auto text = trim(line);
      if (text.empty()) continue;
      decode_one(text, fmt::format("line {}: ", n));
      if (interactive) out.flush();
    }
  } else {
    for (const auto& text : opt.ids) {
      if (out.closed()) break;
      decode_one(trim(text), "");
    }
  }
  out.flush();
  return status;
}

}  // namespace zaptid::cli
