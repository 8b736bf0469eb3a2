#!/usr/bin/python3
"""A TCP proxy that delays every chunk, in each direction, by a one-way delay that can change
while it runs (this kernel has no netem, so the fault tests put this in front of etcd).

    delay_proxy.py --control FILE [--status FILE] LISTEN=TARGET [LISTEN=TARGET ...]
    e.g. delay_proxy.py --control /tmp/d 127.0.0.1:23790=10.213.5.11:2379

FILE holds the one-way delay in seconds ("0", "0.5", "2"); it is re-read every 50 ms (and on
SIGHUP), a missing or unreadable file meaning 0. Each chunk is stamped with the delay in force
when it arrived and goes out at arrival + delay, never before the chunk ahead of it, so order is
kept and lowering the delay never reorders. There is no buffer limit: a slow side simply queues.

When one side closes, what was already read from it is still delivered (late) to the other
side before that side is closed too: like packets already on the wire, a request sent just
before its sender died still arrives. Errors on a connection close that connection only.
Prints "ready" on stdout once every listener is bound. With --status, that file holds
"pending N" after every change: N chunks read and not yet delivered, so a test can wait for a
late request (and its answer) to have gone through instead of sleeping.
"""
import argparse
import asyncio
import os
import signal
import sys
import time


class Delay:
    def __init__(self, path):
        self.path = path
        self.value = 0.0
        self.reload()

    def reload(self):
        try:
            with open(self.path) as f:
                text = f.read().strip()
            self.value = max(0.0, float(text)) if text else 0.0
        except (OSError, ValueError):
            self.value = 0.0


def count_pending(stats, delta):
    stats["pending"] += delta
    path = stats.get("status")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write("pending %d\n" % stats["pending"])
        os.replace(path + ".tmp", path)


async def pump(reader, writer, delay, stats):
    """Copies reader -> writer, each chunk held back by the delay in force when it was read."""
    queue = asyncio.Queue()

    async def read_side():
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                count_pending(stats, 1)
                queue.put_nowait((time.monotonic() + delay.value, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            queue.put_nowait((time.monotonic() + delay.value, None))

    async def write_side():
        last_due = 0.0
        while True:
            due, data = await queue.get()
            due = max(due, last_due)
            last_due = due
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            try:
                writer.write(data)
                stats["bytes"] += len(data)
                await writer.drain()
            finally:
                count_pending(stats, -1)
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    except (OSError, ConnectionError):
        pass
    finally:
        reading.cancel()
        try:
            await reading
        except BaseException:
            pass
        while not queue.empty():  # never to be delivered: the other side is gone
            if queue.get_nowait()[1] is not None:
                count_pending(stats, -1)


async def handle(client_reader, client_writer, target, delay, stats):
    host, port = target
    stats["connections"] += 1
    try:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=30)
    except (OSError, asyncio.TimeoutError):
        client_writer.close()
        return
    try:
        await asyncio.gather(pump(client_reader, up_writer, delay, stats),
                             pump(up_reader, client_writer, delay, stats))
    finally:
        for w in (up_writer, client_writer):
            try:
                w.close()
            except Exception:
                pass


def split_hostport(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main_async(args):
    delay = Delay(args.control)
    stats = {"connections": 0, "bytes": 0, "pending": 0, "status": args.status}
    count_pending(stats, 0)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, delay.reload)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    servers = []
    for spec in args.routes:
        listen, _, target = spec.partition("=")
        lhost, lport = split_hostport(listen)
        tgt = split_hostport(target)
        servers.append(await asyncio.start_server(
            lambda r, w, tgt=tgt: handle(r, w, tgt, delay, stats), lhost, lport, reuse_address=True))
    print("ready", flush=True)

    async def reload_loop():
        while True:
            await asyncio.sleep(0.05)
            delay.reload()
    reloader = asyncio.ensure_future(reload_loop())
    await stop.wait()
    reloader.cancel()
    for s in servers:
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control", required=True, help="file holding the one-way delay in seconds")
    p.add_argument("--status", help="file to hold \"pending N\", the chunks not yet delivered")
    p.add_argument("routes", nargs="+", metavar="LISTEN=TARGET", help="host:port=host:port")
    args = p.parse_args()
    if os.environ.get("ZF_DIE_WITH_PARENT"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
