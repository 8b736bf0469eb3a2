#!/usr/bin/python3
"""Admission over the ceiling, and short deadlines on an idle server (issue 18), measured against
real `zaptid serve`s. The machine-id claim is host-wide, so run it in a network namespace of its
own:

  unshare -n sh -c 'ip link set lo up && tests/bench/fairness.py build/cli/zaptid --runs 5'

Each run starts a fresh server (sonyflake unless --layout, one machine id) and measures:
  idle   20 Gen calls with a 10 ms deadline, one after another, on the idle server: how many are OK;
  load   --clients connections each keeping one GenBatch(--batch-size) in flight with a 2 s
         deadline (`zaptid bench --method batch -c N -m 1 --timeout 2s`, which tries a call
         refused over capacity again after the server's hint), while one more connection calls
         Gen with a 1 s deadline four times a second, one try per call, from the second second
         on: the Gen caller's OK ratio, and the batch clients' IDs/s as a share of the layout's
         ceiling (IDs of OK calls only; an OK call is in time, gRPC ends a late one
         DEADLINE_EXCEEDED).
It prints every run and the medians. Needs python3-grpcio. These are throughput figures: they
belong in docs/BENCHMARKS.md, not in a test.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import grpc

SERVING_LINE = re.compile(r" serving listen=(\S+) ")


class Server:
    """`zaptid serve` on a free loopback port, with a state and host folder of its own."""

    def __init__(self, zaptid, args, tmp):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZAPTID_")}
        env["ZAPTID_STATE_DIR"] = os.path.join(tmp, "state")
        env["ZAPTID_HOST_DIR"] = os.path.join(tmp, "host")
        self.proc = subprocess.Popen([zaptid, "serve", "--listen", "127.0.0.1:0", *args], env=env,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        for line in self.proc.stderr:
            self.lines.append(line)
            m = SERVING_LINE.search(line)
            if m:
                self.address = m.group(1).split(",")[0]
                break
        else:
            raise SystemExit("zaptid serve did not start:\n" + "".join(self.lines))
        # Keep reading, so the server never blocks on a full pipe.
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def channel(address):
    """A channel with a connection of its own."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def idle_run(address, calls=20, timeout=0.010):
    with channel(address) as ch:
        gen = ch.unary_unary("/idgen.IdGen/Gen")
        gen(b"", timeout=5)  # connected
        ok, errors = 0, {}
        for _ in range(calls):
            try:
                gen(b"", timeout=timeout)
                ok += 1
            except grpc.RpcError as e:
                key = f"{e.code().name}: {e.details()}"
                errors[key] = errors.get(key, 0) + 1
        return ok, errors


def unary_caller(address, start, stop, outcomes, latencies):
    with channel(address) as ch:
        gen = ch.unary_unary("/idgen.IdGen/Gen")
        gen(b"", timeout=5)  # connected before the load starts
        start.wait()
        time.sleep(1)  # the batch clients fill the server first
        while not stop.is_set():
            began = time.monotonic()
            try:
                gen(b"", timeout=1)
                outcomes.append("OK")
                latencies.append(time.monotonic() - began)
            except grpc.RpcError as e:
                outcomes.append(f"{e.code().name}: {re.sub(r'[0-9]+', 'N', e.details())}")
            time.sleep(max(0.0, 0.25 - (time.monotonic() - began)))


def load_run(zaptid, address, clients, batch_size, duration):
    start, stop = threading.Event(), threading.Event()
    outcomes, latencies = [], []
    caller = threading.Thread(target=unary_caller, args=(address, start, stop, outcomes, latencies))
    caller.start()
    start.set()
    bench = subprocess.run([zaptid, "bench", "--server", address, "--method", "batch", "--batch-size",
                            str(batch_size), "-c", str(clients), "-m", "1", "--timeout", "2s", "--duration",
                            f"{duration}s", "--format", "json"], capture_output=True, text=True)
    stop.set()
    caller.join()
    if not bench.stdout.strip():
        raise SystemExit(f"zaptid bench printed nothing: {bench.stderr}")
    report = json.loads(bench.stdout)
    ok = outcomes.count("OK")
    errors = {}
    for o in outcomes:
        if o != "OK":
            errors[o] = errors.get(o, 0) + 1
    return {"unary_ok": ok, "unary_calls": len(outcomes), "unary_ok_ratio": ok / max(1, len(outcomes)),
            "unary_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "unary_max_ms": 1000 * max(latencies) if latencies else None, "unary_errors": errors,
            "batch_share": report["ceiling_share"], "batch_ok": report["requests_ok"],
            "batch_failed": report["requests_failed"], "batch_refused": report["requests_refused"],
            "batch_errors": report["errors"], "duplicates": report["duplicates"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("zaptid", help="the zaptid binary")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--clients", type=int, default=16, help="batch connections (one GenBatch in flight each)")
    p.add_argument("--batch-size", type=int, default=6400, help="IDs per GenBatch (sonyflake's --max-batch)")
    p.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    p.add_argument("--serve-arg", action="append", default=[], help="more `zaptid serve` arguments")
    args = p.parse_args()

    rows = []
    for run in range(args.runs):
        tmp = tempfile.mkdtemp(prefix="zaptid-fairness-")
        try:
            server = Server(args.zaptid, ["--machine-id", str(100 + run), *args.serve_arg], tmp)
            try:
                idle_ok, idle_errors = idle_run(server.address)
                row = load_run(args.zaptid, server.address, args.clients, args.batch_size, args.duration)
            finally:
                server.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row["idle_ok"], row["idle_errors"] = idle_ok, idle_errors
        rows.append(row)
        print(json.dumps({"run": run + 1, **row}), flush=True)

    def med(key):
        return statistics.median(r[key] for r in rows)

    print(f"medians of {len(rows)} runs: unary (1 s) OK {med('unary_ok_ratio'):.1%} "
          f"(of ~{med('unary_calls'):.0f} calls), batch clients {med('batch_share'):.1%} of the ceiling, "
          f"idle 10 ms deadlines {med('idle_ok'):.0f} of 20 OK")


if __name__ == "__main__":
    main()
