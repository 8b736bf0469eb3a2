#include "etcd/session.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <map>

#include "core/parse.h"
#include "etcd/highwater.h"

namespace zaptid::etcd {

using etcdserverpb::RangeRequest;

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
    // Repeating this request (the client does, on the next endpoint, when one times out) is
    // harmless: see claim_txn().
    auto resp = client_->txn(claim_txn(opt_.prefix, id, lease, opt_.holder));
    if (!resp) return resp.error();
    auto outcome = read_claim(*resp, opt_.prefix, id, lease);
    if (!outcome) return outcome.error();
    if (!outcome->ours) {
      taken[id] = outcome->holder;
      return Ok{};
    }
    Claim c{id, outcome->start_after, outcome->highwater_rev};
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
  std::vector<std::shared_ptr<HighWaterRecord>> records;
  for (const auto& c : got) {
    records.push_back(std::make_shared<HighWaterRecord>(*client_, opt_.prefix, c.id, lease, opt_.holder,
                                                        c.highwater_rev, c.start_after));
  }
  {
    std::lock_guard lock(mu_);
    claims_ = std::move(got);
    records_ = std::move(records);
  }
  lease_.store(lease);
  return Ok{};
}

std::unique_ptr<Reserver> Session::reserver(size_t lane) {
  std::lock_guard lock(mu_);
  return std::make_unique<HighWaterReserver>(records_.at(lane));
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
    stuck_ = false;
  }
  // Opening the stream can block too (a member that accepts TCP but never answers), so the
  // monitor's clock starts before it.
  int64_t sent = steady_ms();
  auto sent_at = std::chrono::steady_clock::now();  // for the round trip, finer than `sent`
  pending_since_.store(sent);
  auto stream = client_->lease_stub(ep).LeaseKeepAlive(&ctx);
  bool lost = false;
  bool failed = false;
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
      failed = true;
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
  {
    std::lock_guard lock(mu_);
    stream_ctx_ = nullptr;
  }
  pending_since_.store(0);
  ctx.TryCancel();
  const auto status = stream->Finish();
  if (failed) {
    bool stopping = false;
    {
      std::lock_guard lock(mu_);
      stopping = stop_;
      if (stuck_) {
        last_error_ = fmt::format("keep-alive to {}: no answer within {}", client_->endpoint(ep),
                                  format_duration_ms(stuck_after().count()));
      } else {
        last_error_ = fmt::format("keep-alive to {}: {}", client_->endpoint(ep),
                                  status.error_message().empty() ? "stream ended" : status.error_message());
      }
      stuck_ = false;
    }
    if (!stopping && events_.on_keep_alive_failed) events_.on_keep_alive_failed();
  }
  return lost;
}

void Session::reclaim() {
  std::vector<uint64_t> prev;
  for (const auto& c : claims()) prev.push_back(c.id);
  confirmed_until_.store(0);
  spdlog::warn("etcd lease {:x} expired; claiming machine ids again before issuing", lease_.load());
  const int64_t since = steady_ms();
  int64_t reported_at = 0;
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
    if (const int64_t now = steady_ms(); reported_at == 0 || now - reported_at >= 10'000) {
      reported_at = now;
      spdlog::warn("claiming machine ids again failed, for {} now: {}", format_duration_ms(now - since), st.message());
    }
    if (wait_stop(std::chrono::milliseconds(500))) return;
  }
}

std::string Session::last_error() const {
  std::string keep_alive;
  {
    std::lock_guard lock(mu_);
    keep_alive = last_error_;
  }
  const auto call = client_->last_error();
  if (keep_alive.empty()) return call.empty() ? "no error reported" : call;
  return call.empty() ? keep_alive : keep_alive + "; " + call;
}

// A keep-alive with no answer for a third of the TTL is dropped and sent again on the next
// endpoint (a member that accepts connections but does not answer: frozen, partitioned). Not
// sooner: over a slow link (1 s round trips with loss) answers do come, only late, and a stream
// reopened elsewhere costs connection set-up round trips of its own.
std::chrono::milliseconds Session::stuck_after() const { return std::max(std::chrono::milliseconds(300), ttl() / 3); }

void Session::monitor_loop() {
  const auto tick = std::min(std::chrono::milliseconds(100), margin() / 4);
  const auto stuck_after = this->stuck_after();
  constexpr int64_t kRepeatEveryMs = 10'000;  // how often an outage is reported again
  bool serving = true;
  int64_t out_since = 0;
  int64_t reported_at = 0;
  while (!wait_stop(tick)) {
    const int64_t now = steady_ms();
    const int64_t pending = pending_since_.load();
    if (pending != 0 && now - pending > stuck_after.count()) {
      std::lock_guard lock(mu_);
      if (stream_ctx_ != nullptr) {
        stuck_ = true;
        stream_ctx_->TryCancel();
      }
    }
    const bool ok = confirmed();
    if (ok == serving) {
      if (!ok && now - reported_at >= kRepeatEveryMs) {
        reported_at = now;
        spdlog::warn("etcd lease {:x} still not confirmed, for {} (endpoints {}); not issuing IDs; last error: {}",
                     lease_.load(), format_duration_ms(now - out_since), endpoints(), last_error());
      }
      continue;
    }
    serving = ok;
    if (ok) {
      spdlog::info("etcd lease {:x} confirmed again after {} without; issuing IDs again", lease_.load(),
                   format_duration_ms(now - out_since));
      if (events_.on_available) events_.on_available();
    } else {
      out_since = now;
      reported_at = now;
      const auto reason = fmt::format("etcd lease {:x} not confirmed within the last {}ms (TTL {}s); not issuing IDs",
                                      lease_.load(), (ttl() - margin()).count(), ttl().count() / 1000);
      spdlog::warn("{} (endpoints {}; last error: {})", reason, endpoints(), last_error());
      if (events_.on_unavailable) events_.on_unavailable(reason);
    }
  }
}

std::string Session::endpoints() const {
  std::string out;
  for (size_t i = 0; i < client_->endpoint_count(); ++i) {
    if (!out.empty()) out += ',';
    out += client_->endpoint(i);
  }
  return out;
}

Status Session::close(const std::vector<std::optional<Cursor>>& last) {
  stop();
  Status result = Ok{};
  std::vector<std::shared_ptr<HighWaterRecord>> records;
  {
    std::lock_guard lock(mu_);
    records = records_;
  }
  for (size_t i = 0; i < records.size() && i < last.size(); ++i) {
    if (!last[i]) continue;
    auto st = records[i]->release(*last[i]);
    if (!st && result) result = st;
  }
  if (auto st = client_->revoke(lease_.load()); !st && result) result = st;
  return result;
}

}  // namespace zaptid::etcd
