#include "server/store_metrics.h"

namespace zaptid::server {

namespace {

double seconds(std::chrono::milliseconds d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

void StoreMetrics::wrote(std::chrono::nanoseconds elapsed, bool ok) {
  if (!ok) failures_.fetch_add(1, std::memory_order_relaxed);
  latency_.observe(elapsed);
}

void StoreMetrics::write(std::string& out) const {
  write_family(out, "zaptid_high_water_writes_total", "counter",
               "High-water records written (each reserves IDs ahead; about two a second per busy lane), "
               "failed ones included.");
  write_sample(out, "zaptid_high_water_writes_total", labels_, latency_.count());
  write_family(out, "zaptid_high_water_write_failures_total", "counter",
               "High-water writes that failed: the calls waiting on them got no IDs.");
  write_sample(out, "zaptid_high_water_write_failures_total", labels_, failures_.load(std::memory_order_relaxed));
  write_family(out, "zaptid_high_water_write_seconds", "histogram",
               "Time a high-water write took (pwrite and fdatasync of both records, or an etcd transaction).");
  latency_.write(out, "zaptid_high_water_write_seconds", labels_);
}

Status MeasuredReserver::reserve_through(Cursor high) {
  const auto t0 = std::chrono::steady_clock::now();
  auto st = inner_.reserve_through(high);
  metrics_.wrote(std::chrono::steady_clock::now() - t0, st.ok());
  return st;
}

ReserverWrapper measure_into(StoreMetrics& metrics) {
  return [&metrics](Reserver& inner) { return std::make_unique<MeasuredReserver>(inner, metrics); };
}

void LeaseMetrics::write(std::string& out, const State& now) const {
  write_family(out, "zaptid_etcd_lease_confirmed", "gauge",
               "1 while the etcd lease is confirmed recently enough to issue IDs, else 0.");
  write_sample(out, "zaptid_etcd_lease_confirmed", "", uint64_t{now.confirmed ? 1u : 0u});
  write_family(out, "zaptid_etcd_lease_seconds_since_confirmed", "gauge",
               "Seconds since the keep-alive that last confirmed the lease was sent; issuing stops before it "
               "reaches the lease TTL.");
  write_sample(out, "zaptid_etcd_lease_seconds_since_confirmed", "", seconds(now.since_confirmed));
  write_family(out, "zaptid_etcd_lease_ttl_seconds", "gauge", "The lease TTL etcd granted.");
  write_sample(out, "zaptid_etcd_lease_ttl_seconds", "", seconds(now.ttl));
  write_family(out, "zaptid_etcd_keepalive_seconds", "histogram",
               "Round trip of the keep-alives etcd answered (each confirms the lease).");
  round_trip_.write(out, "zaptid_etcd_keepalive_seconds", "");
  write_family(out, "zaptid_etcd_keepalive_failures_total", "counter",
               "Keep-alives etcd did not answer: the stream failed or stalled and the next endpoint is tried.");
  write_sample(out, "zaptid_etcd_keepalive_failures_total", "", failures_.load(std::memory_order_relaxed));
}

}  // namespace zaptid::server
