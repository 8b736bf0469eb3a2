// Reading a PEM file named by an option (TLS certificates, keys and CAs; etcd's too), so that a
// careless or hostile path cannot hang or exhaust the process: /dev/zero, a FIFO, a folder, a
// file larger than any certificate bundle.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.h"

namespace zaptid {

/// The largest PEM file read: a system CA bundle is about 0.2 MiB, one certificate chain a few KiB.
inline constexpr size_t kMaxPemBytes = size_t{1} << 20;

/// The contents of the PEM file `path`, which `option` names in errors ("--tls-ca"). Opened
/// without blocking; refused (kInvalidArgument, one line) unless it is a regular file of at most
/// kMaxPemBytes that holds a "-----BEGIN " line.
Result<std::string> read_pem_file(const std::string& path, std::string_view option);

}  // namespace zaptid
