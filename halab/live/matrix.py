"""One matrix runner over HAProxy presets, shared by `scenario compare` (one scenario per preset) and
`bench` (each fault per preset): on one running lab, each preset installed in turn (the engine
switches it), every cell run under it, and the lab's own preset installed again at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from halab.chaos.scenario import with_preset
from halab.errors import HalabError
from halab.lab.config import LabConfig

R = TypeVar("R")
Say = Callable[[str], None]


@dataclass
class Matrix(Generic[R]):
    """preset -> cell -> what the cell's run returned; what failed, as problems, in order."""

    results: dict[str, dict[str, R]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_matrix(cfg: LabConfig, presets: Sequence[str], cells: Sequence[str],
               run: Callable[[LabConfig, str], R], install: Callable[[LabConfig], object], *,
               before: Callable[[str], object] | None = None, say: Say = lambda _m: None,
               keep_going: bool = True) -> Matrix[R]:
    """Every cell under every preset: ``before(preset)`` (e.g. a reset to a checkpoint), the preset
    installed (``install`` gets the lab's config with that preset's checks), then ``run(cfg, cell)``
    for each cell. ``keep_going``: a failure is recorded as a problem and the next one still runs
    (a preset that cannot be installed runs nothing); otherwise the first failure is raised. The
    lab's own preset is installed again at the end, whatever happened."""
    out: Matrix[R] = Matrix()

    def failed(what: str, exc: HalabError) -> None:
        out.problems.append(f"{what}: {exc}")
        if not keep_going:
            raise exc

    try:
        for preset in presets:
            pcfg = with_preset(cfg, preset)
            try:
                if before is not None:
                    before(preset)
                say(f"preset {preset}: installing haproxy.cfg")
                install(pcfg)
            except HalabError as exc:
                failed(preset, exc)
                continue
            for cell in cells:
                try:
                    out.results.setdefault(preset, {})[cell] = run(pcfg, cell)
                except HalabError as exc:
                    failed(f"{preset} {cell}", exc)
    finally:
        try:
            install(cfg)
        except HalabError as exc:
            out.problems.append(f"putting back the lab's own preset {cfg.haproxy.preset}: {exc}")
    return out
