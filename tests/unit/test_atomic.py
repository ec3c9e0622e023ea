"""Every file halab writes is written atomically: old or new content, never a torn file."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from halab.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_write_atomic_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_atomic(target, "old")
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp file left


def test_write_atomic_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    write_atomic(target, "x")
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_write_leaves_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, "old")

    class Boom:  # not str/bytes: encoding fails after the temp file exists
        pass

    with pytest.raises(TypeError):
        write_atomic(target, Boom())  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_no_plain_writes_in_the_product() -> None:
    """The core, CLI and TUI write files only through write_atomic (the image build's scratch tree
    and the checkpoint's streamed copies are written in place and committed by a rename/manifest)."""
    offenders = []
    for pkg in ("halab", "cli", "tui"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name in ("image.py", "atomic.py"):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in ("write_text", "write_bytes"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
                        and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                        and "w" in str(node.args[1].value)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
