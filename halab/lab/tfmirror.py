"""The offline home of halab's Terraform provider: a filesystem mirror and a CLI config.

Terraform installs ``halab.local/halab/libvirt`` from ``cache_dir()/terraform/mirror`` (the unpacked
layout: ``<host>/<ns>/<type>/<version>/<os_arch>/terraform-provider-<type>``), never from the network.
The executable there is a small launcher that runs this checkout's provider package with this
checkout's Python (``.venv``). Each launcher text gets a mirror of its own (named by its hash): two
checkouts on one host (or a second venv) would otherwise rewrite one shared launcher under a running
lab, and Terraform refuses the changed package halfway through ``up`` ("does not match any of the
checksums recorded in the dependency lock file"). Writing is idempotent and atomic per file.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from halab.atomic import write_atomic
from halab.paths import cache_dir, project_root

PROVIDER_HOST = "halab.local"
PROVIDER_NAMESPACE = "halab"
PROVIDER_TYPE = "libvirt"
PROVIDER_VERSION = "0.1.0"
PROVIDER_SOURCE = f"{PROVIDER_HOST}/{PROVIDER_NAMESPACE}/{PROVIDER_TYPE}"
PLATFORM = "linux_amd64"


def provider_dir() -> Path:
    """Directory holding the provider package (``halab_provider``); put it on sys.path to import it."""
    return project_root() / "terraform" / "provider"


def module_dir() -> Path:
    """The Terraform root module."""
    return project_root() / "terraform"


@dataclass(frozen=True)
class MirrorInfo:
    root: Path  # cache_dir()/terraform
    mirror_dir: Path  # the filesystem mirror (unpacked layout)
    executable: Path  # .../terraform-provider-libvirt
    cli_config: Path  # TF_CLI_CONFIG_FILE
    env: dict[str, str] = field(default_factory=dict)  # set these for every terraform run


def _python() -> str:
    venv = project_root() / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def launcher_text(python: str | None = None) -> str:
    py = python or _python()
    return (
        "#!/bin/sh\n"
        "# halab's Terraform provider (written by halab/lab/tfmirror.py; regenerated on every run).\n"
        f"PYTHONPATH={shlex.quote(str(provider_dir()))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(py)} -m halab_provider "$@"\n'
    )


def cli_config_text(mirror_dir: Path) -> str:
    pattern = f"{PROVIDER_HOST}/*/*"
    return (
        "# Written by halab: install halab's provider from the local mirror, never from the network.\n"
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror_dir}"\n'
        f'    include = ["{pattern}"]\n'
        "  }\n"
        "  direct {\n"
        f'    exclude = ["{pattern}"]\n'
        "  }\n"
        "}\n"
    )


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
        return
    write_atomic(path, text, mode)


def ensure_mirror(root: Path | None = None) -> MirrorInfo:
    """Write (or refresh) the mirror and CLI config; return paths and the environment to use."""
    root = root or cache_dir() / "terraform"
    launcher = launcher_text()
    key = hashlib.sha256(launcher.encode()).hexdigest()[:16]
    mirror = root / "mirrors" / key
    exe = (
        mirror
        / PROVIDER_HOST
        / PROVIDER_NAMESPACE
        / PROVIDER_TYPE
        / PROVIDER_VERSION
        / PLATFORM
        / f"terraform-provider-{PROVIDER_TYPE}"
    )
    _write_if_changed(exe, launcher, 0o755)
    config = root / f"terraformrc-{key}"
    _write_if_changed(config, cli_config_text(mirror), 0o644)
    env = {
        "TF_CLI_CONFIG_FILE": str(config),
        # A plugin cache would copy the launcher elsewhere; the mirror is already local.
        "TF_PLUGIN_CACHE_DIR": "",
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    return MirrorInfo(root=root, mirror_dir=mirror, executable=exe, cli_config=config, env=env)
