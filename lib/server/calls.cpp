#include "server/calls.h"

#include <fmt/format.h>

#include "core/parse.h"

namespace zaptid::server {

namespace {

// Calls requested ahead on each queue, per method: gRPC hands an incoming call to a requested
// one at once and queues it otherwise. Each match requests a replacement.
constexpr int kGenAhead = 32;
constexpr int kBatchAhead = 8;
constexpr int kOtherAhead = 2;

}  // namespace

grpc::Status unavailable_status(std::string message) { return {grpc::StatusCode::UNAVAILABLE, std::move(message)}; }

IdGenService::IdGenService() {
  // The order is the indices' (kGen, kGenBatch, kInfo). No handler: the methods are asynchronous.
  using grpc::internal::RpcMethod;
  using grpc::internal::RpcServiceMethod;
  AddMethod(new RpcServiceMethod("/idgen.IdGen/Gen", RpcMethod::BIDI_STREAMING, nullptr));
  AddMethod(new RpcServiceMethod("/idgen.IdGen/GenBatch", RpcMethod::BIDI_STREAMING, nullptr));
  AddMethod(new RpcServiceMethod("/idgen.IdGen/Info", RpcMethod::NORMAL_RPC, nullptr));
  MarkMethodRaw(kGen);
  MarkMethodRaw(kGenBatch);
  MarkMethodAsync(kInfo);
}

/// A unary call: requested in the constructor, handled once matched, deleted once finished.
/// Derived classes implement handle(), which must lead to exactly one finish(), from any thread.
template <class Derived, class Request, class Response>
class UnaryCall : public Tag {
 public:
  void proceed(bool ok) override {
    if (finishing_ || !ok) {  // finished (sent or not), or never matched: the server is stopping
      delete static_cast<Derived*>(this);
      return;
    }
    live_.matched();
    service_.request<Derived>(queue_);
    started_ = std::chrono::steady_clock::now();
    service_.metrics().started(Derived::kMethod);
    static_cast<Derived*>(this)->handle();
  }

 protected:
  UnaryCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {}
  ~UnaryCall() = default;

  void finish(const grpc::Status& status) {
    finishing_ = true;
    service_.metrics().handled(Derived::kMethod, status.error_code(), std::chrono::steady_clock::now() - started_);
    if (status.ok()) {
      writer_.Finish(response_, status, static_cast<Tag*>(this));
    } else {
      writer_.FinishWithError(status, static_cast<Tag*>(this));
    }
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> writer_{&ctx_};
  bool finishing_ = false;
  std::chrono::steady_clock::time_point started_;
  Live live_;
};

namespace {

/// What Gen and GenBatch share: matched without their request (IdGenService), which they read
/// themselves, then handle() leads to exactly one deliver() or fail(), from any thread; the
/// object is deleted once the answer is sent (or the call is gone).
template <class Derived, class Request>
class IssueCallBase : public Tag, public IssueCall {
 public:
  void proceed(bool ok) override {
    switch (state_) {
      case State::kRequested:
        if (!ok) break;  // never matched: the server is stopping
        live_.matched();
        service_.request<Derived>(queue_);
        started_ = std::chrono::steady_clock::now();
        service_.metrics().started(Derived::kMethod);
        state_ = State::kReading;
        stream_.Read(&request_bytes_, static_cast<Tag*>(this));
        return;
      case State::kReading:
        if (!ok) {
          // No request. When the deadline passed first, gRPC has already answered the client
          // DEADLINE_EXCEEDED and reset the stream; a status of ours would go out as a second
          // answer on the closed stream (gRPC's unary path sent INTERNAL "Unable to parse
          // request" there), so the call just ends. (1 ms: gRPC's timer and the deadline we see
          // are on different clocks.) Otherwise the client half-closed without a request, or
          // reset the call, and then hears nothing anyway.
          if (ctx_.deadline() - std::chrono::system_clock::now() < std::chrono::milliseconds(1)) {
            record({grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed before the request arrived"});
            break;
          }
          finish({grpc::StatusCode::INVALID_ARGUMENT, "the call ended without a request"});
          return;
        }
        if (!grpc::SerializationTraits<Request>::Deserialize(&request_bytes_, &request_).ok()) {
          finish({grpc::StatusCode::INVALID_ARGUMENT,
                  fmt::format("the request is not an {}", Request::descriptor()->full_name())});
          return;
        }
        state_ = State::kHandling;
        static_cast<Derived*>(this)->handle();
        return;
      case State::kHandling:  // not waited for: handle() always ends in finish()
      case State::kFinishing:
        break;
    }
    delete static_cast<Derived*>(this);
  }

  void fail(const grpc::Status& status) override {
    service_.settle(*this);
    finish(status);
  }
  void refuse(const std::string& message, std::chrono::milliseconds retry_after) override {
    ctx_.AddTrailingMetadata(std::string(kRetryAfterKey), std::to_string(retry_after.count()));
    fail(unavailable_status(message));
  }
  std::chrono::system_clock::time_point deadline() const override { return ctx_.deadline(); }
  std::string peer() const override { return ctx_.peer(); }
  Queue& queue() override { return queue_; }

 protected:
  IssueCallBase(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {}
  ~IssueCallBase() = default;

  /// Sends `response` with OK, once.
  template <class Response>
  void answer(const Response& response) {
    bool own = false;
    grpc::SerializationTraits<Response>::Serialize(response, &response_bytes_, &own);
    record(grpc::Status::OK);
    stream_.WriteAndFinish(response_bytes_, grpc::WriteOptions(), grpc::Status::OK, static_cast<Tag*>(this));
  }
  /// Ends the call with an error status, once.
  void finish(const grpc::Status& status) {
    record(status);
    stream_.Finish(status, static_cast<Tag*>(this));
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  IdGenService::RawStream stream_{&ctx_};
  Request request_;

 private:
  enum class State { kRequested, kReading, kHandling, kFinishing };
  void record(const grpc::Status& status) {
    state_ = State::kFinishing;
    service_.metrics().handled(Derived::kMethod, status.error_code(), std::chrono::steady_clock::now() - started_);
  }

  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_bytes_;
  State state_ = State::kRequested;
  std::chrono::steady_clock::time_point started_;
  Live live_;
};

class GenCall final : public IssueCallBase<GenCall, idgen::IdRequest> {
 public:
  static constexpr Method kMethod = Method::kGen;
  GenCall(IdService& service, Queue& queue) : IssueCallBase(service, queue) {
    service.services().idgen.RequestGen(&ctx_, &stream_, queue.cq.get(), static_cast<Tag*>(this));
  }
  void handle() { service_.issue(*this, 1); }
  void deliver(const Generator& generator, const Block& block) override {
    service_.settle(*this);
    idgen::IdResponse response;
    response.set_id(generator.id_at(block.first));
    answer(response);
  }
  const char* name() const override { return "Gen"; }
};

class BatchCall final : public IssueCallBase<BatchCall, idgen::BatchRequest> {
 public:
  static constexpr Method kMethod = Method::kGenBatch;
  BatchCall(IdService& service, Queue& queue) : IssueCallBase(service, queue) {
    service.services().idgen.RequestGenBatch(&ctx_, &stream_, queue.cq.get(), static_cast<Tag*>(this));
  }
  void handle() {
    const uint32_t count = request_.count();
    if (count == 0 || count > service_.max_batch()) {
      finish({grpc::StatusCode::INVALID_ARGUMENT,
              fmt::format("count must be from 1 to {} (the server's --max-batch), not {}", service_.max_batch(),
                          count)});
      return;
    }
    service_.issue(*this, count);
  }
  void deliver(const Generator& generator, const Block& block) override {
    service_.settle(*this);
    idgen::BatchResponse response;
    auto* ids = response.mutable_ids();
    ids->Resize(static_cast<int>(block.count), 0);
    generator.write_ids(block, ids->mutable_data());
    answer(response);
  }
  const char* name() const override { return "GenBatch"; }
};

class InfoCall final : public UnaryCall<InfoCall, idgen::InfoRequest, idgen::InfoResponse> {
 public:
  static constexpr Method kMethod = Method::kInfo;
  InfoCall(IdService& service, Queue& queue) : UnaryCall(service, queue) {
    service.services().idgen.RequestInfo(&ctx_, &request_, &writer_, queue.cq.get(), static_cast<Tag*>(this));
  }
  void handle() {
    service_.fill_info(response_);
    finish(grpc::Status::OK);
  }
};

class CheckCall final : public UnaryCall<CheckCall, health::HealthCheckRequest, health::HealthCheckResponse> {
 public:
  static constexpr Method kMethod = Method::kHealthCheck;
  CheckCall(IdService& service, Queue& queue) : UnaryCall(service, queue) {
    service.services().health.RequestCheck(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                           static_cast<Tag*>(this));
  }
  void handle() {
    const int status = service_.health_status(request_.service());
    if (status == health::HealthCheckResponse::SERVICE_UNKNOWN) {
      finish({grpc::StatusCode::NOT_FOUND, fmt::format("unknown service {}", quote_input(request_.service()))});
      return;
    }
    response_.set_status(static_cast<health::HealthCheckResponse::ServingStatus>(status));
    finish(grpc::Status::OK);
  }
};

/// ServerReflectionInfo: a stream of requests, each answered in turn, until the client closes.
class ReflectionCall final : public Tag {
 public:
  ReflectionCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {
    service.services().reflection.RequestServerReflectionInfo(&ctx_, &stream_, queue.cq.get(), queue.cq.get(),
                                                              static_cast<Tag*>(this));
  }
  void proceed(bool ok) override {
    switch (state_) {
      case State::kRequested:
        if (!ok) break;
        live_.matched();
        service_.request<ReflectionCall>(queue_);
        read();
        return;
      case State::kReading:
        if (!ok) {  // the client closed its side (or the call broke): done
          finish();
          return;
        }
        // Parsed here rather than by gRPC, which would end the call like a client's half-close
        // (status OK, no answer) when the bytes are not a request.
        if (!grpc::SerializationTraits<reflection::ServerReflectionRequest>::Deserialize(&request_bytes_, &request_)
                 .ok()) {
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "the request is not a grpc.reflection.v1alpha.ServerReflectionRequest"),
                         static_cast<Tag*>(this));
          return;
        }
        {
          bool own = false;
          response_bytes_.Clear();  // the serializer wants an empty buffer; the last Write copied it
          const auto response = service_.services().answers.answer(request_);
          grpc::SerializationTraits<reflection::ServerReflectionResponse>::Serialize(response, &response_bytes_, &own);
        }
        state_ = State::kWriting;
        stream_.Write(response_bytes_, static_cast<Tag*>(this));
        return;
      case State::kWriting:
        if (ok) {
          read();
        } else {
          finish();
        }
        return;
      case State::kFinishing:
        break;
    }
    delete this;
  }

 private:
  enum class State { kRequested, kReading, kWriting, kFinishing };
  void read() {
    state_ = State::kReading;
    stream_.Read(&request_bytes_, static_cast<Tag*>(this));
  }
  void finish() {
    state_ = State::kFinishing;
    stream_.Finish(grpc::Status::OK, static_cast<Tag*>(this));
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer> stream_{&ctx_};
  grpc::ByteBuffer request_bytes_;
  grpc::ByteBuffer response_bytes_;
  reflection::ServerReflectionRequest request_;
  State state_ = State::kRequested;
  Live live_;
};

}  // namespace

void request_calls(IdService& service, Queue& q) {
  for (int k = 0; k < kGenAhead; ++k) service.request<GenCall>(q);
  for (int k = 0; k < kBatchAhead; ++k) service.request<BatchCall>(q);
  for (int k = 0; k < kOtherAhead; ++k) {
    service.request<InfoCall>(q);
    service.request<CheckCall>(q);
    service.request<WatchCall>(q);
    service.request<ReflectionCall>(q);
  }
}

}  // namespace zaptid::server
