// The gRPC reflection handler (lib/server/reflection.h): any bytes a client sends as a
// ServerReflectionRequest get an answer, never a crash, and the answer echoes the request.
#include "fuzz_check.h"
#include "idgen.pb.h"
#include "server/reflection.h"

using namespace zaptid;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const server::Reflection reflection = [] {
    // Refer to idgen.proto's generated code so the linker keeps it in the pool.
    FUZZ_CHECK(idgen::IdRequest::descriptor() != nullptr);
    auto r = server::Reflection::create({"idgen.IdGen", "grpc.reflection.v1alpha.ServerReflection"});
    FUZZ_CHECK(r.ok());
    return std::move(r).value();
  }();
  ServerReflectionRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const ServerReflectionResponse response = reflection.answer(request);
  FUZZ_CHECK(response.valid_host() == request.host());
  FUZZ_CHECK(response.original_request().SerializeAsString() == request.SerializeAsString());
  FUZZ_CHECK(response.message_response_case() != ServerReflectionResponse::MESSAGE_RESPONSE_NOT_SET);
  if (response.has_error_response()) {
    const int code = response.error_response().error_code();
    FUZZ_CHECK(code == 3 || code == 5);
    fuzz::check_message(response.error_response().error_message());
  }
  if (response.has_file_descriptor_response()) {
    FUZZ_CHECK(response.file_descriptor_response().file_descriptor_proto_size() >= 1);
  }
  return 0;
}
