// Listen addresses: checking them, naming the real port, and saying why a bind failed.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace zaptid::server {

/// Accepts host:port, [v6]:port and unix:/path (port 0 to 65535); the error names the address.
Status check_listen_address(const std::string& address);

/// The address with its port replaced by `port` (the one gRPC picked for port 0); unix: paths
/// are returned unchanged.
std::string with_port(const std::string& address, int port);

/// "cannot listen on ADDR: REASON" for the first address that cannot be bound now (found by
/// binding a test socket, since gRPC does not say which failed), or a message naming all.
std::string listen_failure(const std::vector<std::string>& addresses);

}  // namespace zaptid::server
