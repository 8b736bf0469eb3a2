"""zaptid serve, run as a user would: real servers on free loopback ports, real clients."""
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from harness import ZaptidTestCase, batch_ids, batch_request, raw_channel_call

SONYFLAKE_EPOCH_MS = 1409529600000


def sonyflake_time_ms(i):
    return SONYFLAKE_EPOCH_MS + (i >> 24) * 10


class ServeTest(ZaptidTestCase):
    def get(self, server, *args, **kw):
        r = self.zaptid("get", "--server", server.address, *args, **kw)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return [int(x) for x in r.stdout.split()]

    def test_start_line(self):
        s = self.start_server(machine_id=5)
        self.assertRegex(s.start_line,
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info zaptid \d+\.\d+\.\d+ serving "
                         r"listen=127\.0\.0\.1:\d+ layout=sonyflake epoch=2014-09-01T00:00:00\.000Z unit=10ms "
                         r"bits=39/8/16 machine-id=5 source=--machine-id lanes=1 max-batch=6400 threads=1 max-streams=32 tls=off "
                         r"handshake-timeout=10s idle-timeout=5m max-memory=64MiB max-stream-resets=1000 max-control-frames=10000 max-fds=\d+ "
                         r"metrics=off$")
        self.assertNotEqual(s.port, 0)
        self.assertEqual(s.stop(), 0)
        self.assertRegex(s.log().splitlines()[-1], r"stopped; machine id 5 released$")

    def test_one_id_and_a_large_batch(self):
        s = self.start_server(machine_id=5)
        [one] = self.get(s)
        self.assertEqual(one & 0xFFFF, 5)
        ids = self.get(s, "--count", 20000)  # four GenBatch calls of at most 6400
        self.assertEqual(len(ids), 20000)
        self.assertEqual(ids, sorted(set(ids)))
        self.assertGreater(ids[0], one)
        self.assertTrue(all(i & 0xFFFF == 5 for i in ids))
        # Nothing is logged per request at info level.
        self.assertEqual(len(s.lines), 1, s.log())

    def test_many_concurrent_clients_all_unique(self):
        s = self.start_server(machine_id=77)
        with ThreadPoolExecutor(max_workers=8) as pool:
            runs = list(pool.map(lambda n: self.get(s, "--count", n), [1, 300, 1000] * 8))
        ids = [i for run in runs for i in run]
        self.assertEqual(len(ids), 8 * 1301)
        self.assertEqual(len(set(ids)), len(ids))
        for run in runs:
            self.assertEqual(run, sorted(run))

    def test_lanes(self):
        s = self.start_server("--lanes", 4, "--max-batch", 100, machine_id="10-13")
        self.assertIn(" machine-id=10,11,12,13 source=--machine-id lanes=4 ", s.start_line)
        ids = self.get(s, "--count", 4000)
        self.assertEqual(len(set(ids)), 4000)
        lanes = {}
        for i in ids:
            lanes.setdefault(i & 0xFFFF, []).append(i)
        self.assertEqual(sorted(lanes), [10, 11, 12, 13])
        for lane in lanes.values():
            self.assertEqual(lane, sorted(lane))  # each lane's IDs increase; lanes interleave
        self.assertEqual(s.stop(), 0)
        # Every lane held its own lock and released it: gen continues after each lane's IDs.
        for mid, lane in lanes.items():
            r = self.zaptid("gen", "--machine-id", mid)
            self.assertGreater(int(r.stdout), lane[-1])

    def test_several_threads(self):
        # --threads 3: three completion queues, each polled by its own thread; calls from many
        # clients at once land on all of them and every ID is still unique.
        s = self.start_server("--threads", 3, machine_id=78)
        self.assertIn(" threads=3 ", s.start_line)
        threads = os.listdir(f"/proc/{s.proc.pid}/task")
        names = {open(f"/proc/{s.proc.pid}/task/{t}/comm").read().strip() for t in threads}
        self.assertTrue({"zaptid-cq0", "zaptid-cq1", "zaptid-cq2"} <= names, names)
        with ThreadPoolExecutor(max_workers=6) as pool:
            runs = list(pool.map(lambda n: self.get(s, "--count", n), [1, 500] * 6))
        ids = [i for run in runs for i in run]
        self.assertEqual(len(ids), 6 * 501)
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(s.stop(), 0)
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--threads", 0), 2, "--threads")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--threads", 65), 2, "--threads")

    def test_max_streams_bounds_calls_per_connection(self):
        # --max-streams 2: the server's HTTP/2 SETTINGS frame announces
        # SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 2, and a client with forty calls on one
        # connection queues them; all still succeed with unique IDs.
        s = self.start_server("--max-streams", 2, machine_id=79)
        self.assertIn(" max-streams=2 ", s.start_line)
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            head = b""
            while len(head) < 9:
                head += sock.recv(9 - len(head))
            length, frame_type = int.from_bytes(head[:3], "big"), head[3]
            self.assertEqual(frame_type, 4)  # the server speaks first with SETTINGS
            body = b""
            while len(body) < length:
                body += sock.recv(length - len(body))
            settings = {int.from_bytes(body[i:i + 2], "big"): int.from_bytes(body[i + 2:i + 6], "big")
                        for i in range(0, length, 6)}
            self.assertEqual(settings.get(3), 2, settings)
        channel = grpc.insecure_channel(s.address)
        self.addCleanup(channel.close)
        gen_batch = raw_channel_call(channel, "/idgen.IdGen/GenBatch")
        calls = [gen_batch.future(batch_request(300), timeout=20) for _ in range(40)]
        ids = [i for c in calls for i in batch_ids(c.result())]
        self.assertEqual(len(ids), 40 * 300)
        self.assertEqual(len(set(ids)), len(ids))
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--max-streams", 0), 2, "--max-streams")

    def test_lane_options_refused(self):
        self.assertFails(self.zaptid("serve", "--lanes", 4, "--machine-id", 3), 2,
                         "--lanes 4 needs --machine-id A-B with at least 4 ids")
        self.assertFails(self.zaptid("serve", "--lanes", 4, "--machine-id", "3-5"), 2,
                         "--lanes 4 needs --machine-id A-B with at least 4 ids")
        self.assertFails(self.zaptid("serve", "--machine-id", "5-3"), 2, "the range is empty")
        self.assertFails(self.zaptid("serve", "--machine-id", "1-70000"), 2, "--machine-id '1-70000'")

    def test_graceful_shutdown_with_calls_in_flight(self):
        s = self.start_server("--log-level", "debug", machine_id=21)
        channel = grpc.insecure_channel(s.address)
        self.addCleanup(channel.close)
        gen_batch = raw_channel_call(channel, "/idgen.IdGen/GenBatch")
        # Eight batches of five ticks each: every one waits for its last tick in the server. (All
        # eight fit the 500 ms of IDs one connection may hold ahead of the clock; more would be
        # refused over capacity.)
        calls = [gen_batch.future(batch_request(1280), timeout=20) for _ in range(8)]
        s.wait_for(r"GenBatch of 1280 on machine id 21 waits \d+us for its tick", count=8)
        s.proc.send_signal(signal.SIGTERM)
        ids = [i for c in calls for i in batch_ids(c.result())]
        self.assertEqual(s.stop(), 0)
        self.assertEqual(len(ids), 8 * 1280)
        self.assertEqual(len(set(ids)), len(ids))
        self.assertIn("SIGTERM received", s.log())
        # The lock is free and records exactly what was issued: gen continues right after the
        # server's IDs, not after the window the server had reserved ahead.
        r = self.zaptid("gen", "--machine-id", 21, "--lock-timeout", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = int(r.stdout)
        self.assertGreater(after, max(ids))
        self.assertLessEqual(sonyflake_time_ms(after), time.time() * 1000 + 10)

    def test_stop_under_load_with_no_grace_exits_cleanly(self):
        # --shutdown-timeout 0s: calls still open at SIGTERM are cancelled at once, some of them
        # before the server's thread has looked at them. The server still exits 0 (gRPC aborts
        # the process if an operation starts on a queue already shut down), and nothing a client
        # received is handed out again after the restart.
        s = self.start_server("--shutdown-timeout", "0s", machine_id=23)
        channel = grpc.insecure_channel(s.address)
        self.addCleanup(channel.close)
        gen_batch = raw_channel_call(channel, "/idgen.IdGen/GenBatch")
        calls = [gen_batch.future(batch_request(700), timeout=20) for _ in range(60)]
        s.proc.send_signal(signal.SIGTERM)
        self.assertEqual(s.stop(), 0, s.log())
        got = []
        for c in calls:
            try:
                got += batch_ids(c.result())
            except grpc.RpcError as e:
                self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e)
        self.assertEqual(len(got), len(set(got)))
        again = self.start_server(machine_id=23)
        later = self.get(again, "--count", 100)
        self.assertTrue(not got or min(later) > max(got))

    def test_shutdown_refuses_new_work_and_exits_after_sigint(self):
        s = self.start_server(machine_id=22)
        self.assertEqual(s.stop(signal.SIGINT), 0)
        self.assertIn("SIGINT received", s.log())
        r = self.zaptid("get", "--server", s.address, "--timeout", "500ms")
        self.assertFails(r, 4, f"zaptid: {s.address}: ")

    def test_address_already_in_use(self):
        s = self.start_server(machine_id=1)
        r = self.zaptid("serve", "--listen", s.address, "--machine-id", 2)
        self.assertFails(r, 1, f"cannot listen on {s.address}: Address already in use")
        # The failed server released its lock: machine id 2 is free again.
        self.assertEqual(self.zaptid("gen", "--machine-id", 2, "--lock-timeout", "0").returncode, 0)

    def test_same_machine_id_twice_is_refused(self):
        self.start_server(machine_id=3)
        r = self.zaptid("serve", "--listen", "127.0.0.1:0", "--machine-id", 3, "--lock-timeout", "100ms")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertTrue(r.stderr.startswith("zaptid: "), r.stderr)
        self.assertIn("serve", r.stderr)  # names the holder

    def test_listen_unix_and_several_addresses(self):
        path = os.path.join(self.tmp, "zaptid.sock")
        s = self.start_server(machine_id=8, listen=["127.0.0.1:0", f"unix:{path}"])
        self.assertEqual(s.addresses[1], f"unix:{path}")
        [a] = self.get(s)
        r = self.zaptid("get", "--server", f"unix:{path}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(int(r.stdout), a)

    def test_bad_listen_addresses(self):
        self.assertFails(self.zaptid("serve", "--listen", "nowhere", "--machine-id", 1), 2,
                         "--listen 'nowhere' is not host:port")
        self.assertFails(self.zaptid("serve", "--listen", "127.0.0.1:70000", "--machine-id", 1), 2,
                         "port 70000 is out of range")
        path = os.path.join(self.tmp, "missing", "x.sock")
        self.assertFails(self.zaptid("serve", "--listen", f"unix:{path}", "--machine-id", 1), 1,
                         f"cannot listen on unix:{path}: No such file or directory")

    def test_environment_twins(self):
        s = self.start_server(machine_id=None, listen=[], env={
            "ZAPTID_LISTEN": "127.0.0.1:0", "ZAPTID_MACHINE_ID": "31", "ZAPTID_MAX_BATCH": "50"})
        self.assertIn(" machine-id=31 source=ZAPTID_MACHINE_ID ", s.start_line)
        self.assertIn(" max-batch=50 ", s.start_line)
        r = self.zaptid("get", "--count", 3, env={"ZAPTID_SERVER": s.address})
        self.assertEqual([int(x) & 0xFFFF for x in r.stdout.split()], [31] * 3)
        # Flags win over the environment.
        s2 = self.start_server("--max-batch", 60, machine_id=32, env={"ZAPTID_MAX_BATCH": "50"})
        self.assertIn(" max-batch=60 ", s2.start_line)

    def test_bad_options(self):
        self.assertFails(self.zaptid("serve", "--max-batch", 0), 2, "--max-batch")
        self.assertFails(self.zaptid("serve", "--max-batch", 500000), 2, "--max-batch")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--shutdown-timeout", "soon"), 2,
                         "--shutdown-timeout")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", "x.pem"), 2,
                         "--tls-cert and --tls-key go together")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-client-ca", "ca.pem"), 2,
                         "--tls-client-ca needs --tls-cert and --tls-key")


if __name__ == "__main__":
    import unittest
    unittest.main()
