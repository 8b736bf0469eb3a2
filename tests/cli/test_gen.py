"""zaptid gen, run as a user would."""
import json
import subprocess
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import ZAPTID, ZaptidTestCase


class GenTest(ZaptidTestCase):
    def test_count_and_increasing(self):
        r = self.zaptid("gen", "--count", 1000, "--machine-id", 5)
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(ids), 1000)
        self.assertEqual(ids, sorted(set(ids)))
        self.assertTrue(all(i & 0xFFFF == 5 for i in ids))
        self.assertEqual(r.stderr, "")

    def test_formats(self):
        hexes = self.zaptid("gen", "-n", 3, "--format", "hex", "--machine-id", 1).stdout.split()
        self.assertEqual(len(hexes), 3)
        for h in hexes:
            self.assertRegex(h, r"^0x[0-9a-f]{16}$")
        lines = self.zaptid("gen", "-n", 2, "--format", "json", "--machine-id", 1).stdout.splitlines()
        self.assertEqual(len(lines), 2)
        for line in lines:
            obj = json.loads(line)
            self.assertEqual(list(obj), ["id"])
            self.assertIsInstance(obj["id"], str)  # strings survive JSON readers past 2^53
            self.assertGreater(int(obj["id"]), 2**53)

    def test_snowflake_layout(self):
        ids = [int(x) for x in self.zaptid("gen", "-n", 5000, "--layout", "snowflake", "--machine-id", 1023).stdout.split()]
        self.assertEqual(len(set(ids)), 5000)
        self.assertTrue(all((i >> 12) & 0x3FF == 1023 for i in ids))

    def test_repeated_runs_never_repeat(self):
        # Scripts call gen back to back, often inside one 10 ms tick: each run continues after the last.
        seen = []
        for _ in range(60):
            r = self.zaptid("gen", "-n", 3, "--machine-id", 7)
            self.assertEqual(r.returncode, 0, r.stderr)
            seen += [int(x) for x in r.stdout.split()]
        self.assertEqual(len(seen), 180)
        self.assertEqual(seen, sorted(set(seen)))

    def test_parallel_runs_never_repeat(self):
        def one(_):
            r = self.zaptid("gen", "-n", 200, "--machine-id", 9)
            self.assertEqual(r.returncode, 0, r.stderr)
            return [int(x) for x in r.stdout.split()]
        with ThreadPoolExecutor(max_workers=8) as pool:
            runs = list(pool.map(one, range(32)))
        ids = [i for run in runs for i in run]
        self.assertEqual(len(ids), 32 * 200)
        self.assertEqual(len(set(ids)), len(ids))

    def test_closed_pipe_is_quiet(self):
        p = subprocess.Popen([ZAPTID, "gen", "--count", "100000000", "--layout", "snowflake", "--machine-id", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        first = p.stdout.readline()
        p.stdout.close()
        _, err = p.communicate(timeout=60)
        self.assertTrue(first.strip().isdigit())
        self.assertEqual(err, b"")
        self.assertEqual(p.returncode, 0)

    def test_bad_input(self):
        self.assertFails(self.zaptid("gen", "--count", "x"), 2, "--count")
        self.assertFails(self.zaptid("gen", "--count", 0), 2, "--count")
        self.assertFails(self.zaptid("gen", "--machine-id", 65536), 2,
                         "--machine-id 65536 does not fit the layout's 16 machine bits (0 to 65535)")
        self.assertFails(self.zaptid("gen", "--layout", "uuid"), 2, "unknown layout 'uuid'")
        self.assertFails(self.zaptid("gen", "--bits-sequence", 20, "--bits-machine", 16), 2,
                         "leave 27 bits of time")
        self.assertFails(self.zaptid("gen", "--epoch", "2999-01-01T00:00:00Z"), 2, "is in the future")
        self.assertFails(self.zaptid("gen", "--time-unit", "0.5ms"), 2, "whole number of milliseconds")
        self.assertFails(self.zaptid("gen", "--frobnicate"), 2, "--frobnicate")

    def test_machine_id_from_environment(self):
        r = self.zaptid("gen", env={"ZAPTID_MACHINE_ID": "12"})
        self.assertEqual(int(r.stdout) & 0xFFFF, 12)
        r = self.zaptid("gen", "--machine-id", 13, env={"ZAPTID_MACHINE_ID": "12"})
        self.assertEqual(int(r.stdout) & 0xFFFF, 13)  # the flag wins
        self.assertFails(self.zaptid("gen", env={"ZAPTID_MACHINE_ID": "x"}), 2, "ZAPTID_MACHINE_ID 'x'")


if __name__ == "__main__":
    unittest.main()
