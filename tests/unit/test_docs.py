"""The README names every command-line flag and every environment variable the code reads: a flag
or variable added without a word for the user fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _flags(parser: argparse.ArgumentParser, prefix: str = "") -> set[tuple[str, str]]:
    out = set()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out |= _flags(sub, f"{prefix} {name}".strip())
        else:
            out |= {(prefix, f) for f in a.option_strings if f.startswith("--") and f != "--help"}
    return out


def test_every_flag_is_in_the_readme():
    missing = sorted(f"{cmd} {flag}" for cmd, flag in _flags(cli.build_parser()) if f"`{flag}" not in README
                     and f"{flag} " not in README and f"{flag}`" not in README)
    assert not missing, f"README does not mention: {missing}"


def test_every_environment_variable_is_in_the_readme():
    names: set[str] = set()
    for path in [*ROOT.glob("halab/*.py"), *ROOT.glob("cli/*.py"), *ROOT.glob("tui/*.py"),
                 *ROOT.glob("tests/**/*.py"), ROOT / ".ci" / "run"]:
        if path.is_file():
            names |= set(re.findall(r"\b(HALAB_[A-Z_]+)\b", path.read_text()))
    code_only = {"HALAB_XMLNS", "HALAB_XMLNS_PREFIX", "HALAB_NS",  # constants, not variables
                 "HALAB_UNIT_ETC", "HALAB_UNIT_LIB",  # a test's own shell variables
                 "HALAB_TIMEOUT_SCALE"}  # the guest setup scripts' own (cloud-init/common/lib.sh)
    missing = sorted(n for n in names - code_only if n not in README and not n.startswith("HALAB_SANDBOX"))
    assert not missing, f"README does not mention: {missing}"
    assert "HALAB_SANDBOX" in README
