#!/usr/bin/python3
"""Fault injection against zaptid's "never a duplicate across servers" guarantee.

How to run (as root: it creates network namespaces; needs Debian's etcd-server, etcd-client,
iptables, faketime and python3-grpcio):

    ZAPTID_BIN=build/cli/zaptid /usr/bin/python3 tests/faults/run.py --short   # ~3.5 min, for CI
    ZAPTID_BIN=build/cli/zaptid /usr/bin/python3 tests/faults/run.py --long    # ~15 min, >= 1M IDs
    ... run.py --only ttl=3,combined --combined-repeats 3   # chosen faults only (names below)
    ... run.py --short --json result.json --keep DIR        # result file; keep all recordings
    /usr/bin/python3 tests/faults/check.py DIR              # check kept recordings again
    /usr/bin/python3 tests/faults/lab.py cleanup zf<pid>-   # namespaces of a run killed by SIGKILL

Exit status 0 only when the checker finds nothing (1: findings, 2: the run itself failed,
77: not root, nothing run).
ZAPTID_BIN is the front (build/cli/zaptid); it finds its zaptid-net relative to itself.
Everything is bounded (--max-minutes, default 9 short / 28 long) and always torn down.

The lab (lab.py): network namespaces zf<pid>-* joined by a bridge in a switch namespace, with
addresses 10.213.<n>.0/24 that exist only there (nothing in the root namespace, no default
route). Three etcd members e0-e2 (Debian's etcd, one namespace each); four server hosts s0-s3
(three `zaptid serve --machine-id-from etcd --machine-id-range 0-2 --lease-ttl 10s
--max-clock-wait 15s` at a time, one per host, the fourth host for takeovers), each reaching
etcd only through its own delay proxy (delay_proxy.py, 127.0.0.1:23790-23792 inside the host);
a client host c running two load processes (client.py: Gen and GenBatch(64) with a 1 s
deadline, 8 calls/s per server each, every returned ID recorded with the server's address --
one address per process -- and the time) and `etcdctl watch --prefix /zaptid/ -w json`
(restarted from the next revision if it dies; at the end the whole history is replayed from
revision 1 and compared). Whenever a server dies or loses its id for good, a replacement is
started so that three servers hold the three ids.

Faults (one after another, healing in between; --only takes these names):
  cut       a server cut from etcd by iptables for TTL+6 s; the spare host takes its id over
  leader    the etcd leader cut from its two peers by iptables for 8 s
  sigstop   a server SIGSTOPped for TTL+6 s, its id taken over meanwhile, then SIGCONT
  etcdstop  the etcd leader SIGSTOPped 6 s, then SIGCONT
  etcdkill  an etcd member SIGKILLed, restarted 6 s later on its data
  latency   0.5 s one-way delay + 30% packet loss (iptables statistic, both directions)
            between a server and etcd for 20 s (12 s short): share of its calls answered within
            1 s; then a server started fresh behind a 0.45 s one-way delay: does it come up?
  skew      a server SIGKILLed, its successor started with FAKETIME +2s; again with -2s
  combined  proxy delay 2 s on a server; the delay drops back to 0 for a moment while it still
            runs; SIGKILL it as soon as the watch shows its highwater going down (or after
            --combined-fast s); its successor for the freed id starts under libfaketime with
            FAKETIME=-12s and --max-clock-wait 15s. The order-preserving proxy alone never
            reorders writes: it takes a delay that drops, so that reservation copies sent at
            2 s (and already timed out by the client, which retried elsewhere) land after
            newer ones -- "a late, retried transaction applied after a newer one". At TTL 3
            (calls time out after 750 ms) 2 s suffices; at TTL 10 (2 s call timeout) it takes
            more, so --long alternates 2 s and 5 s there (--combined-delays).
  ttl=N     replace the servers one by one with TTL N s ones
--short: cut, sigstop, etcdstop, etcdkill, latency, combined at TTL 10, then TTL 3 and
         combined x2.
--long:  every fault, combined x5 at TTL 10, then TTL 3 with combined x5, back to TTL 10, then
         further rounds (cut, sigstop, etcdstop, etcdkill, combined, skew) until --min-ids
         (1,000,000) IDs are recorded.
Servers under libfaketime are stopped once their fault is over: gRPC's timer threads spin
under libfaketime here (~1.7 cores), so they are kept short-lived.

The checker (check.py): (a) duplicate IDs; (b) per machine id, holders (server processes) in
the order they returned IDs: an ID below one an earlier holder had already returned; (c) in
the watch log any decrease of a highwater record, except one written in the same transaction
as a delete of the machines key (a clean release, counted apart and required to be >= every
cursor returned with that id); decreases by a server that then stopped cleanly and revoked its
lease in a later transaction are reported as such, but still count; (d) the final highwater
records (servers running, and after they stopped) >= every cursor returned. The summary also
gives IDs recorded, calls/ok/IDs per fault window, and the latency fault's per-server success.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check  # noqa: E402
from lab import Lab  # noqa: E402

ZAPTID = os.environ.get("ZAPTID_BIN") or os.path.abspath(os.path.join(HERE, "..", "..", "build", "cli", "zaptid"))
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
PREFIX = "/zaptid/"
SERVING_LINE = re.compile(r" serving listen=(\S+) ")
CLAIMED = re.compile(r"claimed machine id (\S+) (from etcd|again)")
PROXY_PORT = 23790


class Abort(Exception):
    pass


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class EtcdMember:
    def __init__(self, name, host, root):
        self.name, self.host = name, host
        self.data_dir = os.path.join(root, "etcd", name)
        self.log_path = os.path.join(root, "etcd", name + ".log")
        self.proc = None

    @property
    def client_url(self):
        return "http://%s:2379" % self.host.ip

    @property
    def peer_url(self):
        return "http://%s:2380" % self.host.ip


class Instance:
    """One `zaptid serve` process."""

    def __init__(self, n, host, port, ttl, faketime, log_path):
        self.n, self.host, self.port, self.ttl, self.faketime = n, host, port, ttl, faketime
        self.address = "%s:%d" % (host.ip, port)
        self.log_path = log_path
        self.proc = None
        self.started = self.serving = self.ended = None
        self.exit = None
        self.claims = []
        self.kind = ""
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def record(self):
        return {"n": self.n, "address": self.address, "host": self.host.name, "pid": self.proc.pid if self.proc else None,
                "ttl": self.ttl, "faketime": self.faketime, "kind": self.kind, "started": self.started,
                "serving": self.serving, "ended": self.ended, "exit": self.exit, "claims": self.claims}


class Runner:
    def __init__(self, args):
        self.args = args
        self.t_begin = time.time()
        self.deadline = time.monotonic() + args.max_minutes * 60
        self.root = tempfile.mkdtemp(prefix="zaptid-faults-")
        for d in ("etcd", "servers", "clients", "hosts"):
            os.makedirs(os.path.join(self.root, d))
        self.lab = None
        self.etcd = []
        self.instances = []
        self.proxies = {}
        self.clients = []
        self.watchers = []
        self.faults = []
        self.ttl = args.ttl
        self.n_inst = 0
        self.n_combined = 0
        import random
        self.rng = random.Random(args.seed)

    # ---- plumbing --------------------------------------------------------------------------
    def check_time(self):
        if time.monotonic() > self.deadline:
            raise Abort("time limit (--max-minutes %s) reached" % self.args.max_minutes)

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while True:
            self.housekeeping()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def housekeeping(self):
        self.check_time()
        for inst in self.instances:
            if inst.proc is not None and inst.ended is None and inst.proc.poll() is not None:
                inst.ended = time.time()
                inst.exit = inst.proc.returncode
                self.write_servers_file()
        if self.watchers and self.watchers[-1][0].poll() is not None:
            self.start_watcher()
        for c in self.clients:
            if c.poll() is not None:
                raise Abort("a client process exited (%s)" % c.returncode)

    def etcdctl(self, *args, timeout=15, check=True):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
        eps = ",".join(m.client_url for m in self.etcd)
        r = self.lab.run(self.client_host, [ETCDCTL, "--endpoints", eps, "--dial-timeout", "2s",
                                            "--command-timeout", "5s", *args], timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise RuntimeError("etcdctl %s: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def fault(self, name, **info):
        f = {"name": name, "start": time.time(), "ttl": self.ttl, **info}
        self.faults.append(f)
        log("fault %d: %s %s" % (len(self.faults), name, " ".join("%s=%s" % kv for kv in info.items())))
        return f

    def end_fault(self, f, **info):
        f["end"] = time.time()
        f.update(info)

    # ---- setup -----------------------------------------------------------------------------
    def setup(self):
        for tool in (ETCD, ETCDCTL, ZAPTID):
            if not os.access(tool, os.X_OK):
                raise Abort("%s is missing or not executable" % tool)
        self.lab = Lab()
        log("lab %s* on %s.0/24, files in %s" % (self.lab.prefix, self.lab.net, self.root))
        self.etcd_hosts = [self.lab.add_host("e%d" % i) for i in range(3)]
        self.server_hosts = [self.lab.add_host("s%d" % i) for i in range(4)]
        self.client_host = self.lab.add_host("c")
        self.etcd = [EtcdMember("e%d" % i, h, self.root) for i, h in enumerate(self.etcd_hosts)]
        initial = ",".join("%s=%s" % (m.name, m.peer_url) for m in self.etcd)
        for m in self.etcd:
            self.start_etcd(m, initial, "new")
        self.wait_etcd_healthy(self.etcd, 60)
        for h in self.server_hosts:
            self.start_proxy(h)
        self.start_watcher()
        self.write_servers_file()
        for h in self.server_hosts[:3]:
            if not self.start_server(h, kind="initial", attempts_for=30):
                raise Abort("initial server on %s did not start" % h.name)
        for i in range(self.args.clients):
            self.start_client(i)

    def start_etcd(self, m, initial=None, state="existing"):
        if initial is not None:
            m.initial = initial
        args = [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", m.initial, "--initial-cluster-state", state,
                "--initial-cluster-token", "zaptid-faults", "--logger", "zap", "--log-outputs", "stderr"]
        with open(m.log_path, "ab") as f:
            m.proc = self.lab.popen(m.host, args, stdout=f, stderr=subprocess.STDOUT)

    def wait_etcd_healthy(self, members, timeout):
        env = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"}
        end = time.monotonic() + timeout
        for m in members:
            while True:
                r = self.lab.run(self.client_host, [ETCDCTL, "--endpoints", m.client_url, "--dial-timeout", "1s",
                                                    "--command-timeout", "2s", "endpoint", "health"], env=env)
                if r.returncode == 0:
                    break
                if m.proc.poll() is not None:
                    raise Abort("etcd %s exited: see %s" % (m.name, m.log_path))
                if time.monotonic() > end:
                    raise Abort("etcd %s not healthy within %ss" % (m.name, timeout))
                time.sleep(0.3)

    def etcd_leader(self):
        r = self.etcdctl("endpoint", "status", "-w", "json", check=False)
        try:
            for st in json.loads(r.stdout):
                s = st["Status"]
                if s["leader"] == s["header"]["member_id"]:
                    return next(m for m in self.etcd if m.client_url == st["Endpoint"])
        except (ValueError, KeyError, StopIteration):
            pass
        return None

    def start_proxy(self, host):
        ctl = os.path.join(self.root, "hosts", host.name + ".delay")
        with open(ctl, "w") as f:
            f.write("0\n")
        routes = ["127.0.0.1:%d=%s:2379" % (PROXY_PORT + i, m.host.ip) for i, m in enumerate(self.etcd)]
        p = self.lab.popen(host, [PYTHON, os.path.join(HERE, "delay_proxy.py"), "--control", ctl, *routes],
                           stdout=subprocess.PIPE, stderr=open(os.path.join(self.root, "hosts", host.name + ".proxy.log"), "w"),
                           text=True)
        if p.stdout.readline().strip() != "ready":
            raise Abort("delay proxy on %s did not start" % host.name)
        self.proxies[host.name] = ctl

    def set_delay(self, host, seconds):
        ctl = self.proxies[host.name]
        with open(ctl + ".tmp", "w") as f:
            f.write("%s\n" % seconds)
        os.replace(ctl + ".tmp", ctl)

    def start_watcher(self):
        rev = 1
        for _, path in self.watchers:
            last = last_revision(path)
            if last:
                rev = max(rev, last + 1)
        path = os.path.join(self.root, "watch%03d.jsonl" % len(self.watchers))
        env = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"}
        eps = ",".join(m.client_url for m in self.etcd)
        with open(path, "w") as out:
            p = self.lab.popen(self.client_host, [ETCDCTL, "--endpoints", eps, "--dial-timeout", "2s", "watch", "--prefix",
                                                  PREFIX, "--rev", str(rev), "-w", "json"],
                               stdout=out, stderr=subprocess.DEVNULL, env=env)
        self.watchers.append((p, path))
        if len(self.watchers) > 1:
            log("watcher restarted from revision %d" % rev)

    def start_client(self, i):
        out = os.path.join(self.root, "clients", "c%d.log" % i)
        p = self.lab.popen(self.client_host, [PYTHON, os.path.join(HERE, "client.py"), "--servers", self.servers_file,
                                              "--out", out, "--rate", str(self.args.rate), "--batch", str(self.args.batch),
                                              "--deadline", "1.0", "--max-seconds", str(self.args.max_minutes * 60 + 120)],
                           stdout=subprocess.DEVNULL, stderr=open(out + ".err", "w"))
        self.clients.append(p)

    @property
    def servers_file(self):
        return os.path.join(self.root, "servers.json")

    def write_servers_file(self):
        addrs = [i.address for i in self.instances if i.alive() and i.serving]
        with open(self.servers_file + ".tmp", "w") as f:
            json.dump(addrs, f)
        os.replace(self.servers_file + ".tmp", self.servers_file)

    # ---- servers ---------------------------------------------------------------------------
    def server_env(self, host, faketime):
        d = os.path.join(self.root, "hosts", host.name)
        env = {"PATH": "/usr/bin:/bin", "HOME": d, "ZAPTID_STATE_DIR": os.path.join(d, "state"),
               "ZAPTID_HOST_DIR": os.path.join(d, "host")}
        pre = []
        if faketime:
            libs = subprocess.run(["ldd", ZAPTID], capture_output=True, text=True).stdout
            asan = re.findall(r"^\s*(libasan\.so\S*)\s+=>\s+(\S+)", libs, re.M)
            pre = ["env", "LD_PRELOAD=" + ":".join([a[1] for a in asan] + [LIBFAKETIME]), "FAKETIME=" + faketime,
                   "FAKETIME_DONT_FAKE_MONOTONIC=1", "FAKETIME_NO_CACHE=1"]
        return env, pre

    def launch(self, host, ttl, faketime=None, kind=""):
        self.n_inst += 1
        n = self.n_inst
        inst = Instance(n, host, 7000 + n, ttl, faketime, os.path.join(self.root, "servers", "i%03d-%s.log" % (n, host.name)))
        inst.kind = kind
        env, pre = self.server_env(host, faketime)
        eps = ",".join("127.0.0.1:%d" % (PROXY_PORT + i) for i in range(len(self.etcd)))
        argv = pre + [ZAPTID, "serve", "--listen", inst.address, "--machine-id-from", "etcd", "--etcd-endpoints", eps,
                      "--etcd-prefix", PREFIX, "--lease-ttl", "%ds" % ttl, "--machine-id-range", "0-2",
                      "--max-clock-wait", self.args.max_clock_wait]
        inst.started = time.time()
        with open(inst.log_path, "w") as f:
            inst.proc = self.lab.popen(host, argv, stdout=subprocess.DEVNULL, stderr=f, env=env)
        self.instances.append(inst)
        return inst

    def wait_serving(self, inst, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = inst.log_text()
            m = SERVING_LINE.search(text)
            if m:
                inst.serving = time.time()
                inst.claims = CLAIMED.findall(text)
                self.write_servers_file()
                return True
            if not inst.alive():
                inst.ended = time.time()
                inst.exit = inst.proc.returncode
                return False
            self.sleep(0.1)
        return False

    def start_server(self, host, ttl=None, faketime=None, kind="", attempts_for=0, start_timeout=40):
        """Starts a server on host; while it exits at once (range full: the freed id's lease has
        not run out yet) tries again every second for `attempts_for` seconds. Returns the
        instance, or None."""
        ttl = ttl or self.ttl
        end = time.monotonic() + attempts_for
        while True:
            inst = self.launch(host, ttl, faketime, kind)
            if self.wait_serving(inst, start_timeout):
                log("  started i%d on %s (%s)%s: %s" % (inst.n, host.name, inst.address,
                                                       " FAKETIME=" + faketime if faketime else "",
                                                       ", ".join(" ".join(c) for c in inst.claims)))
                return inst
            if inst.alive():
                inst.proc.kill()
                inst.proc.wait()
                inst.ended, inst.exit = time.time(), "start timeout"
                log("  i%d on %s did not come up within %ss" % (inst.n, host.name, start_timeout))
                return None
            last = inst.log_text().strip().splitlines()[-1:] or [""]
            if time.monotonic() > end:
                log("  i%d on %s exited %s: %s" % (inst.n, host.name, inst.exit, last[0][-200:]))
                return None
            self.sleep(1.0)

    def live(self):
        return [i for i in self.instances if i.alive()]

    def free_host(self, exclude=()):
        busy = {i.host.name for i in self.live()}
        for h in self.server_hosts:
            if h.name not in busy and h.name not in exclude:
                return h
        return None

    def prefix_values(self, folder):
        """{id: value} of the keys under PREFIX + folder, or None if etcd did not answer."""
        import base64
        r = self.etcdctl("get", "--prefix", PREFIX + folder, "-w", "json", check=False)
        try:
            return {int(base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]):
                    base64.b64decode(kv.get("value", "")).decode()
                    for kv in json.loads(r.stdout).get("kvs") or []}
        except (ValueError, KeyError):
            return None

    def holders(self):
        """{machine id: address} from etcd's machines keys."""
        values = self.prefix_values("machines/")
        if values is None:
            return None
        return {mid: (m.group(1) if (m := re.search(r"\baddr=(\S+)", v)) else None) for mid, v in values.items()}

    def kill(self, inst, sig=signal.SIGKILL):
        if inst.alive():
            if sig == signal.SIGKILL:
                inst.proc.send_signal(signal.SIGCONT)
            inst.proc.send_signal(sig)
            try:
                inst.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()
        inst.ended = inst.ended or time.time()
        inst.exit = inst.proc.returncode
        self.write_servers_file()

    def normalize(self, timeout=None):
        """Back to three live servers that hold the three ids: servers that lost their id for good
        are stopped (SIGTERM), missing ones started on free hosts."""
        timeout = timeout or (self.ttl * 2 + 30)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            h = self.holders()
            if h is None:
                self.sleep(1)
                continue
            live = self.live()
            live_addrs = {i.address for i in live}
            held_live = {mid for mid, a in h.items() if a in live_addrs}
            idle = [i for i in live if i.address not in h.values()]
            if len(held_live) == 3 and not idle:
                return True
            if idle and len(h) == 3:  # the range is full: they cannot claim again
                for i in idle:
                    log("  stopping i%d (%s): holds no machine id" % (i.n, i.address))
                    self.kill(i, signal.SIGTERM)
                continue
            if len(live) < 3 and not idle:
                host = self.free_host()
                if host is None:
                    raise Abort("no free server host")
                self.start_server(host, kind="replacement", attempts_for=self.ttl + 15)
                continue
            self.sleep(1)
        log("  WARNING: pool not back to 3 holders within %ss: %s" % (timeout, self.holders()))
        return False

    def pick_victim(self, k):
        live = sorted(self.live(), key=lambda i: i.n)
        return live[k % len(live)]

    # ---- faults ----------------------------------------------------------------------------
    def out_past_ttl(self, name, k, take_out, bring_back, after):
        """A server out of etcd's reach for TTL + 6 s while the spare host takes its id over."""
        v = self.pick_victim(k)
        f = self.fault(name, victim=v.address)
        take_out(v)
        t0 = time.monotonic()
        self.sleep(self.ttl + 1)
        spare = self.free_host()
        take = self.start_server(spare, kind="takeover", attempts_for=6) if spare else None
        self.sleep(max(0.0, self.ttl + 6 - (time.monotonic() - t0)))
        bring_back(v)
        self.sleep(after)
        self.end_fault(f, takeover=take.address if take else None)
        self.normalize()

    def f_cut(self, k):
        self.out_past_ttl("cut", k, lambda v: self.lab.partition(v.host, self.etcd_hosts),
                          lambda v: self.lab.heal(v.host), 4)

    def f_leader(self, k):
        leader = self.etcd_leader()
        if leader is None:
            log("  no etcd leader found; skipping")
            return
        peers = [m.host for m in self.etcd if m is not leader]
        f = self.fault("leader", member=leader.name)
        self.lab.partition(leader.host, peers)
        self.sleep(8)
        self.lab.heal(leader.host)
        self.sleep(4)
        self.end_fault(f, new_leader=getattr(self.etcd_leader(), "name", None))
        self.normalize()

    def f_sigstop(self, k):
        self.out_past_ttl("sigstop", k, lambda v: v.proc.send_signal(signal.SIGSTOP),
                          lambda v: v.proc.send_signal(signal.SIGCONT), 5)

    def f_etcdstop(self, k):
        m = self.etcd_leader() or self.etcd[k % 3]
        f = self.fault("etcdstop", member=m.name)
        m.proc.send_signal(signal.SIGSTOP)
        self.sleep(6)
        m.proc.send_signal(signal.SIGCONT)
        self.sleep(4)
        self.end_fault(f)
        self.normalize()

    def f_etcdkill(self, k):
        m = self.etcd_leader() if k % 2 == 0 else self.etcd[k % 3]
        m = m or self.etcd[0]
        f = self.fault("etcdkill", member=m.name)
        m.proc.kill()
        m.proc.wait()
        self.sleep(6)
        self.start_etcd(m)
        self.wait_etcd_healthy([m], 60)
        self.sleep(3)
        self.end_fault(f)
        self.normalize()

    def f_latency(self, k, seconds=20):
        v = self.pick_victim(k)
        f = self.fault("latency", victim=v.address, delay=0.5, loss=self.args.loss, seconds=seconds)
        self.set_delay(v.host, 0.5)
        self.lab.loss(v.host, self.etcd_hosts, self.args.loss)
        t0 = time.time()
        self.sleep(seconds)
        t1 = time.time()
        self.lab.clear_loss(v.host)
        self.set_delay(v.host, 0)
        self.end_fault(f, window=[t0, t1])
        self.sleep(3)
        self.normalize()
        # A server started fresh behind a 0.45 s one-way delay: does it come up?
        v = self.pick_victim(k + 1)
        f = self.fault("fresh-start-0.45", host=v.host.name)
        host = v.host
        self.kill(v, signal.SIGTERM)  # clean stop: its id is free at once
        self.set_delay(host, 0.45)
        t = time.monotonic()
        inst = self.start_server(host, kind="fresh behind 0.45s", attempts_for=0, start_timeout=30)
        took = time.monotonic() - t
        last = (inst.log_text() if inst else self.instances[-1].log_text()).strip().splitlines()[-1:] or [""]
        self.set_delay(host, 0)
        self.end_fault(f, came_up=inst is not None, seconds=round(took, 2), exit=self.instances[-1].exit,
                       last_line=last[0][-300:])
        self.sleep(3)
        self.normalize()

    def f_skew(self, k):
        for skew in ("+2s", "-2s"):
            v = self.pick_victim(k)
            f = self.fault("skew", victim=v.address, faketime=skew)
            host = v.host
            self.kill(v, signal.SIGKILL)
            inst = self.start_server(host, faketime=skew, kind="skew " + skew, attempts_for=self.ttl + 15)
            self.sleep(10)
            self.end_fault(f, successor=inst.address if inst else None)
            self.retire_skewed()
            self.normalize()

    def f_combined(self, k):
        """Proxy delay 2 s on a server; then the delay drops back to 0 for a moment while the
        server still runs (its retried reservation copies, sent at 2 s, are still on the way and
        now land after newer ones: an order-preserving delay alone never reorders anything);
        SIGKILL; the successor for the freed id starts with its clock 12 s behind."""
        a = self.args
        v = self.pick_victim(k)
        host = v.host
        # While held at 2 s the server goes on (TTL 3: calls time out after 750 ms, so copies of
        # a reservation pile up in the proxy) until it stops issuing at TTL - margin.
        hold = a.combined_hold if a.combined_hold is not None else self.rng.uniform(0.3, 0.75) * min(self.ttl, 8)
        # Then at 0 s it confirms its lease again and issues (and reserves) at once, while the
        # copies sent at 2 s land behind the new reservations for up to 2 s.
        fast = a.combined_fast if a.combined_fast is not None else self.rng.uniform(2.0, 3.5)
        spec = a.combined_delays or ("2" if self.ttl <= 5 or a.mode != "long" else "2,5")
        delays = [float(x) for x in spec.split(",")]
        delay = delays[self.n_combined % len(delays)]
        self.n_combined += 1
        f = self.fault("combined", victim=v.address, delay=delay, hold=round(hold, 2),
                       fast=round(fast, 2), faketime=a.combined_faketime)
        self.set_delay(host, delay)
        self.sleep(hold)
        self.set_delay(host, 0)
        if a.combined_kill == "timer":
            self.sleep(fast)
            seen = None
        else:
            seen = self.wait_for_decrease(v, fast_max=max(fast, 4.0))
        self.kill(v, signal.SIGKILL)
        f["killed_after_decrease"] = seen
        inst = self.start_server(host, faketime=a.combined_faketime, kind="combined successor",
                                 attempts_for=self.ttl + delay + 20, start_timeout=40)
        self.sleep(a.combined_observe)
        self.end_fault(f, successor=inst.address if inst else None)
        self.retire_skewed()
        self.normalize()

    def retire_skewed(self):
        """Stops (SIGTERM) servers running under libfaketime: gRPC's timer threads spin under it
        (~1.7 cores here), so they live only as long as their fault."""
        for i in self.live():
            if i.faketime:
                log("  retiring i%d (FAKETIME=%s)" % (i.n, i.faketime))
                self.kill(i, signal.SIGTERM)

    def wait_for_decrease(self, inst, fast_max):
        """Polls the live watch log until the highwater of inst's machine id goes down (then returns
        the seconds waited) or fast_max passes (None): the kill then lands while the lowered
        record is the last one written."""
        claims = CLAIMED.findall(inst.log_text())
        if not claims:
            self.sleep(fast_max)
            return None
        key = PREFIX + "highwater/" + claims[-1][0]
        path = self.watchers[-1][1]
        t0 = time.monotonic()
        top = None
        with open(path, errors="replace") as f:
            for line in f.read().split("\n"):  # what was written before: only sets the top
                for v in highwater_values(line, key):
                    top = v if top is None else max(top, v)
            buf = ""
            while time.monotonic() - t0 < fast_max:
                chunk = f.read()
                if chunk:
                    buf += chunk
                    lines = buf.split("\n")
                    buf = lines.pop()
                    for line in lines:
                        for v in highwater_values(line, key):
                            if top is not None and v < top:
                                return round(time.monotonic() - t0, 3)
                            top = v if top is None else max(top, v)
                else:
                    time.sleep(0.01)
        return None

    def rotate_ttl(self, ttl):
        """Replaces every server (one at a time, SIGTERM) with one using lease TTL `ttl`."""
        f = self.fault("ttl-change", ttl=ttl)
        self.ttl = ttl
        for v in sorted(self.live(), key=lambda i: i.n):
            host = v.host
            self.kill(v, signal.SIGTERM)
            self.start_server(host, ttl=ttl, kind="ttl %ds" % ttl, attempts_for=15)
            self.sleep(2)
        self.end_fault(f)
        self.normalize()

    # ---- the run ---------------------------------------------------------------------------
    def plan(self):
        a = self.args
        if a.only:
            names = a.only.split(",")
            steps = []
            for name in names:
                if name.startswith("ttl="):
                    steps.append(("ttl", int(name[4:].rstrip("s"))))
                else:
                    steps += [(name, None)] * (a.combined_repeats if name == "combined" else 1)
            return [steps]
        if a.mode == "short":
            return [[("cut", None), ("sigstop", None), ("etcdstop", None), ("etcdkill", None), ("latency", None),
                     ("combined", None), ("ttl", 3)] + [("combined", None)] * a.combined_repeats]
        full = [("cut", None), ("leader", None), ("sigstop", None), ("etcdstop", None), ("etcdkill", None),
                ("latency", None), ("skew", None)] + [("combined", None)] * a.combined_repeats
        return [full, [("ttl", 3)] + [("combined", None)] * a.combined_repeats + [("ttl", a.ttl)]]

    def total_ids(self):
        n = 0
        for path in os_glob(os.path.join(self.root, "clients", "*.log")):
            with open(path) as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[4] == "OK":
                        n += parts[5].count(",") + 1
        return n

    def run_steps(self, steps, round_no):
        for k, (name, arg) in enumerate(steps):
            self.check_time()
            j = k + round_no
            if name == "ttl":
                self.rotate_ttl(arg)
            elif name == "latency":
                self.f_latency(j, seconds=20 if self.args.mode == "long" else 12)
            else:
                getattr(self, "f_" + name)(j)
            self.sleep(self.args.settle)

    def main(self):
        self.setup()
        log("warming up %ss" % self.args.settle)
        self.sleep(self.args.settle)
        rounds = self.plan()
        for r, steps in enumerate(rounds):
            self.run_steps(steps, r)
        if self.args.mode == "long" and not self.args.only:
            extra = [("cut", None), ("sigstop", None), ("etcdstop", None), ("etcdkill", None), ("combined", None),
                     ("skew", None)]
            r = len(rounds)
            while self.total_ids() < self.args.min_ids:
                if time.monotonic() > self.deadline - 120:
                    log("WARNING: stopping early, %d IDs < --min-ids %d" % (self.total_ids(), self.args.min_ids))
                    break
                log("round %d: %d IDs so far" % (r, self.total_ids()))
                self.run_steps(extra, r)
                r += 1
        self.finish()

    def finish(self):
        log("stopping clients")
        for c in self.clients:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in self.clients:
            try:
                c.wait(timeout=15)
            except subprocess.TimeoutExpired:
                c.kill()
        final = {"live": self.read_highwater()}
        log("stopping servers (SIGTERM: each releases its id)")
        for i in self.live():
            self.kill(i, signal.SIGTERM)
        final["after_release"] = self.read_highwater()
        with open(os.path.join(self.root, "final.json"), "w") as f:
            json.dump(final, f)
        self.replay()

    def read_highwater(self):
        try:
            return {str(mid): int(v) for mid, v in (self.prefix_values("highwater/") or {}).items()}
        except ValueError:
            return {}

    def replay(self):
        """The whole history of the prefix from revision 1 (no compaction), to compare with the live
        watch and to miss nothing."""
        r = self.etcdctl("get", PREFIX, "--prefix", "--keys-only", "-w", "json", check=False)
        try:
            head = json.loads(r.stdout)["header"]["revision"]
        except (ValueError, KeyError):
            log("WARNING: could not read the current revision; no replay")
            return
        time.sleep(1)
        path = os.path.join(self.root, "replay.jsonl")
        env = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"}
        eps = ",".join(m.client_url for m in self.etcd)
        with open(path, "w") as out:
            p = self.lab.popen(self.client_host, [ETCDCTL, "--endpoints", eps, "watch", "--prefix", PREFIX, "--rev", "1",
                                                  "-w", "json"], stdout=out, stderr=subprocess.DEVNULL, env=env)
            end = time.monotonic() + 60
            while time.monotonic() < end and (last_revision(path) or 0) < head:
                time.sleep(0.3)
            p.kill()
            p.wait()
        # Give the live watcher time to catch up too, then stop it.
        end = time.monotonic() + 10
        while time.monotonic() < end and (last_revision(self.watchers[-1][1]) or 0) < head:
            time.sleep(0.3)
        for p, _ in self.watchers:
            if p.poll() is None:
                p.kill()
                p.wait()

    def write_records(self):
        with open(os.path.join(self.root, "instances.json"), "w") as f:
            json.dump([i.record() for i in self.instances], f, indent=1)
        with open(os.path.join(self.root, "faults.json"), "w") as f:
            json.dump(self.faults, f, indent=1)

    def close(self):
        if self.lab:
            self.lab.close()


def os_glob(pattern):
    import glob
    return glob.glob(pattern)


def highwater_values(line, key):
    """The values put to `key` in one line of `etcdctl watch -w json` output."""
    import base64
    if not line.startswith("{"):
        return []
    try:
        msg = json.loads(line)
    except ValueError:
        return []
    out = []
    for ev in msg.get("Events") or []:
        kv = ev.get("kv", {})
        if ev.get("type") in (None, 0, "PUT") and base64.b64decode(kv.get("key", "")).decode(errors="replace") == key:
            try:
                out.append(int(base64.b64decode(kv.get("value", "")).decode()))
            except ValueError:
                pass
    return out


def last_revision(path):
    """The highest mod_revision in an etcdctl watch -w json file (reads the tail only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    revs = [int(x) for x in re.findall(r'"mod_revision":(\d+)', tail)]
    return max(revs) if revs else None


def summarize(runner, result, calls):
    """Adds per-fault window statistics to result and prints the summary."""
    inst_by_addr = {i.address: i for i in runner.instances}
    per_fault = []
    for f in runner.faults:
        t0, t1 = f["start"], f.get("end", f["start"])
        row = {"name": f["name"], **{k: v for k, v in f.items() if k not in ("name", "start", "end")},
               "duration": round(t1 - t0, 1), "all": check.window_stats(calls, t0, t1)}
        if f["name"] == "latency" and "window" in f:
            w0, w1 = f["window"]
            row["victim_calls"] = check.window_stats(calls, w0 + 1, w1, f["victim"])
            row["others_calls"] = check.window_stats(
                [c for c in calls if c[2] != f["victim"]], w0 + 1, w1)
        per_fault.append(row)
    result["faults"] = per_fault
    result["servers_started"] = len(runner.instances)
    result["per_server"] = {}
    for i in runner.instances:
        st = [c for c in calls if c[2] == i.address]
        if st:
            ok = sum(1 for c in st if c[4] == "OK")
            result["per_server"]["i%d" % i.n] = {"address": i.address, "host": i.host.name, "kind": i.kind,
                                                 "faketime": i.faketime, "calls": len(st), "ok": ok,
                                                 "ids": sum(c[5] for c in st)}
    del inst_by_addr
    counts = {}
    for f in runner.faults:
        counts[f["name"]] = counts.get(f["name"], 0) + 1
    result["fault_counts"] = counts

    print("\n==== zaptid fault test summary ====")
    print("duration %.0f s; servers started %d; faults %s" % (result["duration"], len(runner.instances),
                                                           ", ".join("%s x%d" % kv for kv in counts.items())))
    print("calls %d (ok %d), IDs recorded %d" % (result["calls"], result["calls_ok"], result["ids_recorded"]))
    print("duplicates %d (across servers %d)" % (result["duplicates"], result["duplicates_across_servers"]))
    print("holder-order regressions %d" % result["holder_order_violations"])
    print("highwater decreases %d: %d other than a clean stop's two-step release (%d: lowered, then the lease "
          "revoked in a later transaction); one-transaction releases %d, releases below a returned ID %d" % (
              result["highwater_decreases"],
              result["highwater_decreases"] - result["highwater_decreases_two_step_release"],
              result["highwater_decreases_two_step_release"], result["clean_releases"], len(result["bad_releases"])))
    print("final highwater below a returned cursor: %d" % len(result["final_below_returned"]))
    w = result["watch"]
    print("watch: %s events (live %s, replay %s, missed by live %s)" % (
        w["events"], w["live_events"], w["replay_events"], w["missed_by_live_watcher"]))
    for row in per_fault:
        a = row["all"]
        extra = ""
        if row["name"] == "latency" and "victim_calls" in row:
            vc, oc = row["victim_calls"], row["others_calls"]
            extra = " | victim answered within 1s: %s/%s (%s), others %s" % (vc["ok"], vc["calls"], vc["ok_share"],
                                                                          oc["ok_share"])
        if row["name"] == "fresh-start-0.45":
            extra = " | came up: %s after %ss" % (row.get("came_up"), row.get("seconds"))
        if row["name"] == "combined":
            extra = " | successor %s" % row.get("successor")
        print("  %-16s %5.1fs calls %5d ok %5d ids %7d%s" % (row["name"], row["duration"], a["calls"], a["ok"],
                                                            a["ids"], extra))
    for d in result["duplicate_examples"][:5]:
        print("  duplicate:", d)
    for d in result["holder_order_examples"][:5]:
        print("  order:", d)
    for d in result["highwater_decrease_examples"][:8]:
        print("  decrease:", d)
    print("RESULT: %s" % ("OK" if result["ok"] else "FOUND PROBLEMS"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--short", dest="mode", action="store_const", const="short")
    g.add_argument("--long", dest="mode", action="store_const", const="long")
    p.add_argument("--only", help="comma-separated faults: cut,leader,sigstop,etcdstop,etcdkill,latency,skew,combined "
                   "(repeated --combined-repeats times), ttl=N (replace the servers by TTL N s ones)")
    p.add_argument("--ttl", type=int, default=10, help="lease TTL in seconds (default 10)")
    p.add_argument("--combined-repeats", type=int)
    p.add_argument("--combined-delays", help="one-way proxy delays (s) the combined faults cycle through "
                   "(default 2; with --long and a TTL above 5 s: 2,5)")
    p.add_argument("--combined-hold", type=float, help="seconds at that delay (default random 0.3-0.75 x TTL, at most 6)")
    p.add_argument("--combined-fast", type=float,
                   help="seconds at delay 0 before the SIGKILL (default random 2-3.5)")
    p.add_argument("--combined-faketime", default="-12s", help="FAKETIME of the successor")
    p.add_argument("--combined-kill", choices=("on-decrease", "timer"), default="on-decrease",
                   help="SIGKILL as soon as the watch shows the victim's highwater going down (at most "
                        "max(fast, 4 s) after the delay drops), or after --combined-fast seconds")
    p.add_argument("--combined-observe", type=float, default=16.0, help="seconds to watch the successor")
    p.add_argument("--seed", type=int, help="random seed (victims' timings); printed")
    p.add_argument("--max-clock-wait", default="15s")
    p.add_argument("--loss", type=float, default=0.3)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--rate", type=float, help="calls per second per server per client")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--settle", type=float, help="seconds between faults")
    p.add_argument("--min-ids", type=int, default=1_000_000, help="--long: at least this many IDs")
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--keep", help="copy the recordings (logs, watch, client files) to this folder")
    a = p.parse_args()
    a.mode = a.mode or "short"
    if a.combined_repeats is None:
        a.combined_repeats = 5 if a.mode == "long" else 2
    if a.rate is None:
        a.rate = 8.0
    if a.settle is None:
        a.settle = 6.0 if a.mode == "long" else 4.0
    if a.max_minutes is None:
        a.max_minutes = 28 if a.mode == "long" else 9
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    print("seed %d" % a.seed)
    if os.geteuid() != 0:
        print("run.py needs root (network namespaces, iptables): skipped", file=sys.stderr)
        return 77  # ctest's SKIP_RETURN_CODE

    runner = Runner(a)

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (background job)
    status = 2
    failure = None
    try:
        runner.main()
    except (Abort, KeyboardInterrupt, Exception) as e:
        failure = "%s: %s" % (type(e).__name__, e)
        traceback.print_exc()
    finally:
        try:
            runner.write_records()
        except Exception:
            traceback.print_exc()
        runner.close()
    try:
        result, calls, _ = check.check(runner.root, PREFIX)
        result["duration"] = round(time.time() - runner.t_begin, 1)
        result["mode"] = "only " + a.only if a.only else a.mode
        result["zaptid"] = ZAPTID
        result["run_failure"] = failure
        summarize(runner, result, calls)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=1, default=str)
        status = 0 if result["ok"] and not failure else (1 if not result["ok"] else 2)
        if failure:
            print("RUN FAILED: %s" % failure)
    except Exception:
        traceback.print_exc()
    if a.keep:
        # Everything but etcd's own data folders (hundreds of MB of preallocated WAL).
        shutil.copytree(runner.root, a.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("member"))
        print("recordings kept in %s" % a.keep)
    shutil.rmtree(runner.root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
