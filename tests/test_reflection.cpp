// Server reflection answers from the generated descriptor pool: no server, no network.
#include <doctest/doctest.h>
#include <google/protobuf/api.pb.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.pb.h"
#include "idgen.pb.h"
#include "server/reflection.h"

using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;
using zaptid::server::Reflection;

namespace {

constexpr int kInvalidArgument = 3;
constexpr int kNotFound = 5;

Reflection make_reflection() {
  // The pool only holds files whose generated code is linked: referring to a health message
  // here links health.pb.cc into the test binary, as the async health service will in zaptid.
  CHECK(grpc::health::v1::HealthCheckRequest::descriptor() != nullptr);
  CHECK(idgen::IdRequest::descriptor() != nullptr);
  auto r = Reflection::create({"idgen.IdGen", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"});
  REQUIRE(r.ok());
  return std::move(*r);
}

// The files of a file_descriptor_response, parsed, in response order.
std::vector<google::protobuf::FileDescriptorProto> files_of(const ServerReflectionResponse& response) {
  REQUIRE(response.has_file_descriptor_response());
  std::vector<google::protobuf::FileDescriptorProto> files;
  for (const auto& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    REQUIRE(file.ParseFromString(bytes));
    files.push_back(std::move(file));
  }
  return files;
}

// The file names answering `symbol`, in response order.
std::vector<std::string> names_for_symbol(const Reflection& reflection, const std::string& symbol) {
  ServerReflectionRequest request;
  request.set_file_containing_symbol(symbol);
  std::vector<std::string> names;
  for (const auto& file : files_of(reflection.answer(request))) names.push_back(file.name());
  return names;
}

void check_error(const ServerReflectionResponse& response, int code, const std::string& message) {
  REQUIRE(response.has_error_response());
  CHECK(response.error_response().error_code() == code);
  CHECK(response.error_response().error_message() == message);
}

}  // namespace

TEST_CASE("server::Reflection::create") {
  auto good = make_reflection();
  CHECK(good.services() ==
        std::vector<std::string>{"idgen.IdGen", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"});

  for (const char* bad : {"idgen.Nope", "idgen.IdRequest", "idgen.IdGen.Gen", ""}) {
    auto r = Reflection::create({"idgen.IdGen", bad});
    REQUIRE_FALSE(r.ok());
    CHECK(r.message() == std::string("reflection: service '") + bad + "' is not in the generated descriptor pool");
  }
}

TEST_CASE("server::Reflection list_services") {
  auto reflection = make_reflection();
  ServerReflectionRequest request;
  request.set_host("localhost:50051");
  request.set_list_services("*");
  auto response = reflection.answer(request);

  CHECK(response.valid_host() == "localhost:50051");
  CHECK(response.original_request().SerializeAsString() == request.SerializeAsString());
  REQUIRE(response.has_list_services_response());
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  CHECK(names == reflection.services());

  SUBCASE("an empty list_services string is still a list_services request") {
    request.set_list_services("");
    CHECK(reflection.answer(request).list_services_response().service_size() == 3);
  }
}

TEST_CASE("server::Reflection file_containing_symbol") {
  auto reflection = make_reflection();

  SUBCASE("a service: idgen.proto, which imports nothing") {
    ServerReflectionRequest request;
    request.set_file_containing_symbol("idgen.IdGen");
    auto response = reflection.answer(request);
    CHECK(response.original_request().file_containing_symbol() == "idgen.IdGen");
    auto files = files_of(response);
    REQUIRE(files.size() == 1);
    const auto& file = files[0];
    CHECK(file.name() == "idgen.proto");
    CHECK(file.package() == "idgen");
    CHECK(file.dependency_size() == 0);
    REQUIRE(file.service_size() == 1);
    CHECK(file.service(0).name() == "IdGen");
    std::set<std::string> methods;
    for (const auto& m : file.service(0).method()) methods.insert(m.name());
    CHECK(methods == std::set<std::string>{"Gen", "GenBatch", "Info"});
  }

  SUBCASE("methods, messages, fields") {
    for (const char* symbol : {"idgen.IdGen.Gen", "idgen.IdGen.GenBatch", "idgen.BatchRequest", "idgen.IdRequest",
                               "idgen.BatchRequest.count", "idgen.InfoResponse.epoch_unix_ms"}) {
      CAPTURE(symbol);
      CHECK(names_for_symbol(reflection, symbol) == std::vector<std::string>{"idgen.proto"});
    }
  }

  SUBCASE("the standard services, under their canonical file names") {
    const std::vector<std::string> health{"grpc/health/v1/health.proto"};
    CHECK(names_for_symbol(reflection, "grpc.health.v1.Health") == health);
    CHECK(names_for_symbol(reflection, "grpc.health.v1.Health.Watch") == health);
    CHECK(names_for_symbol(reflection, "grpc.health.v1.HealthCheckResponse.ServingStatus") == health);
    CHECK(names_for_symbol(reflection, "grpc.health.v1.HealthCheckResponse.SERVING") == health);
    CHECK(names_for_symbol(reflection, "grpc.reflection.v1alpha.ServerReflection") ==
          std::vector<std::string>{"grpc/reflection/v1alpha/reflection.proto"});
    CHECK(names_for_symbol(reflection, "grpc.reflection.v1alpha.ServerReflectionRequest.list_services") ==
          std::vector<std::string>{"grpc/reflection/v1alpha/reflection.proto"});
  }

  SUBCASE("unknown symbols") {
    for (const char* symbol : {"idgen.Nope", "idgen.IdGen.Nope", "nope.IdGen", ".idgen.IdGen", ""}) {
      ServerReflectionRequest request;
      request.set_file_containing_symbol(symbol);
      check_error(reflection.answer(request), kNotFound, std::string("symbol '") + symbol + "' not found");
    }
  }
}

TEST_CASE("server::Reflection file_by_filename") {
  auto reflection = make_reflection();
  ServerReflectionRequest request;

  SUBCASE("a file without imports") {
    request.set_file_by_filename("grpc/health/v1/health.proto");
    auto files = files_of(reflection.answer(request));
    REQUIRE(files.size() == 1);
    CHECK(files[0].name() == "grpc/health/v1/health.proto");
    CHECK(files[0].package() == "grpc.health.v1");
  }

  SUBCASE("the transitive imports, each once, the file first") {
    // None of our files imports another, so this uses protobuf's own well-known types: api.proto
    // imports source_context.proto and type.proto, and type.proto imports any.proto and
    // source_context.proto again. Referring to Api links api.pb.cc (and so the others) from a
    // static libprotobuf; a shared one registers them all anyway.
    REQUIRE(google::protobuf::Api::descriptor() != nullptr);
    request.set_file_by_filename("google/protobuf/api.proto");
    auto response = reflection.answer(request);
    std::vector<std::string> names;
    for (const auto& file : files_of(response)) names.push_back(file.name());
    CHECK(names == std::vector<std::string>{"google/protobuf/api.proto", "google/protobuf/source_context.proto",
                                            "google/protobuf/type.proto", "google/protobuf/any.proto"});

    // The answer is complete: a client can build the file from it alone, as grpcurl does.
    google::protobuf::SimpleDescriptorDatabase database;
    for (const auto& file : files_of(response)) REQUIRE(database.Add(file));
    google::protobuf::DescriptorPool client_pool(&database);
    const auto* api = client_pool.FindMessageTypeByName("google.protobuf.Api");
    REQUIRE(api != nullptr);
    CHECK(api->FindFieldByName("methods")->message_type()->full_name() == "google.protobuf.Method");
  }

  SUBCASE("an unknown file, or a path that is not the canonical name") {
    for (const char* name : {"nope.proto", "health.proto", "proto/idgen.proto", ""}) {
      request.set_file_by_filename(name);
      check_error(reflection.answer(request), kNotFound, std::string("file '") + name + "' not found");
    }
  }
}

TEST_CASE("server::Reflection extensions") {
  auto reflection = make_reflection();
  ServerReflectionRequest request;

  SUBCASE("all_extension_numbers_of_type of a message without extensions") {
    request.set_all_extension_numbers_of_type("idgen.BatchRequest");
    auto response = reflection.answer(request);
    REQUIRE(response.has_all_extension_numbers_response());
    CHECK(response.all_extension_numbers_response().base_type_name() == "idgen.BatchRequest");
    CHECK(response.all_extension_numbers_response().extension_number_size() == 0);
  }

  SUBCASE("all_extension_numbers_of_type of an unknown or non-message type") {
    for (const char* name : {"idgen.Nope", "idgen.IdGen", "grpc.health.v1.HealthCheckResponse.ServingStatus"}) {
      request.set_all_extension_numbers_of_type(name);
      check_error(reflection.answer(request), kNotFound, std::string("message type '") + name + "' not found");
    }
  }

  SUBCASE("file_containing_extension of an unknown type") {
    request.mutable_file_containing_extension()->set_containing_type("idgen.Nope");
    request.mutable_file_containing_extension()->set_extension_number(100);
    check_error(reflection.answer(request), kNotFound, "message type 'idgen.Nope' not found");
  }

  SUBCASE("file_containing_extension of an extension nobody declares") {
    request.mutable_file_containing_extension()->set_containing_type("google.protobuf.FieldOptions");
    request.mutable_file_containing_extension()->set_extension_number(54321);
    check_error(reflection.answer(request), kNotFound, "extension 54321 of 'google.protobuf.FieldOptions' not found");
  }
}

TEST_CASE("server::Reflection an empty request") {
  auto reflection = make_reflection();
  ServerReflectionRequest request;
  request.set_host("h");
  auto response = reflection.answer(request);
  CHECK(response.valid_host() == "h");
  CHECK(response.has_original_request());
  check_error(response, kInvalidArgument,
              "the reflection request sets none of file_by_filename, file_containing_symbol, "
              "file_containing_extension, all_extension_numbers_of_type and list_services");
}

TEST_CASE("server::Reflection answers from several threads at once") {
  const auto reflection = make_reflection();
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (size_t t = 0; t < wrong.size(); ++t) {
    threads.emplace_back([&reflection, &wrong, t] {
      for (int i = 0; i < 200; ++i) {
        ServerReflectionRequest request;
        request.set_file_containing_symbol(i % 2 == 0 ? "idgen.IdGen.Gen" : "grpc.health.v1.Health");
        auto response = reflection.answer(request);
        if (response.file_descriptor_response().file_descriptor_proto_size() != 1) ++wrong[t];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(wrong == std::vector<int>(4, 0));
}
