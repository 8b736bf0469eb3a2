"""Runs the etcd compare-and-set tests (tests/test_etcd_cas.cpp) against real etcd.

Starts a 3-member etcd cluster on kernel-chosen loopback ports (etcd_harness) and, in this
process, a TCP proxy in front of member 0 that delays every chunk by SLOW_DELAY seconds in each
direction, so that a call through it times out while its request still reaches etcd later: the
"unknown outcome" and the "late copy" of the tests. Then runs the test binary given as argv[1]
with ZAPTID_TEST_ETCD (the members), ZAPTID_TEST_ETCD_SLOW (the proxy) and
ZAPTID_TEST_PROXY_STATUS (a file the proxy rewrites with how many chunks it still holds, so a
test can wait for the late copy to be delivered instead of sleeping). Exits with its status.

Usage: /usr/bin/python3 run_etcd_cas.py BINARY [doctest options]
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import etcd_harness as eh
from harness import _die_with_parent

SLOW_DELAY = 1.5


class DelayProxy:
    """Forwards each connection to `target`, delivering every chunk `delay` seconds after it
    arrived, in order, in both directions. status_path holds "pending N" after every change."""

    def __init__(self, target, delay, status_path):
        self.target, self.delay, self.status_path = target, delay, status_path
        self.lock = threading.Lock()
        self.pending = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self._write_status()
        threading.Thread(target=self._accept, daemon=True).start()

    def _write_status(self):
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("pending %d\n" % self.pending)
        os.replace(tmp, self.status_path)

    def _count(self, delta):
        with self.lock:
            self.pending += delta
            self._write_status()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                queue, cv = [], threading.Condition()
                threading.Thread(target=self._read, args=(a, queue, cv), daemon=True).start()
                threading.Thread(target=self._deliver, args=(b, queue, cv), daemon=True).start()

    def _read(self, sock, queue, cv):
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                self._count(1)
            with cv:
                queue.append((time.monotonic() + self.delay, data))
                cv.notify()
            if not data:
                return

    def _deliver(self, sock, queue, cv):
        while True:
            with cv:
                while not queue:
                    cv.wait()
                due, data = queue.pop(0)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the fault itself: this chunk is late by design
            if not data:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                sock.sendall(data)
            except OSError:
                pass
            finally:
                self._count(-1)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: run_etcd_cas.py BINARY [doctest options]")
    root = tempfile.mkdtemp(prefix="zaptid-etcd-cas-")
    cluster = None
    try:
        cluster = eh.EtcdCluster(os.path.join(root, "etcd"), 3)
        proxy = DelayProxy(cluster.nodes[0].endpoint, SLOW_DELAY, os.path.join(root, "proxy-status"))
        env = dict(os.environ)
        env["ZAPTID_TEST_ETCD"] = cluster.endpoints
        env["ZAPTID_TEST_ETCD_SLOW"] = proxy.address
        env["ZAPTID_TEST_PROXY_STATUS"] = proxy.status_path
        env["ZAPTID_TEST_SLOW_DELAY_MS"] = str(int(SLOW_DELAY * 1000))
        r = subprocess.run([sys.argv[1], *sys.argv[2:]], env=env, preexec_fn=_die_with_parent, timeout=240)
        return r.returncode
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
