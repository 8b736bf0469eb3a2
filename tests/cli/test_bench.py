"""zaptid bench against a real zaptid serve: it runs, reports correctly, and says when calls fail."""
import json
import unittest

from harness import ZaptidTestCase, free_port


class BenchTest(ZaptidTestCase):
    def test_gen_report_json(self):
        server = self.start_server(machine_id=4)
        r = self.zaptid("bench", "--server", server.address, "-c", 2, "-m", 4, "--duration", "300ms",
                        "--format", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertEqual(report["method"], "gen")
        self.assertEqual(report["connections"], 2)
        self.assertEqual(report["concurrency"], 4)
        self.assertGreater(report["requests_ok"], 0)
        self.assertEqual(report["requests_failed"], 0)
        self.assertEqual(report["ids"], report["requests_ok"])  # one ID per Gen call
        self.assertEqual(report["duplicates"], 0)
        self.assertEqual(report["zero_ids"], 0)
        self.assertAlmostEqual(report["ceiling_ids_per_second"], 25600.0)  # sonyflake, one machine id
        lat = report["latency_us"]
        self.assertLessEqual(lat["p50"], lat["p90"])
        self.assertLessEqual(lat["p90"], lat["p99"])
        self.assertLessEqual(lat["p99"], lat["max"])

    def test_batch_report_text(self):
        server = self.start_server("--lanes", 2, machine_id="20-21")
        r = self.zaptid("bench", "--server", server.address, "--method", "batch", "--batch-size", 100,
                        "--duration", "300ms")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("method batch (100 IDs per call)", r.stdout)
        self.assertIn("51200 IDs/s", r.stdout)  # two lanes: twice sonyflake's ceiling
        self.assertRegex(r.stdout, r"unique    yes, all \d+ IDs distinct and non-zero")

    def test_dead_server(self):
        r = self.zaptid("bench", "--server", f"127.0.0.1:{free_port()}", "--duration", "100ms", "--timeout", "300ms")
        self.assertFails(r, 4, "127.0.0.1:")
        # A name that does not resolve is an unreachable server, as for get.
        self.assertFails(self.zaptid("bench", "--server", "no-such-host.invalid:1,127.0.0.1:1"), 4,
                         "zaptid: no-such-host.invalid:1,127.0.0.1:1: cannot resolve no-such-host.invalid")

    def test_bad_options(self):
        self.assertFails(self.zaptid("bench", "--method", "stream"), 2, "--method")
        self.assertFails(self.zaptid("bench", "--duration", "0"), 2, "--duration must be longer than 0")


if __name__ == "__main__":
    unittest.main()
