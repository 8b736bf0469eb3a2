// Listen addresses: checking them, naming the real port, and saying why a bind failed.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace zaptid::server {

struct HostPort {
  std::string host;  ///< without brackets; empty: every address
  std::string port;  ///< decimal, 0 to 65535
};

/// Splits host:port or [v6]:port; the error names `option` and the `forms` it accepts, with the
/// address quoted by quote_input().
Result<HostPort> split_host_port(const std::string& address, std::string_view option, std::string_view forms);

/// ":PORT", zaptidgen's form (Go's net.Listen), as "[::]:PORT": every address of both families.
/// Any other address is returned as it is.
std::string expand_listen_address(const std::string& address);

/// Accepts host:port, [v6]:port and unix:/path (port 0 to 65535); the error names the address.
Status check_listen_address(const std::string& address);

/// The address with its port replaced by `port` (the one gRPC picked for port 0); unix: paths
/// are returned unchanged.
std::string with_port(const std::string& address, int port);

/// "cannot listen on ADDR: REASON" for the first address that cannot be bound now (found by
/// binding a test socket, since gRPC does not say which failed), or a message naming all.
std::string listen_failure(const std::vector<std::string>& addresses);

/// A unix: listen address, bound under a private name beside its path and then moved onto it,
/// so a server never takes over, or deletes, a socket another server answers on.
struct UnixSocket {
  std::string path;  ///< where clients connect
  std::string temp;  ///< "PATH.<pid>.new": what gRPC binds before place_unix_socket()
  dev_t dev = 0;     ///< the socket file placed at `path` (after place_unix_socket())
  ino_t ino = 0;
  bool placed = false;
};

/// The path of a unix: address ("unix:/p" and "unix:///p" name /p), or "" for other addresses.
std::string unix_path(const std::string& address);

/// Checks `path` before binding: no file, or a stale socket (nothing accepts on it), is fine; a
/// socket a live server answers on is refused ("unix:PATH is in use by a running server"), and
/// so is a file that is not a socket. Removes a leftover temp name of this process id.
Result<UnixSocket> prepare_unix_socket(const std::string& path);

/// Moves the bound temp socket onto its path (replacing a stale one) and notes which file it is.
Status place_unix_socket(UnixSocket& socket);

/// Removes the socket at its path if it is still the one place_unix_socket() put there, and the
/// temp name if it was never placed. Never removes another server's socket.
void remove_unix_socket(const UnixSocket& socket);

}  // namespace zaptid::server
