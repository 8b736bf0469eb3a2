// gRPC server reflection (grpc.reflection.v1alpha): one request in, one response out.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/result.h"
#include "grpc/reflection/v1alpha/reflection.pb.h"

namespace zaptid::server {

/// Answers ServerReflectionRequests from protobuf's generated descriptor pool, the way gRPC's
/// own reflection service does, so grpcurl and grpc_cli can list and call zaptid's services.
/// It only knows files whose generated code is linked into the binary; from a static library
/// that is a file some linked code refers to. Holds no gRPC server state: the caller reads the
/// stream and writes each response. Immutable after create(), so thread-safe.
class Reflection {
 public:
  /// A reflection answering list_services with `services` (full names such as "idgen.IdGen"),
  /// in that order. Fails with kInvalidArgument, naming the first culprit, if a name is not a
  /// service in the generated pool: its generated code is not linked, or it is misspelt.
  static Result<Reflection> create(std::vector<std::string> services);

  /// The response to `request`: valid_host is its host and original_request a copy of it.
  /// list_services lists the services; file_by_filename, file_containing_symbol (a service,
  /// method, message, field, enum or enum value) and file_containing_extension answer with the
  /// serialized FileDescriptorProto of the file and of everything it imports, transitively,
  /// each once, the file itself first; all_extension_numbers_of_type gives base_type_name and
  /// the extension numbers (possibly none). An unknown file, symbol, type or extension is an
  /// error_response with NOT_FOUND (5); a request that sets none of these is INVALID_ARGUMENT
  /// (3). Never throws for a bad request.
  grpc::reflection::v1alpha::ServerReflectionResponse answer(
      const grpc::reflection::v1alpha::ServerReflectionRequest& request) const;

  /// The service names given to create().
  const std::vector<std::string>& services() const { return services_; }

 private:
  explicit Reflection(std::vector<std::string> services) : services_(std::move(services)) {}

  std::vector<std::string> services_;
};

}  // namespace zaptid::server
