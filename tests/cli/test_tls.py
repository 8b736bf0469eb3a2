"""TLS and mutual TLS between zaptid serve and zaptid get, with certificates made by openssl here."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import unittest

from harness import ZaptidTestCase

METRICS = re.compile(r" metrics=(\S+)")


class TlsFiles(ZaptidTestCase):
    """A CA, another CA, and certificates made by openssl in the test's folder (no tests here)."""

    def setUp(self):
        super().setUp()
        self.certs = os.path.join(self.tmp, "certs")
        os.mkdir(self.certs)
        self.make_ca("ca")
        self.make_ca("other-ca")
        self.make_cert("server", "ca", "subjectAltName=DNS:localhost,DNS:ids.zaptid.test,IP:127.0.0.1",
                       "extendedKeyUsage=serverAuth")
        self.make_cert("client", "ca", "subjectAltName=DNS:client", "extendedKeyUsage=clientAuth")
        self.make_cert("stranger", "other-ca", "subjectAltName=DNS:stranger", "extendedKeyUsage=clientAuth")

    def path(self, name):
        return os.path.join(self.certs, name)

    def openssl(self, *args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.certs)
        self.assertEqual(r.returncode, 0, r.stderr)

    def make_ca(self, name):
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")

    def make_cert(self, name, ca, san, usage, days=2):
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write(f"{san}\n{usage}\n")
        self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                     "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days), "-extfile", f"{name}.ext")

    def get(self, server, *args):
        return self.zaptid("get", "--server", server.address, "--timeout", "2s", *args)

    def assertGot(self, r, machine_id):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertEqual(int(r.stdout) & 0xFFFF, machine_id)


class TlsTest(TlsFiles):
    def test_tls(self):
        s = self.start_server("--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
                              machine_id=11)
        self.assertIn(" tls=on", s.start_line)
        self.assertGot(self.get(s, "--tls-ca", self.path("ca.pem")), 11)
        r = self.zaptid("get", "--server", f"localhost:{s.port}", "--tls-ca", self.path("ca.pem"))
        self.assertGot(r, 11)
        # The name in the certificate, not the address dialled.
        self.assertGot(self.get(s, "--tls-ca", self.path("ca.pem"), "--tls-server-name", "ids.zaptid.test"), 11)
        # Refused: a plaintext client, a client trusting another CA, a name the certificate lacks.
        self.assertFails(self.get(s), 4, "does the server use TLS (--tls-ca or --tls)?")
        self.assertFails(self.get(s, "--tls-ca", self.path("other-ca.pem")), 4, f"zaptid: {s.address}: ")
        self.assertFails(self.get(s, "--tls"), 4, f"zaptid: {s.address}: ")  # system roots do not know our CA
        self.assertFails(self.get(s, "--tls-ca", self.path("ca.pem"), "--tls-server-name", "evil.test"), 4,
                         f"zaptid: {s.address}: ")
        # The server kept serving through the refused handshakes.
        self.assertGot(self.get(s, "--tls-ca", self.path("ca.pem")), 11)

    def test_bench_over_tls(self):
        # bench takes get's TLS flags: it loads a TLS server it trusts, and fails (status 4)
        # against one it does not.
        s = self.start_server("--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
                              "--tls-client-ca", self.path("ca.pem"), machine_id=15)
        tls = ("--tls-ca", self.path("ca.pem"), "--tls-cert", self.path("client.pem"), "--tls-key",
               self.path("client.key"))
        r = self.zaptid("bench", "--server", s.address, *tls, "-c", 2, "-m", 2, "--duration", "300ms",
                        "--format", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertGreater(report["requests_ok"], 0)
        self.assertEqual(report["requests_failed"], 0)
        self.assertEqual(report["duplicates"], 0)
        r = self.zaptid("bench", "--server", s.address, "--tls-ca", self.path("ca.pem"), "--duration", "200ms",
                        "--timeout", "300ms")
        self.assertFails(r, 4, f"zaptid: {s.address}: ")

    def test_mutual_tls(self):
        s = self.start_server("--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
                              "--tls-client-ca", self.path("ca.pem"), machine_id=12)
        self.assertIn(" tls=mutual", s.start_line)
        ca = ("--tls-ca", self.path("ca.pem"))
        self.assertGot(self.get(s, *ca, "--tls-cert", self.path("client.pem"), "--tls-key", self.path("client.key")), 12)
        self.assertFails(self.get(s, *ca), 4, "does the server require a client certificate (--tls-cert)?")
        self.assertFails(self.get(s, *ca, "--tls-cert", self.path("stranger.pem"), "--tls-key",
                                  self.path("stranger.key")), 4, f"zaptid: {s.address}: ")
        self.assertGot(self.get(s, *ca, "--tls-cert", self.path("client.pem"), "--tls-key", self.path("client.key")), 12)

    def test_tls_from_the_environment(self):
        s = self.start_server(machine_id=13, env={"ZAPTID_TLS_CERT": self.path("server.pem"),
                                                  "ZAPTID_TLS_KEY": self.path("server.key")})
        self.assertIn(" tls=on", s.start_line)
        r = self.zaptid("get", env={"ZAPTID_SERVER": s.address, "ZAPTID_TLS_CA": self.path("ca.pem")})
        self.assertGot(r, 13)

    def test_mutual_tls_from_the_environment(self):
        s = self.start_server(machine_id=14, env={"ZAPTID_TLS_CERT": self.path("server.pem"),
                                                  "ZAPTID_TLS_KEY": self.path("server.key"),
                                                  "ZAPTID_TLS_CLIENT_CA": self.path("ca.pem")})
        self.assertIn(" tls=mutual", s.start_line)
        # The client's own certificate has its own variables, so one shell can hold both.
        r = self.zaptid("get", env={"ZAPTID_SERVER": s.address, "ZAPTID_TLS_CA": self.path("ca.pem"),
                                    "ZAPTID_TLS_CLIENT_CERT": self.path("client.pem"),
                                    "ZAPTID_TLS_CLIENT_KEY": self.path("client.key"),
                                    "ZAPTID_TLS_CERT": self.path("server.pem"),
                                    "ZAPTID_TLS_KEY": self.path("server.key")})
        self.assertGot(r, 14)

    def test_bad_certificate_files(self):
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", self.path("missing.pem"),
                                     "--tls-key", self.path("server.key")), 2,
                         f"cannot read --tls-cert {self.path('missing.pem')}: No such file or directory")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", self.path("server.ext"),
                                     "--tls-key", self.path("server.key")), 2,
                         f"--tls-cert {self.path('server.ext')} is not a PEM file")
        # Checked as SIGHUP checks them: a certificate that is none, a key that is no private key.
        garbage = self.path("garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nMII*\n-----END CERTIFICATE-----\n")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", garbage, "--tls-key",
                                     self.path("server.key")), 2,
                         f"--tls-cert {garbage}: its certificate is not base64")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", self.path("server.pem"),
                                     "--tls-key", self.path("server.pem")), 2,
                         f"--tls-key {self.path('server.pem')} holds no unencrypted private key")
        self.assertFails(self.zaptid("serve", "--machine-id", 1, "--tls-cert", self.path("server.pem"),
                                     "--tls-key", self.path("server.key"), "--tls-client-ca", self.path("server.key")),
                         2, f"--tls-client-ca {self.path('server.key')}: holds no certificate")

    def test_certificate_files_that_are_not_files_are_refused_at_once(self):
        # Each would grow without end (/dev/zero), block (a FIFO with no writer) or be read whole.
        fifo = self.path("fifo.pem")
        os.mkfifo(fifo)
        big = self.path("big.pem")
        with open(big, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n" + "A" * (1 << 20))
        cases = [
            (["get", "--tls-ca", "/dev/zero"], "--tls-ca /dev/zero is not a regular file"),
            (["get", "--tls-ca", fifo], f"--tls-ca {fifo} is not a regular file"),
            (["get", "--tls-ca", self.tmp], f"--tls-ca {self.tmp} is not a regular file"),
            (["get", "--tls-ca", big], f"--tls-ca {big} is {(1 << 20) + 28} bytes; a PEM file is read up to "
                                       f"{1 << 20} bytes"),
            (["get", "--tls-ca", self.path("ca.pem"), "--tls-cert", "/dev/zero", "--tls-key", self.path("client.key")],
             "--tls-cert /dev/zero is not a regular file"),
            (["serve", "--machine-id", 1, "--tls-cert", self.path("server.pem"), "--tls-key", fifo],
             f"--tls-key {fifo} is not a regular file"),
            (["serve", "--machine-id", 1, "--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
              "--tls-client-ca", "/dev/zero"], "--tls-client-ca /dev/zero is not a regular file"),
            (["serve", "--machine-id-from", "etcd", "--etcd-endpoints", "127.0.0.1:9", "--etcd-ca", "/dev/zero"],
             "--etcd-ca /dev/zero is not a regular file"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assertFails(self.zaptid(*args, timeout=10), 2, message)



SERVER_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


class TlsRotationTest(TlsFiles):
    """SIGHUP re-reads --tls-cert, --tls-key and --tls-client-ca: the next TLS client gets the new
    certificate; a bad file keeps the old one and the log says why in one line."""

    def setUp(self):
        super().setUp()
        # B differs from A (the "server" certificate) in subject, serial and expiry.
        self.make_cert("server-b", "ca", SERVER_SAN, "extendedKeyUsage=serverAuth", days=3)
        self.live_cert, self.live_key = self.path("live.pem"), self.path("live.key")
        self.install("server.pem", self.live_cert)
        self.install("server.key", self.live_key)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def install(self, name, live):
        """Puts a copy of certs/name at `live` in one rename, as a rotation script would."""
        self.write(live, self.read(name))

    def write(self, live, data):
        with open(live + ".new", "wb") as f:
            f.write(data)
        os.replace(live + ".new", live)

    def der(self, name):
        with open(self.path(name)) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def not_after(self, name):
        r = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", self.path(name)], capture_output=True,
                           text=True, check=True)
        return ssl.cert_time_to_seconds(r.stdout.strip().split("=", 1)[1])

    def served(self, server):
        """The certificate a new TLS connection to the server is offered (DER)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True)

    def metric(self, server, line_start):
        with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        values = [l.split()[-1] for l in text.splitlines() if l.startswith(line_start + " ")]
        self.assertEqual(len(values), 1, text)
        return float(values[0])

    def hangup(self, server, pattern, count):
        server.proc.send_signal(signal.SIGHUP)
        return server.wait_for(pattern, count=count)

    def test_sighup_serves_the_rotated_certificate_to_the_next_client(self):
        s = self.start_server("--tls-cert", self.live_cert, "--tls-key", self.live_key, "--metrics-listen",
                              "127.0.0.1:0", machine_id=21)
        s.metrics = METRICS.search(s.start_line).group(1)
        a, b = self.der("server.pem"), self.der("server-b.pem")
        self.assertNotEqual(a, b)
        self.assertNotEqual(self.not_after("server.pem"), self.not_after("server-b.pem"))
        expiry = "zaptid_tls_certificate_expiry_seconds"
        self.assertEqual(self.served(s), a)
        self.assertEqual(self.metric(s, expiry), self.not_after("server.pem"))

        # Rotated on disk: nothing changes until SIGHUP.
        self.install("server-b.pem", self.live_cert)
        self.install("server-b.key", self.live_key)
        self.assertEqual(self.served(s), a)
        self.assertEqual(self.metric(s, expiry), self.not_after("server.pem"))
        line = self.hangup(s, r"SIGHUP received: TLS files read again", 1)
        self.assertIn(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.not_after("server-b.pem"))), line)
        # The next client after the log line gets B: gRPC asks for the files at every handshake.
        self.assertEqual(self.served(s), b)
        self.assertEqual(self.metric(s, expiry), self.not_after("server-b.pem"))
        self.assertEqual(self.metric(s, 'zaptid_tls_reloads_total{result="ok"}'), 1)
        r = self.get(s, "--tls-ca", self.path("ca.pem"))
        self.assertEqual(r.returncode, 0, r.stderr)

        # Bad files: B stays, and one line says which file and why.
        bad = [
            (self.live_cert, b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
             f"--tls-cert {self.live_cert}: its certificate is not base64"),
            (self.live_key, self.read("server.pem"),
             f"--tls-key {self.live_key} holds no unencrypted private key"),
            (self.live_key, b"", f"--tls-key {self.live_key} is not a PEM file"),
        ]
        for n, (live, data, why) in enumerate(bad, start=1):
            with self.subTest(why=why):
                self.install("server-b.pem", self.live_cert)
                self.install("server-b.key", self.live_key)
                self.write(live, data)
                line = self.hangup(s, r"SIGHUP received: TLS files not replaced", n)
                self.assertIn(why, line)
                self.assertEqual(self.served(s), b)
                self.assertEqual(self.metric(s, 'zaptid_tls_reloads_total{result="failed"}'), n)
        self.assertEqual(self.metric(s, expiry), self.not_after("server-b.pem"))
        self.assertEqual(self.metric(s, 'zaptid_tls_reloads_total{result="ok"}'), 1)
        self.assertEqual(len([l for l in s.lines if l and "SIGHUP" in l]), 4, s.log())

        # Back to A, the files good again.
        self.install("server.pem", self.live_cert)
        self.install("server.key", self.live_key)
        self.hangup(s, r"SIGHUP received: TLS files read again", 2)
        self.assertEqual(self.served(s), a)

        # A key that does not belong to the certificate passes zaptid's checks (it cannot tell
        # without OpenSSL); gRPC refuses the pair at the next handshake, keeps A and says why.
        self.install("server-b.pem", self.live_cert)
        self.install("server.key", self.live_key)
        self.hangup(s, r"SIGHUP received: TLS files read again", 3)
        self.assertEqual(self.served(s), a)
        s.wait_for(r"grpc: Handshaker factory creation failed")
        r = self.get(s, "--tls-ca", self.path("ca.pem"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(s.stop(), 0)

    @unittest.skipUnless(shutil.which("promtool"), "needs promtool (Debian: prometheus)")
    def test_promtool_accepts_the_tls_metrics(self):
        s = self.start_server("--tls-cert", self.live_cert, "--tls-key", self.live_key, "--metrics-listen",
                              "127.0.0.1:0", machine_id=24)
        s.metrics = METRICS.search(s.start_line).group(1)
        self.hangup(s, r"SIGHUP received: TLS files read again", 1)
        with urllib.request.urlopen(f"http://{s.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertIn('zaptid_tls_reloads_total{result="ok"} 1\n', text)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(check.stdout + check.stderr, "")

    def test_sighup_reads_the_client_ca_again(self):
        live_ca = self.path("live-ca.pem")
        self.install("ca.pem", live_ca)
        s = self.start_server("--tls-cert", self.live_cert, "--tls-key", self.live_key, "--tls-client-ca", live_ca,
                              machine_id=22)
        ca = ("--tls-ca", self.path("ca.pem"))
        client = ("--tls-cert", self.path("client.pem"), "--tls-key", self.path("client.key"))
        stranger = ("--tls-cert", self.path("stranger.pem"), "--tls-key", self.path("stranger.key"))
        self.assertGot(self.get(s, *ca, *client), 22)
        self.assertFails(self.get(s, *ca, *stranger), 4, f"zaptid: {s.address}: ")
        self.install("other-ca.pem", live_ca)
        self.hangup(s, r"SIGHUP received: TLS files read again", 1)
        self.assertGot(self.get(s, *ca, *stranger), 22)
        self.assertFails(self.get(s, *ca, *client), 4, f"zaptid: {s.address}: ")
        self.assertFails(self.get(s, *ca), 4, "does the server require a client certificate (--tls-cert)?")
        self.assertEqual(s.stop(), 0)

    def test_sighup_without_tls_is_logged_and_ignored(self):
        s = self.start_server(machine_id=23)
        self.hangup(s, r"SIGHUP received: ignored \(serve has no TLS files to read again\)", 1)
        r = self.zaptid("get", "--server", s.address, "--timeout", "2s")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
