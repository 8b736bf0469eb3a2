#include "core/machine_id.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

#include "core/parse.h"

namespace zaptid {
namespace {

Result<MachineIdChoice> explicit_id(const std::string& text, std::string source, const Layout& layout) {
  const auto does_not_fit = [&] {
    return invalid(fmt::format("{} {} does not fit the layout's {} machine bits (0 to {})", source,
                               text.size() <= 20 ? text : quote_input(text),
                               layout.bits_machine, layout.max_machine()));
  };
  auto id = parse_unsigned(text, UINT64_MAX, source);
  if (!id) {
    // A number past 64 bits does not fit either; the layout's range is the limit worth naming.
    const bool digits =
        !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    return digits ? does_not_fit() : id.error();
  }
  if (*id > layout.max_machine()) return does_not_fit();
  return MachineIdChoice{*id, std::move(source), {}};
}

bool is_loopback(uint32_t ip) { return (ip >> 24) == 127; }

}  // namespace

bool is_private_ipv4(uint32_t ip) {
  const uint32_t a = ip >> 24, b = (ip >> 16) & 0xFF;
  return a == 10 || (a == 172 && b >= 16 && b < 32) || (a == 192 && b == 168) || (a == 169 && b == 254);
}

std::string format_ipv4(uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 0xFF, (ip >> 8) & 0xFF, ip & 0xFF);
}

Result<MachineIdChoice> choose_machine_id(const std::optional<std::string>& flag, const std::optional<std::string>& env,
                                          const std::vector<HostAddress>& addresses, const Layout& layout) {
  if (flag) return explicit_id(*flag, "--machine-id", layout);
  if (env) return explicit_id(*env, "ZAPTID_MACHINE_ID", layout);
  const auto from = [&](const HostAddress& a, std::string_view kind) {
    return MachineIdChoice{a.ipv4 & layout.max_machine(),
                           fmt::format("the low {} bits of {} IPv4 {} ({})", layout.bits_machine, kind,
                                       format_ipv4(a.ipv4), a.interface),
                           {}};
  };
  for (const auto& a : addresses) {
    if (is_private_ipv4(a.ipv4)) return from(a, "private");
  }
  for (const auto& a : addresses) {
    if (!is_loopback(a.ipv4) && a.ipv4 != 0) {
      auto choice = from(a, "public");
      choice.warning = fmt::format("machine id {} comes from a non-private address and is not guaranteed unique; "
                                   "set --machine-id",
                                   choice.id);
      return choice;
    }
  }
  return invalid("no machine id: no non-loopback IPv4 address to derive one from; set --machine-id or "
                 "ZAPTID_MACHINE_ID");
}

std::vector<HostAddress> host_ipv4_addresses() {
  std::vector<HostAddress> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    sockaddr_in sin{};
    std::memcpy(&sin, i->ifa_addr, sizeof sin);
    out.push_back({ntohl(sin.sin_addr.s_addr), i->ifa_name});
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace zaptid
