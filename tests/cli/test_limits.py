"""zaptid serve under abusive and careless clients (issue 13): descriptors, memory, unix sockets,
log floods, shutdown and reflection. Loopback only; every test bounded to a few seconds."""
import os
import resource
import signal
import socket
import subprocess
import time
import unittest

import grpc
import h2.exceptions

from harness import ZAPTID, Server, ZaptidTestCase, _die_with_parent, raw_channel_call
from h2raw import H2Client, grpc_frame, rss_kib

GEN = "/idgen.IdGen/Gen"
GRPC_RESOURCE_EXHAUSTED = 8


def sanitized():
    """True for an AddressSanitizer build: its allocator keeps freed memory in quarantine and
    ignores malloc_trim, and its shadow memory counts in RSS, so memory bounds do not apply."""
    libs = subprocess.run(["ldd", ZAPTID], capture_output=True, text=True).stdout
    return "libasan" in libs


def fd_limit(n):
    def preexec():
        _die_with_parent()
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


class LimitsTest(ZaptidTestCase):
    def serve(self, *args, machine_id=31, listen="127.0.0.1:0", preexec=_die_with_parent):
        cmd = ["serve", "--listen", listen, "--machine-id", machine_id, *args]
        proc = self.popen(*cmd, stdout=subprocess.DEVNULL, preexec_fn=preexec)
        server = Server(proc, 30)
        self.addCleanup(server.kill)
        return server

    def get(self, address, *args, timeout="5s"):
        return self.zaptid("get", "--server", address, "--timeout", timeout, *args)

    def assertServes(self, address):
        r = self.get(address)
        self.assertEqual(r.returncode, 0, r.stderr)
        return int(r.stdout)

    # ---- Descriptors ------------------------------------------------------------------------

    def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(self):
        s = self.serve(preexec=lambda: (_die_with_parent(),
                                        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))))
        s.wait_for(r"raised the open-file limit from 256 to 4096")
        self.assertIn(" max-fds=4096", s.start_line)

    def test_new_clients_are_served_after_idle_connections_used_every_descriptor(self):
        # gRPC 1.51 stops accepting for good after one accept4() EMFILE (CVE-2023-4785).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        s = self.serve(preexec=fd_limit(1024))
        before = self.assertServes(s.address)
        conns = []
        try:
            for _ in range(1100):
                conns.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
            s.wait_for(r"out of file descriptors \(Too many open files\)", timeout=10)
        finally:
            for c in conns:
                c.close()
        # Served again once the idle connections are gone: not a one-off, several clients in turn.
        ids = [self.assertServes(s.address) for _ in range(5)]
        self.assertIsNone(s.proc.poll())
        self.assertEqual(len(set(ids + [before])), 6)
        self.assertEqual(s.stop(), 0)
        # The warning is rate-limited: one line for the whole episode.
        self.assertEqual(sum("out of file descriptors" in l for l in s.lines if l), 1, s.log())

    def test_connections_that_never_send_the_preface_are_closed_at_the_handshake_timeout(self):
        s = self.serve("--handshake-timeout", "1s")
        start = time.monotonic()
        conns = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(20)]
        for c in conns:
            try:
                while c.recv(4096):  # the server's SETTINGS, then the end
                    pass
            except ConnectionResetError:
                pass
            c.close()
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 8)
        self.assertServes(s.address)

    def test_idle_connections_are_closed_at_the_idle_timeout(self):
        s = self.serve("--idle-timeout", "1s")
        c = H2Client(s.port)
        self.addCleanup(c.close)
        status, _ = c.call(GEN)
        self.assertEqual(status, 0)
        start = time.monotonic()
        c.pump_until(lambda: c.conn.state_machine.state.name == "CLOSED", timeout=10)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)

    def test_bad_limit_options(self):
        self.assertFails(self.zaptid("serve", "--machine-id", "31", "--max-memory", "64M"), 2,
                         "--max-memory '64M' is not a size (examples: 4096, 512KiB, 64MiB, 1GiB)")
        self.assertFails(self.zaptid("serve", "--machine-id", "31", "--max-memory", "1MiB"), 2,
                         "--max-memory 1MiB is too small (at least 4MiB)")
        self.assertFails(self.zaptid("serve", "--machine-id", "31", "--handshake-timeout", "0"), 2,
                         "--handshake-timeout must be more than 0")
        self.assertFails(self.zaptid("serve", "--machine-id", "31", "--idle-timeout", "soon"), 2,
                         "--idle-timeout 'soon' is not a duration")

    # ---- Memory -----------------------------------------------------------------------------

    def test_a_request_larger_than_any_valid_one_is_refused_at_once(self):
        s = self.serve()
        c = H2Client(s.port)
        self.addCleanup(c.close)
        status, _ = c.call(GEN, b"\x08" * 5000)
        self.assertEqual(status, GRPC_RESOURCE_EXHAUSTED)
        status, _ = c.call(GEN)
        self.assertEqual(status, 0)

    @staticmethod
    def send_all_but_the_last_byte(c, sid, size):
        c.pump_until(lambda: c.closed or c.conn.local_flow_control_window(sid) >= 5, timeout=5)
        if c.closed:
            return
        c.conn.send_data(sid, grpc_frame(b"", declared=size))
        sent = 0
        chunk = b"\x00" * 16384
        # Send what flow control allows. gRPC 1.51 checks the 4 KiB limit only once a message is
        # whole, and widens a stream's window to the size it announces: what bounds this is the
        # memory budget (--max-memory), whose reclaimer closes the biggest connections.
        while sent < size - 1 - 5 and not c.closed and c.conn.local_flow_control_window(sid) > 0:
            n = min(len(chunk), size - 1 - 5 - sent, c.conn.local_flow_control_window(sid),
                    c.conn.max_outbound_frame_size)
            c.conn.send_data(sid, chunk[:n])
            sent += n
            c.flush()
            c.pump(0.001)

    def test_unfinished_large_requests_cost_little_memory(self):
        # 4 connections x 32 streams, each announcing a 4 MB GenBatch request and sending all but
        # its last byte: gRPC's default 4 MiB limit held ~547 MB (main: 522 MB peak here; this build
        # ~85 MB peak, 67 MB above the start, three of the four connections closed by the quota).
        s = self.serve()
        baseline = rss_kib(s.proc.pid)
        clients = [H2Client(s.port) for _ in range(4)]
        for c in clients:
            self.addCleanup(c.close)
        size = 4 * 1000 * 1000
        for c in clients:
            for _ in range(32):
                if c.closed:
                    break
                sid = c.start_call("/idgen.IdGen/GenBatch")
                c.flush()
                try:
                    self.send_all_but_the_last_byte(c, sid, size)
                except h2.exceptions.StreamClosedError:
                    continue  # the server ended the stream meanwhile (the memory budget at work)
        for c in clients:
            c.pump(0.2)
        self.assertServes(s.address)
        if sanitized():
            self.skipTest("memory bounds are measured on builds without AddressSanitizer")
        peak = rss_kib(s.proc.pid, "VmHWM")
        self.assertLess(peak - baseline, 100 * 1024, f"baseline {baseline} KiB, peak {peak} KiB")
        # And the memory is given back once the connections are gone (the trimmer runs every 2 s).
        for c in clients:
            c.close()
        deadline = time.monotonic() + 10
        while rss_kib(s.proc.pid) > baseline + 16 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)  # polls a condition, bounded; the trimmer's period is the server's
        self.assertLess(rss_kib(s.proc.pid), baseline + 16 * 1024,
                        f"baseline {baseline} KiB, peak {peak} KiB, now {rss_kib(s.proc.pid)} KiB")

    def rapid_reset(self, s, seconds):
        """One connection opening a Gen stream and resetting it at once, in a loop (CVE-2023-44487),
        while `zaptid get` (2 s deadline) calls beside it; returns (streams, gets ok, gets sent)."""
        import threading
        from h2raw import rapid_reset_burst
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        self.addCleanup(sock.close)
        # Preface, empty SETTINGS, and an ACK for the server's SETTINGS ahead of time.
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
                     + bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))
        results = []
        stop = threading.Event()

        def caller():
            while not stop.is_set():
                results.append(self.get(s.address, timeout="2s").returncode == 0)

        def drain():
            try:
                while sock.recv(1 << 16):
                    pass
            except OSError:
                pass
        threads = [threading.Thread(target=caller), threading.Thread(target=drain, daemon=True)]
        for t in threads:
            t.start()
        streams, sid = 0, 1
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                burst, sid = rapid_reset_burst(f"127.0.0.1:{s.port}", GEN, sid, 1000)
                sock.sendall(burst)
                streams += 1000
        except OSError:
            pass  # the server closed the connection
        finally:
            stop.set()
            threads[0].join()
        return streams, sum(results), len(results)

    @unittest.expectedFailure
    def test_rapid_reset_stays_within_the_memory_budget(self):
        """Fails today, and is kept to say so (issue 13): gRPC 1.51 keeps every reset stream's
        state until its read loop catches up (CVE-2023-44487 is fixed in gRPC 1.57+), and its
        resource quota does not count it. Measured 2026-12-03 on the 2-core test machine, 5 s from
        one connection: ~100,000 streams; peak RSS 1,050 MB with this build (--max-memory 64MiB,
        4 KiB requests, 32 streams) and 1,016 MB with main's; `zaptid get --timeout 2s` beside it
        0 of 3 OK with either. See docs/ARCHITECTURE.md, "Limits"."""
        s = self.serve()
        streams, ok, sent = self.rapid_reset(s, 5)
        peak = rss_kib(s.proc.pid, "VmHWM")
        print(f"\nrapid reset: {streams} streams, peak {peak} KiB, get ok {ok}/{sent}")
        self.assertLess(peak, 256 * 1024)
        self.assertGreaterEqual(ok, 1)
        self.assertEqual(ok, sent)
        self.assertServes(s.address)

    # ---- Unix sockets -----------------------------------------------------------------------

    def test_a_second_server_on_a_live_unix_socket_is_refused(self):
        path = os.path.join(self.tmp, "z.sock")
        first = self.serve(listen=f"unix:{path}")
        self.assertServes(f"unix:{path}")
        r = self.zaptid("serve", "--listen", f"unix:{path}", "--machine-id", "32", timeout=30)
        self.assertFails(r, 1, f"unix:{path} is in use by a running server")
        self.assertServes(f"unix:{path}")
        self.assertIsNone(first.proc.poll())
        self.assertEqual(first.stop(), 0)
        self.assertFalse(os.path.exists(path))  # its own socket removed on exit

    def test_a_stale_unix_socket_is_replaced(self):
        path = os.path.join(self.tmp, "z.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays; nothing accepts on it
        s = self.serve(listen=f"unix:{path}")
        self.assertServes(f"unix:{path}")
        self.assertEqual(s.stop(), 0)

    def test_a_path_that_is_not_a_socket_is_left_alone(self):
        path = os.path.join(self.tmp, "z.sock")
        with open(path, "w") as f:
            f.write("not a socket\n")
        r = self.zaptid("serve", "--listen", f"unix:{path}", "--machine-id", "31", timeout=30)
        self.assertFails(r, 1, f"cannot listen on unix:{path}: the path exists and is not a socket")
        with open(path) as f:
            self.assertEqual(f.read(), "not a socket\n")

    def test_a_socket_that_is_no_longer_ours_is_not_deleted_on_exit(self):
        path = os.path.join(self.tmp, "z.sock")
        s = self.serve(listen=f"unix:{path}")
        other = socket.socket(socket.AF_UNIX)
        other.bind(path + ".other")
        other.listen()
        self.addCleanup(other.close)
        os.rename(path + ".other", path)  # someone else's socket now lives at the path
        self.assertEqual(s.stop(), 0)
        self.assertTrue(os.path.exists(path))
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(path)  # still the other one's
        probe.close()

    # ---- Small ones -------------------------------------------------------------------------

    def test_repeated_tls_handshake_failures_log_a_bounded_number_of_lines(self):
        certs = os.path.join(self.tmp, "certs")
        os.mkdir(certs)
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", "s.key", "-out", "s.pem", "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=IP:127.0.0.1"], cwd=certs, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = self.serve("--tls-cert", os.path.join(certs, "s.pem"), "--tls-key", os.path.join(certs, "s.key"))
        for _ in range(300):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)  # not a TLS ClientHello
            try:
                c.recv(100)
            except OSError:
                pass
            c.close()
        self.assertEqual(s.stop(), 0)
        grpc_lines = [l for l in s.lines if l and "grpc: " in l]
        self.assertGreater(len(grpc_lines), 0, "the failures are still reported")
        self.assertLessEqual(len(grpc_lines), 40, s.log())

    def test_an_idle_connection_does_not_delay_shutdown(self):
        s = self.serve("--shutdown-timeout", "20s")
        c = H2Client(s.port)
        self.addCleanup(c.close)
        status, _ = c.call(GEN)
        self.assertEqual(status, 0)
        start = time.monotonic()
        self.assertEqual(s.stop(timeout=30), 0)
        self.assertLess(time.monotonic() - start, 5, s.log())

    def test_a_malformed_reflection_request_is_invalid_argument(self):
        s = self.serve()
        with grpc.insecure_channel(s.address) as ch:
            call = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                    request_serializer=None, response_deserializer=None)
            with self.assertRaises(grpc.RpcError) as e:
                list(call(iter([b"\xff\xff\xff"]), timeout=5))
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("not a grpc.reflection.v1alpha.ServerReflectionRequest", e.exception.details())
            # Valid requests on one stream still get one answer each.
            answers = list(call(iter([b"\x3a\x01x", b"\x3a\x01x", b"\x3a\x01x"]), timeout=5))  # list_services
            self.assertEqual(len(answers), 3)
            gen = raw_channel_call(ch, GEN)
            self.assertTrue(gen(b"", timeout=5))


if __name__ == "__main__":
    unittest.main()
