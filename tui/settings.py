"""TUI settings: a typed model read from YAML (``$HALAB_TUI_SETTINGS`` or
``~/.config/halab/tui.yaml``), overridable from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from datetime import tzinfo
from pathlib import Path
from typing import Any

import yaml

from halab.errors import ConfigError

SETTINGS_ENV = "HALAB_TUI_SETTINGS"


@dataclass(frozen=True)
class TuiSettings:
    confirm_destructive: bool = True  # false for demos: destructive keys act at once
    refresh_hz: float = 5.0  # snapshot polls per second (changes also wake it, at most 20 Hz)
    graph_seconds: int = 60  # how much history the graphs show
    netem_delay_ms: float = 200.0  # the latency prompt's default
    rate_step: float = 10.0  # +/- change the traffic rate by this many operations/s
    theme: str | None = None  # a Textual theme name; None keeps Textual's default
    tz: tzinfo | None = None  # None: local time (tests pin UTC)
    live: bool = True  # poll the session; False only in tests that feed snapshots by hand
    projector: bool = False  # start in the projector layout (fewer, larger panels; `v` toggles)
    publish: bool = False  # share the live snapshots with browser viewers (halab.live.feed)

    def with_overrides(self, **changes: Any) -> TuiSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_YAML_KEYS = {"confirm_destructive": bool, "refresh_hz": (int, float), "graph_seconds": int,
              "netem_delay_ms": (int, float), "rate_step": (int, float), "theme": str,
              "projector": bool}


def default_settings_path() -> Path:
    env = os.environ.get(SETTINGS_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "halab" / "tui.yaml"


def load_settings(path: str | Path | None = None) -> TuiSettings:
    """Settings from YAML; a missing default file means defaults. Errors name file and key."""
    p = Path(path) if path is not None else default_settings_path()
    if not p.is_file():
        if path is not None or os.environ.get(SETTINGS_ENV):
            raise ConfigError([f"{p}: no such file"])
        return TuiSettings()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{p}: cannot read TUI settings: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: must be a mapping of settings"])
    errors: list[str] = []
    values: dict[str, Any] = {}
    known = {f.name for f in fields(TuiSettings)}
    for key, value in data.items():
        if key not in _YAML_KEYS:
            errors.append(f"{p}: {key}: unknown setting (known: {', '.join(sorted(_YAML_KEYS))})"
                          if key not in known else f"{p}: {key}: cannot be set from a file")
            continue
        kind = _YAML_KEYS[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            errors.append(f"{p}: {key}: wrong type (got {value!r})")
            continue
        values[key] = value
    if errors:
        raise ConfigError(errors)
    return TuiSettings(**values)
