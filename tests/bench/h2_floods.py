#!/usr/bin/python3
"""HTTP/2 floods against a real `zaptid serve` (docs/BENCHMARKS.md, "HTTP/2 floods"): for each
kind, one or more abusive raw connections for SECONDS while a grpcio client probes Gen and health
in turn with 1 s deadlines (5 a second); reports probes answered, the server's CPU seconds and
peak RSS. Loopback only. Run from tests/cli's parent with Debian's python3:

  tests/bench/h2_floods.py build/cli/zaptid [kind ...] [--runs 3] [--seconds 5]

Kinds: no_ack header_block window_update empty_data empty_continuation (tests/cli/h2raw.py),
ping settings priority, resets_50 (900 resets a second on each of 50 connections)."""
import argparse
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
import grpc  # noqa: E402
from h2raw import PREFACE, abuse, flood, probe, raw_frame, request_block  # noqa: E402


def chunks(kind, authority):
    if kind in ("no_ack", "header_block", "window_update", "empty_data", "empty_continuation"):
        yield from flood(kind, authority)
        return
    yield PREFACE + raw_frame(4, 0, 0) + raw_frame(4, 1, 0)
    if kind == "ping":
        while True:
            yield raw_frame(6, 0, 0, b"12345678") * 2000
    if kind == "settings":
        while True:
            yield raw_frame(4, 0, 0) * 2000
    if kind == "priority":
        sid = 1
        while True:
            yield b"".join(raw_frame(2, 0, sid + 2 * k, struct.pack(">IB", 0, 16)) for k in range(1000))
            sid += 2000
    if kind == "resets_50":
        block, sid = request_block(authority), 1
        while True:
            started = time.monotonic()
            yield b"".join(raw_frame(1, 4, sid + 2 * k, block) + raw_frame(3, 0, sid + 2 * k, struct.pack(">I", 8))
                           for k in range(90))
            sid += 180
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    raise ValueError(kind)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def one_run(zaptid, kind, seconds, machine_id):
    state = tempfile.mkdtemp(prefix="zaptid-bench-")
    proc = subprocess.Popen([zaptid, "serve", "--listen", "127.0.0.1:0", "--machine-id", str(machine_id),
                             "--state-dir", state], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        while "serving listen=" not in line:
            if not line:
                raise RuntimeError("zaptid serve did not start")
            line = proc.stderr.readline()
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        port = int(re.search(r"listen=\S+:(\d+)", line).group(1))
        authority = f"127.0.0.1:{port}"
        end = time.monotonic() + seconds

        def abuser():
            abuse(port, lambda: chunks(kind, authority), end)
        with grpc.insecure_channel(authority) as ch:
            probes = [ch.unary_unary("/idgen.IdGen/Gen"), ch.unary_unary("/grpc.health.v1.Health/Check")]
            probes[0](b"", timeout=5)
            cpu0 = cpu_seconds(proc.pid)
            threads = [threading.Thread(target=abuser) for _ in range(50 if kind == "resets_50" else 1)]
            for t in threads:
                t.start()
            answered, sent = probe(probes, end)
            for t in threads:
                t.join()
            cpu = cpu_seconds(proc.pid) - cpu0
        return answered / max(sent, 1), cpu, rss_mib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("zaptid")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--machine-id", type=int, default=4090)
    ap.add_argument("kinds", nargs="*", default=["no_ack", "header_block", "window_update", "empty_data",
                                                 "empty_continuation", "ping", "settings", "priority", "resets_50"])
    a = ap.parse_args()
    print(f"{'kind':20} {'probes answered':>16} {'server CPU s':>13} {'peak RSS MiB':>13}   (medians of {a.runs})")
    for kind in a.kinds:
        runs = [one_run(a.zaptid, kind, a.seconds, a.machine_id) for _ in range(a.runs)]
        ratio, cpu, rss = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{kind:20} {ratio:>15.0%} {cpu:>13.1f} {rss:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
