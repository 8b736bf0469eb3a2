// The compare-and-set writes of the etcd lease against a real etcd cluster (run by
// tests/cli/run_etcd_cas.py): a late copy of a reservation, the same write on a second endpoint,
// an outcome lost to a timeout, a repeated claim, and the clean release. Each test works under
// a prefix of its own.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "etcd/client.h"
#include "etcd/highwater.h"
#include "etcd/record.h"

using namespace zaptid;
using namespace zaptid::etcd;
using std::chrono::milliseconds;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE_MESSAGE(v != nullptr, name << " is not set: run this binary through tests/cli/run_etcd_cas.py");
  return v;
}

std::vector<std::string> members() { return parse_endpoints(env("ZAPTID_TEST_ETCD")).value(); }

std::unique_ptr<Client> client(std::vector<std::string> endpoints, milliseconds call_timeout = milliseconds(5000)) {
  ClientOptions o;
  o.endpoints = std::move(endpoints);
  o.call_timeout = call_timeout;
  auto c = Client::create(o);
  REQUIRE(c.ok());
  return std::move(*c);
}

std::string fresh_prefix() {
  static std::atomic<int> n{0};
  return "/cas-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "/";
}

struct Stored {
  std::optional<Cursor> value;
  int64_t mod_revision = 0;
  int64_t lease = 0;
};

Stored stored(Client& c, const std::string& key) {
  etcdserverpb::RangeRequest req;
  req.set_key(key);
  auto resp = c.range(req);
  REQUIRE(resp.ok());
  Stored s;
  if (resp->kvs_size() == 0) return s;
  const auto& kv = resp->kvs(0);
  s.mod_revision = kv.mod_revision();
  s.lease = kv.lease();
  auto v = parse_high_water(kv.value(), key);
  if (v) s.value = *v;
  return s;
}

int64_t grant(Client& c) {
  auto g = c.grant(30);
  REQUIRE(g.ok());
  return g->id();
}

Holder holder() {
  Holder h;
  h.host = "cas-test";
  h.pid = ::getpid();
  return h;
}

/// Claims `id` for `lease` and returns its record, as Session does.
std::shared_ptr<HighWaterRecord> claim(Client& c, const std::string& prefix, uint64_t id, int64_t lease) {
  auto resp = c.txn(claim_txn(prefix, id, lease, holder()));
  REQUIRE(resp.ok());
  auto outcome = read_claim(*resp, prefix, id, lease);
  REQUIRE(outcome.ok());
  REQUIRE(outcome->ours);
  return std::make_shared<HighWaterRecord>(c, prefix, id, lease, holder(), outcome->highwater_rev,
                                           outcome->start_after);
}

/// Waits (bounded) until the delaying proxy holds no chunk: every late request has reached etcd
/// and its answer has come back through the proxy.
void wait_proxy_drained() {
  const std::string path = env("ZAPTID_TEST_PROXY_STATUS");
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string word;
  long pending = -1;
  while (std::chrono::steady_clock::now() < give_up) {
    std::ifstream in(path);
    if (in >> word >> pending && pending == 0) return;
    std::this_thread::sleep_for(milliseconds(20));  // polling the proxy's state, not waiting for time
  }
  FAIL("the delaying proxy still holds " << pending << " chunks after 20 s");
}

}  // namespace

TEST_CASE("etcd CAS: a late copy of an earlier reservation fails, and the record keeps the newer value") {
  auto c = client(members());
  const auto prefix = fresh_prefix();
  const int64_t lease = grant(*c);
  auto rec = claim(*c, prefix, 1, lease);
  const auto late = reservation_txn(prefix, 1, lease, rec->revision(), 1000, holder());
  REQUIRE(rec->reserve_through(1000).ok());
  REQUIRE(rec->reserve_through(2000).ok());
  const auto before = stored(*c, highwater_key(prefix, 1));
  CHECK(before.value == Cursor{2000});
  CHECK(before.mod_revision == rec->revision());

  auto resp = c->txn(late);  // the first write again, arriving after the second
  REQUIRE(resp.ok());
  CHECK_FALSE(resp->succeeded());
  const auto after = stored(*c, highwater_key(prefix, 1));
  CHECK(after.value == Cursor{2000});
  CHECK(after.mod_revision == before.mod_revision);
}

TEST_CASE("etcd CAS: the same reservation sent to two endpoints lands once; a lost answer is read back") {
  const auto eps = members();
  REQUIRE(eps.size() >= 2);
  auto a = client({eps[0]});
  auto b = client({eps[1]});
  const auto prefix = fresh_prefix();
  const int64_t lease = grant(*a);
  auto rec = claim(*a, prefix, 2, lease);
  const int64_t claimed_rev = rec->revision();
  const auto txn = reservation_txn(prefix, 2, lease, claimed_rev, 1000, holder());

  auto first = a->txn(txn);
  REQUIRE(first.ok());
  REQUIRE(first->succeeded());
  auto second = b->txn(txn);  // what failover does after a timeout on the first endpoint
  REQUIRE(second.ok());
  CHECK_FALSE(second->succeeded());
  const auto landed = stored(*b, highwater_key(prefix, 2));
  CHECK(landed.value == Cursor{1000});
  CHECK(landed.mod_revision == first->header().revision());

  // The writer never saw the first answer: its record still has the claim's revision. Writing
  // the same value again is resolved by the failing compare's read-back, without a second write.
  HighWaterRecord stale(*b, prefix, 2, lease, holder(), claimed_rev, std::nullopt);
  REQUIRE(stale.reserve_through(1000).ok());
  CHECK(stale.revision() == landed.mod_revision);
  CHECK(stored(*b, highwater_key(prefix, 2)).mod_revision == landed.mod_revision);
  // A larger value goes over the revision read back.
  REQUIRE(stale.reserve_through(1500).ok());
  const auto now = stored(*b, highwater_key(prefix, 2));
  CHECK(now.value == Cursor{1500});
  CHECK(now.mod_revision > landed.mod_revision);
}

TEST_CASE("etcd CAS: a reservation timed out on a slow endpoint and repeated on the next; its late copy fails") {
  const auto eps = members();
  auto direct = client(eps);
  // The slow endpoint first, then the members it does not front. 500 ms per call: the slow one's
  // answer takes two delays (3 s), so every call there times out after its request was sent.
  auto via_slow = client({env("ZAPTID_TEST_ETCD_SLOW"), eps[1], eps[2]}, milliseconds(500));
  REQUIRE(via_slow->wait_connected(0, milliseconds(15000)));
  const auto prefix = fresh_prefix();
  const int64_t lease = grant(*direct);
  auto claimed = claim(*direct, prefix, 3, lease);
  REQUIRE(claimed->reserve_through(500).ok());

  SUBCASE("without the revision compare, the late copy would lower the record (the bug this prevents)") {
    // The transaction zaptid wrote before: compare only that the lease holds the id.
    etcdserverpb::TxnRequest old = reservation_txn(prefix, 3, lease, 0, 1000, holder());
    old.mutable_compare()->RemoveLast();
    via_slow->prefer(0);
    REQUIRE(via_slow->txn(old).ok());  // timed out on the slow endpoint, repeated on the next
    REQUIRE(direct->txn(reservation_txn(prefix, 3, lease, stored(*direct, highwater_key(prefix, 3)).mod_revision,
                                        2000, holder()))
                ->succeeded());
    wait_proxy_drained();
    CHECK(stored(*direct, highwater_key(prefix, 3)).value == Cursor{1000});  // fell from 2000
  }
  SUBCASE("with it, the record only rises") {
    HighWaterRecord rec(*via_slow, prefix, 3, lease, holder(), claimed->revision(), claimed->value());
    via_slow->prefer(0);
    REQUIRE(rec.reserve_through(1000).ok());  // timed out on the slow endpoint, repeated on the next
    CHECK(via_slow->last_error().find(env("ZAPTID_TEST_ETCD_SLOW")) != std::string::npos);
    REQUIRE(rec.reserve_through(2000).ok());
    const auto newest = stored(*direct, highwater_key(prefix, 3));
    CHECK(newest.value == Cursor{2000});
    wait_proxy_drained();  // the first copy has reached etcd and been answered
    const auto after = stored(*direct, highwater_key(prefix, 3));
    CHECK(after.value == Cursor{2000});
    CHECK(after.mod_revision == newest.mod_revision);
    CHECK(after.mod_revision == rec.revision());
  }
}

TEST_CASE("etcd CAS: a claim repeated on a second endpoint is the same claim, and nobody else's") {
  const auto eps = members();
  auto a = client({eps[0]});
  auto b = client({eps[2]});
  const auto prefix = fresh_prefix();
  const int64_t lease = grant(*a);
  const int64_t other = grant(*a);
  // A record from an earlier holder, to start after.
  {
    etcdserverpb::TxnRequest put;
    auto* p = put.add_success()->mutable_request_put();
    p->set_key(highwater_key(prefix, 7));
    p->set_value("4242");
    REQUIRE(a->txn(put).ok());
  }
  const auto txn = claim_txn(prefix, 7, lease, holder());
  auto first = a->txn(txn);
  REQUIRE(first.ok());
  CHECK(first->succeeded());
  auto second = b->txn(txn);
  REQUIRE(second.ok());
  CHECK_FALSE(second->succeeded());
  for (const auto* resp : {&*first, &*second}) {
    auto outcome = read_claim(*resp, prefix, 7, lease);
    REQUIRE(outcome.ok());
    CHECK(outcome->ours);
    CHECK(outcome->start_after == Cursor{4242});
    CHECK(outcome->highwater_rev > 0);
  }
  auto theirs = b->txn(claim_txn(prefix, 7, other, holder()));
  REQUIRE(theirs.ok());
  auto outcome = read_claim(*theirs, prefix, 7, other);
  REQUIRE(outcome.ok());
  CHECK_FALSE(outcome->ours);
  CHECK(outcome->holder.host == "cas-test");
  CHECK(stored(*a, machine_key(prefix, 7)).lease == lease);
}

TEST_CASE("etcd CAS: the clean release lowers the record and frees the id in one revision; later writes fail") {
  auto c = client(members());
  const auto prefix = fresh_prefix();
  const int64_t lease = grant(*c);
  auto rec = claim(*c, prefix, 4, lease);
  REQUIRE(rec->reserve_through(5000).ok());
  const auto late = reservation_txn(prefix, 4, lease, rec->revision(), 6000, holder());
  REQUIRE(rec->release(3000).ok());
  const auto hw = stored(*c, highwater_key(prefix, 4));
  CHECK(hw.value == Cursor{3000});
  CHECK(hw.mod_revision == rec->revision());
  CHECK(stored(*c, machine_key(prefix, 4)).mod_revision == 0);  // gone: the id is free

  auto resp = c->txn(late);  // a reservation still in flight from before the release
  REQUIRE(resp.ok());
  CHECK_FALSE(resp->succeeded());
  CHECK(stored(*c, highwater_key(prefix, 4)).value == Cursor{3000});
  CHECK(rec->release(3000).ok());  // a repeated release finds the id gone: done
  auto again = rec->reserve_through(7000);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().kind == ErrorKind::kUnavailable);
  CHECK(again.message().find("no longer held by etcd lease") != std::string::npos);
  CHECK(stored(*c, highwater_key(prefix, 4)).value == Cursor{3000});
}
