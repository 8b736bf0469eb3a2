#include "core/host_claim.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>

#include "core/parse.h"

namespace zaptid {
namespace {

// A record of zaptid 0.1.0 is at most this long ("zaptid-state 1\ncursor <20 digits>\ncrc32 <8>\n").
constexpr size_t kLegacyMaxSize = 64;

// The largest ID the records hold, and which record says so.
struct Floor {
  uint64_t id = 0;
  std::filesystem::path path;
  std::string layout_key;
};

void raise(std::optional<Floor>& floor, uint64_t id, const std::filesystem::path& path, std::string layout_key) {
  if (!floor || id > floor->id) floor = Floor{id, path, std::move(layout_key)};
}

// "snowflake" for a preset's key, else the key itself.
std::string layout_name(const std::string& key) {
  for (const auto& name : layout_preset_names()) {
    auto l = make_layout(name, {}, std::nullopt);
    if (l && l->key() == key) return name;
  }
  return key;
}

// Records of zaptid 0.1.0, `<layout-key>-machine-<id>.state` (a cursor of that layout), raise the
// floor by the ID their cursor stands for. A damaged one is refused as it was then.
Status read_legacy_records(const std::filesystem::path& dir, uint64_t machine_id, std::optional<Floor>& floor) {
  const std::string suffix = fmt::format("-machine-{}.state", machine_id);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    const std::string key = name.substr(0, name.size() - suffix.size());
    const auto layout = layout_from_key(key);
    if (!layout || machine_id > layout->max_machine()) continue;
    const auto damaged = [&](std::string_view why) {
      return Error{ErrorKind::kCorrupt,
                   fmt::format("state file {} is damaged ({}); refusing to guess which IDs were issued. Remove it only "
                               "when no zaptid with this machine id has run for longer than the clock wait limit",
                               entry.path().string(), why)};
    };
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return damaged(std::strerror(errno));
    struct stat st {};
    std::array<char, kLegacyMaxSize + 1> buf{};
    ssize_t n = -1;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) n = ::pread(fd, buf.data(), buf.size(), 0);
    ::close(fd);
    if (n < 0) return damaged("not a readable regular file");
    const auto cursor = parse_legacy_record(std::string_view(buf.data(), static_cast<size_t>(n)));
    const Cursor last = (layout->max_time() << layout->bits_sequence) | layout->max_sequence();
    if (!cursor || *cursor > last) return damaged("not a record");
    const uint64_t id = layout->compose(*cursor >> layout->bits_sequence, *cursor & layout->max_sequence(), machine_id);
    raise(floor, id, entry.path(), key);
  }
  return Ok{};
}

}  // namespace

std::optional<Cursor> last_cursor_at_most(const Layout& layout, uint64_t machine_id, uint64_t id) {
  const auto id_at = [&](Cursor c) {
    return layout.compose(c >> layout.bits_sequence, c & layout.max_sequence(), machine_id);
  };
  // For one machine id, IDs grow with the cursor in every layout: search for the boundary.
  Cursor lo = 0;
  Cursor hi = (layout.max_time() << layout.bits_sequence) | layout.max_sequence();
  if (id_at(lo) > id) return std::nullopt;
  while (lo < hi) {  // invariant: id_at(lo) <= id
    const Cursor mid = lo + (hi - lo + 1) / 2;
    if (id_at(mid) <= id) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

std::filesystem::path HostClaim::default_state_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && xdg[0] == '/') {
    return std::filesystem::path(xdg) / "zaptid";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] == '/') {
    return std::filesystem::path(home) / ".local" / "state" / "zaptid";
  }
  return "/var/lib/zaptid";
}

std::filesystem::path HostClaim::default_host_dir() { return "/var/tmp/zaptid"; }

Result<std::unique_ptr<HostClaim>> HostClaim::acquire(const HostClaimOptions& o) {
  if (o.clock == nullptr) return invalid("the host claim needs a clock");
  const Layout& l = o.layout;
  if (o.machine_id > l.max_machine()) {
    return invalid(fmt::format("machine id {} does not fit the layout's {} machine bits (0 to {})", o.machine_id,
                               l.bits_machine, l.max_machine()));
  }
  std::unique_ptr<HostClaim> self(new HostClaim());
  self->layout_ = l;
  self->machine_id_ = o.machine_id;

  auto claim = MachineClaim::acquire(o.machine_id, o.timeout);
  if (!claim) return claim.error();
  self->claim_ = std::move(*claim);

  const auto host_hint = [&](Error e) {
    if (e.kind == ErrorKind::kIo) {
      e.message += fmt::format("; every zaptid on this host that uses machine id {} must be able to read and update "
                               "the host record",
                               o.machine_id);
    }
    return e;
  };
  // The host's folder is everyone's, like /var/tmp itself; each record in it is writable by all.
  auto host = RecordFile::open({o.host_dir, fmt::format("machine-{}", o.machine_id), 01777, true, 0666, "host folder"},
                               o.machine_id);
  if (!host) return host_hint(host.error());
  self->host_ = std::move(*host);
  auto state = RecordFile::open(
      {o.state_dir, fmt::format("machine-{}.state", o.machine_id), 0777, false, 0644, "state folder"}, o.machine_id);
  if (!state) return state.error();
  self->state_ = std::move(*state);

  std::optional<Floor> floor;
  for (const RecordFile* r : {self->host_.get(), self->state_.get()}) {
    if (r->value()) raise(floor, r->value()->id, r->path(), r->value()->layout_key);
  }
  if (auto st = read_legacy_records(o.state_dir, o.machine_id, floor); !st) return st.error();

  const int64_t now_ns = o.clock->now().count();
  const int64_t epoch_ns = l.epoch_ms * 1'000'000;
  // Before the epoch the generator refuses with its own message; nothing to compare here.
  const bool after_epoch = now_ns >= epoch_ns;
  const uint64_t now_tick =
      after_epoch ? static_cast<uint64_t>(now_ns - epoch_ns) / (static_cast<uint64_t>(l.unit_ms) * 1'000'000) : 0;
  if (!floor) {
    // Nothing recorded: whoever held the claim before issued nothing after the clock's current
    // tick (no ID is ever ahead of the clock), so the next tick is free.
    if (after_epoch && now_tick <= l.max_time()) self->start_after_ = (now_tick << l.bits_sequence) | l.max_sequence();
    return self;
  }
  self->floor_ = floor->id;
  const std::string says = fmt::format("the record {} says IDs up to {} may have been issued with machine id {} "
                                       "(layout {})",
                                       floor->path.string(), floor->id, o.machine_id, layout_name(floor->layout_key));
  const Cursor last = (l.max_time() << l.bits_sequence) | l.max_sequence();
  const auto start = last_cursor_at_most(l, o.machine_id, floor->id);
  if (start && *start >= last) {
    return Error{ErrorKind::kExhausted,
                 fmt::format("{}; no ID of this layout with machine id {} is larger. Use another machine id", says,
                             o.machine_id)};
  }
  self->start_after_ = start;
  if (start && after_epoch) {
    const uint64_t start_tick = *start >> l.bits_sequence;
    const auto ahead_ms = start_tick > now_tick ? static_cast<int64_t>(start_tick - now_tick) * l.unit_ms : 0;
    if (ahead_ms > o.max_clock_wait.count()) {
      return unavailable(fmt::format(
          "{}; the first larger ID of this layout has the time {}, {} ahead of the clock and beyond the clock wait "
          "limit of {}. Try again after that time, correct the clock if it is behind, or use another machine id",
          says, format_timestamp_ms(l.tick_start_ms(start_tick)), format_duration_ms(ahead_ms),
          format_duration_ms(o.max_clock_wait.count())));
    }
  }
  return self;
}

Status HostClaim::write(Cursor c, RecordFile::Sync sync) {
  const Layout& l = layout_;
  uint64_t id = l.compose(c >> l.bits_sequence, c & l.max_sequence(), machine_id_);
  if (floor_ && *floor_ > id) id = *floor_;  // never below what the records said at the start
  const RecordValue v{machine_id_, id, l.key()};
  if (auto st = host_->write(v, sync); !st) return st;
  return state_->write(v, sync);
}

Status HostClaim::reserve_through(Cursor high) {
  if (!claim_) return unavailable("the host claim was released");
  return write(high, RecordFile::Sync::kDurable);
}

Status HostClaim::release(std::optional<Cursor> last_issued) {
  if (!claim_) return Ok{};
  Status st = Ok{};
  if (last_issued) st = write(*last_issued, RecordFile::Sync::kLazy);
  claim_.reset();
  return st;
}

}  // namespace zaptid
