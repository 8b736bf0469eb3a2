// How the CLI layer fails: Fatal carries the message and the exit status to the one place
// (cli::main) that prints "zaptid: <message>" and exits.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "core/result.h"
#include "exit_status.h"

namespace zaptid::cli {

/// Thrown anywhere in the CLI layer; cli::main() prints "zaptid: <what>" and exits with `status`.
class Fatal : public std::runtime_error {
 public:
  Fatal(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

/// The exit status for a library error of this kind.
inline int exit_status_for(const Error& e) {
  return e.kind == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
}
/// Returns the value or throws Fatal with the error's message.
template <typename T>
T take(Result<T> r, int status) {
  if (!r) throw Fatal(status, r.message());
  return std::move(r).value();
}

}  // namespace zaptid::cli
