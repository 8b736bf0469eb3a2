// The calls IdService serves on its queues, as far as the service itself sees them: the IDs
// calls (IssueCall), health Watch, and requesting each method's calls on a queue. Gen, GenBatch,
// Info, health Check and reflection are in calls.cpp.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "idgen.grpc.pb.h"
#include "server/id_service.h"
#include "server/queue.h"
#include "server/reflection.h"

namespace zaptid::server {

namespace health = grpc::health::v1;
namespace reflection = grpc::reflection::v1alpha;

/// UNAVAILABLE with `message`.
grpc::Status unavailable_status(std::string message);

/// Requests each method's calls ahead on `queue` (IdService::start()).
void request_calls(IdService& service, Queue& queue);

/// Counts a call from its match until its object is gone (IdService::drain() waits for none), so
/// no queue is shut down while a call may still start an operation on it: gRPC aborts on that.
class Live {
 public:
  explicit Live(IdService& service) : service_(service) {}
  ~Live() {
    if (counted_) service_.call_ended();
  }
  Live(const Live&) = delete;
  Live& operator=(const Live&) = delete;
  void matched() {
    counted_ = true;
    service_.call_started();
  }

 private:
  IdService& service_;
  bool counted_ = false;
};

/// idgen.IdGen as the server registers it. Gen and GenBatch are registered as streams of raw
/// messages, so that gRPC hands a call over without reading its request first: on its unary
/// path, a call whose deadline passed while the request was still being read was ended twice on
/// the wire, DEADLINE_EXCEEDED and then INTERNAL "Unable to parse request" (from gRPC's
/// PayloadAsyncRequest), and a client could see the second. The calls read the request
/// themselves and end such a call once, DEADLINE_EXCEEDED. On the wire both stay unary: one
/// request, one response. Info is an ordinary asynchronous unary method.
class IdGenService final : public grpc::Service {
 public:
  using RawStream = grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;
  IdGenService();
  void RequestGen(grpc::ServerContext* ctx, RawStream* stream, grpc::ServerCompletionQueue* cq, void* tag) {
    RequestAsyncBidiStreaming(kGen, ctx, stream, cq, cq, tag);
  }
  void RequestGenBatch(grpc::ServerContext* ctx, RawStream* stream, grpc::ServerCompletionQueue* cq, void* tag) {
    RequestAsyncBidiStreaming(kGenBatch, ctx, stream, cq, cq, tag);
  }
  void RequestInfo(grpc::ServerContext* ctx, idgen::InfoRequest* request,
                   grpc::ServerAsyncResponseWriter<idgen::InfoResponse>* writer, grpc::ServerCompletionQueue* cq,
                   void* tag) {
    RequestAsyncUnary(kInfo, ctx, request, writer, cq, cq, tag);
  }

 private:
  enum : int { kGen, kGenBatch, kInfo };
};

struct Services {
  explicit Services(Reflection r) : answers(std::move(r)) {}
  IdGenService idgen;
  health::Health::AsyncService health;
  // Raw: ReflectionCall parses the requests itself, to answer INVALID_ARGUMENT to bad ones.
  reflection::ServerReflection::WithRawMethod_ServerReflectionInfo<reflection::ServerReflection::Service> reflection;
  const Reflection answers;
};

/// A call that asks for IDs (Gen or GenBatch): IdService::issue() reserves them and then calls
/// deliver() or fail(), now or from another thread.
class IssueCall {
 public:
  virtual void deliver(const Generator& generator, const Block& block) = 0;
  virtual void fail(const grpc::Status& status) = 0;
  /// Fails with UNAVAILABLE over capacity: `message`, and the trailing metadata retry-after-ms.
  virtual void refuse(const std::string& message, std::chrono::milliseconds retry_after) = 0;
  virtual std::chrono::system_clock::time_point deadline() const = 0;
  /// The connection the call came on (the key of its fair share).
  virtual std::string peer() const = 0;
  virtual const char* name() const = 0;
  /// The queue whose thread serves this call.
  virtual Queue& queue() = 0;

  /// The IDs admission counted for this call against its peer's share, until it is settled.
  uint64_t admitted = 0;
  std::string admitted_peer;

 protected:
  ~IssueCall() = default;
};

/// Health Watch: writes the service's status at once and again on every change, until the
/// client cancels or the server stops (which ends the stream with UNAVAILABLE). One write is in
/// flight at a time; a change during a write is sent after it. The object goes away once gRPC
/// reported the call done and no operation of ours is outstanding.
class WatchCall final : public Tag {
 public:
  WatchCall(IdService& service, Queue& queue) : service_(service), queue_(queue), live_(service) {
    ctx_.AsyncNotifyWhenDone(static_cast<Tag*>(&done_));
    service.services().health.RequestWatch(&ctx_, &request_, &writer_, queue.cq.get(), queue.cq.get(),
                                           static_cast<Tag*>(this));
  }
  const std::string& service_name() const { return request_.service(); }

  /// Sends `status` unless it is what the client last got. Called under the service's lock.
  void notify(int status) {
    std::lock_guard lock(mu_);
    wanted_ = status;
    pump();
  }
  /// Ends the stream with UNAVAILABLE after any pending write. Called under the service's lock.
  void end() {
    std::lock_guard lock(mu_);
    ending_ = true;
    pump();
  }

  void proceed(bool ok) override {
    bool gone = false;
    {
      std::unique_lock lock(mu_);
      if (!matched_) {
        if (!ok) {  // never matched: the server is stopping, and no done event will come
          lock.unlock();
          delete this;
          return;
        }
        matched_ = true;
        live_.matched();
        lock.unlock();
        service_.request<WatchCall>(queue_);
        service_.watch(this);  // reports the current status through notify()
        return;
      }
      busy_ = false;
      if (!ok) broken_ = true;  // the call is over; the done event follows
      pump();
      gone = done_seen_ && !busy_;
    }
    if (gone) delete this;
  }

 private:
  // The done event: the call ended (finished or cancelled).
  class Done final : public Tag {
   public:
    explicit Done(WatchCall& call) : call_(call) {}
    void proceed(bool /*ok*/) override { call_.on_done(); }

   private:
    WatchCall& call_;
  };

  void on_done() {
    service_.unwatch(this);  // before taking mu_: the service's lock comes first
    bool gone = false;
    {
      std::lock_guard lock(mu_);
      done_seen_ = true;
      gone = !busy_;
    }
    if (gone) delete this;
  }

  // Starts the next operation if none is in flight. Under mu_.
  void pump() {
    if (busy_ || finished_ || broken_ || done_seen_) return;
    if (wanted_ >= 0 && wanted_ != sent_) {
      response_.set_status(static_cast<health::HealthCheckResponse::ServingStatus>(wanted_));
      sent_ = wanted_;
      busy_ = true;
      writer_.Write(response_, static_cast<Tag*>(this));
    } else if (ending_) {
      finished_ = true;
      busy_ = true;
      writer_.Finish(unavailable_status("the server is shutting down"), static_cast<Tag*>(this));
    }
  }

  IdService& service_;
  Queue& queue_;
  grpc::ServerContext ctx_;
  health::HealthCheckRequest request_;
  health::HealthCheckResponse response_;
  grpc::ServerAsyncWriter<health::HealthCheckResponse> writer_{&ctx_};
  Done done_{*this};
  std::mutex mu_;
  bool matched_ = false;
  bool busy_ = false;       // a Write or Finish is in flight
  bool broken_ = false;     // a Write failed: the client is gone
  bool finished_ = false;   // Finish was started
  bool ending_ = false;     // the server is stopping
  bool done_seen_ = false;  // gRPC reported the call done
  int wanted_ = -1;
  int sent_ = -1;
  Live live_;
};

}  // namespace zaptid::server
