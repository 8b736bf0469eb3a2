"""One claim per machine id per host: other users, other state folders, other layouts, deleted files.

Every case ends with 0 duplicates among all IDs issued, or with a clear refusal. The processes are
real zaptid processes, run as different users (uids) where the test runs as root.
"""
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import LIBFAKETIME, ZAPTID, ZaptidTestCase, faketime_preload, recorded_id, start_server

SONYFLAKE_EPOCH_MS = 1409529600000


def as_user(uid):
    """A preexec_fn that drops to uid (and a group of the same number)."""
    def drop():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return drop


class ClaimTest(ZaptidTestCase):
    def setUp(self):
        super().setUp()
        os.chmod(self.tmp, 0o1777)  # like /var/tmp: every user may create the host folder in it

    def home_of(self, uid):
        home = os.path.join(self.tmp, f"home-{uid}")
        os.makedirs(home, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(home, uid, uid)
        return home

    def start(self, *args, uid=None, env=None):
        """Starts zaptid (as uid, with its own HOME and default state folder). Its output goes to
        files, so that a process holding the claim never blocks on a pipe nobody reads yet."""
        run_env = {k: v for k, v in self.env.items() if k not in ("ZAPTID_STATE_DIR", "HOME")}
        run_env["HOME"] = self.home_of(uid if uid is not None else os.geteuid())
        run_env.update(env or {})
        self.runs = getattr(self, "runs", 0) + 1
        out = open(os.path.join(self.tmp, f"run-{self.runs}.out"), "w+")
        err = open(os.path.join(self.tmp, f"run-{self.runs}.err"), "w+")
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        p = subprocess.Popen([ZAPTID, *map(str, args)], env=run_env, stdout=out, stderr=err, text=True,
                             preexec_fn=as_user(uid) if uid is not None else None)
        p.out, p.err = out, err
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def first_line(self, p):
        """Waits (bounded) until p wrote its first ID; returns it."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            with open(p.out.name) as f:  # its own offset: p.out's is the child's
                line = f.readline()
            if line.endswith("\n"):
                return int(line)
            time.sleep(0.01)  # polls a file another process writes; no time is waited for
        self.fail("no ID written")

    def finish(self, p):
        p.wait(timeout=120)
        p.out.seek(0)
        p.err.seek(0)
        return p.returncode, [int(x) for x in p.out.read().split()], p.err.read()

    def assertNoDuplicates(self, *runs):
        ids = [i for run in runs for i in run]
        self.assertEqual(len(ids), len(set(ids)), f"{len(ids) - len(set(ids))} duplicates")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run as two users")
    def test_two_users_at_once(self):
        # Each user has the default state folder in its own home; both share the host's folder.
        a = self.start("gen", "--machine-id", 4011, "-n", 20000, uid=60001)
        b = self.start("gen", "--machine-id", 4011, "-n", 20000, uid=60002)
        (ra, ia, ea), (rb, ib, eb) = self.finish(a), self.finish(b)
        self.assertEqual((ra, rb), (0, 0), ea + eb)
        self.assertEqual((len(ia), len(ib)), (20000, 20000))
        self.assertNoDuplicates(ia, ib)
        # One ran after the other: all of one user's IDs are above all of the other's.
        self.assertTrue(min(ia) > max(ib) or min(ib) > max(ia))
        for uid in (60001, 60002):
            self.assertTrue(os.path.exists(os.path.join(self.home_of(uid), ".local/state/zaptid/machine-4011.state")))
        host = os.path.join(self.tmp, "host", "machine-4011")
        self.assertEqual(recorded_id(host), max(ia + ib))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run as two users")
    def test_other_users_record_in_the_default_host_folder(self):
        # No ZAPTID_HOST_DIR: the host's own folder, /var/tmp/zaptid, shared by every user.
        env = {k: v for k, v in self.env.items() if k != "ZAPTID_HOST_DIR"}
        self.env = env
        a = self.start("gen", "--machine-id", 4012, "-n", 3000, uid=60003)
        ra, ia, ea = self.finish(a)
        self.assertEqual(ra, 0, ea)
        record = "/var/tmp/zaptid/machine-4012"
        self.assertEqual(recorded_id(record), max(ia))
        self.assertEqual(os.stat(record).st_mode & 0o777, 0o666)
        self.assertEqual(os.stat("/var/tmp/zaptid").st_mode & 0o1777, 0o1777)
        b = self.start("gen", "--machine-id", 4012, "-n", 3000, uid=60004)
        rb, ib, eb = self.finish(b)
        self.assertEqual(rb, 0, eb)
        self.assertGreater(min(ib), max(ia))
        self.assertEqual(recorded_id(record), max(ib))

    def test_server_and_operator_gen_with_other_state_folders(self):
        # The server like the systemd unit (its own state folder), an operator's gen with the default one.
        service_env = {"ZAPTID_STATE_DIR": os.path.join(self.tmp, "var-lib-zaptid")}
        server = start_server(self, machine_id=4013, env=service_env)
        got = self.zaptid("get", "--server", server.address, "--count", 5000)
        self.assertEqual(got.returncode, 0, got.stderr)
        from_server = [int(x) for x in got.stdout.split()]

        refused = self.zaptid("gen", "--machine-id", 4013, "--lock-timeout", "100ms")
        self.assertFails(refused, 1, f"zaptid: machine id 4013 is in use on this host by pid {server.proc.pid} (user ")
        self.assertIn(f": {ZAPTID} serve --listen 127.0.0.1:0 --machine-id 4013"[:66], refused.stderr)
        self.assertEqual(refused.stdout, "")

        waiting = self.start("gen", "--machine-id", 4013, "-n", 5000, "--lock-timeout", "60s")
        more = self.zaptid("get", "--server", server.address, "--count", 5000)
        self.assertEqual(more.returncode, 0, more.stderr)
        from_server += [int(x) for x in more.stdout.split()]
        server.stop()
        rc, from_gen, err = self.finish(waiting)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(from_gen), 5000)
        self.assertNoDuplicates(from_server, from_gen)
        self.assertGreater(min(from_gen), max(from_server))

    def test_layouts_in_turn(self):
        first = self.zaptid("gen", "--machine-id", 4014, "-n", 25600)
        self.assertEqual(first.returncode, 0, first.stderr)
        ids = [int(x) for x in first.stdout.split()]
        shifted = str(SONYFLAKE_EPOCH_MS + 1000)  # every time field 1 s smaller than the default layout's
        # The first ID above the record is ~1 s ahead: refused beyond a shorter wait limit ...
        r = self.zaptid("gen", "--machine-id", 4014, "-n", 10, "--epoch", shifted, "--max-clock-wait", "200ms")
        self.assertFails(r, 1, f"zaptid: the record {self.tmp}/host/machine-4014 says IDs up to {max(ids)} may have "
                               "been issued with machine id 4014 (layout sonyflake); the first larger ID of this "
                               "layout has the time ")
        self.assertEqual(r.stdout, "")
        # ... and waited for within it: every ID is above all the first run's.
        r = self.zaptid("gen", "--machine-id", 4014, "-n", 25600, "--epoch", shifted, "--max-clock-wait", "3s")
        self.assertEqual(r.returncode, 0, r.stderr)
        later = [int(x) for x in r.stdout.split()]
        self.assertGreater(min(later), max(ids))
        # Other bit splits, after both.
        r = self.zaptid("gen", "--machine-id", 4014, "-n", 10000, "--bits-sequence", 9, "--bits-machine", 15,
                        "--max-clock-wait", "3s")
        self.assertEqual(r.returncode, 0, r.stderr)
        split = [int(x) for x in r.stdout.split()]
        self.assertGreater(min(split), max(later))
        self.assertNoDuplicates(ids, later, split)

    def test_layouts_at_once(self):
        shifted = str(SONYFLAKE_EPOCH_MS + 1000)
        runs = [self.start("gen", "--machine-id", 4015, "-n", 10000, "--lock-timeout", "30s", "--max-clock-wait", "3s",
                           *extra)
                for extra in ([], ["--bits-sequence", 9, "--bits-machine", 15], ["--epoch", shifted], [])]
        results = [self.finish(p) for p in runs]
        for rc, ids, err in results:
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(ids), 10000)
        self.assertNoDuplicates(*(ids for _, ids, _ in results))
        # They ran one after another: their ranges do not overlap.
        spans = sorted((min(ids), max(ids)) for _, ids, _ in results)
        for (_, hi), (lo, _) in zip(spans, spans[1:]):
            self.assertGreater(lo, hi)

    def test_records_deleted_during_a_run(self):
        # What a user "clearing stale files" does: nothing to delete stops the claim, and the
        # running process writes its records again.
        first = self.start("gen", "--machine-id", 4016, "-n", 60000)
        self.first_line(first)
        for folder in (os.path.join(self.home_of(os.geteuid()), ".local/state/zaptid"), os.path.join(self.tmp, "host")):
            shutil.rmtree(folder)
        second = self.start("gen", "--machine-id", 4016, "-n", 20000, "--lock-timeout", "60s")
        rc1, ids1, err1 = self.finish(first)
        rc2, ids2, err2 = self.finish(second)
        self.assertEqual((rc1, rc2), (0, 0), err1 + err2)
        self.assertNoDuplicates(ids1, ids2)
        self.assertGreater(min(ids2), max(ids1))

    def test_claim_cannot_be_taken_by_a_file(self):
        # The claim has no file: a state folder full of old lock files changes nothing, and a
        # second process is refused while the first runs whatever its folders.
        os.makedirs(os.path.join(self.tmp, "state"))
        with open(os.path.join(self.tmp, "state", "e1409529600000-u10-t39-s8-m16-sm-machine-4017.lock"), "w") as f:
            f.write("pid 1, zaptid serve\n")
        first = self.start("gen", "--machine-id", 4017, "-n", 60000)
        self.first_line(first)
        r = self.zaptid("gen", "--machine-id", 4017, "--lock-timeout", "0s",
                        env={"ZAPTID_STATE_DIR": os.path.join(self.tmp, "elsewhere"),
                             "ZAPTID_HOST_DIR": os.path.join(self.tmp, "elsewhere-too")})
        self.assertFails(r, 1, f"zaptid: machine id 4017 is in use on this host by pid {first.pid} (user ")
        self.assertEqual(self.finish(first)[0], 0)


@unittest.skipUnless(os.path.exists(LIBFAKETIME), "needs libfaketime (Debian: faketime)")
class ClockFaultTest(ZaptidTestCase):
    """Real clock faults through libfaketime: the process's own clock is wrong, not the host's."""

    def faketime(self, when, *args, env=None):
        """Runs zaptid with libfaketime preloaded and FAKETIME=when (libfaketime's own syntax: "-1h"
        is an hour back, "@2013-01-01 00:00:00" starts the clock there)."""
        run_env = dict(env or self.env)
        run_env["LD_PRELOAD"] = faketime_preload()
        run_env["FAKETIME"] = when
        run_env["FAKETIME_DONT_RESET"] = "1"
        return subprocess.run([ZAPTID, *map(str, args)], capture_output=True, text=True, env=run_env, timeout=60)

    def test_clock_stepped_back_past_the_record(self):
        r = self.zaptid("gen", "--machine-id", 4018, "-n", 100)
        self.assertEqual(r.returncode, 0, r.stderr)
        last = int(r.stdout.split()[-1])
        # An hour back (NTP, an operator): the record is ahead of this clock by far more than 1s.
        back = self.faketime("-1h", "gen", "--machine-id", 4018)
        self.assertFails(back, 1, f"zaptid: the record {self.tmp}/host/machine-4018 says IDs up to {last} may have "
                                  "been issued with machine id 4018 (layout sonyflake); the first larger ID of this "
                                  "layout has the time ")
        self.assertRegex(back.stderr, r", 3\d{3}\.\d{3}s ahead of the clock and beyond the clock wait limit of "
                                      r"1\.000s\. Try again after that time, correct the clock if it is behind, or "
                                      r"use another machine id\n$")
        self.assertEqual(back.stdout, "")
        # Back on time, it goes on above the record.
        r = self.zaptid("gen", "--machine-id", 4018)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(int(r.stdout), last)

    def test_clock_before_the_epoch(self):
        r = self.faketime("@2013-01-01 00:00:00", "gen", "--machine-id", 4019, env=dict(self.env, TZ="UTC"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"^zaptid: the clock \(2013-01-01T00:00:0\d\.\d{3}Z\) is before the layout's "
                                   r"epoch \(2014-09-01T00:00:00\.000Z\); correct the clock\n$")
        self.assertEqual(r.stdout, "")
        # decode needs no clock at all.
        r = self.faketime("@2013-01-01 00:00:00", "decode", "647842057989128197")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
