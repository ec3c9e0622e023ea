"""The core (`halab/`) never imports Textual, `tui` or `cli`: checked by import-linter's contract in
pyproject.toml and, independently, by importing every halab module in a fresh interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FORBIDDEN = {"textual", "tui", "cli"}


def importlinter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def write_config(dest: Path) -> Path:
    """pyproject's import-linter section as a standalone file. include_external_packages is forced on:
    import-linter refuses a forbidden contract naming an external package (textual) without it."""
    cfg = importlinter_config()
    lines = ["[tool.importlinter]",
             "root_packages = " + json.dumps(cfg["root_packages"]),
             "include_external_packages = true"]
    for contract in cfg["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in contract.items()]
    path = dest / "importlinter.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def test_contract_forbids_textual_tui_and_cli_in_the_core():
    contracts = importlinter_config()["contracts"]
    assert any(c["type"] == "forbidden" and c["source_modules"] == ["halab"]
               and set(c["forbidden_modules"]) >= FORBIDDEN for c in contracts)


def test_lint_imports_contracts_kept(tmp_path):
    assert LINT_IMPORTS.exists(), "import-linter is not installed in the venv (requirements-dev.txt)"
    out = lint_imports(write_config(tmp_path), ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ", 0 broken." in out.stdout, out.stdout


def test_lint_imports_catches_a_violation(tmp_path):
    """The contracts really bite: a copy of the tree with one core module importing textual, and an
    observing module importing a chaos one inside a function (a lazy import counts), fails both."""
    for pkg in ("halab", "tui", "cli"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "halab" / "zz_bad.py").write_text("import textual.app  # noqa\n")
    with (tmp_path / "halab" / "observe" / "timeline.py").open("a") as fh:
        fh.write("\n\ndef _zz_bad():\n    import halab.chaos.scenario  # noqa\n")
    out = lint_imports(write_config(tmp_path), tmp_path)
    assert out.returncode != 0
    assert "halab.zz_bad -> textual" in out.stdout
    assert "halab.observe.timeline -> halab.chaos.scenario" in out.stdout


def test_layer_contracts_name_modules_that_exist():
    """A contract naming a module that was renamed away would guard nothing."""
    for contract in importlinter_config()["contracts"]:
        named = contract.get("source_modules", []) + contract.get("forbidden_modules", [])
        for container in contract.get("containers", []):  # a layers contract: each layer's modules
            named += [f"{container}.{m.strip()}" for layer in contract["layers"] for m in layer.split("|")]
        for mod in named:
            if mod.startswith("halab."):
                path = ROOT / mod.replace(".", "/")
                assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), \
                    (contract["name"], mod)
        for edge in contract.get("ignore_imports", []):  # an ignored edge that is gone hides nothing
            for mod in (m.strip() for m in edge.split("->")):
                assert (ROOT / (mod.replace(".", "/") + ".py")).exists(), (contract["name"], edge)


PROBE = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import halab
    forbidden = {"textual", "tui", "cli"}
    culprits = {}
    names = sorted(m.name for m in pkgutil.walk_packages(halab.__path__, "halab."))
    for name in names:
        importlib.import_module(name)
        hit = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
        if hit and not culprits:
            culprits[name] = hit
    print(json.dumps({"modules": names, "culprits": culprits}))
""")


def test_importing_every_core_module_does_not_load_textual():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "halab.lab.config" in result["modules"] and "halab.lab.doctor" in result["modules"]
    assert result["culprits"] == {}, f"first module pulling in the TUI: {result['culprits']}"


@pytest.mark.parametrize("module", ["halab.lab.config", "halab.lab.doctor", "halab.lab.accel"])
def test_core_modules_import_alone(module):
    code = f"import {module}, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
