// Result<T>: a value or an error, the one error style of the zaptid library.
// The library never throws for expected failures and never logs; callers decide what to say.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace zaptid {

/// Why an operation failed; the server maps each kind to one gRPC status code.
enum class ErrorKind {
  kInvalidArgument,  ///< the caller's input is wrong; retrying the same input fails again
  kUnavailable,      ///< not now (clock behind, lock held, lease unconfirmed); may succeed later
  kExhausted,        ///< the layout's time field has run out; never succeeds again
  kIo,               ///< a file or system call failed
  kCorrupt,          ///< persisted state is damaged and was not trusted
};

/// An error: its kind and a complete, human-readable one-line message.
struct Error {
  ErrorKind kind = ErrorKind::kInvalidArgument;
  std::string message;
};

inline Error invalid(std::string message) { return {ErrorKind::kInvalidArgument, std::move(message)}; }
inline Error unavailable(std::string message) { return {ErrorKind::kUnavailable, std::move(message)}; }

/// Holds either a T or an Error. Accessing the wrong alternative is a programming error
/// (std::bad_variant_access).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }
  /// The error message; only valid when !ok().
  const std::string& message() const { return error().message; }

 private:
  std::variant<T, Error> v_;
};

/// Success without a value.
struct Ok {};
using Status = Result<Ok>;

}  // namespace zaptid
