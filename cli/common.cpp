#include "common.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <vector>

#include "core/parse.h"

namespace zaptid::cli {

int exit_status_for(const Error& e) {
  return e.kind == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
}

std::chrono::milliseconds duration_ms(const std::string& text, std::string_view option) {
  auto d = take(parse_duration(text, option), kExitUsage);
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

void add_layout_options(CLI::App& app, LayoutOptions& opt) {
  const std::string group = "Layout";
  app.add_option("--layout", opt.layout, "ID layout preset: sonyflake, sonyflake-v2 or snowflake")
      ->envname("ZAPTID_LAYOUT")
      ->capture_default_str()
      ->group(group);
  app.add_option("--epoch", opt.epoch, "Override the epoch: RFC 3339 or Unix milliseconds")
      ->check(not_empty())
      ->envname("ZAPTID_EPOCH")
      ->group(group);
  app.add_option("--time-unit", opt.time_unit, "Override the time unit, at least 1ms (e.g. 10ms)")
      ->check(not_empty())
      ->envname("ZAPTID_TIME_UNIT")
      ->group(group);
  app.add_option("--bits-sequence", opt.bits_sequence, "Override the sequence bits (1-31)")
      ->transform(decimal_only())
      ->envname("ZAPTID_BITS_SEQUENCE")
      ->group(group);
  app.add_option("--bits-machine", opt.bits_machine, "Override the machine id bits (0-31)")
      ->transform(decimal_only())
      ->envname("ZAPTID_BITS_MACHINE")
      ->group(group);
}

Layout resolve_layout(const LayoutOptions& opt) {
  LayoutOverrides o;
  if (!opt.epoch.empty()) o.epoch_ms = take(parse_timestamp_ms(opt.epoch, "--epoch"), kExitUsage);
  if (!opt.time_unit.empty()) {
    const auto unit = take(parse_duration(opt.time_unit, "--time-unit"), kExitUsage);
    if (unit.count() % 1000 != 0) {
      throw Fatal(kExitUsage, fmt::format("--time-unit {} must be a whole number of milliseconds", quote_input(opt.time_unit)));
    }
    o.unit_ms = unit.count() / 1000;
  }
  o.bits_sequence = opt.bits_sequence;
  o.bits_machine = opt.bits_machine;
  // Only an --epoch the user chose can be "in the future" (a usage error); a preset's epoch ahead of
  // the clock means the clock is wrong, which the generator reports as such (exit 1), and decode
  // and compose never need the clock at all.
  std::optional<int64_t> now_ms;
  if (o.epoch_ms) now_ms = SystemClock().now().count() / 1'000'000;
  return take(make_layout(opt.layout, o, now_ms), kExitUsage);
}

void add_identity_options(CLI::App& app, IdentityOptions& opt) {
  const std::string group = "Identity";
  app.add_option("--machine-id", opt.machine_id,
                 "Machine id (env ZAPTID_MACHINE_ID); default: low bits of the host's private IPv4")
      ->group(group);
  app.add_option("--state-dir", opt.state_dir,
                 "Folder for this user's record of the IDs issued; default $XDG_STATE_HOME/zaptid, else "
                 "~/.local/state/zaptid, else /var/lib/zaptid. (The host's record, shared by every user, is in "
                 "/var/tmp/zaptid, or ZAPTID_HOST_DIR)")
      ->check(not_empty())
      ->envname("ZAPTID_STATE_DIR")
      ->group(group);
  app.add_option("--max-clock-wait", opt.max_clock_wait,
                 "How long to wait for a clock that stepped back before failing")
      ->envname("ZAPTID_MAX_CLOCK_WAIT")
      ->capture_default_str()
      ->group(group);
  app.add_option("--lock-timeout", opt.lock_timeout,
                 "How long to wait while another process on this host (any user) uses the same machine id")
      ->envname("ZAPTID_LOCK_TIMEOUT")
      ->capture_default_str()
      ->group(group);
}

std::filesystem::path host_dir() {
  if (const char* e = std::getenv("ZAPTID_HOST_DIR"); e != nullptr && e[0] != '\0') return e;
  return HostClaim::default_host_dir();
}

LocalIssuer open_local_issuer(const Layout& layout, const IdentityOptions& opt, Clock& clock,
                              std::chrono::milliseconds reserve_ahead, const ReserverWrapper& wrap) {
  const auto max_wait = duration_ms(opt.max_clock_wait, "--max-clock-wait");
  const auto lock_timeout = duration_ms(opt.lock_timeout, "--lock-timeout");
  std::optional<std::string> env;
  if (const char* e = std::getenv("ZAPTID_MACHINE_ID"); e != nullptr && e[0] != '\0') env = e;
  // Only derive from addresses when nothing explicit was given: getifaddrs is not free.
  const auto addresses = (opt.machine_id || env) ? std::vector<HostAddress>{} : host_ipv4_addresses();
  LocalIssuer issuer;
  issuer.machine = take(choose_machine_id(opt.machine_id, env, addresses, layout), kExitUsage);

  HostClaimOptions c;
  c.layout = layout;
  c.machine_id = issuer.machine.id;
  c.state_dir = opt.state_dir.empty() ? HostClaim::default_state_dir() : std::filesystem::path(opt.state_dir);
  c.host_dir = host_dir();
  c.timeout = lock_timeout;
  c.clock = &clock;
  c.max_clock_wait = max_wait;
  issuer.claim = take(HostClaim::acquire(c), kExitFailure);

  GeneratorOptions g;
  g.layout = layout;
  g.machine_id = issuer.machine.id;
  g.clock = &clock;
  g.max_clock_wait = max_wait;
  g.start_after = issuer.claim->start_after();
  if (wrap) issuer.wrapped = wrap(*issuer.claim);
  g.reserver = issuer.wrapped ? issuer.wrapped.get() : issuer.claim.get();
  g.reserve_ahead = reserve_ahead;
  issuer.generator = take(Generator::create(std::move(g)), kExitUsage);
  return issuer;
}

void LocalIssuer::release() {
  if (!claim) return;
  auto st = claim->release(generator ? generator->last_reserved() : std::nullopt);
  if (!st) throw Fatal(kExitFailure, st.message());
}

// Maps each name to its enum value for CLI11. Unlike CLI::CheckedTransformer it accepts only the
// names (not the numbers behind them), and its help and errors show only the names.
CLI::Validator names_only(const std::map<std::string, int>& names) {
  std::vector<std::string> keys;
  for (const auto& [name, value] : names) keys.push_back(name);
  const std::string list = fmt::format("{}", fmt::join(keys, ", "));
  return CLI::Validator(
      [names, list](std::string& text) {
        const auto it = names.find(text);
        if (it == names.end()) return fmt::format("{} is not one of {}", quote_input(text), list);
        text = std::to_string(it->second);
        return std::string();
      },
      fmt::format("{{{}}}", fmt::join(keys, ",")));
}


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

const CLI::Validator& not_empty() {
  static const CLI::Validator check(
      [](std::string& text) {
        return text.empty() ? std::string("an empty value is not allowed (leave the option out for its default)")
                            : std::string();
      },
      "", "not empty");
  return check;
}

const CLI::Validator& decimal_only() {
  static const CLI::Validator check(
      [](std::string& text) {
        auto v = parse_unsigned(text, UINT64_MAX, "value");
        if (!v) return v.message();
        // CLI11 converts with base 0: "010" would be eight. Hand it the number in plain decimal.
        text = std::to_string(*v);
        return std::string();
      },
      "", "decimal");
  return check;
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
