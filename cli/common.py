"""Small helpers shared by command modules."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halab.errors import UsageError
from halab.lab.config import LabConfig, load_config


def config_from(args: argparse.Namespace) -> LabConfig:
    from halab.lab.lifecycle import lab_accel

    cfg = load_config(getattr(args, "config", None), getattr(args, "profile", None))
    return cfg.for_accel(lab_accel(cfg))


def number_in(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a finite number within [lo, hi] ("nan", "inf" and "-1" are refused as the
    option's own error, not passed on)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g} (got {text[:40]!r})")
        return v

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def check_output_files(args: argparse.Namespace, *options: str) -> None:
    """Refuse an output path that cannot be written before a long run starts, not after it."""
    for option in options:
        value = getattr(args, option, None)
        if not value:
            continue
        path = Path(value)
        flag = f"--{option.replace('_', '-')}"
        if path.is_dir():
            raise UsageError(f"{flag} {value}: is a directory; give a file name")
        parent = path.parent
        if not parent.is_dir():
            raise UsageError(f"{flag} {value}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"{flag} {value}: directory {parent} is not writable")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
