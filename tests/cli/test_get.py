"""zaptid get against zaptid servers and against a zaptidgen-shaped server (Gen only)."""
import json
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc

from harness import ZAPTID, ZaptidTestCase, free_port, varint

SONYFLAKE_EPOCH_MS = 1409529600000


class GenOnlyServer:
    """The original zaptidgen's shape: service idgen.IdGen with Gen only (GenBatch and Info are
    UNIMPLEMENTED). Issues Sonyflake IDs for machine id 5 from a counter, hand-encoded."""

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()
        self._seq = 0
        handler = grpc.method_handlers_generic_handler("idgen.IdGen", {
            "Gen": grpc.unary_unary_rpc_method_handler(self._gen, request_deserializer=None,
                                                       response_serializer=None)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _gen(self, request, context):
        assert request == b"", request
        with self._lock:
            self.calls += 1
            self._seq += 1
            tick = (int(time.time() * 1000) - SONYFLAKE_EPOCH_MS) // 10
            id_ = tick << 24 | (self._seq & 0xFF) << 16 | 5
        return varint(2 << 3) + varint(id_)  # IdResponse{id = 2}

    def stop(self):
        self.server.stop(None).wait()


class GetTest(ZaptidTestCase):
    def test_fallback_to_gen_on_a_zaptidgen_server(self):
        legacy = GenOnlyServer()
        self.addCleanup(legacy.stop)
        address = f"127.0.0.1:{legacy.port}"
        r = self.zaptid("get", "--server", address)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout) & 0xFFFF, 5)
        self.assertEqual(legacy.calls, 1)  # one ID: one Gen call, nothing else
        r = self.zaptid("get", "--server", address, "--count", 50)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(set(ids)), 50)
        self.assertEqual(legacy.calls, 51)
        # No Info: decoding assumes zaptidgen's Sonyflake layout.
        r = self.zaptid("get", "--server", address, "--decode", "--format", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        obj = json.loads(r.stdout)
        self.assertEqual(obj["machine-id"], 5)

    def test_formats_and_decode_with_the_servers_layout(self):
        s = self.start_server("--layout", "snowflake", machine_id=1000)
        r = self.zaptid("get", "--server", s.address, "-n", 3, "--format", "hex")
        self.assertEqual(len(r.stdout.split()), 3)
        for h in r.stdout.split():
            self.assertRegex(h, r"^0x[0-9a-f]{16}$")
            self.assertEqual((int(h, 16) >> 12) & 0x3FF, 1000)
        r = self.zaptid("get", "--server", s.address, "-n", 2, "--format", "json")
        self.assertEqual([list(json.loads(line)) for line in r.stdout.splitlines()], [["id"], ["id"]])
        # --decode uses the server's Info (Snowflake), not the local default (Sonyflake).
        r = self.zaptid("get", "--server", s.address, "-n", 2, "--decode")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertRegex(line, r"^\d+ time=\d+ \(20\d\d-\d\d-\d\dT[\d:.]+Z\) sequence=\d+ machine-id=1000$")
        r = self.zaptid("get", "--server", s.address, "--decode", "--format", "json")
        obj = json.loads(r.stdout)
        self.assertEqual(obj["machine-id"], 1000)
        self.assertAlmostEqual(obj["time"] + 1288834974657, time.time() * 1000,  # Twitter epoch, 1 ms ticks
                               delta=60_000)

    def test_info_for_operators(self):
        s = self.start_server("--layout", "snowflake", "--lanes", 2, "--max-batch", 700, machine_id="1001-1002")
        r = self.zaptid("get", "--server", s.address, "--info")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^version \d+\.\d+\.\d+\nlayout snowflake\nepoch 2010-11-04T01:42:54\.657Z\n"
                                   r"time-unit 1ms\nbits 41/12/10 \(time/sequence/machine\)\n"
                                   r"order time, machine, sequence\nmachine-ids 1001 1002\nmax-batch 700\n"
                                   r"time-exhausted 2080-07-10T17:30:30\.209Z\n$")
        r = self.zaptid("get", "--server", s.address, "--info", "--format", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual((info["layout"], info["epoch-unix-ms"], info["machine-ids"], info["max-batch"]),
                         ("snowflake", 1288834974657, [1001, 1002], 700))
        self.assertEqual(info["time-exhausted-unix-ms"], 1288834974657 + 2**41)
        self.assertFails(self.zaptid("get", "--server", s.address, "--info", "--decode"), 2,
                         "--info and --decode do not go together")
        legacy = GenOnlyServer()
        self.addCleanup(legacy.stop)
        self.assertFails(self.zaptid("get", "--server", f"127.0.0.1:{legacy.port}", "--info"), 4,
                         "the server has no Info method (a zaptidgen server?)")

    def test_the_seeds_address_forms(self):
        # zaptidgen listens on ":8888" and its client dials "localhost:8888": serve takes ":PORT"
        # as every address (logged as [::]:PORT), and get takes ":PORT" as this host's PORT.
        s = self.start_server(machine_id=1003, listen=":0")
        self.assertRegex(s.start_line, r" listen=\[::\]:\d+ ")
        for server in (f":{s.port}", f"127.0.0.1:{s.port}", f"localhost:{s.port}", f":{s.port},:{s.port}"):
            r = self.zaptid("get", "--server", server, "--timeout", "5s")
            self.assertEqual((r.returncode, r.stderr), (0, ""), server)
            self.assertGreater(int(r.stdout), 0)

    def test_a_server_without_a_port_means_8888(self):
        # gRPC's own default is 443. Whatever answers on 8888 here (most likely nothing), the
        # call must go there.
        for server in ("localhost", "127.0.0.1", "[::1]"):
            r = self.zaptid("get", "--server", server, "--timeout", "1s")
            if r.returncode != 0:
                self.assertRegex(r.stderr, r"(127\.0\.0\.1|::1|%5B::1%5D):8888\b", server)
            self.assertNotIn(":443", r.stderr, server)

    def test_round_robin_over_a_comma_list(self):
        a = self.start_server("--max-batch", 100, machine_id=1)
        b = self.start_server("--max-batch", 100, machine_id=2)
        r = self.zaptid("get", "--server", f"127.0.0.1:{a.port},localhost:{b.port}", "-n", 2000)
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(set(ids)), 2000)
        self.assertEqual({i & 0xFFFF for i in ids}, {1, 2})

    def test_a_dead_server_in_the_list_is_skipped(self):
        a = self.start_server(machine_id=1)
        dead = free_port()
        for _ in range(5):
            r = self.zaptid("get", "--server", f"127.0.0.1:{dead},127.0.0.1:{a.port}", "-n", 10)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual({int(x) & 0xFFFF for x in r.stdout.split()}, {1})

    def test_unavailable_is_retried_on_another_server(self):
        # A server that refuses every call with UNAVAILABLE (as zaptid does while its lease is
        # unconfirmed), listed next to a healthy one: every call lands on the healthy one.
        refused = []

        def refuse(request, context):
            refused.append(1)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the machine-id lease is not confirmed")

        handler = grpc.method_handlers_generic_handler("idgen.IdGen", {
            m: grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=None, response_serializer=None)
            for m in ("Gen", "GenBatch", "Info")})
        sick = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        sick_port = sick.add_insecure_port("127.0.0.1:0")
        sick.start()
        self.addCleanup(lambda: sick.stop(None).wait())
        a = self.start_server("--max-batch", 10, machine_id=1)
        for _ in range(5):
            r = self.zaptid("get", "--server", f"127.0.0.1:{sick_port},127.0.0.1:{a.port}", "-n", 50)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual({int(x) & 0xFFFF for x in r.stdout.split()}, {1})
        self.assertGreater(len(refused), 0)  # the sick server was asked, and its refusals retried
        # Alone, it gives its reason.
        r = self.zaptid("get", "--server", f"127.0.0.1:{sick_port}")
        self.assertFails(r, 4, f"zaptid: 127.0.0.1:{sick_port}: the machine-id lease is not confirmed (UNAVAILABLE)")

    def test_dns_target(self):
        s = self.start_server(machine_id=6)
        r = self.zaptid("get", "--server", f"dns:///localhost:{s.port}", "-n", 2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([int(x) & 0xFFFF for x in r.stdout.split()], [6, 6])

    def test_dead_server(self):
        port = free_port()
        started = time.monotonic()
        r = self.zaptid("get", "--server", f"127.0.0.1:{port}", "--timeout", "1s")
        elapsed = time.monotonic() - started
        self.assertFails(r, 4, f"zaptid: 127.0.0.1:{port}: ")
        self.assertIn("Connection refused", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertLess(elapsed, 30)  # bounded by the deadline, not by a hang

    def test_silent_server_hits_the_deadline(self):
        # Accepts TCP connections and never answers: only the deadline ends the call.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        r = self.zaptid("get", "--server", f"127.0.0.1:{port}", "--timeout", "300ms")
        self.assertFails(r, 4, f"zaptid: 127.0.0.1:{port}: no answer within 300ms (DEADLINE_EXCEEDED)")

    def test_server_refuses_the_batch(self):
        # A count beyond --max-batch is never sent by get; a raw refusal is covered in test_wire.
        s = self.start_server("--max-batch", 7, machine_id=9)
        r = self.zaptid("get", "--server", s.address, "-n", 50)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(set(r.stdout.split())), 50)

    def test_closed_pipe_is_quiet(self):
        s = self.start_server("--layout", "snowflake", machine_id=3)
        self.assertClosedPipeIsQuiet("get", "--server", s.address, "--count", 100000000)

    def test_bad_options(self):
        self.assertFails(self.zaptid("get", "--timeout", "soon"), 2, "--timeout")
        self.assertFails(self.zaptid("get", "--timeout", "0"), 2, "--timeout must be at least 1ms")
        self.assertFails(self.zaptid("get", "--count", 0), 2, "--count")
        self.assertFails(self.zaptid("get", "--server", "a:1,nowhere:"), 2, "--server entry 'nowhere:' is not host:port")
        # A host without a port is a host on 8888 now (the seed's default), not a typo: resolved, then refused.
        self.assertFails(self.zaptid("get", "--server", "127.0.0.1:1,no-such-host.invalid"), 4,
                         "cannot resolve no-such-host.invalid")
        self.assertFails(self.zaptid("get", "--server", "no-such-host.invalid:1,127.0.0.1:1"), 4,
                         "zaptid: no-such-host.invalid:1,127.0.0.1:1: cannot resolve no-such-host.invalid")
        self.assertFails(self.zaptid("get", "--tls-ca", "/nonexistent.pem"), 2, "cannot read --tls-ca /nonexistent.pem")
        self.assertFails(self.zaptid("get", "--tls-cert", "c.pem"), 2, "--tls-cert and --tls-key go together")


if __name__ == "__main__":
    import unittest
    unittest.main()
