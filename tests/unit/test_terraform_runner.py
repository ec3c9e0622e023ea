"""halab/lab/terraform.py and halab/lab/tfmirror.py without libvirt: the -json stream parser on output
captured from real Terraform runs (tests/fixtures/terraform), argv building, the executor's cancel."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from python_terraform import IsFlagged, Terraform

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from halab.lab.config import parse_config
from halab.lab.terraform import (
    ChangeSummary,
    Diagnostic,
    Drift,
    Executor,
    NodeSeed,
    PlannedChange,
    ResourceComplete,
    ResourceStart,
    TerraformError,
    _argv,
    lab_tfvars,
    parse_line,
    parse_stream,
    plan_from_events,
    prepare_workdir,
)
from halab.lab.tfmirror import ensure_mirror, module_dir

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "terraform"


def events(name: str):
    return parse_stream((FIXTURES / name).read_text().splitlines())


def test_apply_stream_has_start_and_complete_per_resource() -> None:
    evs = events("apply_create.jsonl")
    started = {e.address for e in evs if isinstance(e, ResourceStart)}
    done = {e.address: e for e in evs if isinstance(e, ResourceComplete)}
    assert started == set(done) and len(done) == 11
    dom = done['module.node["api-1"].libvirt_domain.node']
    assert dom.action == "create" and dom.id_value
    summary = [e for e in evs if isinstance(e, ChangeSummary)][-1]
    assert (summary.add, summary.change, summary.remove) == (11, 0, 0)


def test_plan_without_changes() -> None:
    plan = plan_from_events(events("plan_nochange.jsonl"))
    assert plan.changes == [] and plan.drift == [] and not plan.has_changes
    assert plan.summary is not None and plan.summary.operation == "plan"


def test_plan_reports_drift_and_the_healing_changes() -> None:
    plan = plan_from_events(events("plan_drift.jsonl"))
    drift = {c.address: c.action for c in plan.drift}
    assert drift == {
        'module.node["api-1"].libvirt_domain.node': "update",  # destroyed outside: running=false
        'module.node["haproxy-1"].libvirt_domain.node': "delete",  # undefined outside
    }
    changes = {c.address: c.action for c in plan.changes}
    assert changes == {
        'module.node["api-1"].libvirt_domain.node': "update",
        'module.node["haproxy-1"].libvirt_domain.node': "create",
    }
    assert plan.has_changes


def test_destroy_stream_removes_everything() -> None:
    summary = [e for e in events("destroy.jsonl") if isinstance(e, ChangeSummary)][-1]
    assert (summary.add, summary.change, summary.remove) == (0, 0, 11)


def test_error_stream_names_the_resource_and_the_cause() -> None:
    evs = events("apply_error.jsonl")
    diags = [e for e in evs if isinstance(e, Diagnostic) and e.severity == "error"]
    assert diags and diags[0].address == "libvirt_volume.kernel"
    assert "does not exist" in diags[0].summary
    err = TerraformError("apply", 1, diags)
    assert "libvirt_volume.kernel: source file" in str(err)


def test_init_stream_parses() -> None:
    evs = events("init.jsonl")
    assert evs and evs[0].type == "version"


def test_parse_line_odd_input() -> None:
    assert parse_line("") is None
    assert parse_line("Error: plain text").type == "text"
    ev = parse_line(
        json.dumps(
            {
                "type": "resource_drift",
                "@message": "m",
                "change": {"resource": {"addr": "libvirt_domain.x"}, "action": "update"},
            }
        )
    )
    assert isinstance(ev, Drift) and ev.address == "libvirt_domain.x"
    ev = parse_line(
        json.dumps(
            {
                "type": "planned_change",
                "change": {"resource": {"addr": "a.b"}, "action": "replace", "reason": "cannot_update"},
            }
        )
    )
    assert isinstance(ev, PlannedChange) and ev.reason == "cannot_update"


def test_force_flag_is_dropped_in_one_place(tmp_path: Path) -> None:
    tf = Terraform(working_dir=str(tmp_path))
    argv = _argv(
        tf, "destroy", force=IsFlagged, no_color=IsFlagged
    )  # what python-terraform's destroy() sends
    assert "-force" not in argv and argv[:2] == ["terraform", "destroy"]
    argv = _argv(tf, "apply", json=IsFlagged, destroy=IsFlagged, auto_approve=IsFlagged, input=False)
    assert argv == ["terraform", "apply", "-json", "-destroy", "-auto-approve", "-input=false"]


SLOW = """
import signal, sys, time  # noqa: E402
def stop(*_):
    print("got SIGINT, saving state", flush=True)
    sys.exit(1)
signal.signal(signal.SIGINT, stop)
print("started", flush=True)
time.sleep(30)
"""


def test_executor_streams_and_cancel_sends_one_sigint() -> None:
    cancel = threading.Event()
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "started":
            cancel.set()

    t0 = time.monotonic()
    res = Executor().run([sys.executable, "-c", SLOW], on_line=on_line, cancel=cancel)
    assert res.interrupted and res.returncode == 1
    assert seen == ["started", "got SIGINT, saving state"]
    assert time.monotonic() - t0 < 10


def test_executor_env() -> None:
    res = Executor().run(
        [sys.executable, "-c", "import os; print(os.environ['HALAB_T'])"], env={"HALAB_T": "x"}
    )
    assert res.stdout == ["x"] and res.returncode == 0 and not res.interrupted


def test_mirror_layout_and_cli_config(tmp_path: Path) -> None:
    info = ensure_mirror(tmp_path / "terraform")
    exe = info.mirror_dir / "halab.local/halab/libvirt/0.1.0/linux_amd64/terraform-provider-libvirt"
    assert info.executable == exe and exe.stat().st_mode & 0o111
    assert "-m halab_provider" in exe.read_text()
    conf = info.cli_config.read_text()
    assert f'path    = "{info.mirror_dir}"' in conf
    assert 'include = ["halab.local/*/*"]' in conf and 'exclude = ["halab.local/*/*"]' in conf
    assert info.env["TF_CLI_CONFIG_FILE"] == str(info.cli_config)
    assert ensure_mirror(tmp_path / "terraform") == info  # idempotent


def test_prepare_workdir_copies_the_module(tmp_path: Path) -> None:
    wd = prepare_workdir(tmp_path / "wd", {"lab": "x"})
    assert sorted(p.name for p in wd.glob("*.tf")) == sorted(p.name for p in module_dir().glob("*.tf"))
    assert (wd / "modules/node/main.tf").exists()
    assert json.loads((wd / "halab.auto.tfvars.json").read_text()) == {"lab": "x"}
    assert (wd / "halab.auto.tfvars.json").stat().st_mode & 0o777 == 0o600


def test_lab_tfvars_from_config() -> None:
    cfg = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)
    seeds = {
        n.name: NodeSeed(n.name, n.name, "#cloud-config\n", f"instance-id: {n.name}\n", "version: 2\n")
        for n in cfg.nodes()
    }
    tv = lab_tfvars(
        cfg, base_image="/b.qcow2", kernel="/k", initrd="/i", accel="qemu", seeds=seeds, stopped=["api-2"]
    )
    assert tv["lab"] == "lab1" and tv["network"]["name"] == "lab1-net"
    assert tv["network"]["gateway"] == cfg.gateway and tv["network"]["bridge"] == cfg.bridge_name
    assert tv["pool_path"] == "/var/lib/libvirt/images/lab1"
    assert list(tv["nodes"]) == [n.name for n in cfg.nodes()]
    assert tv["nodes"]["api-2"]["running"] is False and tv["nodes"]["api-1"]["running"] is True
    with pytest.raises(ValueError, match="resolve"):
        lab_tfvars(cfg, base_image="/b", kernel="/k", initrd="/i", accel="tcg", seeds=seeds)


def test_two_checkouts_never_share_a_launcher(tmp_path: Path, monkeypatch) -> None:
    """A second checkout (another project root) gets its own mirror: the launcher a running lab's
    Terraform locked is never rewritten under it."""
    from halab.lab import tfmirror

    first = ensure_mirror(tmp_path / "terraform")
    text = first.executable.read_text()
    monkeypatch.setattr(tfmirror, "provider_dir", lambda: tmp_path / "other-checkout" / "provider")
    second = ensure_mirror(tmp_path / "terraform")
    assert second.mirror_dir != first.mirror_dir and second.cli_config != first.cli_config
    assert first.executable.read_text() == text
    assert "other-checkout" in second.executable.read_text()
