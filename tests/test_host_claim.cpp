// The host-wide claim on a machine id and its records, in private temporary folders. The
// claims are real (abstract sockets of this host), on machine ids no test elsewhere uses.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "core/claim.h"
#include "core/host_claim.h"
#include "core/parse.h"
#include "core/record.h"

using namespace std::chrono_literals;
using zaptid::Cursor;
using zaptid::ErrorKind;
using zaptid::FakeClock;
using zaptid::HostClaim;
using zaptid::HostClaimOptions;
using zaptid::Layout;
using zaptid::MachineClaim;
using zaptid::RecordValue;
namespace fs = std::filesystem;

namespace {

// A record of zaptid 0.1.0 of cursor 1000 (checksum from Python's zlib.crc32).
const std::string kLegacy1000 = "zaptid-state 1\ncursor 1000\ncrc32 09a9f892\n";
const std::string kSonyKey = "e1409529600000-u10-t39-s8-m16-sm";
// 2026-11-26T06:12:37.370Z, sonyflake tick 38614395737.
constexpr int64_t kNowMs = 1795673557370;
constexpr uint64_t kNowTick = 38614395737u;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zaptid-unit-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

Layout layout(const char* preset, zaptid::LayoutOverrides o = {}) {
  auto l = zaptid::make_layout(preset, o, std::nullopt);
  REQUIRE(l.ok());
  return *l;
}

uint64_t id_at(const Layout& l, uint64_t machine, Cursor c) {
  return l.compose(c >> l.bits_sequence, c & l.max_sequence(), machine);
}

struct Setup {
  TempDir tmp;
  FakeClock clock{std::chrono::milliseconds(kNowMs)};
  HostClaimOptions options(const Layout& l, uint64_t machine) {
    HostClaimOptions o;
    o.layout = l;
    o.machine_id = machine;
    o.state_dir = tmp.path / "state";
    o.host_dir = tmp.path / "host";
    o.timeout = 20ms;
    o.clock = &clock;
    o.max_clock_wait = 1000ms;
    return o;
  }
  std::unique_ptr<HostClaim> acquire(const HostClaimOptions& o) {
    auto c = HostClaim::acquire(o);
    REQUIRE_MESSAGE(c.ok(), c.message());
    return std::move(c).value();
  }
  fs::path host_record(uint64_t machine) { return tmp.path / "host" / ("machine-" + std::to_string(machine)); }
  fs::path state_record(uint64_t machine) {
    return tmp.path / "state" / ("machine-" + std::to_string(machine) + ".state");
  }
};

std::string damaged(const fs::path& p, const std::string& why) {
  return "record " + p.string() + " is damaged (" + why +
         "); refusing to guess which IDs were issued. Remove it only when no zaptid with this machine id has run "
         "for longer than the clock wait limit";
}

}  // namespace

TEST_CASE("record::format and parse") {
  const RecordValue v{5, 647842057989128197u, kSonyKey};
  const std::string text = zaptid::format_record(v);
  CHECK(text.size() == zaptid::kRecordSize);
  CHECK(text.rfind("zaptid-record 2\nmachine-id 5\nid 647842057989128197\nlayout " + kSonyKey + "\ncrc32 ", 0) == 0);
  CHECK(text.back() == '\n');
  auto back = zaptid::parse_record(text);
  REQUIRE(back.ok());
  CHECK(back->machine_id == 5);
  CHECK(back->id == 647842057989128197u);
  CHECK(back->layout_key == kSonyKey);

  const auto why = [](std::string t) {
    auto r = zaptid::parse_record(t);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == ErrorKind::kCorrupt);
    return r.message();
  };
  std::string flipped = text;
  flipped[text.find("6478")] = '7';
  CHECK(why(flipped) == "checksum mismatch");
  CHECK(why(text.substr(0, 100)) == "100 bytes, not 256");
  CHECK(why(text + "x") == "257 bytes, not 256");
  CHECK(why(std::string(256, ' ')) == "no checksum");
  std::string trailing = text;
  trailing[250] = 'x';
  CHECK(why(trailing) == "trailing bytes");
  // Checksums that match, over bodies that are not a record.
  for (const std::string body : {"zaptid-record 3\nmachine-id 5\nid 1\nlayout x\n", "zaptid-record 2\nid 1\n",
                                 "zaptid-record 2\nmachine-id 5\nid 0x1\nlayout x\n",
                                 "zaptid-record 2\nmachine-id 5\nid 1\nlayout X!\n",
                                 "zaptid-record 2\nmachine-id 5\nid 1\nlayout \n"}) {
    CAPTURE(body);
    std::string t = zaptid::format_record({5, 1, "x"});
    // Rebuild with a valid checksum over the bad body.
    const auto crc_at = t.find("crc32 ");
    std::string tail = t.substr(crc_at);
    uint32_t crc = 0xFFFFFFFFu;
    for (char c : body) {
      crc ^= static_cast<unsigned char>(c);
      for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    std::string made = body + "crc32 " + fmt::format("{:08x}", ~crc) + "\n";
    made.append(zaptid::kRecordSize - made.size() - 1, ' ').push_back('\n');
    CHECK(why(made) == "unknown format");
  }
}

TEST_CASE("record::legacy records and layout keys") {
  CHECK(zaptid::parse_legacy_record(kLegacy1000) == 1000u);
  CHECK_FALSE(zaptid::parse_legacy_record("zaptid-state 1\ncursor 1001\ncrc32 09a9f892\n"));
  CHECK_FALSE(zaptid::parse_legacy_record(kLegacy1000.substr(0, 20)));
  CHECK_FALSE(zaptid::parse_legacy_record(""));

  for (const char* name : {"sonyflake", "sonyflake-v2", "snowflake"}) {
    const Layout l = layout(name);
    auto back = zaptid::layout_from_key(l.key());
    REQUIRE(back.has_value());
    CHECK(back->key() == l.key());
    CHECK(back->machine_above_sequence == l.machine_above_sequence);
  }
  for (const char* bad : {"", "e1-u1", "e1409529600000-u10-t40-s8-m16-sm", "e1409529600000-u10-t39-s8-m16-xx",
                          "e1409529600000-u0-t39-s8-m16-sm", "x1409529600000-u10-t39-s8-m16-sm"}) {
    CAPTURE(bad);
    CHECK_FALSE(zaptid::layout_from_key(bad).has_value());
  }
}

TEST_CASE("host_claim::last_cursor_at_most") {
  const Layout sony = layout("sonyflake");
  const Layout snow = layout("snowflake");
  const Layout odd = layout("sonyflake", {.epoch_ms = {}, .unit_ms = 7, .bits_sequence = 9, .bits_machine = 15});
  // Within one layout: exactly the cursor of the ID.
  CHECK(zaptid::last_cursor_at_most(sony, 5, id_at(sony, 5, 123456)) == Cursor{123456});
  CHECK(zaptid::last_cursor_at_most(sony, 5, id_at(sony, 5, 123456) + 1) == Cursor{123456});
  CHECK(zaptid::last_cursor_at_most(sony, 5, id_at(sony, 5, 123456) - 1) == Cursor{123455});
  CHECK_FALSE(zaptid::last_cursor_at_most(sony, 5, 4).has_value());
  CHECK(zaptid::last_cursor_at_most(sony, 5, UINT64_MAX) == ((sony.max_time() << 8) | 255));
  // Any ID, any layout: the result's ID is at most the ID and the next cursor's is above it.
  std::mt19937_64 rng(42);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t id = rng() >> (rng() % 64);
    for (const Layout* l : {&sony, &snow, &odd}) {
      const uint64_t machine = rng() & l->max_machine();
      const auto c = zaptid::last_cursor_at_most(*l, machine, id);
      if (!c) {
        CHECK(id_at(*l, machine, 0) > id);
        continue;
      }
      CHECK(id_at(*l, machine, *c) <= id);
      if (*c < ((l->max_time() << l->bits_sequence) | l->max_sequence())) CHECK(id_at(*l, machine, *c + 1) > id);
    }
  }
}

TEST_CASE("claim::one holder per machine id on the host") {
  auto first = MachineClaim::acquire(64901, 20ms);
  REQUIRE(first.ok());
  auto second = MachineClaim::acquire(64901, 20ms);
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().kind == ErrorKind::kUnavailable);
  const std::string prefix = "machine id 64901 is in use on this host by pid " + std::to_string(::getpid()) + " (user ";
  CHECK(second.message().rfind(prefix, 0) == 0);
  CHECK(second.message().find("zaptid_unit_tests") != std::string::npos);
  CHECK(second.message().size() - second.message().rfind("; gave up after waiting 20ms") == 28);
  // Asking who holds it leaves the claim held, and as often as one likes.
  for (int i = 0; i < 5; ++i) CHECK(zaptid::describe_claim_holder(64901).rfind("pid ", 0) == 0);
  CHECK(MachineClaim::acquire(64902, 20ms).ok());  // another machine id is free
  first->reset();
  CHECK(MachineClaim::acquire(64901, 20ms).ok());  // freed the moment its holder let go
}

TEST_CASE("host_claim::records round trip") {
  Setup s;
  const Layout sony = layout("sonyflake");
  auto claim = s.acquire(s.options(sony, 64910));
  // Nothing recorded: the first ID comes at the clock's next tick.
  CHECK(claim->start_after() == ((kNowTick << 8) | 255));
  CHECK_FALSE(fs::exists(s.host_record(64910)));
  CHECK((fs::status(s.tmp.path / "host").permissions() & fs::perms::all) == fs::perms::all);
  CHECK((fs::status(s.tmp.path / "host").permissions() & fs::perms::sticky_bit) == fs::perms::sticky_bit);

  const mode_t old_umask = ::umask(077);  // the shared record stays writable for every user anyway
  REQUIRE(claim->reserve_through((kNowTick + 50) << 8).ok());
  ::umask(old_umask);
  const std::string reserved = zaptid::format_record({64910, id_at(sony, 64910, (kNowTick + 50) << 8), kSonyKey});
  CHECK(read(s.host_record(64910)) == reserved);
  CHECK(read(s.state_record(64910)) == reserved);
  CHECK((fs::status(s.host_record(64910)).permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::group_write |
         fs::perms::others_read | fs::perms::others_write));

  SUBCASE("release records exactly what was issued") {
    const Cursor last = ((kNowTick + 1) << 8) | 3;
    REQUIRE(claim->release(last).ok());
    CHECK(read(s.host_record(64910)) == zaptid::format_record({64910, id_at(sony, 64910, last), kSonyKey}));
    CHECK(claim->release(last + 9).ok());  // a second release does nothing
    auto st = claim->reserve_through(last + 20);
    REQUIRE_FALSE(st.ok());
    CHECK(st.message() == "the host claim was released");
    CHECK(s.acquire(s.options(sony, 64910))->start_after() == last);
  }
  SUBCASE("release writes both records (unsynced), again where deleted while it ran") {
    fs::remove(s.host_record(64910));
    const Cursor last = ((kNowTick + 2) << 8) | 7;
    REQUIRE(claim->release(last).ok());
    const std::string released = zaptid::format_record({64910, id_at(sony, 64910, last), kSonyKey});
    CHECK(read(s.host_record(64910)) == released);
    CHECK(read(s.state_record(64910)) == released);
  }
  SUBCASE("a holder that dies keeps its reserved window") {
    claim.reset();
    CHECK(s.acquire(s.options(sony, 64910))->start_after() == (kNowTick + 50) << 8);
  }
  SUBCASE("the host record counts for a process with another state folder") {
    claim.reset();
    auto o = s.options(sony, 64910);
    o.state_dir = s.tmp.path / "other-user";
    CHECK(s.acquire(o)->start_after() == (kNowTick + 50) << 8);
  }
  SUBCASE("and the state record when the host record is gone") {
    claim.reset();
    fs::remove(s.host_record(64910));
    CHECK(s.acquire(s.options(sony, 64910))->start_after() == (kNowTick + 50) << 8);
  }
  SUBCASE("records deleted while it runs are written again") {
    fs::remove(s.host_record(64910));
    fs::remove_all(s.tmp.path / "state");
    fs::create_directories(s.tmp.path / "state");
    REQUIRE(claim->reserve_through((kNowTick + 60) << 8).ok());
    const std::string again = zaptid::format_record({64910, id_at(sony, 64910, (kNowTick + 60) << 8), kSonyKey});
    CHECK(read(s.host_record(64910)) == again);
    CHECK(read(s.state_record(64910)) == again);
  }
}

TEST_CASE("host_claim::another layout starts above every ID recorded for the machine id") {
  Setup s;
  const Layout sony = layout("sonyflake");
  const uint64_t machine = 1001;  // fits snowflake's 10 machine bits
  const Cursor c = (kNowTick << 8) | 17;
  fs::create_directories(s.tmp.path / "host");
  write(s.host_record(machine), zaptid::format_record({machine, id_at(sony, machine, c), kSonyKey}));

  SUBCASE("other bit splits at the same time") {
    const Layout odd = layout("sonyflake", {.epoch_ms = {}, .unit_ms = {}, .bits_sequence = 9, .bits_machine = 15});
    auto claim = s.acquire(s.options(odd, machine));
    REQUIRE(claim->start_after().has_value());
    CHECK(id_at(odd, machine, *claim->start_after()) <= id_at(sony, machine, c));
    CHECK(id_at(odd, machine, *claim->start_after() + 1) > id_at(sony, machine, c));
  }
  SUBCASE("an epoch 1s later: wait within the limit, else refuse naming the record") {
    zaptid::LayoutOverrides shift;
    shift.epoch_ms = sony.epoch_ms + 1000;
    const Layout later = layout("sonyflake", shift);
    auto o = s.options(later, machine);
    o.max_clock_wait = 500ms;
    auto refused = HostClaim::acquire(o);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().kind == ErrorKind::kUnavailable);
    CHECK(refused.message() ==
          "the record " + s.host_record(machine).string() + " says IDs up to " +
              std::to_string(id_at(sony, machine, c)) +
              " may have been issued with machine id 1001 (layout sonyflake); the first larger ID of this layout has "
              "the time 2026-11-26T06:12:38.370Z, 1.000s ahead of the clock and beyond the clock wait limit of "
              "500ms. Try again after that time, correct the clock if it is behind, or use another machine id");
    o.max_clock_wait = 1000ms;
    auto claim = s.acquire(o);
    CHECK(id_at(later, machine, *claim->start_after() + 1) > id_at(sony, machine, c));
  }
  SUBCASE("snowflake's IDs are all larger: it starts at once") {
    const Layout snow = layout("snowflake");
    auto claim = s.acquire(s.options(snow, machine));
    REQUIRE(claim->start_after().has_value());  // sony's ID of today is a snowflake ID of 2011
    CHECK(*claim->start_after() < (static_cast<uint64_t>(kNowMs - snow.epoch_ms) << 12));
    REQUIRE(claim->reserve_through(static_cast<uint64_t>(kNowMs - snow.epoch_ms) << 12).ok());
    claim.reset();
    // ... and after it, no sonyflake ID is larger than what snowflake recorded.
    auto back = HostClaim::acquire(s.options(sony, machine));
    REQUIRE_FALSE(back.ok());
    CHECK(back.error().kind == ErrorKind::kUnavailable);
    CHECK(back.message().find("(layout snowflake); the first larger ID of this layout has the time ") !=
          std::string::npos);
  }
  SUBCASE("a record past the layout's last ID") {
    write(s.host_record(machine), zaptid::format_record({machine, UINT64_MAX >> 1, kSonyKey}));
    auto refused = HostClaim::acquire(s.options(sony, machine));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().kind == ErrorKind::kExhausted);
    CHECK(refused.message() == "the record " + s.host_record(machine).string() +
                                   " says IDs up to 9223372036854775807 may have been issued with machine id 1001 "
                                   "(layout sonyflake); no ID of this layout with machine id 1001 is larger. Use "
                                   "another machine id");
  }
}

TEST_CASE("host_claim::records of zaptid 0.1.0 still count") {
  Setup s;
  const Layout sony = layout("sonyflake");
  fs::create_directories(s.tmp.path / "state");
  const Cursor c = (kNowTick << 8) | 9;
  const auto legacy = [&](const Layout& l, uint64_t machine, Cursor cursor) {
    const std::string body = "zaptid-state 1\ncursor " + std::to_string(cursor) + "\n";
    uint32_t crc = 0xFFFFFFFFu;
    for (char ch : body) {
      crc ^= static_cast<unsigned char>(ch);
      for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    write(s.tmp.path / "state" / (l.key() + "-machine-" + std::to_string(machine) + ".state"),
          body + fmt::format("crc32 {:08x}\n", ~crc));
  };
  legacy(sony, 64920, c);
  CHECK(s.acquire(s.options(sony, 64920))->start_after() == c);

  const Layout v2 = layout("sonyflake-v2");
  legacy(v2, 64921, 5);  // a v2 ID: smaller than any sonyflake ID of today
  legacy(sony, 64921, c - 4);
  CHECK(s.acquire(s.options(sony, 64921))->start_after() == c - 4);

  write(s.tmp.path / "state" / (sony.key() + "-machine-64922.state"), kLegacy1000.substr(0, 30));
  auto refused = HostClaim::acquire(s.options(sony, 64922));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().kind == ErrorKind::kCorrupt);
  CHECK(refused.message() == "state file " + (s.tmp.path / "state" / (sony.key() + "-machine-64922.state")).string() +
                                 " is damaged (not a record); refusing to guess which IDs were issued. Remove it "
                                 "only when no zaptid with this machine id has run for longer than the clock wait "
                                 "limit");
}

TEST_CASE("host_claim::records that are not records are refused, never reset") {
  Setup s;
  const Layout sony = layout("sonyflake");
  fs::create_directories(s.tmp.path / "host");
  const fs::path p = s.host_record(64930);
  const auto refused = [&](ErrorKind kind, const std::string& message) {
    for (int attempt = 0; attempt < 2; ++attempt) {  // the claim is not left held by a refusal
      auto c = HostClaim::acquire(s.options(sony, 64930));
      REQUIRE_FALSE(c.ok());
      CHECK(c.error().kind == kind);
      CHECK(c.message() == message);
    }
  };
  const std::string hint =
      "; every zaptid on this host that uses machine id 64930 must be able to read and update the host record";

  SUBCASE("damaged") {
    std::string text = zaptid::format_record({64930, 1000, kSonyKey});
    text[text.find("1000")] = '2';
    write(p, text);
    refused(ErrorKind::kCorrupt, damaged(p, "checksum mismatch"));
    CHECK(read(p) == text);
    write(p, text.substr(0, 40));
    refused(ErrorKind::kCorrupt, damaged(p, "40 bytes, not 256"));
  }
  SUBCASE("another machine id's") {
    write(p, zaptid::format_record({7, 1000, kSonyKey}));
    refused(ErrorKind::kCorrupt, "record " + p.string() + " is damaged (it belongs to machine id 7, not 64930)");
  }
  SUBCASE("larger than a record") {
    write(p, std::string(300, 'x'));
    refused(ErrorKind::kCorrupt,
            "record " + p.string() + " is larger than a record can be (300 bytes, at most 256)");
  }
  SUBCASE("a symbolic link") {
    write(s.tmp.path / "elsewhere", zaptid::format_record({64930, 1000, kSonyKey}));
    fs::create_symlink(s.tmp.path / "elsewhere", p);
    refused(ErrorKind::kIo, "record " + p.string() + " is a symbolic link; refusing to follow it" + hint);
  }
  SUBCASE("a FIFO: refused without blocking") {
    REQUIRE(::mkfifo(p.c_str(), 0666) == 0);
    refused(ErrorKind::kIo, "record " + p.string() + " is a FIFO, not a regular file; refusing to read it" + hint);
  }
  SUBCASE("a folder") {
    fs::create_directories(p);
    refused(ErrorKind::kIo, "record " + p.string() + " is a folder" + hint);
  }
  SUBCASE("an empty file: created, never written, so nothing was issued") {
    write(p, "");
    CHECK(s.acquire(s.options(sony, 64930))->start_after() == ((kNowTick << 8) | 255));
  }
}

TEST_CASE("host_claim::folders that cannot be created") {
  Setup s;
  write(s.tmp.path / "file", "not a folder");
  auto o = s.options(layout("sonyflake"), 64940);
  o.state_dir = s.tmp.path / "file" / "state";
  auto c = HostClaim::acquire(o);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().kind == ErrorKind::kIo);
  CHECK(c.message() == "cannot create state folder " + o.state_dir.string() + ": Not a directory");
  o = s.options(layout("sonyflake"), 64940);
  o.host_dir = s.tmp.path / "file";
  c = HostClaim::acquire(o);
  REQUIRE_FALSE(c.ok());
  CHECK(c.message() == "cannot create host folder " + o.host_dir.string() +
                           ": Not a directory; every zaptid on this host that uses machine id 64940 must be able to "
                           "read and update the host record");
}

TEST_CASE("host_claim::default folders") {
  const char* old_xdg = std::getenv("XDG_STATE_HOME");
  const char* old_home = std::getenv("HOME");
  const std::string xdg = old_xdg ? old_xdg : "", home = old_home ? old_home : "";
  ::setenv("XDG_STATE_HOME", "/x/state", 1);
  ::setenv("HOME", "/home/u", 1);
  CHECK(HostClaim::default_state_dir() == fs::path("/x/state/zaptid"));
  ::setenv("XDG_STATE_HOME", "relative", 1);  // the XDG spec says to ignore relative paths
  CHECK(HostClaim::default_state_dir() == fs::path("/home/u/.local/state/zaptid"));
  ::unsetenv("XDG_STATE_HOME");
  CHECK(HostClaim::default_state_dir() == fs::path("/home/u/.local/state/zaptid"));
  ::unsetenv("HOME");
  CHECK(HostClaim::default_state_dir() == fs::path("/var/lib/zaptid"));
  if (old_xdg) ::setenv("XDG_STATE_HOME", xdg.c_str(), 1);
  if (old_home) ::setenv("HOME", home.c_str(), 1);
  CHECK(HostClaim::default_host_dir() == fs::path("/var/tmp/zaptid"));
}
