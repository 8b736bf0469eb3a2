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

/// What Gen and GenBatch share: a unary call that is also an IssueCall.
template <class Derived, class Request, class Response>
class UnaryIssueCall : public UnaryCall<Derived, Request, Response>, public IssueCall {
 public:
  void fail(const grpc::Status& status) override {
    this->service_.settle(*this);
    this->finish(status);
  }
  void refuse(const std::string& message, std::chrono::milliseconds retry_after) override {
    this->ctx_.AddTrailingMetadata(std::string(kRetryAfterKey), std::to_string(retry_after.count()));
    fail(unavailable_status(message));
  }
  std::chrono::system_clock::time_point deadline() const override { return this->ctx_.deadline(); }
  std::string peer() const override { return this->ctx_.peer(); }
  Queue& queue() override { return this->queue_; }

 protected:
  using UnaryCall<Derived, Request, Response>::UnaryCall;
  ~UnaryIssueCall() = default;
};

class GenCall final : public UnaryIssueCall<GenCall, idgen::IdRequest, idgen::IdResponse> {
 public:
  static constexpr Method kMethod = Method::kGen;
  GenCall(IdService& service, Queue& queue) : UnaryIssueCall(service, queue) {
    service.services().idgen.RequestGen(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                        static_cast<Tag*>(this));
  }
  void handle() { service_.issue(*this, 1); }
  void deliver(const Generator& generator, const Block& block) override {
    service_.settle(*this);
    response_.set_id(generator.id_at(block.first));
    finish(grpc::Status::OK);
  }
  const char* name() const override { return "Gen"; }
};

class BatchCall final : public UnaryIssueCall<BatchCall, idgen::BatchRequest, idgen::BatchResponse> {
 public:
  static constexpr Method kMethod = Method::kGenBatch;
  BatchCall(IdService& service, Queue& queue) : UnaryIssueCall(service, queue) {
    service.services().idgen.RequestGenBatch(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                             static_cast<Tag*>(this));
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
    auto* ids = response_.mutable_ids();
    ids->Resize(static_cast<int>(block.count), 0);
    generator.write_ids(block, ids->mutable_data());
    finish(grpc::Status::OK);
  }
  const char* name() const override { return "GenBatch"; }
};

class InfoCall final : public UnaryCall<InfoCall, idgen::InfoRequest, idgen::InfoResponse> {
 public:
  static constexpr Method kMethod = Method::kInfo;
  InfoCall(IdService& service, Queue& queue) : UnaryCall(service, queue) {
    service.services().idgen.RequestInfo(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                         static_cast<Tag*>(this));
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
