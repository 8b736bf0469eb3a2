"""zaptid gen, run as a user would."""
import json
import os
import re
import resource
import socket
import subprocess
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import DAMAGED, ZAPTID, ZaptidTestCase, recorded_id, zaptid_record


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
        self.assertClosedPipeIsQuiet("gen", "--count", 100000000, "--layout", "snowflake", "--machine-id", 3)

    def test_memory_stays_flat_with_a_wide_sequence(self):
        # 2^24 IDs per tick: gen used to hold a whole tick (hundreds of MB) before writing any of it.
        r = subprocess.run([ZAPTID, "gen", "-n", "3000000", "--layout", "snowflake", "--bits-sequence", "24",
                            "--bits-machine", "0", "--machine-id", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
        self.assertLess(peak_kb, 150 * 1024)  # leaves room for AddressSanitizer's own overhead

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
        self.assertFails(self.zaptid("gen", "--format", "xml"), 2, "zaptid: --format: 'xml' is not one of dec, hex, json")
        self.assertFails(self.zaptid("gen", "--format", "2"), 2, "zaptid: --format: '2' is not one of dec, hex, json")

    def test_machine_id_from_environment(self):
        r = self.zaptid("gen", env={"ZAPTID_MACHINE_ID": "12"})
        self.assertEqual(int(r.stdout) & 0xFFFF, 12)
        r = self.zaptid("gen", "--machine-id", 13, env={"ZAPTID_MACHINE_ID": "12"})
        self.assertEqual(int(r.stdout) & 0xFFFF, 13)  # the flag wins
        self.assertFails(self.zaptid("gen", env={"ZAPTID_MACHINE_ID": "x"}), 2, "ZAPTID_MACHINE_ID 'x'")


    def test_bad_numbers_are_refused_not_wrapped(self):
        self.assertFails(self.zaptid("gen", "--count", -1, "--machine-id", 1), 2,
                         "zaptid: --count: value '-1' is not a non-negative integer")
        self.assertFails(self.zaptid("gen", "--count", "0x10", "--machine-id", 1), 2, "value '0x10'")
        self.assertFails(self.zaptid("gen", "--lock-timeout", "soon", "--machine-id", 1), 2,
                         "zaptid: --lock-timeout 'soon' is not a duration (examples: 500ms, 1s, 1.5s, 2m)")

    def state_path(self, machine_id):
        return os.path.join(self.tmp, "state", f"machine-{machine_id}.state")

    def host_path(self, machine_id):
        return os.path.join(self.tmp, "host", f"machine-{machine_id}")

    def test_records_hold_exactly_the_last_id(self):
        r = self.zaptid("gen", "-n", 300, "--machine-id", 7)
        self.assertEqual(r.returncode, 0, r.stderr)
        last = int(r.stdout.split()[-1])
        for path in (self.state_path(7), self.host_path(7)):
            with open(path) as f:
                self.assertEqual(f.read(), zaptid_record(7, last))
        self.assertEqual(sorted(os.listdir(os.path.join(self.tmp, "state"))), ["machine-7.state"])
        self.assertEqual(os.stat(os.path.join(self.tmp, "host")).st_mode & 0o7777, 0o1777)
        self.assertEqual(os.stat(self.host_path(7)).st_mode & 0o777, 0o666)

    def test_default_state_folder(self):
        env = {k: v for k, v in self.env.items() if k not in ("ZAPTID_STATE_DIR", "XDG_STATE_HOME")}
        r = subprocess.run([ZAPTID, "gen", "--machine-id", "8"], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, ".local", "state", "zaptid", "machine-8.state")))

    def assertRefused(self, result, message):
        """Exit 1, one 'zaptid: ' line containing message, and not a single ID on stdout."""
        self.assertFails(result, 1, message)
        self.assertEqual(result.stdout, "")

    def test_killed_run_is_never_repeated(self):
        # SIGKILL leaves the reserved window in the records: the next run starts after all of it.
        p = self.popen("gen", "-n", 10**9, "--machine-id", 7)
        first = [int(p.stdout.readline()) for _ in range(1000)]
        p.kill()
        rest, _ = p.communicate(timeout=60)
        issued = first + [int(x) for x in rest.split()]
        recorded = recorded_id(self.host_path(7))
        self.assertEqual(recorded, recorded_id(self.state_path(7)))
        last = max(issued)
        self.assertGreaterEqual(recorded, last)
        r = self.zaptid("gen", "-n", 3, "--machine-id", 7)
        self.assertEqual(r.returncode, 0, r.stderr)
        after = [int(x) for x in r.stdout.split()]
        self.assertGreater(min(after), recorded)  # past the whole window, not just the last ID

    def test_damaged_record_is_refused(self):
        r = self.zaptid("gen", "--machine-id", 7)
        self.assertEqual(r.returncode, 0, r.stderr)
        for path in (self.state_path(7), self.host_path(7)):
            with open(path) as f:
                good = f.read()
            crc = re.search(r"crc32 ([0-9a-f]{8})", good).group(1)
            flipped = good.replace(crc, crc[:-1] + ("0" if crc[-1] != "0" else "1"))
            for text, why in ((flipped, DAMAGED.format("checksum mismatch")),
                              (good[:-5], DAMAGED.format("251 bytes, not 256")),
                              (good.replace("\nid ", "\nid 1")[:-1], DAMAGED.format("checksum mismatch")),
                              (good + "\n", "is larger than a record can be (257 bytes, at most 256)")):
                with self.subTest(path=path, why=why):
                    with open(path, "w") as f:
                        f.write(text)
                    self.assertRefused(self.zaptid("gen", "-n", 5, "--machine-id", 7), f"zaptid: record {path} {why}")
                    with open(path) as f:
                        self.assertEqual(f.read(), text)  # never reset
            with open(path, "w") as f:
                f.write(good)
        # Another machine id has its own records and is not affected.
        self.assertEqual(self.zaptid("gen", "--machine-id", 70).returncode, 0)

    def test_record_far_ahead_of_the_clock_is_refused(self):
        # A previous run recorded a tick 1000 s ahead (its clock was wrong): waiting that long is refused.
        os.makedirs(os.path.join(self.tmp, "state"))
        ahead = (int(time.time() * 1000) - 1409529600000) // 10 + 100000
        with open(self.state_path(7), "w") as f:
            f.write(zaptid_record(7, (ahead << 24) | 7))
        r = self.zaptid("gen", "--machine-id", 7)
        self.assertRefused(r, f"zaptid: the record {self.state_path(7)} says IDs up to {(ahead << 24) | 7} may have "
                              "been issued with machine id 7 (layout sonyflake); the first larger ID of this layout "
                              "has the time ")
        self.assertRegex(r.stderr, r", (99\d|1000)\.\d{3}s ahead of the clock and beyond the clock wait limit of "
                                   r"1\.000s\. Try again after that time, correct the clock if it is behind, or use "
                                   r"another machine id\n$")

    def test_folders_that_cannot_be_created(self):
        blocker = os.path.join(self.tmp, "file")
        with open(blocker, "w") as f:
            f.write("not a folder\n")
        folder = os.path.join(blocker, "state")
        self.assertRefused(self.zaptid("gen", "--state-dir", folder, "--machine-id", 7),
                           f"zaptid: cannot create state folder {folder}: Not a directory")
        self.assertRefused(self.zaptid("gen", "--machine-id", 7, env={"ZAPTID_HOST_DIR": folder}),
                           f"zaptid: cannot create host folder {folder}: Not a directory; every zaptid on this "
                           "host that uses machine id 7 must be able to read and update the host record")

    def test_waits_for_the_claim_then_gives_up_naming_the_holder(self):
        # This test process holds machine id 7's claim exactly as another zaptid would.
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind("\0zaptid/machine-id/7")
        holder.listen(8)  # room for each refused process to ask who holds it
        for args, env in ((["--lock-timeout", "200ms"], None), ([], {"ZAPTID_LOCK_TIMEOUT": "200ms"})):
            start = time.monotonic()
            r = self.zaptid("gen", "-n", 3, "--machine-id", 7, *args, env=env)
            waited = time.monotonic() - start
            self.assertRefused(r, f"zaptid: machine id 7 is in use on this host by pid {os.getpid()} (user ")
            self.assertIn("python3", r.stderr)
            self.assertTrue(r.stderr.endswith("; gave up after waiting 200ms\n"), r.stderr)
            self.assertGreaterEqual(waited, 0.2)
        # Only this machine id is held.
        self.assertEqual(self.zaptid("gen", "--machine-id", 8, "--lock-timeout", "200ms").returncode, 0)
        holder.close()
        r = self.zaptid("gen", "-n", 3, "--machine-id", 7, "--lock-timeout", "200ms")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.split()), 3)


if __name__ == "__main__":
    unittest.main()
