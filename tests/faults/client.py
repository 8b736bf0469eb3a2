#!/usr/bin/python3
"""Load and recorder for the fault tests: calls every zaptid server listed in a JSON file
(re-read every 200 ms) with a fixed deadline, mixing idgen.IdGen/Gen and GenBatch, and appends
one line per call to --out:

    T_SEND T_RECV ADDRESS METHOD STATUS [ID,ID,...]

T_* are time.time() of the call's start and end, METHOD g (Gen) or b (GenBatch), STATUS "OK" or
the gRPC status code name. The messages are encoded by hand (tests/cli/harness.py), no generated
stubs. One thread per server address; SIGTERM flushes and exits.
"""
import argparse
import json
import os
import random
import signal
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import batch_ids, batch_request, fields, raw_channel_call  # noqa: E402

stop = threading.Event()
out_lock = threading.Lock()
pending = []


def emit(line):
    with out_lock:
        pending.append(line)


def worker(address, args, active):
    channel = grpc.insecure_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 100),
                                                      ("grpc.min_reconnect_backoff_ms", 100),
                                                      ("grpc.max_reconnect_backoff_ms", 500)])
    gen = raw_channel_call(channel, "/idgen.IdGen/Gen")
    batch = raw_channel_call(channel, "/idgen.IdGen/GenBatch")
    interval = 1.0 / args.rate
    rng = random.Random()
    next_t = time.monotonic() + rng.random() * interval
    while not stop.is_set() and active.get(address):
        now = time.monotonic()
        if next_t > now:
            stop.wait(next_t - now)
            continue
        next_t = max(next_t + interval, now)
        use_batch = rng.random() < args.batch_share
        t0 = time.time()
        try:
            if use_batch:
                ids = batch_ids(batch(batch_request(args.batch), timeout=args.deadline))
            else:
                ids = [next(v for num, _, v in fields(gen(b"", timeout=args.deadline)) if num == 2)]
            status = "OK"
        except grpc.RpcError as e:
            ids, status = [], e.code().name
        except Exception as e:  # a malformed answer is recorded, never fatal
            ids, status = [], "BAD:" + type(e).__name__
        t1 = time.time()
        emit("%.6f %.6f %s %s %s %s" % (t0, t1, address, "b" if use_batch else "g", status,
                                         ",".join(map(str, ids))))
    channel.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", required=True, help="JSON file: list of host:port")
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=5.0, help="calls per second per server")
    p.add_argument("--batch", type=int, default=50, help="ids per GenBatch call")
    p.add_argument("--batch-share", type=float, default=0.7, help="share of calls that are GenBatch")
    p.add_argument("--deadline", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=7200, help="exit after this long in any case")
    args = p.parse_args()
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the runner
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    active, threads = {}, {}
    end = time.monotonic() + args.max_seconds
    with open(args.out, "a") as out:
        last_mtime = None
        while not stop.is_set() and time.monotonic() < end:
            try:
                mtime = os.stat(args.servers).st_mtime_ns
                if mtime != last_mtime:
                    with open(args.servers) as f:
                        wanted = set(json.load(f))
                    last_mtime = mtime
                    for a in list(active):
                        if a not in wanted:
                            active[a] = False
                    for a in wanted:
                        if not active.get(a):
                            active[a] = True
                            if a not in threads or not threads[a].is_alive():
                                threads[a] = threading.Thread(target=worker, args=(a, args, active), daemon=True)
                                threads[a].start()
            except (OSError, ValueError):
                pass
            with out_lock:
                lines, pending[:] = list(pending), []
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
            stop.wait(0.2)
        stop.set()
        for t in threads.values():
            t.join(timeout=args.deadline + 1)
        with out_lock:
            lines = list(pending)
        if lines:
            out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
