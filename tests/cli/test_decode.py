"""zaptid decode, run as a user would."""
import json
import os
import subprocess
import unittest

from harness import ZAPTID, ZAPTIDGEN_ID, ZaptidTestCase

VECTOR_TEXT = "647842057989128197 time=38614395737 (2026-11-26T06:12:37.370Z) sequence=0 machine-id=5 (0.5)\n"
VECTOR_JSON = ('{"id":"647842057989128197","msb":0,"time":38614395737,"timestamp":"2026-11-26T06:12:37.370Z",'
               '"sequence":0,"machine-id":5}\n')
VECTOR_TSV = "647842057989128197\t38614395737\t2026-11-26T06:12:37.370Z\t0\t5\n"
# Tweet 1050118621198921728 was created 2018-10-10T20:19:24Z (Twitter API documentation).
TWEET_ID = 1050118621198921728
NOT_AN_ID = "is not an ID: expected a decimal number or 0x-prefixed hex"


class DecodeTest(ZaptidTestCase):
    def ok(self, *args, input=None):
        r = self.zaptid("decode", *args, input=input)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return r.stdout

    def test_zaptidgen_vector_in_every_format(self):
        self.assertEqual(self.ok(ZAPTIDGEN_ID), VECTOR_TEXT)
        self.assertEqual(self.ok("--format", "text", ZAPTIDGEN_ID), VECTOR_TEXT)
        self.assertEqual(self.ok("--format", "json", ZAPTIDGEN_ID), VECTOR_JSON)
        self.assertEqual(self.ok("--format", "tsv", ZAPTIDGEN_ID), VECTOR_TSV)

    def test_json_keys_and_types(self):
        obj = json.loads(self.ok("--format", "json", ZAPTIDGEN_ID))
        self.assertEqual(list(obj), ["id", "msb", "time", "timestamp", "sequence", "machine-id"])
        self.assertIsInstance(obj["id"], str)  # JSON readers lose precision above 2^53
        self.assertEqual(int(obj["id"]), ZAPTIDGEN_ID)
        for key in ("msb", "time", "sequence", "machine-id"):
            self.assertIsInstance(obj[key], int)

    def test_hex_input_and_several_arguments(self):
        out = self.ok("0x8fd98eb59000005", "0X08FD98EB59000005", ZAPTIDGEN_ID)
        self.assertEqual(out, VECTOR_TEXT * 3)

    def test_stdin(self):
        self.assertEqual(self.ok(input=f"{ZAPTIDGEN_ID}\n0x8fd98eb59000005\n"), VECTOR_TEXT * 2)
        self.assertEqual(self.ok("-", input=f"{ZAPTIDGEN_ID}\n"), VECTOR_TEXT)
        # Blank lines, surrounding blanks, CRLF and a missing final newline are all fine.
        self.assertEqual(self.ok("--format", "tsv", input=f"\n  {ZAPTIDGEN_ID}\t\r\n\n{ZAPTIDGEN_ID}"), VECTOR_TSV * 2)
        self.assertEqual(self.ok(input=""), "")

    def test_bad_lines_on_stdin(self):
        r = self.zaptid("decode", "--format", "tsv",
                        input=f"{ZAPTIDGEN_ID}\nabc\n\n{ZAPTIDGEN_ID}\n99999999999999999999\n-5\n{ZAPTIDGEN_ID}\n")
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stdout, VECTOR_TSV * 3)  # the good lines are still decoded
        self.assertEqual(r.stderr.splitlines(), [
            f"zaptid: line 2: 'abc' {NOT_AN_ID}",
            "zaptid: line 5: '99999999999999999999' is not an ID: larger than 64 bits",
            f"zaptid: line 6: '-5' {NOT_AN_ID}",
        ])

    def test_bad_arguments(self):
        r = self.zaptid("decode", ZAPTIDGEN_ID, "12x", ZAPTIDGEN_ID)
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stdout, VECTOR_TEXT * 2)
        self.assertEqual(r.stderr, f"zaptid: '12x' {NOT_AN_ID}\n")
        self.assertFails(self.zaptid("decode", "0x"), 3, f"'0x' {NOT_AN_ID}")
        self.assertFails(self.zaptid("decode", "--format", "xml", "1"), 2,
                         "zaptid: --format: 'xml' is not one of json, text, tsv")
        self.assertFails(self.zaptid("decode", "--format", "1", "1"), 2, "'1' is not one of json, text, tsv")
        self.assertFails(self.zaptid("decode", "--layout", "uuid", "1"), 2,
                         "unknown layout 'uuid' (known: sonyflake, sonyflake-v2, snowflake)")

    def test_layouts(self):
        self.assertEqual(self.ok("--layout", "snowflake", TWEET_ID),
                         "1050118621198921728 time=250367789554 (2018-10-10T20:19:24.211Z) sequence=0 machine-id=347\n")
        self.assertEqual(self.ok("--layout", "snowflake", "--format", "json", TWEET_ID),
                         '{"id":"1050118621198921728","msb":0,"time":250367789554,'
                         '"timestamp":"2018-10-10T20:19:24.211Z","sequence":0,"machine-id":347}\n')
        self.assertEqual(self.ok("--layout", "sonyflake-v2", ZAPTIDGEN_ID),
                         "647842057989128197 time=38614395737 (2037-03-28T06:12:37.370Z) sequence=0 machine-id=5 (0.5)\n")
        # Overriding the epoch with the preset's own value changes nothing; the environment works too.
        self.assertEqual(self.ok("--epoch", "2014-09-01T00:00:00Z", ZAPTIDGEN_ID), VECTOR_TEXT)
        r = self.zaptid("decode", TWEET_ID, env={"ZAPTID_LAYOUT": "snowflake"})
        self.assertIn("machine-id=347", r.stdout)
        # Snowflake keeps the machine above the sequence: 12 bits of sequence at the bottom.
        self.assertEqual(self.ok("--layout", "snowflake", "--format", "tsv", (5 << 22) | (1023 << 12) | 4095),
                         f"{(5 << 22) | (1023 << 12) | 4095}\t5\t2010-11-04T01:42:54.662Z\t4095\t1023\n")

    def test_top_bit(self):
        self.assertEqual(self.ok(2**63),
                         "9223372036854775808 time=0 (2014-09-01T00:00:00.000Z) sequence=0 machine-id=0 (0.0) "
                         "msb=1 (not an ID zaptid issues)\n")
        self.assertIn('"msb":1,', self.ok("--format", "json", 2**64 - 1))

    def test_closed_pipe_is_quiet(self):
        # 20 MB of output for a reader that stops after one line.
        path = os.path.join(self.tmp, "ids")
        with open(path, "w") as f:
            f.write(f"{ZAPTIDGEN_ID}\n" * 200000)
        with open(path) as stdin:
            p = subprocess.Popen([ZAPTID, "decode"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=self.env, text=True)
            first = p.stdout.readline()
            p.stdout.close()
            _, err = p.communicate(timeout=60)
        self.assertEqual(first, VECTOR_TEXT)
        self.assertEqual(err, "")
        self.assertEqual(p.returncode, 0)

    def test_gen_piped_into_decode(self):
        gen = self.zaptid("gen", "-n", 5, "--machine-id", 513)
        self.assertEqual(gen.returncode, 0, gen.stderr)
        lines = self.ok("--format", "json", input=gen.stdout).splitlines()
        self.assertEqual([json.loads(line)["id"] for line in lines], gen.stdout.split())
        self.assertTrue(all(json.loads(line)["machine-id"] == 513 for line in lines))
        self.assertTrue(self.ok(gen.stdout.split()[0]).rstrip().endswith("machine-id=513 (2.1)"))


if __name__ == "__main__":
    unittest.main()
