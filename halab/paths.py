"""Where halab keeps its cache (images, host facts) and per-lab state."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache: base images, host probe results. Overridable for tests and CI."""
    base = os.environ.get("HALAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "halab"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_root() -> Path:
    """Root of per-lab state directories (Terraform state, keys, secrets)."""
    base = os.environ.get("HALAB_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "halab"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def lab_state_dir(lab_name: str, create: bool = True) -> Path:
    """The lab's private state directory (0700)."""
    path = state_root() / lab_name
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    return path


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
