"""Shared helpers for tests that run the real zaptid binary.

Every test gets its own temporary folder and state folder, a clean environment (no ZAPTID_*
from the caller), and never a fixed port: servers listen on port 0 and report the real one.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

ZAPTID = os.environ.get("ZAPTID_BIN") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "cli", "zaptid"))

# The vector a real zaptidgen server (machine id 5) issued; see issue 2.
ZAPTIDGEN_ID = 647842057989128197


class ZaptidTestCase(unittest.TestCase):
    """Base class: self.tmp is a private folder, self.env the environment to run zaptid in."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zaptid-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ZAPTID_") or k == "ZAPTID_BIN"}
        self.env["ZAPTID_STATE_DIR"] = os.path.join(self.tmp, "state")
        self.env["HOME"] = self.tmp

    def zaptid(self, *args, input=None, env=None, timeout=60):
        """Runs zaptid with args; returns CompletedProcess (text mode, stdout/stderr captured)."""
        run_env = dict(self.env)
        if env:
            run_env.update(env)
        return subprocess.run([ZAPTID, *map(str, args)], input=input, capture_output=True, text=True,
                              env=run_env, timeout=timeout)

    def popen(self, *args, env=None, **kwargs):
        """Starts zaptid in the background; the test's cleanup kills it if still running."""
        run_env = dict(self.env)
        if env:
            run_env.update(env)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([ZAPTID, *map(str, args)], env=run_env, text=True, **kwargs)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.addCleanup(stop)
        return proc

    def assertFails(self, result, status, message):
        """Asserts exit status `status` and exactly one stderr line starting 'zaptid: ' containing message."""
        self.assertEqual(result.returncode, status, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("zaptid: "), lines[0])
        self.assertIn(message, lines[0])
