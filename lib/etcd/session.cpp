#include "etcd/session.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <map>

#include "core/parse.h"

namespace zaptid::etcd {

namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;
using etcdserverpb::TxnRequest;

void add_put(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const std::string& key,
             const std::string& value, int64_t lease) {
  auto* put = ops->Add()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
}

void add_range(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const std::string& key) {
  ops->Add()->mutable_request_range()->set_key(key);
}

/// The first key-value of the op-th response of a transaction, if it was a range that found one.
const etcdserverpb::KeyValue* found(const etcdserverpb::TxnResponse& resp, int op) {
  if (op >= resp.responses_size()) return nullptr;
  const auto& r = resp.responses(op).response_range();
  return r.kvs_size() > 0 ? &r.kvs(0) : nullptr;
}

/// Writes one lane's high-water cursor while the lease still holds its id (see Session::reserver).
class HighWaterReserver final : public Reserver {
 public:
  HighWaterReserver(Client& client, std::string prefix, uint64_t id, int64_t lease, Holder holder)
      : client_(client), prefix_(std::move(prefix)), id_(id), lease_(lease), holder_(std::move(holder)) {}

  Status reserve_through(Cursor high) override {
    // The compare makes the write atomic with "the machines key is still bound to our lease":
    // once the lease expired (and the key with it) or another server claimed the id, nothing
    // this process writes can move the next holder's starting point.
    TxnRequest txn;
    auto* cmp = txn.add_compare();
    cmp->set_key(machine_key(prefix_, id_));
    cmp->set_target(Compare::LEASE);
    cmp->set_result(Compare::EQUAL);
    cmp->set_lease(lease_);
    holder_.high_water = high;
    add_put(txn.mutable_success(), highwater_key(prefix_, id_), format_high_water(high), 0);
    add_put(txn.mutable_success(), machine_key(prefix_, id_), format_holder(holder_), lease_);
    auto resp = client_.txn(txn);
    if (!resp) return resp.error();
    if (!resp->succeeded()) {
      return unavailable(fmt::format("machine id {} is no longer held by etcd lease {:x}", id_, lease_));
    }
    return Ok{};
  }

 private:
  Client& client_;
  std::string prefix_;
  uint64_t id_;
  int64_t lease_;
  Holder holder_;
};

}  // namespace

Session::Session(SessionOptions options, std::unique_ptr<Client> client)
    : opt_(std::move(options)), client_(std::move(client)) {}

Session::~Session() { stop(); }

void Session::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
  }
  cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  if (monitor_.joinable()) monitor_.join();
}

int64_t Session::steady_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Why a fifth of the TTL, at least 500 ms: our deadline runs from when the keep-alive was *sent*,
// etcd's from when its leader processed it, so etcd never expires the lease before our deadline
// but for clock-rate differences (ppm). The margin covers the monitor's tick (<= 100 ms), requests
// already past the check, the process being descheduled and those clock rates; and with keep-alives
// every TTL/3, two of them may fail before issuing stops, so one slow round trip does not flap.
std::chrono::milliseconds Session::margin() const { return std::max(std::chrono::milliseconds(500), ttl() / 5); }

bool Session::confirmed() const { return steady_ms() < confirmed_until_.load() - margin().count(); }

std::chrono::milliseconds Session::since_confirmed() const {
  return std::chrono::milliseconds(steady_ms() - confirmed_at_.load());
}

void Session::confirm(int64_t sent, int64_t ttl_ms) {
  if (sent + ttl_ms > confirmed_until_.load()) confirmed_until_.store(sent + ttl_ms);
  if (sent > confirmed_at_.load()) confirmed_at_.store(sent);
}

std::vector<Claim> Session::claims() const {
  std::lock_guard lock(mu_);
  return claims_;
}

Result<std::unique_ptr<Session>> Session::open(SessionOptions options) {
  auto client = Client::create(options.client);
  if (!client) return client.error();
  std::unique_ptr<Session> s(new Session(std::move(options), std::move(*client)));
  const auto t0 = s->steady_ms();
  if (auto st = s->claim({}); !st) return st.error();
  s->confirm(t0, s->ttl_ms_.load());
  return s;
}

Status Session::claim(const std::vector<uint64_t>& prefer) {
  auto grant = client_->grant(opt_.ttl.count());
  if (!grant) return grant.error();
  const int64_t lease = grant->id();
  ttl_ms_.store(grant->ttl() * 1000);
  auto st = claim_under(lease, prefer);
  // Whatever this lease claimed before failing is given back now rather than after the TTL.
  if (!st) (void)client_->revoke(lease);
  return st;
}

Status Session::claim_under(int64_t lease, const std::vector<uint64_t>& prefer) {
  const std::string machines = opt_.prefix + "machines/";
  RangeRequest held;
  held.set_key(machines);
  held.set_range_end(prefix_end(machines));
  auto current = client_->range(held);
  if (!current) return current.error();
  std::map<uint64_t, Holder> taken;
  for (const auto& kv : current->kvs()) {
    auto id =
        parse_unsigned(std::string_view(kv.key()).substr(machines.size()), std::numeric_limits<uint64_t>::max(), "key");
    if (!id) continue;
    auto h = parse_holder(kv.value());
    taken[*id] = h ? *h : Holder{};
  }

  std::vector<uint64_t> candidates;
  for (auto id : prefer) {
    if (id >= opt_.range.first && id <= opt_.range.last) candidates.push_back(id);
  }
  std::vector<Claim> got;
  auto try_id = [&](uint64_t id) -> Status {
    if (taken.count(id) != 0 || std::any_of(got.begin(), got.end(), [&](const Claim& c) { return c.id == id; })) {
      return Ok{};
    }
    TxnRequest txn;
    auto* cmp = txn.add_compare();
    cmp->set_key(machine_key(opt_.prefix, id));
    cmp->set_target(Compare::CREATE);
    cmp->set_result(Compare::EQUAL);
    cmp->set_create_revision(0);
    Holder h = opt_.holder;
    // Read the high-water in the same transaction: no holder can move it in between.
    add_range(txn.mutable_success(), highwater_key(opt_.prefix, id));
    add_put(txn.mutable_success(), machine_key(opt_.prefix, id), format_holder(h), lease);
    add_range(txn.mutable_failure(), machine_key(opt_.prefix, id));
    auto resp = client_->txn(txn);
    if (!resp) return resp.error();
    if (!resp->succeeded()) {
      const auto* kv = found(*resp, 0);
      auto holder = kv != nullptr ? parse_holder(kv->value()) : Result<Holder>(Holder{});
      taken[id] = holder ? *holder : Holder{};
      return Ok{};
    }
    Claim c{id, std::nullopt};
    if (const auto* kv = found(*resp, 0); kv != nullptr) {
      auto hw = parse_high_water(kv->value(), highwater_key(opt_.prefix, id));
      if (!hw) return hw.error();
      c.start_after = *hw;
    }
    got.push_back(c);
    return Ok{};
  };
  for (auto id : candidates) {
    if (got.size() == opt_.count) break;
    if (auto st = try_id(id); !st) return st;
  }
  for (uint64_t id = opt_.range.first; got.size() < opt_.count; ++id) {
    if (auto st = try_id(id); !st) return st;
    if (id == opt_.range.last) break;
  }
  if (got.size() < opt_.count) {
    std::string holders;
    for (const auto& [id, h] : taken) {
      if (id < opt_.range.first || id > opt_.range.last) continue;
      if (!holders.empty()) holders += ", ";
      holders += describe_holder(id, h);
    }
    return unavailable(fmt::format("no free machine id in {}-{} under {} (needed {}, found {}); held: {}",
                                   opt_.range.first, opt_.range.last, machines, opt_.count, got.size(), holders));
  }
  {
    std::lock_guard lock(mu_);
    claims_ = std::move(got);
  }
  lease_.store(lease);
  return Ok{};
}

std::unique_ptr<Reserver> Session::reserver(size_t lane) {
  std::lock_guard lock(mu_);
  Holder h = opt_.holder;
  return std::make_unique<HighWaterReserver>(*client_, opt_.prefix, claims_.at(lane).id, lease_.load(), h);
}

void Session::start(SessionEvents events) {
  events_ = std::move(events);
  keeper_ = std::thread([this] { keep_alive_loop(); });
  monitor_ = std::thread([this] { monitor_loop(); });
}

bool Session::wait_stop(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, d, [this] { return stop_; });
}

void Session::keep_alive_loop() {
  size_t ep = client_->preferred();
  int failures = 0;
  for (;;) {
    const bool lost = run_stream(ep);
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
    }
    if (lost) {
      reclaim();
      ep = client_->preferred();
      failures = 0;
      continue;
    }
    if (failures++ % 20 == 0) {
      spdlog::debug("etcd keep-alive stream to {} ended; trying the next endpoint", client_->endpoint(ep));
    }
    ep = (ep + 1) % client_->endpoint_count();
    if (wait_stop(std::chrono::milliseconds(100))) return;
  }
}

bool Session::run_stream(size_t ep) {
  grpc::ClientContext ctx;
  {
    std::lock_guard lock(mu_);
    if (stop_) return false;
    stream_ctx_ = &ctx;
  }
  // Opening the stream can block too (a member that accepts TCP but never answers), so the
  // monitor's clock starts before it.
  int64_t sent = steady_ms();
  auto sent_at = std::chrono::steady_clock::now();  // for the round trip, finer than `sent`
  pending_since_.store(sent);
  auto stream = client_->lease_stub(ep).LeaseKeepAlive(&ctx);
  bool lost = false;
  const auto interval = std::max(std::chrono::milliseconds(200), ttl() / 3);
  for (bool first = true;; first = false) {
    etcdserverpb::LeaseKeepAliveRequest req;
    req.set_id(lease_.load());
    etcdserverpb::LeaseKeepAliveResponse resp;
    if (!first) {
      sent = steady_ms();
      sent_at = std::chrono::steady_clock::now();
      pending_since_.store(sent);
    }
    if (!stream->Write(req) || !stream->Read(&resp)) {
      bool stopping = false;
      {
        std::lock_guard lock(mu_);
        stopping = stop_;
      }
      if (!stopping && events_.on_keep_alive_failed) events_.on_keep_alive_failed();
      break;
    }
    pending_since_.store(0);
    if (resp.ttl() <= 0) {
      lost = true;
      break;
    }
    confirm(sent, resp.ttl() * 1000);
    if (events_.on_keep_alive) events_.on_keep_alive(std::chrono::steady_clock::now() - sent_at);
    client_->prefer(ep);
    cv_.notify_all();
    if (wait_stop(interval)) break;
  }
  pending_since_.store(0);
  {
    std::lock_guard lock(mu_);
    stream_ctx_ = nullptr;
  }
  ctx.TryCancel();
  (void)stream->Finish();
  return lost;
}

void Session::reclaim() {
  std::vector<uint64_t> prev;
  for (const auto& c : claims()) prev.push_back(c.id);
  confirmed_until_.store(0);
  spdlog::warn("etcd lease {:x} expired; claiming machine ids again before issuing", lease_.load());
  for (;;) {
    const int64_t t0 = steady_ms();
    auto st = claim(prev);
    if (st) {
      const auto now = claims();
      std::string ids;
      for (const auto& c : now) {
        if (!ids.empty()) ids += ',';
        ids += std::to_string(c.id);  // appended, not "," + string: g++ 12 -O3 warns falsely (-Wrestrict)
      }
      // The new generators are in place before the line says so: whoever waits for it (an
      // operator, tests/cli/test_cluster.py) then never meets the old lease's generators.
      if (events_.on_reclaimed) events_.on_reclaimed(now);
      spdlog::info("claimed machine id {} again under etcd lease {:x}", ids, lease_.load());
      confirm(t0, ttl_ms_.load());
      cv_.notify_all();
      return;
    }
    spdlog::warn("claiming machine ids again failed: {}", st.message());
    if (wait_stop(std::chrono::milliseconds(500))) return;
  }
}

void Session::monitor_loop() {
  const auto tick = std::min(std::chrono::milliseconds(100), margin() / 4);
  const auto stuck_after = std::clamp(ttl() / 4, std::chrono::milliseconds(300), std::chrono::milliseconds(2000));
  bool serving = true;
  while (!wait_stop(tick)) {
    const int64_t now = steady_ms();
    const int64_t pending = pending_since_.load();
    if (pending != 0 && now - pending > stuck_after.count()) {
      // etcd accepted the connection but does not answer (frozen, partitioned): drop the
      // stream so the keeper tries the next endpoint.
      std::lock_guard lock(mu_);
      if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
    }
    const bool ok = confirmed();
    if (ok == serving) continue;
    serving = ok;
    if (ok) {
      spdlog::info("etcd lease {:x} confirmed; issuing IDs again", lease_.load());
      if (events_.on_available) events_.on_available();
    } else {
      const auto reason = fmt::format("etcd lease {:x} not confirmed within the last {}ms (TTL {}s); not issuing IDs",
                                      lease_.load(), (ttl() - margin()).count(), ttl().count() / 1000);
      spdlog::warn("{}", reason);
      if (events_.on_unavailable) events_.on_unavailable(reason);
    }
  }
}

Status Session::close(const std::vector<std::optional<Cursor>>& last) {
  stop();
  Status result = Ok{};
  const auto held = claims();
  for (size_t i = 0; i < held.size() && i < last.size(); ++i) {
    if (!last[i]) continue;
    auto st = reserver(i)->reserve_through(*last[i]);
    if (!st && result) result = st;
  }
  if (auto st = client_->revoke(lease_.load()); !st && result) result = st;
  return result;
}

}  // namespace zaptid::etcd
