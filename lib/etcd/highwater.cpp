#include "etcd/highwater.h"

#include <fmt/format.h>

namespace zaptid::etcd {

namespace {

using etcdserverpb::Compare;
using etcdserverpb::TxnRequest;

/// How many compare-and-set rounds one call makes. Each failed compare reads back the newest
/// revision, so a second round succeeds unless a late copy of an earlier write lands in between;
/// more than a few in a row means something else writes the key.
constexpr int kRounds = 4;

TxnRequest guarded(const std::string& prefix, uint64_t id, int64_t lease, int64_t expected_rev) {
  TxnRequest txn;
  auto* held = txn.add_compare();
  held->set_key(machine_key(prefix, id));
  held->set_target(Compare::LEASE);
  held->set_result(Compare::EQUAL);
  held->set_lease(lease);
  auto* rev = txn.add_compare();
  rev->set_key(highwater_key(prefix, id));
  rev->set_target(Compare::MOD);
  rev->set_result(Compare::EQUAL);
  rev->set_mod_revision(expected_rev);  // 0 matches a key that does not exist
  txn.add_failure()->mutable_request_range()->set_key(machine_key(prefix, id));
  txn.add_failure()->mutable_request_range()->set_key(highwater_key(prefix, id));
  return txn;
}

}  // namespace

TxnRequest reservation_txn(const std::string& prefix, uint64_t id, int64_t lease, int64_t expected_rev, Cursor high,
                           const Holder& holder) {
  TxnRequest txn = guarded(prefix, id, lease, expected_rev);
  auto* hw = txn.add_success()->mutable_request_put();
  hw->set_key(highwater_key(prefix, id));
  hw->set_value(format_high_water(high));
  Holder h = holder;
  h.high_water = high;
  auto* who = txn.add_success()->mutable_request_put();
  who->set_key(machine_key(prefix, id));
  who->set_value(format_holder(h));
  who->set_lease(lease);
  return txn;
}

TxnRequest release_txn(const std::string& prefix, uint64_t id, int64_t lease, int64_t expected_rev, Cursor last) {
  TxnRequest txn = guarded(prefix, id, lease, expected_rev);
  auto* hw = txn.add_success()->mutable_request_put();
  hw->set_key(highwater_key(prefix, id));
  hw->set_value(format_high_water(last));
  txn.add_success()->mutable_request_delete_range()->set_key(machine_key(prefix, id));
  return txn;
}

TxnRequest claim_txn(const std::string& prefix, uint64_t id, int64_t lease, const Holder& holder) {
  TxnRequest txn;
  auto* fresh = txn.add_compare();
  fresh->set_key(machine_key(prefix, id));
  fresh->set_target(Compare::CREATE);
  fresh->set_result(Compare::EQUAL);
  fresh->set_create_revision(0);
  // The high-water is read in the same transaction: no holder can move it in between.
  txn.add_success()->mutable_request_range()->set_key(highwater_key(prefix, id));
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(machine_key(prefix, id));
  put->set_value(format_holder(holder));
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(highwater_key(prefix, id));
  txn.add_failure()->mutable_request_range()->set_key(machine_key(prefix, id));
  return txn;
}

Result<ClaimOutcome> read_claim(const etcdserverpb::TxnResponse& resp, const std::string& prefix, uint64_t id,
                                int64_t lease) {
  auto first = [&](int op) -> const etcdserverpb::KeyValue* {
    if (op >= resp.responses_size()) return nullptr;
    const auto& r = resp.responses(op).response_range();
    return r.kvs_size() > 0 ? &r.kvs(0) : nullptr;
  };
  ClaimOutcome out;
  const auto* holder = resp.succeeded() ? nullptr : first(1);
  out.ours = resp.succeeded() || (holder != nullptr && holder->lease() == lease);
  if (!out.ours) {
    if (holder != nullptr) {
      auto h = parse_holder(holder->value());
      if (h) out.holder = *h;
    }
    return out;
  }
  // No other lease writes the high-water while this one holds the id, so the record read in
  // either branch is the one to start after.
  if (const auto* kv = first(0); kv != nullptr) {
    auto hw = parse_high_water(kv->value(), highwater_key(prefix, id));
    if (!hw) return hw.error();
    out.start_after = *hw;
    out.highwater_rev = kv->mod_revision();
  }
  return out;
}

Result<HighWaterRecord::Seen> HighWaterRecord::seen(const etcdserverpb::TxnResponse& resp) const {
  Seen s;
  if (resp.responses_size() < 2) return Error{ErrorKind::kIo, "etcd answered a transaction without its reads"};
  const auto& holder = resp.responses(0).response_range();
  if (holder.kvs_size() > 0) s.lease = holder.kvs(0).lease();
  const auto& record = resp.responses(1).response_range();
  if (record.kvs_size() > 0) {
    s.rev = record.kvs(0).mod_revision();
    auto v = parse_high_water(record.kvs(0).value(), highwater_key(prefix_, id_));
    if (!v) return v.error();
    s.value = *v;
  }
  return s;
}

Error HighWaterRecord::lost() const {
  return unavailable(fmt::format("machine id {} is no longer held by etcd lease {:x}", id_, lease_));
}

Status HighWaterRecord::reserve_through(Cursor high) { return compare_and_set(high, Write::kReserve); }

Status HighWaterRecord::release(Cursor last) { return compare_and_set(last, Write::kRelease); }

Status HighWaterRecord::compare_and_set(Cursor value, Write write) {
  std::lock_guard lock(mu_);
  for (int round = 0; round < kRounds; ++round) {
    // Repeating this exact request (the client does, on the next endpoint) is harmless: if an
    // earlier copy landed, the revision moved and the copy fails into the read-back below.
    auto resp = client_.txn(write == Write::kRelease ? release_txn(prefix_, id_, lease_, rev_, value)
                                                     : reservation_txn(prefix_, id_, lease_, rev_, value, holder_));
    if (!resp) return resp.error();
    if (resp->succeeded()) {
      rev_ = resp->header().revision();
      value_ = value;
      return Ok{};
    }
    auto s = seen(*resp);
    if (!s) return s.error();
    if (s->lease != lease_) {
      // The id is gone from this lease. A release is done all the same (an earlier copy of it
      // landed, or the lease expired): the record stays at or above anything this lease issued.
      if (write == Write::kRelease) return Ok{};
      return lost();
    }
    rev_ = s->rev;
    value_ = s->value;
    // Only this lease writes the record while it holds the id: a value at or above the one to
    // reserve is an earlier copy of this write, or of a larger one, that landed after all.
    if (write == Write::kReserve && s->value && *s->value >= value) return Ok{};
  }
  return unavailable(fmt::format("machine id {}: the high-water record changed {} times in a row under etcd lease {:x}",
                                 id_, kRounds, lease_));
}

int64_t HighWaterRecord::revision() const {
  std::lock_guard lock(mu_);
  return rev_;
}

std::optional<Cursor> HighWaterRecord::value() const {
  std::lock_guard lock(mu_);
  return value_;
}

}  // namespace zaptid::etcd
