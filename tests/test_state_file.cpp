// The host lock and its state record, in a private temporary folder.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/state_file.h"

using namespace std::chrono_literals;
using zaptid::ErrorKind;
using zaptid::HostLock;
namespace fs = std::filesystem;

namespace {

const std::string kName = "e1409529600000-u10-t39-s8-m16-sm-machine-5";
// A record of cursor 1000 and of 1234, byte for byte (checksums from Python's zlib.crc32).
const std::string kRecord1000 = "zaptid-state 1\ncursor 1000\ncrc32 09a9f892\n";
const std::string kRecord1234 = "zaptid-state 1\ncursor 1234\ncrc32 c58a4b44\n";

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

std::unique_ptr<HostLock> acquire(const fs::path& dir, const std::string& holder = "test",
                                  const std::string& name = kName) {
  auto lock = HostLock::acquire(dir, name, 50ms, holder);
  REQUIRE_MESSAGE(lock.ok(), lock.message());
  return std::move(lock).value();
}

std::string damaged(const fs::path& state, const std::string& why) {
  return "state file " + state.string() + " is damaged (" + why +
         "); refusing to guess where the previous process stopped. Remove it only when no zaptid with this "
         "machine id has run for longer than the clock wait limit";
}

}  // namespace

TEST_CASE("state_file::names") {
  CHECK(HostLock::name_for("e1409529600000-u10-t39-s8-m16-sm", 5) == kName);

  const char* old_xdg = std::getenv("XDG_STATE_HOME");
  const char* old_home = std::getenv("HOME");
  const std::string xdg = old_xdg ? old_xdg : "", home = old_home ? old_home : "";
  ::setenv("XDG_STATE_HOME", "/x/state", 1);
  ::setenv("HOME", "/home/u", 1);
  CHECK(HostLock::default_dir() == fs::path("/x/state/zaptid"));
  ::setenv("XDG_STATE_HOME", "relative", 1);  // the XDG spec says to ignore relative paths
  CHECK(HostLock::default_dir() == fs::path("/home/u/.local/state/zaptid"));
  ::unsetenv("XDG_STATE_HOME");
  CHECK(HostLock::default_dir() == fs::path("/home/u/.local/state/zaptid"));
  ::unsetenv("HOME");
  CHECK(HostLock::default_dir() == fs::path("/var/lib/zaptid"));
  if (old_xdg) ::setenv("XDG_STATE_HOME", xdg.c_str(), 1);
  if (old_home) ::setenv("HOME", home.c_str(), 1);
}

TEST_CASE("state_file::record round trip") {
  TempDir tmp;
  const fs::path dir = tmp.path / "a" / "b";  // created with its parents
  const fs::path state = dir / (kName + ".state");

  auto lock = acquire(dir, "first");
  CHECK_FALSE(lock->recorded().has_value());
  CHECK(lock->state_path() == state);
  CHECK_FALSE(fs::exists(state));
  CHECK(read(dir / (kName + ".lock")) == "pid " + std::to_string(::getpid()) + ", zaptid first\n");

  REQUIRE(lock->reserve_through(1000).ok());
  CHECK(lock->recorded() == 1000u);
  CHECK(read(state) == kRecord1000);
  CHECK_FALSE(fs::exists(dir / (kName + ".state.tmp")));

  SUBCASE("release records exactly what was issued") {
    REQUIRE(lock->release(1234).ok());
    CHECK(read(state) == kRecord1234);
    CHECK(lock->release(99).ok());  // a second release does nothing
    CHECK(read(state) == kRecord1234);
    auto st = lock->reserve_through(2000);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::kUnavailable);
    CHECK(st.message() == "the host lock was released");
    CHECK(acquire(dir)->recorded() == 1234u);
  }
  SUBCASE("release without a cursor keeps the record") {
    REQUIRE(lock->release(std::nullopt).ok());
    CHECK(read(state) == kRecord1000);
    CHECK(acquire(dir)->recorded() == 1000u);
  }
  SUBCASE("a holder that dies keeps its reserved window") {
    lock.reset();
    CHECK(read(state) == kRecord1000);
    CHECK(acquire(dir)->recorded() == 1000u);
  }
  SUBCASE("a leftover temporary file from a torn write is ignored") {
    lock.reset();
    write(dir / (kName + ".state.tmp"), "zaptid-state 1\ncursor 99");
    CHECK(acquire(dir)->recorded() == 1000u);
  }
}

TEST_CASE("state_file::one holder at a time") {
  TempDir tmp;
  auto first = acquire(tmp.path, "first");

  // A real lock wait (flock), bounded by the small timeout; nothing sleeps to pass time.
  auto second = HostLock::acquire(tmp.path, kName, 50ms, "second");
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().kind == ErrorKind::kUnavailable);
  CHECK(second.message() == "this machine id is in use by another zaptid process on this host (pid " +
                                std::to_string(::getpid()) + ", zaptid first); gave up after waiting 50ms for " +
                                (tmp.path / (kName + ".lock")).string());
  CHECK(read(tmp.path / (kName + ".lock")) == "pid " + std::to_string(::getpid()) + ", zaptid first\n");

  CHECK(acquire(tmp.path, "other", kName + "x")->recorded() == std::nullopt);  // another machine id: free

  REQUIRE(first->reserve_through(1000).ok());
  REQUIRE(first->release(1000).ok());
  CHECK(acquire(tmp.path, "second")->recorded() == 1000u);
}

TEST_CASE("state_file::damaged records are refused, never reset") {
  TempDir tmp;
  const fs::path state = tmp.path / (kName + ".state");
  struct Case {
    std::string text, why;
  };
  const Case cases[] = {
      {"zaptid-state 1\ncursor 1001\ncrc32 09a9f892\n", "checksum mismatch"},  // a flipped digit
      {"zaptid-state 1\ncursor 1000\ncrc32 09a9f893\n", "checksum mismatch"},  // a flipped checksum
      {"zaptid-state 1\ncursor 1000\ncrc32 09A9F892\n", "checksum mismatch"},
      {"zaptid-state 1\ncursor 1000\ncrc32 09a9f892\nx\n", "checksum mismatch"},
      {"zaptid-state 1\ncursor 1000\ncrc32 09a9f892", "incomplete"},  // truncated
      {"zaptid-state 1\ncursor 1000\ncrc32 ", "incomplete"},
      {"zaptid-state 1\ncursor 10", "incomplete"},
      {"", "incomplete"},
      {"hello\n", "incomplete"},
      {std::string("\0\0\0\0", 4), "incomplete"},
      {"zaptid-state 2\ncursor 1000\ncrc32 75c8dd49\n", "unknown format"},  // a valid checksum
      {"zaptid-state 1\ncursor x\ncrc32 ea08f027\n", "bad cursor"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    write(state, c.text);
    for (int attempt = 0; attempt < 2; ++attempt) {  // refused each time: the lock is not left held
      auto lock = HostLock::acquire(tmp.path, kName, 50ms, "test");
      REQUIRE_FALSE(lock.ok());
      CHECK(lock.error().kind == ErrorKind::kCorrupt);
      CHECK(lock.message() == damaged(state, c.why));
    }
    CHECK(read(state) == c.text);
  }
  write(state, kRecord1000);
  CHECK(acquire(tmp.path)->recorded() == 1000u);
}

TEST_CASE("state_file::a folder that cannot be created") {
  TempDir tmp;
  write(tmp.path / "file", "not a folder");
  const fs::path dir = tmp.path / "file" / "state";
  auto lock = HostLock::acquire(dir, kName, 50ms, "test");
  REQUIRE_FALSE(lock.ok());
  CHECK(lock.error().kind == ErrorKind::kIo);
  CHECK(lock.message() == "cannot create state folder " + dir.string() + ": Not a directory");
}
