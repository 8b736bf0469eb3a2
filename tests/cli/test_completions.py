"""completions/: bash, zsh and fish each loaded by the real shell and asked for real completions.

bash: bash-completion's loader plus our file; COMP_WORDS/COMP_CWORD split as readline splits them.
zsh:  an interactive `zsh -f` on a pseudo-terminal runs compinit with completions/ on $fpath and
      presses TAB; a compadd wrapper records every match offered to a file, and a comppostfuncs
      hook prints a marker the test waits for (no sleeping).
fish: `complete -C` with completions/ on $fish_complete_path (fish autoloads zaptid.fish).
Every shell must offer exactly the long options `zaptid SUB --help` shows, so they cannot drift.
"""
import os
import select
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import ZAPTID
from test_man import global_options, help_text, long_options, subcommands

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPLETIONS = os.path.join(ROOT, "completions")
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
LAYOUTS = ["sonyflake", "sonyflake-v2", "snowflake"]
TIMEOUT = 30


class Shell:
    """One shell's completion of a command line (the cursor at its end)."""

    def __init__(self, tmp):
        self.tmp = tmp
        # zaptid on PATH, as once installed: fish only autoloads completions of commands it finds.
        self.bin = os.path.join(tmp, "bin")
        os.makedirs(self.bin, exist_ok=True)
        link = os.path.join(self.bin, "zaptid")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(ZAPTID), link)
        self.env = {"PATH": self.bin + ":/usr/bin:/bin", "HOME": tmp, "TERM": "dumb", "LANG": "C.UTF-8"}


class Bash(Shell):
    name = "bash"

    def complete(self, line):
        # readline splits words at spaces and at COMP_WORDBREAKS characters such as '='.
        words = []
        for token in line.split(" "):
            pieces = token.split("=")
            for i, piece in enumerate(pieces):
                if i > 0:
                    words.append("=")
                if piece or i == len(pieces) - 1:
                    words.append(piece)
        words = [w for w in words[:-1] if w] + [words[-1]]
        script = (f'source {BASH_COMPLETION}\nsource "$1"\n'
                  'COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}; shift 2; COMP_WORDS=("$@")\n'
                  'COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n'
                  '_zaptid zaptid "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
                  'printf "%s\\n" "${COMPREPLY[@]}"\n')
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash",
                            os.path.join(COMPLETIONS, "zaptid.bash"), line, *words],
                           capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=TIMEOUT)
        if r.returncode != 0 or r.stderr:
            raise AssertionError(f"bash: {r.returncode} {r.stderr}")
        return [w for w in r.stdout.split("\n") if w]


class Fish(Shell):
    name = "fish"

    def complete(self, line):
        r = subprocess.run(["fish", "--no-config", "-c",
                            "set -p fish_complete_path $argv[1]; complete -C $argv[2]", COMPLETIONS, line],
                           capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=TIMEOUT)
        if r.returncode != 0 or r.stderr:
            raise AssertionError(f"fish: {r.returncode} {r.stderr}")
        return [w.split("\t")[0] for w in r.stdout.split("\n") if w]


class Zsh(Shell):
    name = "zsh"

    def complete(self, line):
        work = tempfile.mkdtemp(dir=self.tmp)
        hits = os.path.join(work, "hits")
        setup = os.path.join(work, "setup.zsh")
        with open(setup, "w", encoding="utf-8") as f:
            f.write(f"""
PROMPT='' RPROMPT='' PS2=''
fpath=({COMPLETIONS} $fpath)
autoload -U compinit && compinit -u -D
zstyle ':completion:*' insert-tab false
bindkey '^I' complete-word
# Record what completion functions offer; calls that only filter into an array pass through.
compadd() {{
  if [[ " ${{@[1,(i)(-|--)]}} " == *' '-[OAD]' '* ]]; then
    builtin compadd "$@"; return
  fi
  local -a __hits
  builtin compadd -O __hits "$@"
  (( $#__hits )) && print -rl -- $__hits >> {hits}
  builtin compadd "$@"
}}
_zaptid_test_done() {{ print -r -- '@@'DONE'@@' }}
comppostfuncs=(_zaptid_test_done)
print -r -- '@@'READY'@@'
""")
        master, slave = os.openpty()
        proc = subprocess.Popen(["zsh", "-f", "-i"], stdin=slave, stdout=slave, stderr=slave, env=self.env,
                                cwd=self.tmp, start_new_session=True)
        os.close(slave)
        try:
            os.write(master, f"source {setup}\n".encode())
            self._read_until(master, b"@@READY@@")
            os.write(master, line.encode() + b"\t")
            self._read_until(master, b"@@DONE@@")
        finally:
            proc.kill()
            proc.wait()
            os.close(master)
        if not os.path.exists(hits):
            return []
        with open(hits, encoding="utf-8") as f:
            return [w for w in f.read().split("\n") if w]

    @staticmethod
    def _read_until(fd, marker):
        seen = b""
        deadline = time.monotonic() + TIMEOUT
        while marker not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"zsh: no {marker!r} within {TIMEOUT}s; the terminal showed {seen[-2000:]!r}")
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"zsh ended before {marker!r}; the terminal showed {seen[-2000:]!r}")
            seen += chunk


class CompletionTests:
    """The same checks for every shell; subclasses set `shell_class`."""
    shell_class = None

    def setUp(self):
        if shutil.which(self.shell_class.name) is None:
            self.skipTest(f"{self.shell_class.name} is not installed")
        if self.shell_class is Bash and not os.path.exists(BASH_COMPLETION):
            self.skipTest("bash-completion is not installed")
        self.tmp = tempfile.mkdtemp(prefix="zaptid-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.shell = self.shell_class(self.tmp)

    def complete(self, line):
        return self.shell.complete(line)

    def test_subcommand_prefix(self):
        # gen and get once get is in the binary: what `zaptid --help` lists, never more.
        expected = sorted(s for s in subcommands() if s.startswith("ge"))
        self.assertIn("gen", expected)
        self.assertEqual(sorted(self.complete("zaptid ge")), expected)

    def test_subcommands_are_the_binarys(self):
        self.assertEqual(sorted(self.complete("zaptid ")), sorted(subcommands()))

    def test_option_prefix(self):
        self.assertEqual(self.complete("zaptid gen --lay"), ["--layout"])

    def test_layout_names(self):
        self.assertEqual(sorted(self.complete("zaptid gen --layout ")), sorted(LAYOUTS))
        self.assertEqual(sorted(self.complete("zaptid decode --layout sony")), ["sonyflake", "sonyflake-v2"])

    def test_layout_name_after_equals(self):
        offered = self.complete("zaptid gen --layout=snow")
        self.assertEqual([w.split("=")[-1] for w in offered], ["snowflake"])

    def test_formats(self):
        self.assertEqual(sorted(self.complete("zaptid gen --format ")), ["dec", "hex", "json"])
        self.assertEqual(sorted(self.complete("zaptid decode --format ")), ["json", "text", "tsv"])
        self.assertEqual(sorted(self.complete("zaptid --log-level ")),
                         sorted(["trace", "debug", "info", "warn", "error", "critical", "off"]))

    def test_after_global_options(self):
        self.assertEqual(sorted(self.complete("zaptid --log-format json g")),
                         sorted(s for s in subcommands() if s.startswith("g")))

    def test_no_options_as_values(self):
        # A value is expected: offering options or subcommands here would be wrong.
        self.assertEqual(self.complete("zaptid gen --count "), [])

    def test_tls_options_complete_files(self):
        certs = os.path.join(self.tmp, "certs")
        os.makedirs(certs)
        for name in ["ca.pem", "client.pem", "client.key"]:
            open(os.path.join(certs, name), "w").close()
        for sub, option in [("get", "--tls-ca"), ("get", "--tls-key"), ("serve", "--tls-cert"),
                            ("serve", "--tls-client-ca")]:
            if sub not in subcommands() or option not in long_options(help_text(sub)):
                continue  # the option-drift test reports it
            offered = [os.path.basename(w) for w in self.complete(f"zaptid {sub} {option} {certs}/client.")]
            self.assertEqual(sorted(offered), ["client.key", "client.pem"], f"{sub} {option}")

    def test_every_subcommand_offers_exactly_its_options(self):
        globals_ = global_options()
        self.assertEqual(sorted(w for w in self.complete("zaptid --") if w.startswith("--")),
                         sorted(long_options(help_text())))
        for sub in subcommands():
            expected = long_options(help_text(sub)) | globals_
            offered = {w for w in self.complete(f"zaptid {sub} --") if w.startswith("--")}
            self.assertEqual(sorted(offered), sorted(expected), f"zaptid {sub} --<TAB>")


class BashCompletionTest(CompletionTests, unittest.TestCase):
    shell_class = Bash

    def test_registered_for_zaptid(self):
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", f'source "$1"; complete -p zaptid', "bash",
                            os.path.join(COMPLETIONS, "zaptid.bash")], capture_output=True, text=True,
                           timeout=TIMEOUT)
        self.assertEqual(r.stdout.strip(), "complete -F _zaptid zaptid")


class ZshCompletionTest(CompletionTests, unittest.TestCase):
    shell_class = Zsh


class FishCompletionTest(CompletionTests, unittest.TestCase):
    shell_class = Fish


if __name__ == "__main__":
    unittest.main()
