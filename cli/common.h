// What several subcommands share: the error type, layout options, machine identity, output.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/clock.h"
#include "core/generator.h"
#include "core/layout.h"
#include "core/machine_id.h"
#include "core/result.h"
#include "core/host_claim.h"
#include "exit_status.h"

namespace zaptid::cli {

/// Thrown anywhere in the CLI layer; cli::main() prints "zaptid: <what>" and exits with `status`.
class Fatal : public std::runtime_error {
 public:
  Fatal(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

/// The exit status for a library error of this kind.
int exit_status_for(const Error& e);
/// Returns the value or throws Fatal with the error's message.
template <typename T>
T take(Result<T> r, int status) {
  if (!r) throw Fatal(status, r.message());
  return std::move(r).value();
}

/// What a subcommand's setup leaves behind: the action to run once parsing succeeded.
using Action = std::function<int()>;

/// --layout, --epoch, --time-unit, --bits-sequence, --bits-machine.
struct LayoutOptions {
  std::string layout = "sonyflake";
  std::string epoch;
  std::string time_unit;
  std::optional<int> bits_sequence;
  std::optional<int> bits_machine;
};
void add_layout_options(CLI::App& app, LayoutOptions& opt);
/// The layout, or Fatal(kExitUsage). Refuses an epoch in the future.
Layout resolve_layout(const LayoutOptions& opt);

/// --machine-id, --state-dir, --max-clock-wait, --lock-timeout: who issues IDs on this host.
struct IdentityOptions {
  std::optional<std::string> machine_id;
  std::string state_dir;
  std::string max_clock_wait = "1s";
  std::string lock_timeout = "5s";
};
void add_identity_options(CLI::App& app, IdentityOptions& opt);

/// A generator that holds this host's claim on its machine id.
struct LocalIssuer {
  MachineIdChoice machine;
  std::unique_ptr<HostClaim> claim;
  std::unique_ptr<Generator> generator;
  std::unique_ptr<Reserver> wrapped;  ///< the claim as the generator's reserver, if wrapped
  /// Records exactly what was issued and gives up the claim; for a clean exit.
  void release();
};
/// The folder every zaptid on this host shares: $ZAPTID_HOST_DIR, else HostClaim's default.
std::filesystem::path host_dir();
/// Chooses the machine id, takes the host claim and starts a generator above the records, which
/// writes them through `wrap` if given. Throws Fatal (kExitUsage for bad options, kExitFailure
/// otherwise).
LocalIssuer open_local_issuer(const Layout& layout, const IdentityOptions& opt, Clock& clock,
                              std::chrono::milliseconds reserve_ahead, const ReserverWrapper& wrap = {});

/// A millisecond duration option value, or Fatal(kExitUsage) naming the option.
std::chrono::milliseconds duration_ms(const std::string& text, std::string_view option);

/// A CLI11 transform that maps each name to its enum value and accepts only the names
/// (not CLI::CheckedTransformer's numbers); help and errors show only the names.
CLI::Validator names_only(const std::map<std::string, int>& names);

/// A CLI11 transform for integer options: only plain decimal digits, handed on as a plain decimal
/// number (CLI11 itself turns "-1" into 2^64-1, "0x10" into 16 and "010" into 8). Use with
/// transform(), not check(): a check cannot change the text.
const CLI::Validator& decimal_only();

/// A CLI11 check that refuses an empty value: `--epoch ''` is a mistake, not the default.
const CLI::Validator& not_empty();

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
