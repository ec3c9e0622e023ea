"""Every `module.name` the project's code reads from one of its own modules exists. A lost function
(a bad edit removed checkpoint's lab commands; `up` then failed only on real VMs, after 18 minutes)
is caught here in a second: ruff does not resolve attributes, and the fast tiers do not run `up`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("halab", "cli", "tui")


def _sources() -> list[Path]:
    files = [ROOT / "lab.py"]
    for pkg in PACKAGES:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def _own_module_aliases(tree: ast.AST) -> dict[str, str]:
    """alias -> dotted module for `from halab import x [as y]` and `import halab.x as y`."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in PACKAGES:
            for a in node.names:
                dotted = f"{node.module}.{a.name}"
                if importlib.util.find_spec(node.module) and _is_module(dotted):
                    aliases[a.asname or a.name] = dotted
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES and a.asname:
                    aliases[a.asname] = a.name
    return aliases


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _attribute_reads(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    aliases = _own_module_aliases(tree)
    return [(node.lineno, aliases[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_attribute_read_from_an_own_module_exists(path):
    missing = []
    for line, module, attr in _attribute_reads(path):
        if not hasattr(importlib.import_module(module), attr):
            missing.append(f"{path.relative_to(ROOT)}:{line}: {module} has no {attr!r}")
    assert not missing, "\n".join(missing)


def test_the_check_sees_module_aliases():
    """The check would find the lost function: lifecycle reads checkpoint's lab commands."""
    reads = {(m, a) for _, m, a in _attribute_reads(ROOT / "halab" / "lab" / "lifecycle.py")}
    assert ("halab.lab.checkpoint", "ready_checkpoint_valid") in reads
    assert ("halab.lab.checkpoint", "save_checkpoint") in reads
