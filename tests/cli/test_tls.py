"""TLS and mutual TLS between zaptid serve and zaptid get, with certificates made by openssl here."""
import json
import os
import subprocess

from harness import ZaptidTestCase


class TlsTest(ZaptidTestCase):
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

    def make_cert(self, name, ca, san, usage):
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write(f"{san}\n{usage}\n")
        self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                     "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")

    def get(self, server, *args):
        return self.zaptid("get", "--server", server.address, "--timeout", "2s", *args)

    def assertGot(self, r, machine_id):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertEqual(int(r.stdout) & 0xFFFF, machine_id)

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


if __name__ == "__main__":
    import unittest
    unittest.main()
