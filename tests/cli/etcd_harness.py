"""Real etcd servers for tests: Debian's etcd binary on free loopback ports with private data
folders, plus a small gRPC client for zaptid servers (Gen, GenBatch, Info, health).

Ports come from the kernel (bind port 0, read the port, close); each server is waited for by
asking it (etcdctl endpoint health) until it answers or a deadline passes; cleanup kills it.
"""
import os
import shutil
import signal
import subprocess
import time

import grpc

from harness import _die_with_parent, batch_ids, batch_request, fields, free_ports, packed_varints, raw_channel_call

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
# A TCP proxy that delays every chunk (this kernel has no netem): tests/faults/delay_proxy.py.
DELAY_PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults", "delay_proxy.py")


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

    def __init__(self, name, root, certs=None, ports=None):
        self.name = name
        self.certs = certs
        os.makedirs(root, exist_ok=True)
        self.data_dir = os.path.join(root, name + ".etcd")
        self.log_path = os.path.join(root, name + ".log")
        # A cluster hands each member distinct ports: two free_port() calls may return one port twice.
        self.client_port, self.peer_port = ports or free_ports(2)
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
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)

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
        for tool in (ETCD, ETCDCTL):
            if not os.access(tool, os.X_OK):
                raise RuntimeError("%s is missing: install the Debian packages etcd-server and etcd-client" % tool)
        ports = free_ports(2 * size)
        self.nodes = [EtcdNode("node%d" % i, root, certs, ports[2 * i:2 * i + 2]) for i in range(size)]
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


# --- a tiny client for zaptid servers --------------------------------------------------------

SERVING, NOT_SERVING = 1, 2


class IdClient:
    """Gen, GenBatch, Info and health of one zaptid server over a plain channel, with the
    hand-encoded messages of harness.py."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        self._gen = raw_channel_call(self.channel, "/idgen.IdGen/Gen")
        self._batch = raw_channel_call(self.channel, "/idgen.IdGen/GenBatch")
        self._info = raw_channel_call(self.channel, "/idgen.IdGen/Info")
        self._health = raw_channel_call(self.channel, "/grpc.health.v1.Health/Check")

    def close(self):
        self.channel.close()

    def gen(self, timeout=2):
        return next(v for num, _, v in fields(self._gen(b"", timeout=timeout)) if num == 2)

    def batch(self, count, timeout=2):
        return batch_ids(self._batch(batch_request(count), timeout=timeout))

    def machine_ids(self, timeout=2):
        ids = []
        for num, wt, v in fields(self._info(b"", timeout=timeout)):
            if num == 9:
                ids += packed_varints(v) if wt == 2 else [v]
        return ids

    def health(self, timeout=2):
        """SERVING (1), NOT_SERVING (2), or None when the server cannot be asked."""
        try:
            resp = self._health(b"", timeout=timeout)
        except grpc.RpcError:
            return None
        return next((v for num, _, v in fields(resp) if num == 1), 0)
