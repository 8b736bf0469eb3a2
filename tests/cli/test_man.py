"""man/zaptid.1 and --help: clean groff, and the same options, subcommands, variables and exit codes.

The help texts are read from the real binary, so the man page cannot drift from it unnoticed.
"""
import os
import re
import shutil
import subprocess
import unittest

from harness import ZAPTID, ZaptidTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN_PAGE = os.path.join(ROOT, "man", "zaptid.1")
EXIT_STATUS_H = os.path.join(ROOT, "cli", "exit_status.h")


def help_text(*subcommand):
    """`zaptid [subcommand] --help`, which must succeed and print to stdout only."""
    r = subprocess.run([ZAPTID, *subcommand, "--help"], capture_output=True, text=True, timeout=30,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if r.returncode != 0 or r.stderr:
        raise AssertionError(f"zaptid {' '.join(subcommand)} --help: status {r.returncode}, stderr {r.stderr!r}")
    return r.stdout


def subcommands():
    """The subcommands `zaptid --help` lists, in its order."""
    names, inside = [], False
    for line in help_text().splitlines():
        if line.startswith("Subcommands:"):
            inside = True
        elif inside and re.match(r"^  \S", line):
            names.append(line.split()[0])
        elif inside and not line.strip():
            break
    if not names:
        raise AssertionError("zaptid --help lists no subcommands")
    return names


def long_options(text):
    """The long options of a CLI11 help text: the leading '-x,--name' token of each option line."""
    found = set()
    for line in text.splitlines():
        m = re.match(r"^  (-\S+)", line)
        if m:
            found.update(p for p in m.group(1).split(",") if p.startswith("--"))
    return found


def global_options():
    """Options of `zaptid --help` that also work after a subcommand (--help and --version do not count)."""
    return long_options(help_text()) - {"--help", "--version"}


def man_source():
    with open(MAN_PAGE, encoding="utf-8") as f:
        return f.read()


def man_plain(source):
    """The page's text with roff escapes for '-' undone and font changes dropped."""
    return re.sub(r"\\f[BIRP]", "", source.replace("\\-", "-").replace("\\&", ""))


def mentioned_options(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", text))


# A line that starts an option's entry, as man_plain() leaves it: '.BI --count " N"',
# '.BR -n ", " --count " N"', '.B --max'.
OPTION_ITEM = re.compile(r'^\.(?:B|BI|BR) (?:-\w ", " )?(--[a-z0-9-]+)', flags=re.M)


def man_sections(source):
    """{'.SH name' or '.SS name': body} for every section and subsection."""
    parts = re.split(r"^(\.S[HS] .*)$", source, flags=re.M)
    return {parts[i].strip().replace('"', ""): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


class ManPageTest(ZaptidTestCase):
    def test_groff_is_clean(self):
        if shutil.which("groff") is None:
            self.skipTest("groff is not installed (Debian: groff-base)")
        r = subprocess.run(["groff", "-man", "-ww", "-z", MAN_PAGE], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")

    def test_sections(self):
        sections = man_sections(man_source())
        for name in ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "EXIT STATUS", "FILES",
                     "ID LAYOUTS", "EXAMPLES", "SEE ALSO"]:
            self.assertIn(".SH " + name, sections)
        self.assertRegex(sections[".SH NAME"], r"^\s*zaptid \\- \S")

    def test_every_subcommand_has_a_section(self):
        sections = man_sections(man_source())
        for sub in subcommands():
            self.assertIn(f".SS zaptid {sub}", sections, f"man page has no section for 'zaptid {sub}'")
            self.assertRegex(man_plain(sections[".SH SYNOPSIS"]), rf"\bzaptid {sub}\b")

    def test_every_help_option_is_in_the_man_page(self):
        documented = mentioned_options(man_plain(man_source()))
        self.assertIn("--layout", documented)  # the parsing itself works
        for sub in [None, *subcommands()]:
            shown = long_options(help_text(*([sub] if sub else [])))
            missing = shown - documented
            self.assertFalse(missing, f"'zaptid {sub or ''} --help' shows options the man page lacks: {sorted(missing)}")

    def test_each_subcommand_section_names_only_its_real_options(self):
        # The reverse direction: a section documenting an option the subcommand no longer has.
        sections = man_sections(man_source())
        plain = {name: man_plain(body) for name, body in sections.items()}
        layout_and_identity = long_options(help_text("gen"))
        for name in [".SH LAYOUT OPTIONS", ".SH IDENTITY OPTIONS", ".SH GLOBAL OPTIONS"]:
            options_defined = set(OPTION_ITEM.findall(plain[name]))
            self.assertTrue(options_defined, name)
            self.assertFalse(options_defined - layout_and_identity - long_options(help_text()),
                             f"{name} documents options gen and zaptid --help lack")
        for sub in subcommands():
            real = long_options(help_text(sub)) | global_options()
            options_defined = set(OPTION_ITEM.findall(plain[f".SS zaptid {sub}"]))
            extra = options_defined - real
            self.assertFalse(extra, f"man page documents options 'zaptid {sub}' does not have: {sorted(extra)}")

    def test_environment_variables_match_the_help(self):
        documented = set(re.findall(r"\bZAPTID_[A-Z0-9_]*[A-Z0-9]\b",
                                    man_plain(man_sections(man_source())[".SH ENVIRONMENT"])))
        shown = set()
        for sub in [None, *subcommands()]:
            text = help_text(*([sub] if sub else []))
            found = set(re.findall(r"\bZAPTID_[A-Z0-9_]*[A-Z0-9]\b", text))
            self.assertFalse(found - documented, f"'zaptid {sub or ''} --help' names variables the man page lacks")
            shown |= found
        self.assertFalse(documented - shown, "the man page names variables no --help shows")

    def test_exit_statuses_match_the_header(self):
        with open(EXIT_STATUS_H, encoding="utf-8") as f:
            codes = sorted(int(c) for c in re.findall(r"^\s*kExit\w+ = (\d+),", f.read(), flags=re.M))
        self.assertEqual(codes, [0, 1, 2, 3, 4])
        section = man_sections(man_source())[".SH EXIT STATUS"]
        self.assertEqual(sorted(int(c) for c in re.findall(r"^\.B (\d+)$", section, flags=re.M)), codes)

    def test_version_matches_the_binary(self):
        version = self.zaptid("--version").stdout.strip()
        self.assertRegex(version, r"^zaptid \d+\.\d+\.\d+$")
        self.assertRegex(man_source(), rf'(?m)^\.TH ZAPTID 1 \S+ "{re.escape(version)}"')

    def test_help_shows_an_example_defaults_and_environment(self):
        for sub in [None, *subcommands()]:
            text = help_text(*([sub] if sub else []))
            self.assertRegex(text, r"(?m)^Examples?: zaptid ", f"'zaptid {sub or ''} --help' shows no example")
        self.assertIn("--layout TEXT=sonyflake (Env:ZAPTID_LAYOUT)", help_text("gen"))
        self.assertIn("--lock-timeout TEXT=5s (Env:ZAPTID_LOCK_TIMEOUT)", help_text("gen"))


if __name__ == "__main__":
    unittest.main()
