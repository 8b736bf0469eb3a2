"""zaptid serve --metrics-listen: /metrics (checked by promtool and scraped by a real Prometheus),
/healthz, /readyz (flipped by a real etcd outage), and bounds against slow HTTP clients.

Counts are asserted exactly: every call a test makes is one the server must have counted.
"""
import http.client
import os
import re
import shutil
import socket
import subprocess
import time
import unittest
import urllib.request

import grpc

import etcd_harness as eh
from harness import LIBFAKETIME, ZaptidTestCase, faketime_preload, free_port, raw_channel_call

METRICS = re.compile(r" metrics=(\S+)")


def get(address, path, method="GET", body=None, timeout=10):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read().decode(), dict(r.getheaders())
    finally:
        conn.close()


def samples(text):
    """{'name{labels}': value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def method(name, service="idgen.IdGen"):
    return f'grpc_type="unary",grpc_service="{service}",grpc_method="{name}"'


class MetricsTestCase(ZaptidTestCase):

    def serve(self, *args, machine_id=1):
        server = self.start_server("--metrics-listen", "127.0.0.1:0", *args, machine_id=machine_id)
        server.metrics = METRICS.search(server.start_line).group(1)
        server.client = eh.IdClient(server.address)
        self.addCleanup(server.client.close)
        return server

    def scrape(self, server):
        status, body, headers = get(server.metrics, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return body

    def assertPromtoolAccepts(self, text):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


class MetricsTest(MetricsTestCase):

    @unittest.skipUnless(shutil.which("promtool"), "needs promtool (Debian: prometheus)")
    def test_counts_are_exact_and_promtool_accepts_them(self):
        server = self.serve(machine_id=4101)
        for _ in range(5):
            server.client.gen()
        for n in (10, 20, 30):
            self.assertEqual(len(server.client.batch(n)), n)
        with self.assertRaises(grpc.RpcError) as bad:
            server.client.batch(0)
        self.assertEqual(bad.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(server.client.health(), eh.SERVING)
        text = self.scrape(server)
        s = samples(text)
        self.assertEqual(s[f"grpc_server_started_total{{{method('Gen')}}}"], 5)
        self.assertEqual(s[f'grpc_server_handled_total{{{method("Gen")},grpc_code="OK"}}'], 5)
        self.assertEqual(s[f"grpc_server_started_total{{{method('GenBatch')}}}"], 4)
        self.assertEqual(s[f'grpc_server_handled_total{{{method("GenBatch")},grpc_code="OK"}}'], 3)
        self.assertEqual(s[f'grpc_server_handled_total{{{method("GenBatch")},grpc_code="INVALID_ARGUMENT"}}'], 1)
        self.assertEqual(s[f'grpc_server_handling_seconds_count{{{method("Gen")}}}'], 5)
        self.assertEqual(s[f'grpc_server_handling_seconds_bucket{{{method("GenBatch")},le="+Inf"}}'], 4)
        self.assertEqual(s[f'grpc_server_handled_total{{{method("Check", "grpc.health.v1.Health")},grpc_code="OK"}}'],
                         1)
        self.assertEqual(s['zaptid_ids_issued_total{machine_id="4101"}'], 5 + 60)
        self.assertEqual(s['zaptid_refusals_total{machine_id="4101",reason="over_capacity"}'], 0)
        self.assertEqual(s["zaptid_lane_ceiling_ids_per_second"], 25600)
        self.assertEqual(s["zaptid_ready"], 1)
        self.assertIn('zaptid_build_info{version="', text)
        self.assertGreater(s["zaptid_time_left_seconds"], 100 * 365 * 86400)  # sonyflake runs to 2188
        self.assertGreater(s["process_resident_memory_bytes"], 1 << 20)
        self.assertGreater(s["process_open_fds"], 3)
        self.assertLess(abs(s["process_start_time_seconds"] - time.time()), 120)
        self.assertPromtoolAccepts(text)

    @unittest.skipUnless(shutil.which("promtool"), "needs promtool (Debian: prometheus)")
    def test_example_alert_rules_are_valid(self):
        rules = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "zaptid-alerts.yml")
        check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertIn("SUCCESS: 9 rules found", check.stdout)

    def test_refusals_counted_by_reason(self):
        # Two IDs a second: Gen calls with a 300 ms deadline soon cannot be served in time.
        server = self.serve("--time-unit", "1s", "--bits-sequence", "1", machine_id=4102)
        refused = served = 0
        for _ in range(8):
            try:
                server.client.gen(timeout=0.3)
                served += 1
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and "over capacity" in e.details():
                    refused += 1
        self.assertGreater(refused, 0)
        s = samples(self.scrape(server))
        self.assertEqual(s['zaptid_refusals_total{machine_id="4102",reason="over_capacity"}'], refused)
        self.assertEqual(s[f'grpc_server_handled_total{{{method("Gen")},grpc_code="UNAVAILABLE"}}'], refused)
        self.assertEqual(s["zaptid_lane_ceiling_ids_per_second"], 2)
        self.assertGreaterEqual(s['zaptid_ids_issued_total{machine_id="4102"}'], served)

    def test_high_water_writes_and_their_failures(self):
        server = self.serve(machine_id=4109)
        server.client.gen()
        s = samples(self.scrape(server))
        writes = s['zaptid_high_water_writes_total{store="file"}']
        self.assertGreaterEqual(writes, 1)  # the first ID reserves a window ahead
        self.assertEqual(s['zaptid_high_water_write_seconds_count{store="file"}'], writes)
        self.assertEqual(s['zaptid_high_water_write_failures_total{store="file"}'], 0)
        # The state record replaced by a folder: the next window cannot be recorded. Full batches
        # reach past the window (12,800 IDs ahead) within three calls.
        state = os.path.join(self.env["ZAPTID_STATE_DIR"], "machine-4109.state")
        os.remove(state)
        os.mkdir(state)
        failed = 0
        for _ in range(3):
            try:
                server.client.batch(6400, timeout=10)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.INTERNAL, e.details())
                self.assertIn("is a folder", e.details())
                failed += 1
        self.assertGreater(failed, 0)
        s = samples(self.scrape(server))
        self.assertEqual(s['zaptid_high_water_write_failures_total{store="file"}'], failed)
        self.assertGreaterEqual(s['zaptid_high_water_writes_total{store="file"}'], writes + failed)
        self.assertEqual(s['zaptid_high_water_write_seconds_count{store="file"}'],
                         s['zaptid_high_water_writes_total{store="file"}'])

    def test_health_endpoints_and_everything_else(self):
        server = self.serve(machine_id=4103)
        self.assertEqual(get(server.metrics, "/healthz")[:2], (200, "ok\n"))
        self.assertEqual(get(server.metrics, "/readyz")[:2], (200, "ready\n"))
        self.assertEqual(get(server.metrics, "/")[0], 404)
        self.assertEqual(get(server.metrics, "/metrics/x")[0], 404)
        status, _, headers = get(server.metrics, "/metrics", method="POST", body=b"x" * 100)
        self.assertEqual((status, headers.get("Allow")), (405, "GET, HEAD"))
        self.assertEqual(get(server.metrics, "/metrics", method="HEAD")[0], 200)

    def test_bad_address_is_a_usage_error(self):
        for addr, msg in (("nowhere", "--metrics-listen 'nowhere' is not host:port or [v6]:port"),
                          ("127.0.0.1:99999", "--metrics-listen '127.0.0.1:99999' port")):
            r = self.zaptid("serve", "--listen", "127.0.0.1:0", "--machine-id", 4104, "--metrics-listen", addr)
            self.assertFails(r, 2, msg)

    def test_port_in_use_is_refused_and_nothing_is_left_claimed(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = self.zaptid("serve", "--listen", "127.0.0.1:0", "--machine-id", 4105, "--metrics-listen",
                            f"127.0.0.1:{port}")
            self.assertFails(r, 1, f"cannot listen on 127.0.0.1:{port}: Address already in use")
        # The machine id was released: the next one starts at once.
        self.assertEqual(self.zaptid("gen", "--machine-id", 4105, "--lock-timeout", "0s").returncode, 0)

    def test_silent_and_greedy_http_clients_cannot_stall_the_server(self):
        server = self.serve(machine_id=4106)
        host, port = server.metrics.rsplit(":", 1)
        silent = []
        for _ in range(40):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            silent.append(s)
        # The gRPC side does not notice.
        for _ in range(20):
            server.client.gen(timeout=2)
        # A header larger than a connection's memory is refused, not buffered.
        big = socket.create_connection((host, int(port)), timeout=10)
        try:
            big.sendall(b"GET /metrics HTTP/1.1\r\nX-A: " + b"a" * (256 << 10) + b"\r\n\r\n")
        except OSError:
            pass  # closed on us mid-send: refused all the same
        # Every silent connection is closed by the server within its 5 s timeout (plus slack).
        deadline = time.monotonic() + 20
        for s in silent:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.assertEqual(s.recv(1), b"")
            except ConnectionResetError:
                pass
            s.close()
        big.close()
        # The clients see their connections end before libmicrohttpd has reaped them and freed their
        # slots of the per-address limit (4): until it has, a new connection is refused (reset).
        # It must be served once they are freed.
        status = None
        for _ in eh.deadline_loop(10):
            try:
                status = get(server.metrics, "/healthz")[0]
                break
            except ConnectionResetError:
                continue
        self.assertEqual(status, 200)
        rss = samples(self.scrape(server))["process_resident_memory_bytes"]
        self.assertLess(rss, 200 << 20)

    def test_readyz_says_shutting_down_while_calls_drain(self):
        # Calls waiting for their tick keep the server draining; meanwhile /readyz says why it is not
        # ready. Two IDs a second, one GenBatch(count=1) per connection: the first two are ready at
        # once, and admission lets the calls in flight hold at most three IDs ahead (a window of two
        # --max-batch of one ID, and a reserve of one for a connection holding nothing), so three
        # wait, the last about 2 s, and the sixth is refused.
        server = self.serve("--time-unit", "1s", "--bits-sequence", "1", "--shutdown-timeout", "10s",
                            "--log-level", "debug", machine_id=4107)
        # Six connections: gRPC shares one between channels unless each has its own subchannel pool.
        channels = [grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(6)]
        for c in channels:
            self.addCleanup(c.close)
        futures = [raw_channel_call(c, "/idgen.IdGen/GenBatch").future(b"\x08\x01", timeout=10) for c in channels]
        server.wait_for(r"GenBatch of 1 on machine id 4107 waits \d+us for its tick", count=3)
        server.proc.send_signal(15)
        server.wait_for("SIGTERM received")
        status, body, _ = get(server.metrics, "/readyz")
        for f in futures:
            try:
                f.result()
            except grpc.RpcError:
                pass
        self.assertEqual((status, body), (503, "the server is shutting down\n"))
        self.assertEqual(server.stop(), 0)


@unittest.skipUnless(os.path.exists(LIBFAKETIME), "needs libfaketime (Debian: faketime)")
class ClockStepBackTest(MetricsTestCase):
    """The server's own clock set back through libfaketime, whose offset it re-reads from a file on
    every reading; the real clock goes on."""

    def test_step_backs_are_counted_once_each_with_their_size(self):
        offset = os.path.join(self.tmp, "faketime")
        with open(offset, "w") as f:
            f.write("+0\n")
        env = {"LD_PRELOAD": faketime_preload(), "FAKETIME_TIMESTAMP_FILE": offset, "FAKETIME_NO_CACHE": "1",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}
        server = self.start_server("--metrics-listen", "127.0.0.1:0", machine_id=4110, env=env)
        server.metrics = METRICS.search(server.start_line).group(1)
        server.client = eh.IdClient(server.address)
        self.addCleanup(server.client.close)

        def step_to(when):
            with open(offset, "w") as f:
                f.write(when + "\n")

        def clock_metrics():
            s = samples(self.scrape(server))
            lane = 'machine_id="4110"'
            return (s[f"zaptid_clock_step_backs_total{{{lane}}}"], s[f"zaptid_clock_step_back_seconds_total{{{lane}}}"],
                    s[f"zaptid_clock_step_back_max_seconds{{{lane}}}"],
                    s[f'zaptid_refusals_total{{{lane},reason="clock_behind"}}'])

        for _ in range(3):
            server.client.gen()
        self.assertEqual(clock_metrics(), (0, 0, 0, 0))
        # Three seconds back: more than --max-clock-wait (1s), so Gen is refused while it lasts. With
        # 10 s to its deadline a call is admitted and refused by the generator (clock behind); with
        # 2 s admission refuses it first, naming the same cause (it said "over capacity" once).
        step_to("-3")
        for timeout, reason in ((10, "the clock is"), (10, "the clock is"), (2, "the clock stepped back")):
            with self.assertRaises(grpc.RpcError) as refused:
                server.client.gen(timeout=timeout)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn(reason, refused.exception.details())
        # Found by the generator or by admission, the cause is logged as it is counted.
        server.wait_for(r"warn.* Gen refused on machine id 4110 \(clock_behind\): the clock is \S+ behind", count=2)
        server.wait_for(r"warn.* Gen refused on machine id 4110 \(clock_behind\): the clock stepped back: ")
        count, total, largest, behind = clock_metrics()
        self.assertEqual((count, behind), (1, 3))  # one step, however many readings saw it
        # Measured from the start of the newest tick (10 ms), less the real time since the last ID.
        self.assertGreater(largest, 2.0)
        self.assertLessEqual(largest, 3.0)
        self.assertEqual(total, largest)
        if shutil.which("promtool"):
            self.assertPromtoolAccepts(self.scrape(server))
        # Forward again, then back again: a second step, seen by admission alone.
        step_to("+0")
        server.client.gen()
        step_to("-3")
        with self.assertRaises(grpc.RpcError) as refused:
            server.client.gen(timeout=2)
        self.assertIn("the clock stepped back", refused.exception.details())
        count, total2, largest2, behind = clock_metrics()
        self.assertEqual((count, behind), (2, 4))
        self.assertGreater(total2 - total, 2.0)
        self.assertLessEqual(largest2, 3.0)


@unittest.skipUnless(shutil.which("etcd"), "needs etcd (Debian: etcd-server)")
class ReadyzEtcdTest(MetricsTestCase):

    def metrics_until(self, server, done, timeout):
        """The samples of the first scrape for which done(samples) holds, or of the last one."""
        for _ in eh.deadline_loop(timeout):
            s = samples(get(server.metrics, "/metrics")[1])
            if done(s):
                break
        return s

    def test_readyz_and_the_lease_metrics_follow_the_lease(self):
        cluster = eh.EtcdCluster(os.path.join(self.tmp, "etcd"), 1)
        self.addCleanup(cluster.stop)
        server = self.start_server("--metrics-listen", "127.0.0.1:0", "--machine-id-from", "etcd",
                                   "--etcd-endpoints", cluster.endpoints, "--lease-ttl", "2s",
                                   "--machine-id-range", "0-1", machine_id=None)
        server.metrics = METRICS.search(server.start_line).group(1)
        client = eh.IdClient(server.address)
        self.addCleanup(client.close)
        client.gen()  # records a high-water in etcd first
        self.assertEqual(get(server.metrics, "/readyz")[:2], (200, "ready\n"))
        # A keep-alive every TTL/3.
        s = self.metrics_until(server, lambda s: s["zaptid_etcd_keepalive_seconds_count"] >= 2, 10)
        self.assertGreaterEqual(s["zaptid_etcd_keepalive_seconds_count"], 2)
        self.assertEqual(s["zaptid_etcd_keepalive_failures_total"], 0)
        self.assertEqual(s["zaptid_etcd_lease_confirmed"], 1)
        self.assertEqual(s["zaptid_etcd_lease_ttl_seconds"], 2)
        self.assertLess(s["zaptid_etcd_lease_seconds_since_confirmed"], 2)
        self.assertGreaterEqual(s['zaptid_high_water_writes_total{store="etcd"}'], 1)
        self.assertEqual(s['zaptid_high_water_write_seconds_count{store="etcd"}'],
                         s['zaptid_high_water_writes_total{store="etcd"}'])
        self.assertEqual(s['zaptid_high_water_write_failures_total{store="etcd"}'], 0)
        if shutil.which("promtool"):
            self.assertPromtoolAccepts(get(server.metrics, "/metrics")[1])

        cluster.nodes[0].freeze()
        for _ in eh.deadline_loop(10):
            status, body, _ = get(server.metrics, "/readyz")
            if status == 503:
                break
        self.assertEqual(status, 503)
        self.assertIn("etcd lease", body)
        self.assertEqual(body.count("\n"), 1)
        # Stuck keep-alives are given up after TTL/4 and counted; none is answered while frozen.
        s = self.metrics_until(server, lambda s: s["zaptid_etcd_keepalive_failures_total"] >= 2, 10)
        self.assertGreaterEqual(s["zaptid_etcd_keepalive_failures_total"], 2)
        self.assertEqual(s["zaptid_ready"], 0)
        self.assertEqual(s["zaptid_etcd_lease_confirmed"], 0)
        self.assertGreaterEqual(s["zaptid_etcd_lease_seconds_since_confirmed"], 1.5)  # TTL less the 0.5 s margin
        later = self.metrics_until(server, lambda later: later["zaptid_etcd_lease_seconds_since_confirmed"]
                                   > s["zaptid_etcd_lease_seconds_since_confirmed"], 5)
        self.assertGreater(later["zaptid_etcd_lease_seconds_since_confirmed"],
                           s["zaptid_etcd_lease_seconds_since_confirmed"])
        self.assertEqual(later["zaptid_etcd_keepalive_seconds_count"], s["zaptid_etcd_keepalive_seconds_count"])

        cluster.nodes[0].thaw()
        for _ in eh.deadline_loop(30):
            status, body, _ = get(server.metrics, "/readyz")
            if status == 200:
                break
        self.assertEqual((status, body), (200, "ready\n"))
        after = self.metrics_until(server, lambda after: after["zaptid_etcd_keepalive_seconds_count"]
                                   > later["zaptid_etcd_keepalive_seconds_count"], 10)
        self.assertGreater(after["zaptid_etcd_keepalive_seconds_count"], later["zaptid_etcd_keepalive_seconds_count"])
        self.assertEqual(after["zaptid_etcd_lease_confirmed"], 1)
        self.assertLess(after["zaptid_etcd_lease_seconds_since_confirmed"], 2)


@unittest.skipUnless(shutil.which("prometheus"), "needs prometheus (Debian: prometheus)")
class PrometheusScrapeTest(MetricsTestCase):

    def test_a_real_prometheus_scrapes_the_issued_ids(self):
        server = self.serve(machine_id=4108)
        self.assertEqual(len(server.client.batch(123)), 123)
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: zaptid\n    static_configs:\n"
                    f"      - targets: ['{server.metrics}']\n")
        web = f"127.0.0.1:{free_port()}"
        prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--web.listen-address={web}",
                                 f"--storage.tsdb.path={os.path.join(self.tmp, 'tsdb')}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop():
            prom.kill()
            prom.communicate()
        self.addCleanup(stop)
        query = f"http://{web}/api/v1/query?query=zaptid_ids_issued_total"
        value = None
        for _ in eh.deadline_loop(60, 0.5):
            try:
                with urllib.request.urlopen(query, timeout=5) as r:
                    import json
                    result = json.load(r)["data"]["result"]
            except OSError:
                continue
            if result:
                self.assertEqual(result[0]["metric"]["machine_id"], "4108")
                value = float(result[0]["value"][1])
                break
        self.assertEqual(value, 123)


if __name__ == "__main__":
    unittest.main()
