"""Every front end's list of faults is the registry's (halab.fault_kinds): a kind added, renamed or
dropped in one place and not the others fails here, as `measure --fault reboot` once did."""

from __future__ import annotations

import argparse
import inspect

import pytest

from cli import fault_cmd
from halab import fault_kinds
from halab.chaos import measure, scenario
from halab.chaos.faults import FaultEvent, Faults
from halab.errors import UsageError
from halab.lab.config import parse_config
from halab.live import session
from tui.screens import dashboard


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    fault_cmd.register(sub)
    return dict(sub.choices)


def _option(p: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in p._actions if a.dest == dest)


def test_every_kind_has_a_faults_method_taking_its_params():
    for k in fault_kinds.KINDS:
        fn = getattr(Faults, k.method)
        target = "host" if k.on_host else "node"
        assert list(inspect.signature(fn).parameters)[1] == target, k.name
        accepted = set(inspect.signature(fn).parameters) - {"self", target}
        assert {p.name for p in k.params} == accepted, k.name


def test_undo_pairs_point_at_each_other():
    for k in fault_kinds.KINDS:
        if k.undo:
            assert fault_kinds.kind(k.undo).undoes == k.name
        if k.undoes:
            assert fault_kinds.kind(k.undoes).undo == k.name
    assert fault_kinds.UNDO == {"kill": "revive", "pause": "resume", "netcut": "netrestore",
                                "netem": "netem-clear", "stop-service": "start-service",
                                "host-cut": "host-restore", "host-kill": "host-revive"}


def test_cli_commands_are_the_registry_commands():
    parsers = _subparsers()
    commands = {k.name for k in fault_kinds.KINDS if k.command}
    assert commands <= set(parsers)
    assert set(parsers) - commands == {"restore", "watch", "measure"}
    for name in commands:
        assert parsers[name].description in (None, fault_kinds.kind(name).label) or name == "netem"


def test_cli_measure_offers_exactly_the_measurable_faults():
    choices = _option(_subparsers()["measure"], "fault").choices
    assert tuple(choices) == fault_kinds.MEASURABLE
    assert "reboot" not in choices and "netem" in choices  # the drift issue 16 named


def test_cli_netem_flags_have_the_registry_ranges():
    netem = _subparsers()["netem"]
    for p in fault_kinds.kind("netem").params:
        action = _option(netem, p.name)
        assert action.option_strings == [p.flag] and action.default == p.default
        assert action.type(str(p.hi)) == p.hi
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(str(p.hi + 1))


def test_cli_measure_params_go_to_the_fault_and_only_to_its_own():
    parsers = _subparsers()
    ns = parsers["measure"].parse_args(["--fault", "netem", "--node", "api-2", "--loss-pct", "5"])
    assert fault_cmd.measure_params(ns) == {"loss_pct": 5.0}
    ns = parsers["measure"].parse_args(["--fault", "netem", "--node", "api-2"])
    assert fault_cmd.measure_params(ns) == {"delay_ms": 200.0}
    ns = parsers["measure"].parse_args(["--fault", "kill", "--node", "api-2", "--delay-ms", "5"])
    with pytest.raises(UsageError, match="--delay-ms"):
        fault_cmd.measure_params(ns)


def test_scenario_validator_uses_the_registry():
    assert scenario.FAULT_ACTIONS == fault_kinds.FAULTS
    assert set(scenario.FAULT_ACTIONS) == {"kill", "pause", "reboot", "netcut", "netem", "stop-service",
                                             "host-cut", "host-kill"}
    for name, params in scenario.FAULT_PARAMS.items():
        assert {p.name: (p.type, p.lo, p.hi) for p in fault_kinds.kind(name).params} == params


def test_measure_refuses_what_the_cli_cannot_offer_and_accepts_the_rest():
    assert {"stop-service"} == measure.REFUSING_FAULTS
    cfg = parse_config("")
    for name in fault_kinds.FAULTS:
        silent = name not in measure.REFUSING_FAULTS
        assert measure.expected_detection(cfg, "api", name)[0] == cfg.haproxy.expected_detection_s(silent)


class _RecordingFaults(Faults):
    def apply(self, action: str, node: str, **params: object) -> FaultEvent:
        return FaultEvent(action, node, 100.0)


@pytest.mark.parametrize("name", fault_kinds.ACTIONS)
def test_engine_starts_a_measurement_for_faults_only(name, tmp_path):
    import libvirt

    from halab.lab.virt import LabVirt
    from halab.live.engine import LabEngine

    cfg = parse_config("name: t\nlibvirt_uri: test:///default\n", host_mem_mib=1 << 20)
    virt = LabVirt(cfg, libvirt.open("test:///default"))
    engine = LabEngine(cfg, virt=virt, faults=_RecordingFaults(cfg, virt, state_dir=tmp_path),
                       clock=lambda: 100.0)
    try:
        s = session.LabSession(engine)
        s.kill("api-2") if name == "kill" else engine.apply(name, "api-2")
        assert (engine.measuring == (name, "api-2", 100.0)) is fault_kinds.kind(name).is_fault
    finally:
        engine.close()


def test_tui_explains_every_fault_its_keys_confirm():
    for name in ("kill", "pause", "reboot", "netcut", "stop-service"):
        assert dashboard.WHY[name] == fault_kinds.kind(name).why
    assert set(dashboard.WHY) - set(fault_kinds.ACTIONS) == {"scenario", "reset"}  # lab-wide actions
