"""Bad descriptors and bad input, run as a user would: closed standard descriptors, unreadable
standard input, output that cannot be written, empty or odd option values, inputs that must be
quoted safely, and timestamps past year 9999."""
import os
import subprocess
import unittest

from harness import ZAPTID, ZaptidTestCase

CLOSED_STDOUT = "zaptid: cannot write to standard output: it is closed"
FULL_STDOUT = "zaptid: cannot write to standard output: No space left on device"
EMPTY = "an empty value is not allowed (leave the option out for its default)"


class RobustInputTest(ZaptidTestCase):
    def sh(self, script, *args, input=None):
        """Runs `script` in sh with $Z the zaptid binary and args as $1…; returns CompletedProcess."""
        env = dict(self.env, Z=ZAPTID)
        return subprocess.run(["sh", "-c", script, "sh", *map(str, args)], input=input, capture_output=True,
                              text=True, env=env, timeout=60)

    def files_under(self, folder):
        found = []
        for root, _, files in os.walk(folder):
            found += [os.path.join(root, f) for f in files]
        return found

    # ---- 1. standard descriptors ----------------------------------------------------------

    def test_gen_with_stdout_closed_fails_before_issuing(self):
        r = self.sh('exec "$Z" gen -n 2 --machine-id 61 >&-')
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, CLOSED_STDOUT + "\n")
        # Refused before the claim: no state folder, no host record, nothing holds the IDs.
        self.assertEqual(self.files_under(self.tmp), [])
        # The next gen is not affected: it starts from nothing and prints its two IDs.
        r = self.zaptid("gen", "-n", "2", "--machine-id", "61")
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(ids), 2)
        self.assertLess(ids[0], ids[1])

    def test_every_printing_command_refuses_a_closed_stdout(self):
        for args in (["decode", "1"], ["compose", "--tick", "1"], ["version"], ["--version"], ["--help"],
                     ["gen", "--help"], ["get", "--server", "127.0.0.1:1", "-n", "1"]):
            with self.subTest(args=args):
                r = self.sh('exec "$Z" "$@" >&-', *args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stderr, CLOSED_STDOUT + "\n")

    def test_closed_stderr_takes_no_file(self):
        # With standard error closed, the first file gen opens would be descriptor 2 and receive
        # the log; it is /dev/null instead, so the records stay intact and the next run starts
        # above the first.
        r = self.sh('exec "$Z" gen -n 3 --machine-id 62 --log-level debug 2>&-')
        self.assertEqual(r.returncode, 0)
        first = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(first), 3)
        for path in self.files_under(self.tmp):
            with open(path, "rb") as f:
                self.assertNotIn(b"machine id 62 from", f.read(), path)
        r = self.zaptid("gen", "-n", "1", "--machine-id", "62")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(int(r.stdout), first[-1])

    def test_closed_stdin_is_not_an_empty_one(self):
        r = self.sh('exec "$Z" decode <&-')
        self.assertFails(r, 1, "zaptid: cannot read standard input: it is closed")
        # Commands that do not read stdin run as usual.
        r = self.sh('exec "$Z" compose --tick 1 <&-')
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "16777216\n", ""))

    # ---- 2. unreadable standard input -----------------------------------------------------

    def test_decode_from_a_folder_is_an_error(self):
        r = self.sh('exec "$Z" decode < "$1"', self.tmp)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, "zaptid: cannot read standard input: Is a directory\n")
        self.assertEqual(r.stdout, "")

    def test_decode_endless_line_is_bad_input_not_memory(self):
        line = "7" * 100000
        r = self.zaptid("decode", input=f"{line}\n16777216\n")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stderr, f"zaptid: line 1: '{'7' * 64}'... is not an ID: longer than 4096 bytes\n")
        self.assertTrue(r.stdout.startswith("16777216 time=1 "), r.stdout)

    # ---- 3. quoting bad input -------------------------------------------------------------

    def test_bad_input_is_quoted_short_on_one_line(self):
        r = self.zaptid("decode", "1\x01\n2")
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stderr, "zaptid: '1\\x01\\n2' is not an ID: expected a decimal number or 0x-prefixed hex\n")
        long_input = "x" * 70
        r = self.zaptid("decode", long_input)
        self.assertEqual(r.stderr, f"zaptid: '{'x' * 64}'... (70 bytes) is not an ID: expected a decimal number or "
                                   "0x-prefixed hex\n")
        r = self.zaptid("decode", input="12\x1b[2Jab'\\\xe9\n")
        self.assertEqual(r.stderr, "zaptid: line 1: '12\\x1b[2Jab\\'\\\\\\xc3\\xa9' is not an ID: expected a "
                                   "decimal number or 0x-prefixed hex\n")

    def test_option_values_are_quoted(self):
        self.assertFails(self.zaptid("gen", "--max-clock-wait", "1\ns"), 2,
                         "zaptid: --max-clock-wait '1\\ns' is not a duration (examples: 500ms, 1s, 1.5s, 2m)")
        self.assertFails(self.zaptid("compose", "--time", "2026\t" + "9" * 80), 2,
                         f"zaptid: --time '2026\\t{'9' * 59}'... (85 bytes) is not a time: expected RFC 3339")
        self.assertFails(self.zaptid("decode", "--layout", "a\rb", "1"), 2, "zaptid: unknown layout 'a\\rb' (known: ")
        # CLI11's own messages stay on one line too.
        r = self.zaptid("gen", "--bogus\nline")
        self.assertFails(r, 2, "--bogus\\nline")

    # ---- 4. empty and non-decimal option values -------------------------------------------

    def test_empty_values_are_usage_errors(self):
        for option in ("--epoch", "--time-unit", "--state-dir"):
            with self.subTest(option=option):
                r = self.zaptid("gen", "-n", "1", "--machine-id", "63", option, "")
                self.assertFails(r, 2, f"zaptid: {option}: {EMPTY} (see 'zaptid --help')")
                self.assertEqual(r.stdout, "")
        self.assertFails(self.zaptid("decode", "--epoch", "", "1"), 2, f"zaptid: --epoch: {EMPTY}")
        self.assertFails(self.zaptid("gen", "--bits-sequence", ""), 2,
                         "zaptid: --bits-sequence: value '' is not a non-negative integer")
        self.assertEqual(self.files_under(self.tmp), [])

    def test_bit_counts_are_plain_decimal(self):
        for value in ("0x8", " 8", "8 ", "+8", "-8", "8.0", "08a"):
            for option in ("--bits-sequence", "--bits-machine"):
                with self.subTest(option=option, value=value):
                    r = self.zaptid("decode", option, value, "1")
                    self.assertFails(r, 2, f"zaptid: {option}: value '{value}' is not a non-negative integer")
        # Leading zeros are decimal, not octal: 010 is ten.
        r = self.zaptid("decode", "--bits-sequence", "08", "--bits-machine", "010", "--format", "tsv", 1 << 10)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(r.stdout.split("\t")[3:], ["1", "0\n"])  # sequence 1, machine 0
        r = self.zaptid("gen", "-n", "010", "--machine-id", "63")
        self.assertEqual((r.returncode, len(r.stdout.split())), (0, 10), r.stderr)
        # The network commands' counts too, refused before anything starts.
        for args, option in ((["get", "-n", "0x10"], "--count"), (["serve", "--lanes", "0x2"], "--lanes"),
                             (["serve", "--max-batch", "010x"], "--max-batch"),
                             (["serve", "--threads", "+2"], "--threads"),
                             (["serve", "--max-streams", "1e3"], "--max-streams"),
                             (["serve", "--max-stream-resets", "-1"], "--max-stream-resets"),
                             (["bench", "-c", "0x2"], "--connections"), (["bench", "-m", "8.0"], "--concurrency"),
                             (["bench", "--batch-size", " 8"], "--batch-size")):
            with self.subTest(args=args):
                self.assertFails(self.zaptid(*args), 2,
                                 f"zaptid: {option}: value '{args[2]}' is not a non-negative integer")
        server = self.start_server(machine_id=62)
        r = self.zaptid("get", "-n", "010", "--server", server.address)
        self.assertEqual((r.returncode, len(r.stdout.split())), (0, 10), r.stderr)
        # An empty environment variable means "not set", as for every option.
        r = self.zaptid("decode", "1", env={"ZAPTID_EPOCH": "", "ZAPTID_BITS_SEQUENCE": ""})
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    # ---- 5. timestamps compose can read back ----------------------------------------------

    def test_decode_past_year_9999_round_trips_through_compose(self):
        # 1 sequence bit, no machine bits: 62 bits of 1ms ticks from 1970 end in year ~146 million.
        layout = ["--epoch", "0", "--time-unit", "1ms", "--bits-sequence", "1", "--bits-machine", "0"]
        last_tick = (1 << 62) - 1
        last_id = (1 << 63) - 1
        r = self.zaptid("decode", *layout, "--format", "tsv", last_id)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        fields = r.stdout.rstrip("\n").split("\t")
        self.assertEqual(fields[1], str(last_tick))
        self.assertEqual(fields[2], str(last_tick))  # Unix milliseconds: epoch 0, unit 1ms
        r = self.zaptid("compose", *layout, "--time", fields[2], "--max")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(int(r.stdout), last_id)
        # The last RFC 3339 millisecond and the first one past it.
        for ms, text in ((253402300799999, "9999-12-31T23:59:59.999Z"), (253402300800000, "253402300800000")):
            with self.subTest(ms=ms):
                r = self.zaptid("decode", *layout, "--format", "tsv", ms << 1)
                self.assertEqual(r.stdout.split("\t")[2], text)
                r = self.zaptid("compose", *layout, "--time", text)
                self.assertEqual(int(r.stdout), ms << 1)

    # ---- 6. write errors ------------------------------------------------------------------

    def test_version_and_help_fail_on_a_write_error(self):
        for args in (["version"], ["--version"], ["--help"], ["decode", "--help"], ["compose", "--tick", "1"]):
            with self.subTest(args=args):
                r = self.sh('exec "$Z" "$@" > /dev/full', *args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertEqual(r.stderr, FULL_STDOUT + "\n")
        # No message when standard error cannot take it either, but still the failure.
        r = self.sh('exec "$Z" version > /dev/full 2>&-')
        self.assertEqual((r.returncode, r.stderr), (1, ""))

    # ---- 7. unknown command ---------------------------------------------------------------

    def test_unknown_command_is_named(self):
        r = self.zaptid("frob")
        self.assertFails(r, 2, "zaptid: unknown command 'frob' (commands: gen, decode, compose, version, serve, get, "
                               "bench; see 'zaptid --help')")
        r = self.zaptid("--log-level", "warn", "gen\x07x")
        self.assertFails(r, 2, "zaptid: unknown command 'gen\\x07x' (commands:")


if __name__ == "__main__":
    unittest.main()
