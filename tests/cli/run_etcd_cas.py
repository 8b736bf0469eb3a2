"""Runs the etcd compare-and-set tests (tests/test_etcd_cas.cpp) against real etcd.

Starts a 3-member etcd cluster on kernel-chosen loopback ports (etcd_harness) and a TCP proxy
(tests/faults/delay_proxy.py) in front of member 0 that delays every chunk by SLOW_DELAY seconds
in each direction, so that a call through it times out while its request still reaches etcd later: the
"unknown outcome" and the "late copy" of the tests. Then runs the test binary given as argv[1]
with ZAPTID_TEST_ETCD (the members), ZAPTID_TEST_ETCD_SLOW (the proxy) and
ZAPTID_TEST_PROXY_STATUS (a file the proxy rewrites with how many chunks it still holds, so a
test can wait for the late copy to be delivered instead of sleeping). Exits with its status.

Usage: /usr/bin/python3 run_etcd_cas.py BINARY [doctest options]
"""
import os
import shutil
import subprocess
import sys
import tempfile

import etcd_harness as eh
from harness import _die_with_parent, free_port

SLOW_DELAY = 1.5


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: run_etcd_cas.py BINARY [doctest options]")
    root = tempfile.mkdtemp(prefix="zaptid-etcd-cas-")
    cluster = proxy = None
    try:
        cluster = eh.EtcdCluster(os.path.join(root, "etcd"), 3)
        control, status = os.path.join(root, "delay"), os.path.join(root, "proxy-status")
        with open(control, "w") as f:
            f.write(str(SLOW_DELAY))
        slow = "127.0.0.1:%d" % free_port()
        proxy = subprocess.Popen(["/usr/bin/python3", eh.DELAY_PROXY, "--control", control, "--status", status,
                                  "%s=%s" % (slow, cluster.nodes[0].endpoint)],
                                 stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        if proxy.stdout.readline().strip() != "ready":
            sys.exit("the delaying proxy did not start")
        env = dict(os.environ)
        env["ZAPTID_TEST_ETCD"] = cluster.endpoints
        env["ZAPTID_TEST_ETCD_SLOW"] = slow
        env["ZAPTID_TEST_PROXY_STATUS"] = status
        env["ZAPTID_TEST_SLOW_DELAY_MS"] = str(int(SLOW_DELAY * 1000))
        r = subprocess.run([sys.argv[1], *sys.argv[2:]], env=env, preexec_fn=_die_with_parent, timeout=240)
        return r.returncode
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
            proxy.stdout.close()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
