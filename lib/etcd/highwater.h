// One claimed machine id's high-water record in etcd, written only by compare-and-set: a write
// lands only over the exact revision its writer last saw, and only while the writer's lease still
// holds the id. A copy of a write that arrives late (a call timed out on one endpoint and was
// repeated on the next, or the first copy was merely slow) then finds a newer revision and fails,
// so the record never falls below a reservation that was confirmed; a write whose outcome is
// unknown is repeated with the same revision, and the failing branch's read-back resolves it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/generator.h"
#include "core/result.h"
#include "etcd/client.h"
#include "etcd/record.h"
#include "etcd_rpc.pb.h"

namespace zaptid::etcd {

/// The transaction that records `high` for machine id `id`: it succeeds only while
/// `<prefix>machines/<id>` is bound to `lease` and `<prefix>highwater/<id>` is still at
/// `expected_rev` (0: the key does not exist), and then also rewrites the holder record. Its
/// failure branch reads both keys back. Pure, for the tests.
etcdserverpb::TxnRequest reservation_txn(const std::string& prefix, uint64_t id, int64_t lease, int64_t expected_rev,
                                         Cursor high, const Holder& holder);
/// The clean release: the same compares; on success it lowers the record to the exact last
/// cursor issued (`last`) and deletes the machines key in the same revision, so the id is free
/// and its next holder starts right after `last`. Failure reads both keys back.
etcdserverpb::TxnRequest release_txn(const std::string& prefix, uint64_t id, int64_t lease, int64_t expected_rev,
                                     Cursor last);

/// The transaction that claims machine id `id` for `lease`: if `<prefix>machines/<id>` was never
/// created, it writes `holder` there bound to the lease and reads the high-water record in the
/// same revision; otherwise it reads both keys. A copy of it that lands after another copy (a
/// call repeated on the next endpoint) fails and reads the machines key bound to this same lease,
/// which read_claim() counts as claimed: the id is neither leaked nor held twice. Pure.
etcdserverpb::TxnRequest claim_txn(const std::string& prefix, uint64_t id, int64_t lease, const Holder& holder);

/// What a claim_txn() answer means.
struct ClaimOutcome {
  bool ours = false;       ///< the id is bound to the lease (now, or by an earlier copy)
  Holder holder;           ///< if not ours: who holds it, as far as the record says
  std::optional<Cursor> start_after;  ///< if ours: the high-water record, if any
  int64_t highwater_rev = 0;          ///< if ours: its mod_revision (0: none)
};
/// Reads claim_txn()'s answer for `lease`. Fails (kCorrupt) on a high-water that is not a cursor.
Result<ClaimOutcome> read_claim(const etcdserverpb::TxnResponse& resp, const std::string& prefix, uint64_t id,
                                int64_t lease);

/// The high-water record of one id claimed under one lease. Thread-safe.
class HighWaterRecord {
 public:
  /// `rev` and `value` are what the claim read (rev 0: no record yet).
  HighWaterRecord(Client& client, std::string prefix, uint64_t id, int64_t lease, Holder holder, int64_t rev,
                  std::optional<Cursor> value)
      : client_(client), prefix_(std::move(prefix)), id_(id), lease_(lease), holder_(std::move(holder)), rev_(rev),
        value_(value) {}

  /// Records that cursors up to `high` may be issued. Ok once etcd holds `high` or more for this
  /// id under this lease (written now, or by an earlier copy of this write); kUnavailable when
  /// the lease no longer holds the id; the client's error when etcd could not be asked (nothing
  /// may be issued past the previous record then, and the next call resolves what happened).
  Status reserve_through(Cursor high);
  /// The clean release (see release_txn). Ok when done, or when the lease no longer holds the id
  /// (then the record is left as it is, which is above anything issued).
  Status release(Cursor last);

  uint64_t id() const { return id_; }
  int64_t lease() const { return lease_; }
  /// The record's revision and value as this process last saw them.
  int64_t revision() const;
  std::optional<Cursor> value() const;

 private:
  /// What a failed compare read back: the id's holder lease (0: nobody) and the record.
  struct Seen {
    int64_t lease = 0;
    int64_t rev = 0;
    std::optional<Cursor> value;
  };
  Result<Seen> seen(const etcdserverpb::TxnResponse& resp) const;
  enum class Write { kReserve, kRelease };
  /// Writes `value` with reservation_txn() or release_txn() until the compare holds, reading the
  /// newest revision back after each failed one.
  Status compare_and_set(Cursor value, Write write);
  Error lost() const;

  Client& client_;
  const std::string prefix_;
  const uint64_t id_;
  const int64_t lease_;
  mutable std::mutex mu_;  // serializes writes; guards the fields below
  Holder holder_;
  int64_t rev_;
  std::optional<Cursor> value_;
};

/// The Reserver a generator writes through: forwards to the lane's shared record.
class HighWaterReserver final : public Reserver {
 public:
  explicit HighWaterReserver(std::shared_ptr<HighWaterRecord> record) : record_(std::move(record)) {}
  Status reserve_through(Cursor high) override { return record_->reserve_through(high); }

 private:
  std::shared_ptr<HighWaterRecord> record_;
};

}  // namespace zaptid::etcd
