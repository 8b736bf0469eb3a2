#!/usr/bin/python3
"""A network lab of Linux network namespaces for fault tests.

One "switch" namespace holds a bridge; each host is a namespace joined to the bridge by a veth
pair (eth0 inside the host, h<N> in the switch) with an address from a private /24 that exists
only inside these namespaces. Nothing is configured in the root namespace: links are created
directly inside their namespaces, there are no default routes, so no traffic can leave the
machine. Namespace names start with a per-run prefix (zf<pid>-); Lab.close() (also run by the
context manager, on Ctrl-C and on exceptions) kills every process left in them and deletes them.

    python3 lab.py cleanup PREFIX     removes leftover namespaces of a crashed run (PREFIX zf<pid>-;
                                      "zf" removes every lab's, also a running one's)
    python3 lab.py selftest           builds a small lab, checks partition and loss, removes it

Faults (each bounded and undone by heal()/clear_loss()): partition(a, b) drops all traffic
between two hosts with iptables inside a's namespace, both directions; loss(a, peers, p) drops
a share p of the packets between a and each peer at random (iptables statistic match), in both
directions.
"""
import os
import signal
import subprocess
import sys
import time

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
IPTABLES = "/usr/sbin/iptables" if os.path.exists("/usr/sbin/iptables") else "iptables"

PART_CHAIN = "ZF_PART"
LOSS_CHAIN = "ZF_LOSS"


def _run(argv, check=True, timeout=20, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r


def list_namespaces():
    r = _run([IP, "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def namespace_pids(ns):
    r = _run([IP, "netns", "pids", ns], check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def kill_namespace_processes(ns, grace=2.0):
    """SIGCONT + SIGKILL to every process inside namespace ns (all of them were started by the lab's
    owner: the namespace is private to one run)."""
    deadline = time.monotonic() + grace + 5
    while time.monotonic() < deadline:
        pids = [p for p in namespace_pids(ns) if p != os.getpid()]
        if not pids:
            return
        for p in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)


def cleanup(prefix):
    """Deletes every namespace whose name starts with prefix (after killing what runs inside)."""
    if not prefix or not prefix.startswith("zf"):
        raise ValueError("refusing to clean up namespaces not made by this lab: %r" % prefix)
    removed = []
    for ns in list_namespaces():
        if ns.startswith(prefix):
            kill_namespace_processes(ns)
            _run([IP, "netns", "del", ns], check=False)
            removed.append(ns)
    return removed


def _die_with_parent():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()  # our own group: a Ctrl-C at the terminal reaches the runner only


class Host:
    def __init__(self, lab, name, index):
        self.lab = lab
        self.name = name
        self.index = index
        self.ns = lab.prefix + name
        self.ip = "%s.%d" % (lab.net, index)

    def __repr__(self):
        return "Host(%s %s)" % (self.name, self.ip)


class Lab:
    """Create with Lab(); use as a context manager (or call close()) so it is always removed."""

    def __init__(self, prefix=None, subnet=None):
        self.prefix = prefix or "zf%d-" % os.getpid()
        # 10.213.<n>.0/24; n from the pid only so that two labs are told apart in logs: the
        # addresses live in separate bridges and namespaces, they never meet.
        self.net = "10.213.%d" % (subnet if subnet is not None else (os.getpid() % 250 + 1))
        self.hosts = {}
        self.procs = []
        self._closed = False
        cleanup(self.prefix)  # leftovers of an earlier run that had our pid
        self.switch = self.prefix + "sw"
        try:
            _run([IP, "netns", "add", self.switch])
            self.ns_exec_check(self.switch)
            _run([IP, "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run([IP, "-n", self.switch, "link", "set", "br0", "up"])
            _run([IP, "-n", self.switch, "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def ns_exec_check(ns):
        if ns not in list_namespaces():
            raise RuntimeError("namespace %s was not created" % ns)

    def add_host(self, name):
        index = len(self.hosts) + 10
        host = Host(self, name, index)
        veth_sw = "h%d" % index
        _run([IP, "netns", "add", host.ns])
        self.hosts[name] = host
        # Both ends are created directly inside their namespaces: nothing appears in the root one.
        _run([IP, "link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", veth_sw,
              "netns", self.switch])
        _run([IP, "-n", self.switch, "link", "set", veth_sw, "master", "br0", "up"])
        _run([IP, "-n", host.ns, "link", "set", "lo", "up"])
        _run([IP, "-n", host.ns, "addr", "add", host.ip + "/24", "dev", "eth0"])
        _run([IP, "-n", host.ns, "link", "set", "eth0", "up"])
        for chain in (PART_CHAIN, LOSS_CHAIN):
            self.iptables(host, "-N", chain)
            self.iptables(host, "-I", "INPUT", "-j", chain)
            self.iptables(host, "-I", "OUTPUT", "-j", chain)
        return host

    # ---- processes -----------------------------------------------------------------------
    def argv(self, host, argv):
        return [IP, "netns", "exec", host.ns, *map(str, argv)]

    def popen(self, host, argv, **kw):
        """Starts argv inside host's namespace. `ip netns exec` execs in place, so the Popen's pid is
        the program's own (signals reach it). The process dies with the runner (PDEATHSIG)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("preexec_fn", _die_with_parent)
        p = subprocess.Popen(self.argv(host, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, host, argv, timeout=20, check=False, **kw):
        return _run(self.argv(host, argv), check=check, timeout=timeout, **kw)

    # ---- faults --------------------------------------------------------------------------
    def iptables(self, host, *args, check=True):
        return _run([IP, "netns", "exec", host.ns, IPTABLES, "-w", "5", *args], check=check)

    def partition(self, a, b):
        """Drops every packet between hosts a and b (rules in a's namespace, both directions)."""
        for peer in (b if isinstance(b, (list, tuple)) else [b]):
            self.iptables(a, "-A", PART_CHAIN, "-s", peer.ip, "-j", "DROP")
            self.iptables(a, "-A", PART_CHAIN, "-d", peer.ip, "-j", "DROP")

    def heal(self, a=None):
        """Removes partitions (of host a, or of every host)."""
        for h in ([a] if a else self.hosts.values()):
            self.iptables(h, "-F", PART_CHAIN)

    def loss(self, a, peers, probability):
        """Drops a share `probability` of the packets between a and each peer, each direction."""
        for peer in peers:
            for sel in ("-s", "-d"):
                self.iptables(a, "-A", LOSS_CHAIN, sel, peer.ip, "-m", "statistic", "--mode", "random",
                              "--probability", "%.4f" % probability, "-j", "DROP")

    def clear_loss(self, a=None):
        for h in ([a] if a else self.hosts.values()):
            self.iptables(h, "-F", LOSS_CHAIN)

    def rule_counters(self, host):
        return self.iptables(host, "-L", "-v", "-n", "-x", check=False).stdout

    # ---- teardown ------------------------------------------------------------------------
    def close(self):
        if self._closed:
            return
        self._closed = True
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        cleanup(self.prefix)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def selftest():
    """Builds a 3-host lab, checks reachability, a partition and 30% loss, and removes it."""
    import socket
    with Lab() as lab:
        a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
        recv = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "s.bind((sys.argv[1],9999));s.settimeout(1.5);n=0\n"
                "try:\n while True: s.recv(10); n+=1\nexcept socket.timeout: pass\nprint(n)\n")
        send = ("import socket,sys,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "for i in range(1000):\n try: s.sendto(b'x',(sys.argv[1],9999))\n except OSError: pass\n"
                " time.sleep(0.0005)\n")

        def count(src, dst):
            r = lab.popen(dst, [sys.executable, "-c", recv, dst.ip], stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            lab.run(src, [sys.executable, "-c", send, dst.ip], timeout=30)
            return int(r.communicate(timeout=10)[0].strip() or 0)
        print("a->b", count(a, b), "a->c", count(a, c))
        lab.partition(a, b)
        print("partitioned a|b: a->b", count(a, b), "b->a", count(b, a), "a->c", count(a, c))
        lab.heal()
        lab.loss(a, [b], 0.3)
        print("30%% loss a<->b: a->b %d b->a %d (of 1000)" % (count(a, b), count(b, a)))
        lab.clear_loss()
        print("healed: a->b", count(a, b))
        print("namespaces:", [n for n in list_namespaces() if n.startswith(lab.prefix)])
    print("after close:", [n for n in list_namespaces() if n.startswith(lab.prefix)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "cleanup":
        print("removed:", cleanup(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "selftest":
        selftest()
    else:
        print(__doc__)
