#include "core/pem_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "core/parse.h"

namespace zaptid {

Result<std::string> read_pem_file(const std::string& path, std::string_view option) {
  const auto named = [&] { return fmt::format("{} {}", option, escape_control(path)); };
  // O_NONBLOCK: a FIFO must not block the open; fstat() refuses it next.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return invalid(fmt::format("cannot read {}: {}", named(), std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return invalid(fmt::format("cannot read {}: {}", named(), std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return invalid(fmt::format("{} is not a regular file", named()));
  if (static_cast<uint64_t>(st.st_size) > kMaxPemBytes) {
    return invalid(fmt::format("{} is {} bytes; a PEM file is read up to {} bytes", named(), st.st_size, kMaxPemBytes));
  }
  // Read at most one byte past the limit: a file that grows meanwhile is refused, not followed.
  std::string pem(kMaxPemBytes + 1, '\0');
  size_t used = 0;
  while (used < pem.size()) {
    const ssize_t n = ::read(fd, pem.data() + used, pem.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return invalid(fmt::format("cannot read {}: {}", named(), std::strerror(errno)));
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  if (used > kMaxPemBytes) {
    return invalid(fmt::format("{} grew past {} bytes while being read", named(), kMaxPemBytes));
  }
  pem.resize(used);
  if (pem.find("-----BEGIN ") == std::string::npos) return invalid(fmt::format("{} is not a PEM file", named()));
  return pem;
}

}  // namespace zaptid
