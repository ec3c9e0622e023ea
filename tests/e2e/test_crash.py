"""Crash test (issue 15): SIGKILL the process group of `lab.py up`, `heal` and `down` at random
moments against the sandbox's real libvirtd, then check that a later `down` leaves 0 objects of the
lab and no state directory, and that a later `up --no-wait` converges to terraform "no changes".
Nodes need not finish booting.

    tests/e2e/sandbox .venv/bin/pytest -m crash tests/e2e/test_crash.py -s

HALAB_CRASH_KILLS (default 6) sets the number of kills, HALAB_CRASH_SEED the random seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "lab.py"
LAB = "crash"
# Four small nodes: enough objects of every kind, little CPU (they need not finish booting).
LAB_YAML = f"""name: {LAB}
network: {{cidr: 10.79.0.0/24, mode: nat}}
checkpoint: false
roles:
  haproxy: {{count: 1, memory_mib: 256}}
  api: {{count: 1, memory_mib: 256}}
  db: {{count: 1, memory_mib: 256}}
  mq: {{count: 1, memory_mib: 256}}
"""

pytestmark = pytest.mark.crash

# What halab says when it repairs a crash point (README "When something is killed half-way"): the
# test records which repairs each kill needed, so a run shows the paths it really exercised.
REPAIRS = {
    "state from backup": "restored Terraform's backup",
    "state rebuilt from libvirt": "rebuilding it from libvirt",
    "state lost, down swept": "no usable backup; removing the lab's objects from libvirt directly",
    "imports": "terraform imports them",
    "stale lock released": "released a Terraform state lock",
    "waited for a stopping terraform": "is still stopping; waiting for it",
    "adopted a leftover": "left by an interrupted run); adopted it",
    "swept": "removed what Terraform did not know",
    "destroy failed, swept directly": "terraform destroy failed",
    "node restarted while booting": "while booting; starting it as heal would",
    "role setup re-run": "role setup failed",
}


def repairs_in(text: str) -> list[str]:
    """The kinds of repair a run's output reports."""
    return [kind for kind, needle in REPAIRS.items() if needle in text]


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          timeout=60).stdout


def lab_objects() -> list[str]:
    """Every libvirt object and file of the lab that still exists."""
    out = [f"domain {n}" for n in _virsh("list", "--all", "--name").split() if n.startswith(f"{LAB}-")]
    out += [f"network {n}" for n in _virsh("net-list", "--all", "--name").split() if n.startswith(f"{LAB}-")]
    out += [f"pool {n}" for n in _virsh("pool-list", "--all", "--name").split() if n.startswith(f"{LAB}-")]
    pool_dir = Path(f"/var/lib/libvirt/images/{LAB}")
    if pool_dir.exists():
        out += [f"file {p}" for p in sorted(pool_dir.iterdir())] or [f"directory {pool_dir}"]
    return out


class CpuCap:
    """Caps every running vCPU of the crash lab at a few percent of a core (libvirt vcpu_quota,
    live only): the nodes need not boot, and uncapped they would starve Terraform and halab of
    the CPU this test measures, and the host of the CPU others use."""

    def __init__(self, percent: int = 3):
        self.quota = percent * 1000
        self.stop = threading.Event()
        self.capped: set[str] = set()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            for name in _virsh("list", "--name").split():
                if not name.startswith(f"{LAB}-"):
                    continue
                key = f"{name}:{_virsh('domid', name).strip()}"
                if key not in self.capped:
                    subprocess.run(["virsh", "-c", "qemu:///system", "schedinfo", name, "--live",
                                    "vcpu_period=100000", f"vcpu_quota={self.quota}"],
                                   capture_output=True, timeout=60)
                    self.capped.add(key)

    def __enter__(self) -> CpuCap:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class Runner:
    def __init__(self, base: Path):
        self.state = base / "state"
        self.config = base / "lab.yaml"
        self.config.write_text(LAB_YAML)
        self.env = {**os.environ, "HALAB_STATE": str(self.state), "HALAB_CONFIG": str(self.config)}
        self.log: list[str] = []
        self.repairs: list[str] = []  # repairs seen since the last kill

    def run(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(LAB_PY), *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        took = time.monotonic() - start
        self.log.append(f"$ lab.py {' '.join(args)} rc={proc.returncode} {took:.1f}s")
        sys.stdout.write(f"\n$ lab.py {' '.join(args)}  (rc={proc.returncode}, {took:.1f}s)\n"
                         f"{proc.stdout}{proc.stderr}")
        assert "Traceback" not in proc.stdout + proc.stderr
        self.repairs += [f"{args[0]}: {kind}" for kind in repairs_in(proc.stdout + proc.stderr)]
        proc.took = took  # type: ignore[attr-defined]
        return proc

    def kill_during(self, args: list[str], after_s: float) -> tuple[bool, str]:
        """Start `lab.py ARGS` in its own process group and SIGKILL the group after ``after_s``.
        Returns whether it was still running, and its last line of output."""
        out = open(self.state.parent / "killed.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, str(LAB_PY), *args], env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(after_s)
        alive = proc.poll() is None
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.close()
        lines = [ln for ln in (self.state.parent / "killed.log").read_text().splitlines() if ln.strip()]
        return alive, (lines[-1] if lines else "(no output yet)")

    def converge(self) -> float:
        """`up --no-wait` then `plan`: the lab must match its definition. Returns up's seconds."""
        up = self.run("up", "--no-wait")
        assert up.returncode == 0, up.stdout + up.stderr
        plan = self.run("plan")
        assert plan.returncode == 0 and "no changes" in plan.stdout, plan.stdout + plan.stderr
        return up.took  # type: ignore[attr-defined]

    def down_clean(self) -> float:
        down = self.run("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert lab_objects() == []
        assert not (self.state / LAB).exists()
        return down.took  # type: ignore[attr-defined]


def test_sigkill_at_random_moments_then_down_is_total_and_up_converges(tmp_path: Path) -> None:
    if os.environ.get("HALAB_SANDBOX") != "1":
        pytest.skip("NOT RUN: needs tests/e2e/sandbox (network namespace with a private libvirtd)")
    kills = int(os.environ.get("HALAB_CRASH_KILLS", "6"))
    seed = int(os.environ.get("HALAB_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    r = Runner(tmp_path)
    assert lab_objects() == [], "the sandbox already holds objects of the crash lab"
    with CpuCap():
        _kill_and_recover(r, kills, rng, seed)


def _kill_and_recover(r: Runner, kills: int, rng: random.Random, seed: int) -> None:
    # Typical durations, to spread kills over a whole run; refreshed as the test goes.
    took = {"up": r.converge(), "down": r.down_clean()}
    took["heal"] = took["up"]
    records = []
    commands = ["up", "down", "heal"]
    i = 0
    while len(records) < kills:
        cmd = commands[i % 3]
        i += 1
        lab_is_up = (r.state / LAB / "terraform" / "terraform.tfstate").exists()
        if cmd == "up" and lab_is_up:
            took["down"] = r.down_clean()
        elif cmd in ("down", "heal") and not lab_is_up:
            took["up"] = r.converge()
        if cmd == "heal":  # give heal work: a node shut off outside halab
            _virsh("destroy", f"{LAB}-api-1")
        args = ["up", "--no-wait"] if cmd == "up" else [cmd]
        at = round(rng.uniform(0.3, max(2.0, took[cmd] * 1.1)), 2)
        alive, last = r.kill_during(args, at)
        if not alive:
            print(f"\n{cmd} finished before the kill at {at}s; not counted")
            continue
        # Recovery straight from the crash point: alternately a `down` and an `up`, then the other.
        first = "down" if len(records) % 2 == 0 else "up"
        t0 = time.monotonic()
        r.repairs = []
        if first == "down":
            d = r.down_clean()
            u = r.converge()
        else:
            u = r.converge()
            d = r.down_clean()
        records.append({"kill": len(records) + 1, "command": cmd, "at_s": at, "last_line": last[:160],
                        "recovered_by": first, "down_s": round(d, 1), "up_s": round(u, 1),
                        "recovery_s": round(time.monotonic() - t0, 1), "repairs": r.repairs})
        print(f"\nKILL {json.dumps(records[-1])}")
    summary = {"seed": seed, "kills": len(records),
               "down_clean": len(records), "up_converged": len(records),
               "by_command": {c: sum(1 for x in records if x["command"] == c) for c in commands},
               "repairs": {k: sum(1 for x in records for rep in x["repairs"] if rep.endswith(": " + k))
                           for k in REPAIRS}}
    print("\nCRASH SUMMARY " + json.dumps(summary))
    out = os.environ.get("HALAB_REPORTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "crash.json").write_text(json.dumps({"summary": summary, "kills": records}, indent=2))
