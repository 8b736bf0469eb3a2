#include "server/reflection.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/support/status_code_enum.h>

#include <cstdint>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include "core/parse.h"

namespace zaptid::server {
namespace {

namespace pb = google::protobuf;
namespace v1alpha = grpc::reflection::v1alpha;
using Request = v1alpha::ServerReflectionRequest;
using Response = v1alpha::ServerReflectionResponse;

const pb::DescriptorPool& pool() { return *pb::DescriptorPool::generated_pool(); }

void fail(Response& response, grpc::StatusCode code, std::string message) {
  auto* error = response.mutable_error_response();
  error->set_error_code(static_cast<int32_t>(code));
  error->set_error_message(std::move(message));
}

// Appends `file`, then what it imports, depth first, skipping files already in `seen`: a client
// needs every file a descriptor refers to before it can build it.
void add_file(const pb::FileDescriptor& file, v1alpha::FileDescriptorResponse& out,
              std::unordered_set<std::string_view>& seen) {
  // The pool outlives every answer, so its names can be keys.
  if (!seen.insert(file.name()).second) return;
  pb::FileDescriptorProto proto;
  file.CopyTo(&proto);
  proto.SerializeToString(out.add_file_descriptor_proto());
  for (int i = 0; i < file.dependency_count(); ++i) add_file(*file.dependency(i), out, seen);
}

void answer_file(const pb::FileDescriptor& file, Response& response) {
  std::unordered_set<std::string_view> seen;
  add_file(file, *response.mutable_file_descriptor_response(), seen);
}

void file_by_filename(const std::string& name, Response& response) {
  if (const auto* file = pool().FindFileByName(name)) return answer_file(*file, response);
  fail(response, grpc::StatusCode::NOT_FOUND, fmt::format("file {} not found", quote_input(name)));
}

void file_containing_symbol(const std::string& symbol, Response& response) {
  if (const auto* file = pool().FindFileContainingSymbol(symbol)) return answer_file(*file, response);
  fail(response, grpc::StatusCode::NOT_FOUND, fmt::format("symbol {} not found", quote_input(symbol)));
}

void file_containing_extension(const v1alpha::ExtensionRequest& request, Response& response) {
  const auto* type = pool().FindMessageTypeByName(request.containing_type());
  if (type == nullptr) {
    return fail(response, grpc::StatusCode::NOT_FOUND,
                fmt::format("message type {} not found", quote_input(request.containing_type())));
  }
  if (const auto* extension = pool().FindExtensionByNumber(type, request.extension_number())) {
    return answer_file(*extension->file(), response);
  }
  fail(response, grpc::StatusCode::NOT_FOUND,
       fmt::format("extension {} of {} not found", request.extension_number(), quote_input(request.containing_type())));
}

void all_extension_numbers_of_type(const std::string& name, Response& response) {
  const auto* type = pool().FindMessageTypeByName(name);
  if (type == nullptr) {
    return fail(response, grpc::StatusCode::NOT_FOUND, fmt::format("message type {} not found", quote_input(name)));
  }
  std::vector<const pb::FieldDescriptor*> extensions;
  pool().FindAllExtensions(type, &extensions);
  auto* out = response.mutable_all_extension_numbers_response();
  out->set_base_type_name(name);
  for (const auto* extension : extensions) out->add_extension_number(extension->number());
}

}  // namespace

Result<Reflection> Reflection::create(std::vector<std::string> services) {
  for (const auto& name : services) {
    if (pool().FindServiceByName(name) == nullptr) {
      return invalid(fmt::format("reflection: service '{}' is not in the generated descriptor pool", name));
    }
  }
  return Reflection(std::move(services));
}

Response Reflection::answer(const Request& request) const {
  Response response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  switch (request.message_request_case()) {
    case Request::kFileByFilename:
      file_by_filename(request.file_by_filename(), response);
      break;
    case Request::kFileContainingSymbol:
      file_containing_symbol(request.file_containing_symbol(), response);
      break;
    case Request::kFileContainingExtension:
      file_containing_extension(request.file_containing_extension(), response);
      break;
    case Request::kAllExtensionNumbersOfType:
      all_extension_numbers_of_type(request.all_extension_numbers_of_type(), response);
      break;
    case Request::kListServices: {
      auto* list = response.mutable_list_services_response();
      for (const auto& name : services_) list->add_service()->set_name(name);
      break;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      fail(response, grpc::StatusCode::INVALID_ARGUMENT,
           "the reflection request sets none of file_by_filename, file_containing_symbol, "
           "file_containing_extension, all_extension_numbers_of_type and list_services");
      break;
  }
  return response;
}

}  // namespace zaptid::server
