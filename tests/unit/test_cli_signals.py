"""SIGTERM unwinds a command like Ctrl-C: clean-up in `finally` blocks runs, exit status 143."""

from __future__ import annotations

import argparse
import os
import signal
import time

import cli


def test_sigterm_runs_clean_up_and_exits_143(monkeypatch, capsys):
    cleaned: list[str] = []

    def command(_args: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler
            return 0
        finally:
            cleaned.append("restored")

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        sub = p.add_subparsers(dest="command")
        sub.add_parser("slow").set_defaults(func=command)
        return p

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "build_parser", parser)
    try:
        t0 = time.monotonic()
        assert cli.main(["slow"]) == 143
        assert time.monotonic() - t0 < 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert cleaned == ["restored"]
    assert "terminated; state kept" in capsys.readouterr().err
