"""Real etcd servers for tests: Debian's etcd binary on free loopback ports with private data
folders, plus a small gRPC client for zaptid servers (Gen, GenBatch, Info, health) that needs no
generated code.

Ports come from the kernel (bind port 0, read the port, close); each server is waited for by
asking it (etcdctl endpoint health) until it answers or a deadline passes; cleanup kills it.
"""
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import grpc

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_port():
    """A loopback TCP port the kernel just handed out (and we released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deadline_loop(timeout, step=0.05):
    """Yields until `timeout` seconds have passed, pausing `step` between tries."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= end:
            return
        time.sleep(step)


def make_certs(folder):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in
    `folder`; returns {"ca", "server_cert", "server_key", "client_cert", "client_key"} paths."""
    os.makedirs(folder, exist_ok=True)
    p = {k: os.path.join(folder, k + ".pem") for k in
         ("ca", "ca_key", "server_cert", "server_key", "client_cert", "client_key")}
    ext = os.path.join(folder, "ext.cnf")
    with open(ext, "w") as f:
        f.write("[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
                "[client]\nextendedKeyUsage=clientAuth\n")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=zaptid test CA",
            "-keyout", p["ca_key"], "-out", p["ca"])
    for who in ("server", "client"):
        csr = os.path.join(folder, who + ".csr")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + who, "-keyout", p[who + "_key"],
                "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial", "-days", "2",
                "-extfile", ext, "-extensions", who, "-out", p[who + "_cert"])
    return p


class EtcdNode:
    """One etcd member. start() launches it; the owner calls kill() at cleanup. With `certs`
    (from make_certs) clients must use TLS with a client certificate."""

    def __init__(self, name, root, certs=None):
        self.name = name
        self.certs = certs
        os.makedirs(root, exist_ok=True)
        self.data_dir = os.path.join(root, name + ".etcd")
        self.log_path = os.path.join(root, name + ".log")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self.initial_cluster = None

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def start(self, initial_cluster, state="new"):
        self.initial_cluster = initial_cluster
        client_url = ("https://" if self.certs else "http://") + self.endpoint
        args = [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "zaptid-test"]
        if self.certs:
            args += ["--cert-file", self.certs["server_cert"], "--key-file", self.certs["server_key"],
                     "--trusted-ca-file", self.certs["ca"], "--client-cert-auth"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def restart(self):
        """Starts it again with the same data folder and ports (after kill())."""
        self.start(self.initial_cluster, state="existing")

    def tls_args(self):
        if not self.certs:
            return []
        return ["--cacert", self.certs["ca"], "--cert", self.certs["client_cert"], "--key", self.certs["client_key"]]

    def healthy(self):
        r = subprocess.run([ETCDCTL, "--endpoints", self.endpoint, *self.tls_args(), "--dial-timeout", "1s",
                            "--command-timeout", "1s", "endpoint", "health"],
                           capture_output=True, text=True, env=etcdctl_env())
        return r.returncode == 0

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running():
            self.proc.send_signal(signal.SIGCONT)  # a frozen process must be able to die
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def etcdctl_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


class EtcdCluster:
    """`size` etcd members on loopback, started together and waited for."""

    def __init__(self, root, size=1, timeout=30, certs=None):
        self.nodes = [EtcdNode("node%d" % i, root, certs) for i in range(size)]
        initial = ",".join("%s=%s" % (n.name, n.peer_url) for n in self.nodes)
        try:
            for n in self.nodes:
                n.start(initial)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def endpoints(self):
        return ",".join(n.endpoint for n in self.nodes)

    def wait_healthy(self, timeout=30, nodes=None):
        for n in nodes or self.nodes:
            for _ in deadline_loop(timeout, 0.1):
                if not n.running():
                    raise RuntimeError("etcd %s exited:\n%s" % (n.name, n.log()[-3000:]))
                if n.healthy():
                    break
            else:
                raise RuntimeError("etcd %s did not answer within %ss:\n%s" % (n.name, timeout, n.log()[-3000:]))

    def ctl(self, *args, check=True):
        """Runs etcdctl against the cluster; returns stdout."""
        r = subprocess.run([ETCDCTL, "--endpoints", self.endpoints, *self.nodes[0].tls_args(), "--dial-timeout", "2s",
                            "--command-timeout", "5s", *args], capture_output=True, text=True, env=etcdctl_env())
        if check and r.returncode != 0:
            raise RuntimeError("etcdctl %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def get(self, key):
        """The value of `key`, or None."""
        out = self.ctl("get", key, "--print-value-only")
        return out[:-1] if out.endswith("\n") else (out or None)

    def put(self, key, value):
        self.ctl("put", key, value)

    def stop(self):
        for n in self.nodes:
            n.kill()


# --- a zaptid server and a tiny client -------------------------------------------------------

def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def decode_fields(buf):
    """A protobuf message as {field: [values]}: varints as ints, length-delimited as bytes."""
    out = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError("wire type %d" % wire)
        out.setdefault(field, []).append(v)
    return out


def packed(values):
    """Unpacks packed varints (or passes plain varints through)."""
    out = []
    for v in values:
        if isinstance(v, bytes):
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                out.append(x)
        else:
            out.append(v)
    return out


def _encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


SERVING, NOT_SERVING = 1, 2


class IdClient:
    """Gen, GenBatch, Info and health of one zaptid server, over a plain gRPC channel."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        ident = lambda b: b  # noqa: E731
        self._gen = self.channel.unary_unary("/idgen.IdGen/Gen", request_serializer=ident, response_deserializer=ident)
        self._batch = self.channel.unary_unary("/idgen.IdGen/GenBatch", request_serializer=ident,
                                               response_deserializer=ident)
        self._info = self.channel.unary_unary("/idgen.IdGen/Info", request_serializer=ident,
                                              response_deserializer=ident)
        self._health = self.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=ident,
                                                response_deserializer=ident)

    def close(self):
        self.channel.close()

    def gen(self, timeout=2):
        f = decode_fields(self._gen(b"", timeout=timeout))
        return f.get(2, [0])[0]

    def batch(self, count, timeout=2):
        f = decode_fields(self._batch(b"\x08" + _encode_varint(count), timeout=timeout))
        return packed(f.get(1, []))

    def machine_ids(self, timeout=2):
        return packed(decode_fields(self._info(b"", timeout=timeout)).get(9, []))

    def health(self, timeout=2):
        """SERVING (1), NOT_SERVING (2), or None when the server cannot be asked."""
        try:
            return decode_fields(self._health(b"", timeout=timeout)).get(1, [0])[0]
        except grpc.RpcError:
            return None


class ServerProcess:
    """A running `zaptid serve`; its stderr is read by a thread so the log can be waited on."""

    LISTEN_RE = re.compile(r"serving listen=(\S+)")

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self.address = None
        self.client = None

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_line(self, pattern, timeout=20):
        """The first log line (from now on, or already seen) matching `pattern`; None on exit/timeout."""
        rx = re.compile(pattern)
        for line in list(self.lines):
            if rx.search(line):
                return line
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if rx.search(line):
                return line

    def wait_serving(self, timeout=20):
        """Waits for the start-up line; returns True and sets address/client, or False if it exited."""
        line = self.wait_line(self.LISTEN_RE.pattern, timeout)
        if line is None:
            return False
        self.address = self.LISTEN_RE.search(line).group(1).split(",")[0]
        self.client = IdClient(self.address)
        return True

    def log(self):
        return "".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends `sig` and waits; returns the exit status."""
        if self.client:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._t.join(5)
        return rc
