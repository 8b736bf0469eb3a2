"""zaptid serve --machine-id-from etcd against a real etcd (Debian's etcd-server on loopback).

Every test starts its own etcd with a private data folder on kernel-chosen ports. Nothing waits
for a fixed time: tests poll the server's health or the log for a real event, with a deadline.
Timing claims use --lease-ttl 2s, etcd's minimum.
"""
import os
import re
import subprocess
import threading
import time
import unittest

import grpc

import etcd_harness as eh
from harness import Server, ZaptidTestCase, _die_with_parent, free_port

TTL = 2.0
SONYFLAKE_EPOCH_MS = 1409529600000


def cursor_of(sonyflake_id):
    """time << 8 | sequence: the order of one machine id's IDs."""
    return sonyflake_id >> 16


def machine_of(sonyflake_id):
    return sonyflake_id & 0xFFFF


def cursor_at(unix_ms):
    """The last cursor of the Sonyflake tick containing unix_ms."""
    return ((unix_ms - SONYFLAKE_EPOCH_MS) // 10) << 8 | 0xFF


class ClusterTestCase(ZaptidTestCase):

    def start_etcd(self, size=1, certs=None):
        cluster = eh.EtcdCluster(os.path.join(self.tmp, "etcd"), size, certs=certs)
        self.addCleanup(cluster.stop)
        return cluster

    def serve_args(self, endpoints, *extra, range_="0-1", ttl="2s"):
        return ["serve", "--listen", "127.0.0.1:0", "--machine-id-from", "etcd", "--etcd-endpoints", endpoints,
                "--lease-ttl", ttl, "--machine-id-range", range_, *extra]

    def spawn(self, endpoints, *extra, **kw):
        """Starts a leasing server without waiting for it; see attach()."""
        return self.popen(*self.serve_args(endpoints, *extra, **kw), stdout=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent)

    def attach(self, proc):
        """Waits for a spawned server's start-up line; returns the harness Server with .client."""
        server = Server(proc, 30)
        self.addCleanup(server.kill)
        server.client = eh.IdClient(server.address)
        self.addCleanup(server.client.close)
        return server

    def serve(self, endpoints, *extra, **kw):
        return self.attach(self.spawn(endpoints, *extra, **kw))

    def wait_health(self, server, want, timeout):
        """Polls health until it is `want`; returns the seconds it took, or fails the test."""
        start = time.monotonic()
        for _ in eh.deadline_loop(timeout, 0.02):
            if server.client.health(timeout=0.5) == want:
                return time.monotonic() - start
        self.fail("health did not become %s within %ss:\n%s" % (want, timeout, server.log()))


class Collector:
    """Asks servers for batches in a loop, keeping every ID they hand out, until stopped."""

    def __init__(self, servers):
        self.servers = servers
        self.ids = []
        self.refused = 0
        self.errors = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for s in self.servers:
                try:
                    self.ids.extend(s.client.batch(50, timeout=0.5))
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    self.refused += 1
                    self.errors.append("%s: %s" % (e.code().name, e.details()))

    def stop(self):
        self._stop.set()
        self._t.join(10)
        return self.ids


class ClaimTest(ClusterTestCase):

    def test_two_servers_race_for_two_ids_and_a_third_is_refused(self):
        etcd = self.start_etcd()
        # Both start before either has claimed: they race for id 0.
        procs = [self.spawn(etcd.endpoints), self.spawn(etcd.endpoints)]
        a, b = [self.attach(p) for p in procs]
        ids_a, ids_b = a.client.machine_ids(), b.client.machine_ids()
        self.assertEqual(sorted(ids_a + ids_b), [0, 1])
        got_a, got_b = a.client.batch(100), b.client.batch(100)
        self.assertEqual({machine_of(i) for i in got_a}, set(ids_a))
        self.assertEqual({machine_of(i) for i in got_b}, set(ids_b))
        self.assertEqual(len(set(got_a) | set(got_b)), 200)
        record = etcd.get("/zaptid/machines/%d" % ids_a[0])
        self.assertIn("pid=%d" % a.proc.pid, record)
        self.assertIn("addr=127.0.0.1:0", record)

        third = self.zaptid(*self.serve_args(etcd.endpoints))
        self.assertFails(third, 1, "no free machine id in 0-1 under /zaptid/machines/ (needed 1, found 0); held: id 0 (")
        self.assertIn("pid %d" % a.proc.pid, third.stderr)
        self.assertIn("pid %d" % b.proc.pid, third.stderr)

    def test_graceful_stop_records_the_last_id_and_frees_the_id(self):
        etcd = self.start_etcd()
        a = self.serve(etcd.endpoints, range_="7-7")
        issued = a.client.batch(500)
        self.assertEqual(a.stop(), 0, a.log())
        self.assertIsNone(etcd.get("/zaptid/machines/7"))
        self.assertEqual(int(etcd.get("/zaptid/highwater/7")), cursor_of(max(issued)))
        b = self.serve(etcd.endpoints, range_="7-7")
        self.assertGreater(b.client.gen(), max(issued))

    def test_lanes_lease_one_id_each(self):
        etcd = self.start_etcd()
        a = self.serve(etcd.endpoints, "--lanes", "3", range_="10-14")
        lanes = a.client.machine_ids()
        self.assertEqual(len(set(lanes)), 3)
        self.assertTrue(set(lanes) <= set(range(10, 15)))
        issued = [a.client.gen() for _ in range(30)]
        self.assertEqual({machine_of(i) for i in issued}, set(lanes))
        self.assertEqual(len(set(issued)), 30)
        b = self.serve(etcd.endpoints, "--lanes", "2", range_="10-14")
        self.assertEqual(sorted(lanes + b.client.machine_ids()), list(range(10, 15)))
        c = self.zaptid(*self.serve_args(etcd.endpoints, range_="10-14"))
        self.assertFails(c, 1, "no free machine id in 10-14")

    def test_environment_twins(self):
        etcd = self.start_etcd()
        env = {"ZAPTID_MACHINE_ID_FROM": "etcd", "ZAPTID_ETCD_ENDPOINTS": etcd.endpoints,
               "ZAPTID_ETCD_PREFIX": "/team-a/ids", "ZAPTID_LEASE_TTL": "3s", "ZAPTID_MACHINE_ID_RANGE": "40-41",
               "ZAPTID_LANES": "2"}
        proc = self.popen("serve", "--listen", "127.0.0.1:0", env=env, stdout=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent)
        a = self.attach(proc)
        self.assertEqual(sorted(a.client.machine_ids()), [40, 41])
        self.assertIn("TTL 3s", a.wait_for(r"claimed machine id"))
        self.assertIn("pid=%d" % proc.pid, etcd.get("/team-a/ids/machines/41"))

    def test_options_are_checked(self):
        etcd = self.start_etcd()
        r = self.zaptid(*self.serve_args(etcd.endpoints, ttl="1s"))
        self.assertFails(r, 2, "--lease-ttl '1s' must be whole seconds, at least 2s (etcd's minimum)")
        r = self.zaptid(*self.serve_args(etcd.endpoints, "--machine-id", "3"))
        self.assertFails(r, 2, "--machine-id and --machine-id-from etcd exclude each other")
        r = self.zaptid(*self.serve_args(etcd.endpoints, range_="5-2"))
        self.assertFails(r, 2, "--machine-id-range '5-2' must be A-B with 0 <= A <= B <= 65535")
        r = self.zaptid("serve", "--listen", "127.0.0.1:0", "--machine-id", "1", "--machine-id-range", "0-1")
        self.assertFails(r, 2, "--machine-id-range needs --machine-id-from etcd")
        r = self.zaptid(*self.serve_args("127.0.0.1:%d" % free_port()))
        self.assertFails(r, 1, "etcd lease grant failed on every endpoint")


    def test_etcd_over_tls_with_a_client_certificate(self):
        certs = eh.make_certs(os.path.join(self.tmp, "certs"))
        etcd = self.start_etcd(certs=certs)
        tls = ["--etcd-ca", certs["ca"], "--etcd-cert", certs["client_cert"], "--etcd-key", certs["client_key"]]
        a = self.serve(etcd.endpoints, *tls)
        self.assertEqual(a.client.machine_ids(), [0])
        self.assertIn("pid=%d" % a.proc.pid, etcd.get("/zaptid/machines/0"))
        self.assertEqual(a.stop(), 0, a.log())
        # Without the client certificate etcd refuses the handshake.
        r = self.zaptid(*self.serve_args(etcd.endpoints, "--etcd-ca", certs["ca"]))
        self.assertFails(r, 1, "etcd lease grant failed on every endpoint")
        missing = os.path.join(self.tmp, "missing.pem")
        r = self.zaptid(*self.serve_args(etcd.endpoints, "--etcd-ca", missing))
        # The same words as for --tls-ca: one reader for every certificate file.
        self.assertFails(r, 2, "cannot read --etcd-ca %s: No such file or directory" % missing)


class HighWaterTest(ClusterTestCase):

    def test_starts_after_a_high_water_slightly_ahead_of_the_clock(self):
        etcd = self.start_etcd()
        ahead = cursor_at(int(time.time() * 1000) + 300)
        etcd.put("/zaptid/highwater/3", str(ahead))
        a = self.serve(etcd.endpoints, "--max-clock-wait", "2s", range_="3-3")
        first = a.client.gen()
        self.assertEqual(machine_of(first), 3)
        self.assertGreater(cursor_of(first), ahead)

    def test_refuses_a_high_water_far_ahead_of_the_clock(self):
        etcd = self.start_etcd()
        etcd.put("/zaptid/highwater/3", str(cursor_at(int(time.time() * 1000) + 60_000)))
        r = self.zaptid(*self.serve_args(etcd.endpoints, "--max-clock-wait", "1s", range_="3-3"))
        self.assertFails(r, 1, "machine id 3 was last used up to ")
        self.assertIn("ahead of this host's clock; refusing to wait longer than --max-clock-wait 1.000s", r.stderr)
        self.assertIsNone(etcd.get("/zaptid/machines/3"), "the claim must be given back")


class FailureTest(ClusterTestCase):

    def test_one_of_three_etcd_members_killed_serving_continues(self):
        etcd = self.start_etcd(3)
        status = etcd.ctl("endpoint", "status", "-w", "fields")
        leader_ids = [line.split(":")[1].strip() for line in status.splitlines() if '"Leader"' in line]
        member_ids = [line.split(":")[1].strip() for line in status.splitlines() if '"MemberID"' in line]
        followers = [n for n, m in zip(etcd.nodes, member_ids) if m != leader_ids[0]]
        victim = followers[0]
        # The victim first: it is where the server's calls and keep-alive stream go.
        order = [victim] + [n for n in etcd.nodes if n is not victim]
        a = self.serve(",".join(n.endpoint for n in order))
        collector = Collector([a])
        victim.kill()
        # Three TTLs: the lease must have been kept alive through the other members.
        for _ in eh.deadline_loop(3 * TTL, 0.05):
            health = a.client.health()
            self.assertEqual(health, eh.SERVING, "health %s:\n%s" % (health, a.log()))
        ids = collector.stop()
        self.assertEqual(collector.refused, 0, a.log())
        self.assertGreater(len(ids), 0)
        self.assertEqual(len(ids), len(set(ids)))
        self.assertIsNotNone(a.client.gen())

    def test_etcd_leader_killed_serving_continues(self):
        # A new leader is elected within a few election timeouts (1 s each) and extends every
        # lease. Here that took 1.0-2.7 s over 12 kills, longer when votes split (2 of 12), and
        # nothing bounds the number of split rounds: the default TTL of 10 s leaves 8 s before
        # issuing would stop, so health never drops (a TTL of 5 s left 4 s and once did not
        # suffice in CI). Calls that need a new high-water record during the election wait for
        # the new leader (and may miss their 0.5 s deadline): no ID past the durable record is
        # ever handed out.
        etcd = self.start_etcd(3)
        status = etcd.ctl("endpoint", "status", "-w", "fields")
        leader_id = [line.split(":")[1].strip() for line in status.splitlines() if '"Leader"' in line][0]
        member_ids = [line.split(":")[1].strip() for line in status.splitlines() if '"MemberID"' in line]
        leader = [n for n, m in zip(etcd.nodes, member_ids) if m == leader_id][0]
        order = [leader] + [n for n in etcd.nodes if n is not leader]
        a = self.serve(",".join(n.endpoint for n in order), ttl="10s")
        collector = Collector([a])
        leader.kill()
        # Past the 8 s budget: a renewal that never succeeds shows as NOT_SERVING by then.
        for _ in eh.deadline_loop(10.0, 0.05):
            health = a.client.health()
            self.assertEqual(health, eh.SERVING, "health %s:\n%s" % (health, a.log()))
        before_stop = len(collector.ids)
        self.assertEqual(len(a.client.batch(1000)), 1000)
        ids = collector.stop()
        self.assertGreater(before_stop, 0)
        self.assertEqual(len(ids), len(set(ids)))

    def check_outage(self, stop_etcd, start_etcd):
        etcd = self.start_etcd()
        a = self.serve(etcd.endpoints)
        b = self.serve(etcd.endpoints)
        collector = Collector([a, b])
        a.client.gen()
        stopped_at = time.monotonic()
        stop_etcd(etcd.nodes[0])
        # Issuing must stop before the TTL runs out, counted from before etcd stopped.
        for server in (a, b):
            self.wait_health(server, eh.NOT_SERVING, TTL)
            self.assertLess(time.monotonic() - stopped_at, TTL, server.log())
        with self.assertRaises(grpc.RpcError) as refused:
            a.client.gen()
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("etcd lease", refused.exception.details())
        # The log says which endpoints and what went wrong, not only that issuing stopped.
        for server in (a, b):
            line = server.wait_for(r"not issuing IDs \(endpoints [^;]+; last error: [^\n]+", 5)
            self.assertIn("endpoints %s;" % etcd.endpoints, line)
            self.assertNotIn("last error: no error reported", line)
        start_etcd(etcd.nodes[0])
        for server in (a, b):
            self.wait_health(server, eh.SERVING, 30)
        after = [a.client.gen(), b.client.gen()]
        ids = collector.stop() + after
        self.assertEqual(len(ids), len(set(ids)), "an ID was issued twice")
        self.assertEqual(sorted(a.client.machine_ids() + b.client.machine_ids()), [0, 1])

    def test_etcd_frozen_stops_issuing_before_the_ttl_and_resumes(self):
        self.check_outage(lambda n: n.freeze(), lambda n: n.thaw())

    def test_etcd_killed_stops_issuing_before_the_ttl_and_resumes(self):
        def restart(node):
            node.restart()
            eh.EtcdCluster.wait_healthy(None, 30, [node])
        self.check_outage(lambda n: n.kill(), restart)

    def test_serves_behind_a_slow_etcd(self):
        # Every etcd round trip takes 0.9-1 s here: `serve` must still connect (it did not, when a
        # connection attempt got gRPC's 100 ms minimum back-off) and answer every call within a
        # 1 s deadline, from the window reserved ahead, while high-water writes take a second each.
        etcd = self.start_etcd()
        control = os.path.join(self.tmp, "delay")
        with open(control, "w") as f:
            f.write("0.45")
        listen = "127.0.0.1:%d" % free_port()
        proxy = subprocess.Popen(["/usr/bin/python3", eh.DELAY_PROXY, "--control", control, "%s=%s" % (listen, etcd.endpoints)],
                                 stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        self.addCleanup(proxy.stdout.close)
        self.addCleanup(proxy.wait)
        self.addCleanup(proxy.kill)
        self.assertEqual(proxy.stdout.readline().strip(), "ready")
        a = self.serve(listen, ttl="10s")
        key = "/zaptid/highwater/%d" % a.client.machine_ids()[0]
        for _ in eh.deadline_loop(10.0, 0.05):  # the first window is recorded by the top-up thread
            first = etcd.get(key)
            if first is not None:
                break
        first = int(first)
        with open(control, "w") as f:
            f.write("0.5")
        answered, ids = 0, []
        for _ in eh.deadline_loop(8.0, 0):  # 8 s: six top-ups of the window at TTL 10 s
            ids.append(a.client.gen(timeout=1))  # raises on a missed deadline
            answered += 1
        self.assertGreater(answered, 20)
        self.assertEqual(len(ids), len(set(ids)))
        # The window moved on meanwhile: high-water writes happened, and no call waited for them.
        self.assertGreaterEqual((int(etcd.get(key)) - first) >> 8, 500)

    def test_revoked_lease_is_claimed_again_and_ids_stay_unique(self):
        etcd = self.start_etcd()
        a = self.serve(etcd.endpoints, range_="4-5")
        before = a.client.batch(200)
        lease_id = re.search(r"\(lease ([0-9a-f]+),", a.wait_for(r"\(lease [0-9a-f]+,")).group(1)
        etcd.ctl("lease", "revoke", lease_id)
        a.wait_for(r"claimed machine id \d+ again under etcd lease", 10)
        self.wait_health(a, eh.SERVING, 10)
        after = a.client.batch(200)
        self.assertEqual(len(set(before) | set(after)), 400)
        self.assertIn(machine_of(after[0]), (4, 5))


if __name__ == "__main__":
    unittest.main()
