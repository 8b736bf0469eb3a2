"""zaptid's two parts: the front (local commands, no gRPC) and the network part it runs.

The front must work alone for version, gen, decode and compose; serve, get and bench need
<libexecdir>/zaptid/zaptid-net, and without it (or with one from another build) fail with one clear
`zaptid: ` line and status 1. Runs against the build tree or, with ZAPTID_BIN, an installed zaptid.
"""
import os
import re
import shutil
import subprocess
import unittest

from harness import ZAPTID, ZaptidTestCase

# The installed layout (bin/zaptid, libexec/zaptid/zaptid-net), which the build tree copies.
NET = os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(ZAPTID)), "..", "libexec", "zaptid",
                                    "zaptid-net"))
NET_COMMANDS = ["serve", "get", "bench"]


class FrontAloneTest(ZaptidTestCase):
    """A copy of the front in a folder of its own, with no network part beside it."""

    def setUp(self):
        super().setUp()
        os.makedirs(os.path.join(self.tmp, "bin"))
        self.front = os.path.join(self.tmp, "bin", "zaptid")
        shutil.copy2(ZAPTID, self.front)
        self.missing = os.path.join(self.tmp, "libexec", "zaptid", "zaptid-net")

    def run_front(self, *args):
        return subprocess.run([self.front, *map(str, args)], capture_output=True, text=True, env=self.env,
                              timeout=60)

    def test_local_commands_work_without_the_network_part(self):
        r = self.run_front("version")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertRegex(r.stdout, r"^zaptid \d+\.\d+\.\d+\n$")
        r = self.run_front("gen", "--machine-id", "41", "--count", "2")
        self.assertEqual((r.returncode, r.stderr), (0, ""), r.stderr)
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(ids), 2)
        self.assertLess(ids[0], ids[1])
        r = self.run_front("decode", "--format", "json", ids[1])
        self.assertEqual((r.returncode, r.stderr), (0, ""), r.stderr)
        self.assertIn("\"machine-id\":41}", r.stdout)
        r = self.run_front("compose", "--tick", "38614395737", "--machine-id", "5")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "647842057989128197\n", ""))
        r = self.run_front("--help")
        self.assertEqual(r.returncode, 0)
        for command in NET_COMMANDS:
            self.assertRegex(r.stdout, rf"\n  {command} ")

    def test_network_commands_fail_clearly_without_it(self):
        for args in (["get", "--server", "127.0.0.1:1"], ["serve", "--machine-id", "42"], ["get", "--help"],
                     ["bench"]):
            with self.subTest(args=args):
                r = self.run_front(*args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertEqual(r.stderr,
                                 f"zaptid: zaptid {args[0]} needs zaptid's network part {self.missing}: "
                                 "No such file or directory (reinstall zaptid)\n")

    def test_usage_errors_before_the_subcommand_need_no_network_part(self):
        r = self.run_front("--log-level", "loud", "get")
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith("zaptid: --log-level: "), r.stderr)


class NetworkPartTest(ZaptidTestCase):
    def run_net(self, *args, front=None):
        env = dict(self.env)
        if front is not None:
            env["ZAPTID_FRONT"] = front
        return subprocess.run([NET, *args], capture_output=True, text=True, env=env, timeout=60)

    def test_it_sits_where_the_front_looks(self):
        self.assertTrue(os.access(NET, os.X_OK), NET)

    def test_it_runs_in_the_fronts_process_with_the_users_argv(self):
        # serve shows in ps (and in a refused claim's holder line) as the command the user typed.
        server = self.popen("serve", "--listen", "127.0.0.1:0", "--machine-id", "4061")
        line = server.stderr.readline()
        self.assertIn(" serving listen=", line)
        with open(f"/proc/{server.pid}/cmdline", "rb") as f:
            self.assertEqual(f.read().split(b"\0")[:-1],
                             [os.fsencode(ZAPTID), b"serve", b"--listen", b"127.0.0.1:0", b"--machine-id", b"4061"])
        self.assertEqual(os.path.realpath(f"/proc/{server.pid}/exe"), os.path.realpath(NET))

    def test_it_sees_the_standard_descriptors_closed_that_were_closed_for_the_front(self):
        # Its own std_fds.cpp runs (.preinit_array): run directly, a closed stdout is refused.
        version = self.zaptid("version").stdout.split()[1]
        env = dict(self.env, ZAPTID_FRONT=version, NET=NET)
        r = subprocess.run(["sh", "-c", 'exec "$NET" get --server 127.0.0.1:1 >&-'], capture_output=True,
                           text=True, env=env, timeout=60)
        self.assertEqual((r.returncode, r.stderr), (1, "zaptid: cannot write to standard output: it is closed\n"))
        # Through the front, serve (which may run with stdout closed) starts with stdin and stdout
        # closed as the front did (it marks the ones it reopened close-on-exec), reopens them on
        # /dev/null itself, and no listener, lock or log takes descriptor 0 or 1.
        server = subprocess.Popen(["sh", "-c", 'exec "$0" serve --listen 127.0.0.1:0 --machine-id 4062 <&- >&-',
                                   ZAPTID], stderr=subprocess.PIPE, text=True, env=self.env)
        self.addCleanup(lambda: (server.poll() is None and server.kill(), server.communicate()))
        line = server.stderr.readline()
        self.assertIn(" serving listen=", line)
        self.assertEqual(os.path.realpath(f"/proc/{server.pid}/exe"), os.path.realpath(NET))
        for fd in (0, 1):
            self.assertEqual(os.readlink(f"/proc/{server.pid}/fd/{fd}"), "/dev/null")

    def test_it_is_no_command_of_its_own(self):
        r = self.run_net("get", "--server", "127.0.0.1:1")
        self.assertEqual((r.returncode, r.stdout), (2, ""))
        self.assertEqual(r.stderr, "zaptid: zaptid-net is the network part of zaptid, not a command of its own: "
                                   "run zaptid\n")

    def test_a_front_of_another_build_is_refused(self):
        version = self.zaptid("version").stdout.split()[1]
        r = self.run_net("get", "--server", "127.0.0.1:1", front="0.0.0-other")
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertEqual(r.stderr, f"zaptid: zaptid 0.0.0-other and its network part {os.path.realpath(NET)} "
                                   f"({version}) come from different builds: reinstall zaptid\n")

    def test_the_front_links_no_grpc_protobuf_or_openssl(self):
        needed = subprocess.run(["readelf", "-d", ZAPTID], capture_output=True, text=True, check=True).stdout
        libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed)
        self.assertTrue(libs, needed)
        for lib in libs:
            self.assertNotRegex(lib, r"grpc|gpr|protobuf|absl|ssl|crypto|upb|re2|cares")
        with open(ZAPTID, "rb") as f:
            image = f.read()
        # Strings every binary with gRPC or protobuf inside holds, stripped or not.
        for marker in (b"grpc-status", b"google.protobuf", b"grpc_init"):
            self.assertNotIn(marker, image)
        with open(NET, "rb") as f:
            self.assertIn(b"grpc-status", f.read())

    def test_neither_part_loads_fmt_spdlog_or_libmicrohttpd(self):
        # Serve opens libmicrohttpd itself, only for --metrics-listen, so a one-shot get does not
        # load it and the GnuTLS it brings. fmt and spdlog are compiled in, except in a sanitizer
        # build (CMakeLists.txt, zaptid_log).
        for binary in (ZAPTID, NET):
            needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
            libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed)
            self.assertIn("libc.so.6", libs, binary)
            sanitized = any(re.match(r"lib[at]san\.", lib) for lib in libs)
            for lib in libs:
                with self.subTest(binary=binary, lib=lib):
                    self.assertNotRegex(lib, r"microhttpd|gnutls")
                    if not sanitized:
                        self.assertNotRegex(lib, r"fmt|spdlog")

    def test_openssl_is_loaded_only_for_tls(self):
        # zaptid-net calls the shared OpenSSL through stubs that open it on first use
        # (cmake/ZaptidLazyOpenssl.cmake); a build with ZAPTID_LAZY_OPENSSL=OFF links it as usual.
        with open(NET, "rb") as f:
            if b"TLS needs OpenSSL" not in f.read():
                self.skipTest("this zaptid-net links OpenSSL at start (ZAPTID_LAZY_OPENSSL=OFF)")
        server = self.start_server(machine_id=43)
        with open(f"/proc/{server.proc.pid}/maps") as f:
            self.assertNotRegex(f.read(), r"libssl|libcrypto")
        # A libssl.so.3 that is not OpenSSL, found first: plaintext never opens it, TLS says so.
        fake = os.path.join(self.tmp, "fake-openssl")
        os.mkdir(fake)
        with open(os.path.join(fake, "fake.c"), "w") as f:
            f.write("int not_openssl(void) { return 0; }\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libssl.so.3", "-o", os.path.join(fake, "libssl.so.3"),
                        os.path.join(fake, "fake.c")], check=True)
        env = {"LD_LIBRARY_PATH": fake}
        r = self.zaptid("get", "--server", server.address, env=env)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(int(r.stdout) & 0xFFFF, 43)
        r = self.zaptid("get", "--tls", "--timeout", "2s", "--server", server.address, env=env)
        self.assertFails(r, 1, "TLS needs OpenSSL, and libssl.so.3 has no function ")
        self.assertEqual(r.stdout, "")

    def test_the_front_describes_the_network_commands_as_they_do(self):
        top = self.zaptid("--help").stdout
        for command in NET_COMMANDS:
            with self.subTest(command=command):
                listed = re.search(rf"^  {command} +(.+)$", top, re.M)
                self.assertIsNotNone(listed, top)
                own = self.zaptid(command, "--help")
                self.assertEqual((own.returncode, own.stderr), (0, ""))
                self.assertEqual(own.stdout.splitlines()[0], listed.group(1))
                self.assertIn(f"Usage: zaptid {command} [OPTIONS]", own.stdout)


if __name__ == "__main__":
    unittest.main()
