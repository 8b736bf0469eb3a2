// Choosing the machine id: an explicit value, or one derived from the host's IPv4 address.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/layout.h"
#include "core/result.h"

namespace zaptid {

/// One IPv4 address of the host, in host byte order, with its interface name.
struct HostAddress {
  uint32_t ipv4 = 0;
  std::string interface;
};

/// The chosen id, where it came from (for the log), and a warning when it may not be unique.
struct MachineIdChoice {
  uint64_t id = 0;
  std::string source;   ///< "--machine-id", "ZAPTID_MACHINE_ID", "private IPv4 10.0.0.5 (eth0)", …
  std::string warning;  ///< empty unless the id may collide with another host's
};

/// Picks the machine id, first match wins:
///   1. `flag` (from --machine-id), 2. `env` (ZAPTID_MACHINE_ID),
///   3. the low bits of the first private IPv4 (10/8, 172.16/12, 192.168/16, 169.254/16),
///   4. the low bits of any other non-loopback IPv4, with a warning,
///   5. an error naming --machine-id.
/// An explicit id that is not a number or does not fit layout.bits_machine is refused.
Result<MachineIdChoice> choose_machine_id(const std::optional<std::string>& flag, const std::optional<std::string>& env,
                                          const std::vector<HostAddress>& addresses, const Layout& layout);

/// The host's IPv4 addresses (getifaddrs), in interface order.
std::vector<HostAddress> host_ipv4_addresses();

/// Dotted-quad text of an address.
std::string format_ipv4(uint32_t ipv4);

/// Sonyflake's rule (isPrivateIPv4): 10/8, 172.16/12, 192.168/16 and link-local 169.254/16.
bool is_private_ipv4(uint32_t ipv4);

}  // namespace zaptid
