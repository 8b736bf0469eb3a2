"""zaptid compose, run as a user would, and its round trip with decode."""
import json
import time
import unittest

from harness import ZAPTIDGEN_ID, ZaptidTestCase

T = 38614395737  # the zaptidgen vector's time field (sonyflake)
LAYOUTS = {  # name: (bits of time, bits of sequence, bits of machine)
    "sonyflake": (39, 8, 16),
    "sonyflake-v2": (39, 8, 16),
    "snowflake": (41, 12, 10),
}


class ComposeTest(ZaptidTestCase):
    def compose(self, *args):
        r = self.zaptid("compose", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return r.stdout

    def test_zaptidgen_vector(self):
        for when in ("2026-11-26T06:12:37.370Z", "2026-11-26T06:12:37.379Z", "2026-11-26T07:12:37.370+01:00",
                     "1795673557370"):
            self.assertEqual(self.compose("--time", when, "--machine-id", 5), f"{ZAPTIDGEN_ID}\n", when)
        self.assertEqual(self.compose("--tick", T, "--machine-id", 5), f"{ZAPTIDGEN_ID}\n")
        self.assertEqual(self.compose("--tick", T, "--machine-id", 5, "--format", "hex"), "0x08fd98eb59000005\n")
        self.assertEqual(self.compose("--tick", T, "--machine-id", 5, "--format", "json"),
                         '{"id":"647842057989128197"}\n')

    def test_smallest_and_largest_at_a_time(self):
        self.assertEqual(self.compose("--tick", T), f"{T << 24}\n")
        self.assertEqual(self.compose("--tick", T, "--max"), f"{(T << 24) | (255 << 16) | 65535}\n")
        self.assertEqual(self.compose("--tick", T, "--max", "--machine-id", 5), f"{(T << 24) | (255 << 16) | 5}\n")
        self.assertEqual(self.compose("--tick", T, "--sequence", 3, "--machine-id", 5), f"{(T << 24) | (3 << 16) | 5}\n")
        # Every ID of that tick lies in [smallest, largest]; the next tick starts right after.
        smallest = int(self.compose("--time", "2026-11-26T06:12:37.370Z"))
        largest = int(self.compose("--time", "2026-11-26T06:12:37.370Z", "--max"))
        self.assertTrue(smallest <= ZAPTIDGEN_ID <= largest)
        self.assertEqual(int(self.compose("--time", "2026-11-26T06:12:37.380Z")), largest + 1)

    def test_snowflake(self):
        self.assertEqual(self.compose("--layout", "snowflake", "--time", "2018-10-10T20:19:24.211Z",
                                      "--machine-id", 347), "1050118621198921728\n")
        self.assertEqual(self.compose("--layout", "snowflake", "--tick", 1, "--max"),
                         f"{(1 << 22) | (1023 << 12) | 4095}\n")

    def test_round_trip_with_decode_in_every_layout(self):
        for name, (bits_time, bits_seq, bits_machine) in LAYOUTS.items():
            cases = [(0, 0, 0), (1, 1, 1), (T % (1 << bits_time), 7, 5),
                     ((1 << bits_time) - 1, (1 << bits_seq) - 1, (1 << bits_machine) - 1)]
            for tick, seq, machine in cases:
                with self.subTest(layout=name, tick=tick, seq=seq, machine=machine):
                    made = int(self.compose("--layout", name, "--tick", tick, "--sequence", seq,
                                            "--machine-id", machine))
                    self.assertLess(made, 2**63)
                    d = self.zaptid("decode", "--layout", name, "--format", "json", made)
                    self.assertEqual(d.returncode, 0, d.stderr)
                    parts = json.loads(d.stdout)
                    self.assertEqual((parts["id"], parts["msb"], parts["time"], parts["sequence"],
                                      parts["machine-id"]), (str(made), 0, tick, seq, machine))
                    # decode's timestamp is the tick's start: composing from it lands on the same ID.
                    again = self.compose("--layout", name, "--time", parts["timestamp"], "--sequence", seq,
                                         "--machine-id", machine)
                    self.assertEqual(int(again), made)

    def test_now(self):
        before = int(time.time() * 1000)
        made = int(self.compose("--time", "now"))
        after = int(time.time() * 1000)
        start = 1409529600000 + (made >> 24) * 10
        self.assertEqual(made & 0xFFFFFF, 0)
        self.assertTrue(before - 10 < start <= after, (before, start, after))

    def test_errors(self):
        self.assertFails(self.zaptid("compose"), 2, "zaptid: compose needs --time or --tick")
        self.assertFails(self.zaptid("compose", "--machine-id", 5), 2, "zaptid: compose needs --time or --tick")
        self.assertFails(self.zaptid("compose", "--time", "2014-08-31T23:59:59.999Z"), 2,
                         "zaptid: --time 2014-08-31T23:59:59.999Z is before the layout's epoch 2014-09-01T00:00:00.000Z")
        self.assertFails(self.zaptid("compose", "--layout", "snowflake", "--time", 0), 2,
                         "zaptid: --time 1970-01-01T00:00:00.000Z is before the layout's epoch 2010-11-04T01:42:54.657Z")
        self.assertFails(self.zaptid("compose", "--time", "yesterday"), 2,
                         "zaptid: --time 'yesterday' is not a time: expected RFC 3339 (2014-09-01T00:00:00Z) or Unix "
                         "milliseconds")
        self.assertFails(self.zaptid("compose", "--time", "2025-02-29T00:00:00Z"), 2, "is not a time")
        self.assertFails(self.zaptid("compose", "--tick", 1, "--sequence", 256), 2,
                         "zaptid: --sequence 256 does not fit the layout (0 to 255)")
        self.assertFails(self.zaptid("compose", "--tick", 1, "--machine-id", 65536), 2,
                         "zaptid: --machine-id 65536 does not fit the layout (0 to 65535)")
        self.assertFails(self.zaptid("compose", "--layout", "snowflake", "--tick", 1, "--sequence", 4096), 2,
                         "zaptid: --sequence 4096 does not fit the layout (0 to 4095)")
        self.assertFails(self.zaptid("compose", "--tick", 2**39), 2,
                         "zaptid: time field 549755813888 does not fit the layout's 39 time bits (the layout ends at "
                         "2188-11-16T03:28:58.880Z)")
        self.assertFails(self.zaptid("compose", "--time", "2188-11-16T03:28:58.880Z"), 2,
                         "does not fit the layout's 39 time bits")
        self.assertEqual(self.compose("--time", "2188-11-16T03:28:58.879Z"), f"{(2**39 - 1) << 24}\n")
        self.assertFails(self.zaptid("compose", "--tick", 1, "--format", "tsv"), 2,
                         "zaptid: --format: 'tsv' is not one of dec, hex, json")
        self.assertFails(self.zaptid("compose", "--time", "2026-01-01T00:00:00Z", "--tick", 5), 2,
                         "zaptid: --time excludes --tick")
        # Negative or non-decimal numbers are refused, never wrapped to 2^64-1.
        self.assertFails(self.zaptid("compose", "--tick", 1, "--sequence", -1), 2,
                         "zaptid: --sequence: value '-1' is not a non-negative integer")
        self.assertFails(self.zaptid("compose", "--tick", -1), 2, "zaptid: --tick: value '-1' is not a non-negative")
        self.assertFails(self.zaptid("compose", "--tick", 1, "--machine-id", "0x5"), 2,
                         "zaptid: --machine-id: value '0x5' is not a non-negative integer")


if __name__ == "__main__":
    unittest.main()
