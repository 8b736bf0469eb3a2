"""Shared helpers for tests that run the real zaptid binary.

Every test gets its own temporary folder and state folder, a clean environment (no ZAPTID_*
from the caller), and never a fixed port: servers listen on port 0 and report the real one.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

ZAPTID = os.environ.get("ZAPTID_BIN") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "cli", "zaptid"))

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_preload():
    """LD_PRELOAD to run zaptid under libfaketime. An AddressSanitizer build must find its runtime
    first in the preload list, so it goes first."""
    libs = subprocess.run(["ldd", ZAPTID], capture_output=True, text=True).stdout
    preload = [m.group(1) for m in [re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", libs, re.M)] if m]
    return ":".join(preload + [LIBFAKETIME])


SONYFLAKE_KEY = "e1409529600000-u10-t39-s8-m16-sm"
RECORD_SIZE = 256
DAMAGED = ("is damaged ({}); refusing to guess which IDs were issued. Remove it only when no zaptid with this "
           "machine id has run for longer than the clock wait limit")


def zaptid_record(machine_id, id, layout_key=SONYFLAKE_KEY):
    """A record of the largest ID issued with a machine id, byte for byte as zaptid writes it."""
    import zlib
    body = f"zaptid-record 2\nmachine-id {machine_id}\nid {id}\nlayout {layout_key}\n"
    text = f"{body}crc32 {zlib.crc32(body.encode()):08x}\n"
    return text + " " * (RECORD_SIZE - len(text) - 1) + "\n"


def recorded_id(path):
    """The ID a record file holds."""
    import re
    with open(path) as f:
        return int(re.search(r"\nid (\d+)\n", f.read()).group(1))


# The vector a real zaptidgen server (machine id 5) issued; see issue 2.
ZAPTIDGEN_ID = 647842057989128197


class ZaptidTestCase(unittest.TestCase):
    """Base class: self.tmp is a private folder, self.env the environment to run zaptid in."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zaptid-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ZAPTID_") or k == "ZAPTID_BIN"}
        self.env["ZAPTID_STATE_DIR"] = os.path.join(self.tmp, "state")
        # A host folder of the test's own: records it leaves behind must not constrain the host's
        # real zaptid (claims are host-wide all the same; tests use machine ids of their own).
        self.env["ZAPTID_HOST_DIR"] = os.path.join(self.tmp, "host")
        self.env["HOME"] = self.tmp

    def zaptid(self, *args, input=None, env=None, timeout=60):
        """Runs zaptid with args; returns CompletedProcess (text mode, stdout/stderr captured)."""
        run_env = dict(self.env)
        if env:
            run_env.update(env)
        return subprocess.run([ZAPTID, *map(str, args)], input=input, capture_output=True, text=True,
                              env=run_env, timeout=timeout)

    def popen(self, *args, env=None, **kwargs):
        """Starts zaptid in the background; the test's cleanup kills it if still running."""
        run_env = dict(self.env)
        if env:
            run_env.update(env)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([ZAPTID, *map(str, args)], env=run_env, text=True, **kwargs)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.addCleanup(stop)
        return proc

    def assertClosedPipeIsQuiet(self, *args):
        """Runs zaptid with args, reads one line and closes stdout: it must end with status 0 and
        nothing on stderr, the way `zaptid … | head -1` should."""
        p = subprocess.Popen([ZAPTID, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        first = p.stdout.readline()
        p.stdout.close()
        _, err = p.communicate(timeout=60)
        self.assertTrue(first.strip().isdigit(), first)
        self.assertEqual(err, b"")
        self.assertEqual(p.returncode, 0)

    def assertFails(self, result, status, message):
        """Asserts exit status `status` and exactly one stderr line starting 'zaptid: ' containing message."""
        self.assertEqual(result.returncode, status, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("zaptid: "), lines[0])
        self.assertIn(message, lines[0])


# ---- Servers ---------------------------------------------------------------------------------

import re
import signal
import threading

# The start-up line of `zaptid serve`: "... zaptid X serving listen=ADDR[,ADDR...] ..."
SERVING_LINE = re.compile(r" serving listen=(\S+) ")


class Server:
    """A running `zaptid serve`. address is "127.0.0.1:PORT" (the first --listen, real port),
    addresses every listen address as logged, lines the stderr lines so far (read on a thread,
    so the server never blocks on a full pipe)."""

    def __init__(self, proc, start_timeout):
        self.proc = proc
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for(SERVING_LINE, start_timeout)
        self.addresses = SERVING_LINE.search(line).group(1).split(",")
        self.address = self.addresses[0]
        self.port = int(self.address.rsplit(":", 1)[1]) if not self.address.startswith("unix:") else None
        self.start_line = line

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # end of stream
            self._cond.notify_all()

    def wait_for(self, pattern, timeout=30, count=1):
        """Waits until `count` stderr lines match the regex `pattern`; returns the last match's line.
        Fails if the server exits or the timeout passes first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(1 for l in self.lines if l and rx.search(l)) >= count or None in self.lines,
                timeout=timeout)
            matches = [l for l in self.lines if l and rx.search(l)]
            if len(matches) < count:
                state = "exited" if None in self.lines else ("timed out" if not ok else "stopped")
                raise AssertionError(f"zaptid serve {state} before logging {rx.pattern!r} x{count}; stderr:\n"
                                     + "\n".join(l for l in self.lines if l))
            return matches[count - 1]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends `sig` and waits for the exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=30)

    def log(self):
        return "\n".join(l for l in self.lines if l)


def _die_with_parent():
    # A test runner killed outright (timeout, ^C) must not leave servers holding locks and ports.
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_server(test, args, machine_id, listen, env, start_timeout):
    cmd = ["serve"]
    for a in ([listen] if isinstance(listen, str) else listen):  # [] leaves --listen out
        cmd += ["--listen", a]
    if machine_id is not None:
        cmd += ["--machine-id", machine_id]
    proc = test.popen(*cmd, *args, env=env, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        server = Server(proc, start_timeout)
    except AssertionError:
        proc.kill()
        raise
    test.addCleanup(server.kill)  # runs before popen's cleanup, which then finds the pipe drained
    return server


def start_server(self, *args, machine_id=1, listen="127.0.0.1:0", env=None, start_timeout=30):
    """Starts `zaptid serve --listen 127.0.0.1:0 --machine-id N ARGS...` in the test's state folder
    and returns a Server once it logged its start-up line (with the real port). listen may be a
    list; machine_id=None leaves it out (pass it in env or args). Cleanup kills it if still running."""
    return _start_server(self, args, machine_id, listen, env, start_timeout)


ZaptidTestCase.start_server = start_server


def free_port():
    """A loopback port nobody listens on right now (bound then closed), for 'dead server' tests."""
    return free_ports(1)[0]


def free_ports(n):
    """n distinct loopback ports nobody listens on right now: all bound at once, then closed. Ports
    taken one at a time can repeat, since each is free again when the next is asked for."""
    import contextlib
    import socket
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


# ---- Hand-encoded protobuf (no generated code: the bytes themselves are under test) ----------------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """Yields (field number, wire type, value) of a message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise ValueError(f"unexpected wire type {wt}")
        yield num, wt, v


def packed_varints(buf):
    out, i = [], 0
    while i < len(buf):
        v, i = read_varint(buf, i)
        out.append(v)
    return out


def string_field(num, text):
    data = text.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def batch_request(count):
    """idgen.BatchRequest{count}: field 1, varint."""
    return varint(1 << 3 | 0) + varint(count) if count else b""


def batch_ids(resp):
    """The ids of an idgen.BatchResponse (field 1, packed)."""
    ids = []
    for num, wt, v in fields(resp):
        assert num == 1, num
        ids += packed_varints(v) if wt == 2 else [v]
    return ids


def raw_channel_call(channel, method):
    """A unary callable on `channel` that sends and returns raw bytes."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)
