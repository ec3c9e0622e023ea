"""Run `lab.py` the way a new user gets it wrong, in one process, and report how each run ended.

    python tests/support/cli_misuse.py WORKDIR     # prints one JSON object per misuse

WORKDIR receives the lab files, FIFOs and a fake "up" lab; HALAB_STATE and HALAB_CACHE point inside
it, and every lab that gets as far as libvirt uses test:///default or a socket that does not exist,
so nothing real is touched. tests/unit/test_cli_misuse.py asserts: no traceback, a non-zero exit
(except the few marked ok), a message on stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GOOD = "name: misuse\nlibvirt_uri: 'test:///default'\naccel: tcg\n"
# A lab that is "up" (it has a Terraform state) on a libvirt that cannot be reached.
UNREACHABLE = ("name: gone\nlibvirt_uri: 'qemu+unix:///system?socket=/nonexistent/halab-libvirt-sock'\n"
               "accel: tcg\n")
FILES = {
    "good.yaml": GOOD,
    "gone.yaml": UNREACHABLE,
    "ext.yaml": "libvirt_uri: 'qemu+ext:///system?command=/tmp/prog'\n",
    "command.yaml": "libvirt_uri: 'qemu+ssh://root@host/system?command=/tmp/prog'\n",
    "netcat.yaml": "libvirt_uri: 'qemu+ssh://host/system?no_verify=1;netcat=/tmp/nc'\n",
    "tags.yaml": "name: misuse\naccel: !!bool maybe\n",
    "timestamp.yaml": "name: !!timestamp x\n",
    "custom-tag.yaml": "name: !mine x\n",
    "hugeint.yaml": "roles:\n  api:\n    count: " + "9" * 5000 + "\n",
    "hexint.yaml": "roles:\n  api:\n    count: 0x" + "f" * 5000 + "\n",
    "nosuchuser.yaml": "image: ~nosuchuser-halab/disk.qcow2\n",
    "longpath.yaml": "image: /" + "a" * 300 + "/disk.qcow2\n",
    "newline-name.yaml": 'name: "misuse\\n"\n',
    "ctrl.yaml": "name: misuse\nprofile: default\naccel: tc\x01g\n",
    "escape.yaml": 'name: "\\e[31mred"\n',
    "nan.yaml": "traffic:\n  rate: .nan\n",
    "inf.yaml": "traffic:\n  rate: .inf\n",
    "longvalue.yaml": "profile: " + "x" * 1_000_000 + "\n",
    "scn-tags.yaml": "name: t\nsteps:\n  - wait: !!timestamp 2001-01-01\n",
    "scn-nan.yaml": "name: t\nsteps:\n  - traffic: {rate: .nan}\n  - wait: .inf\n",
    "scn-huge.yaml": "name: t\nsteps:\n  - wait: " + "1" * 5000 + "\n",
    "scn-node.yaml": "name: t\nsteps:\n  - fault: {action: kill, node: \"api-2\\n\"}\n",
}
DAMAGED_FAULTS = {  # lab name -> faults.json content
    "fa-list": "[]",
    "fa-dict": "{}",
    "fa-nonode": '{"active": [{"kind": "kill", "started": 1}]}',
    "fa-nokind": '[{"node": "api-1"}]',
    "fa-types": '{"active": [{"kind": 3, "node": ["api-1"], "started": "x", "params": 5}]}',
    "fa-active": '{"active": 7}',
    "fa-json": "{not json",
}


@dataclass
class Misuse:
    argv: list[str]
    ok: bool = False  # exit 0 is right (a tolerant read, an explicit -c FILE)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""  # relative to WORKDIR; "" is WORKDIR itself
    expect: str = ""  # a piece of stderr that must appear


def misuses(w: Path) -> list[Misuse]:
    g = ["-c", str(w / "good.yaml")]
    gone = ["-c", str(w / "gone.yaml")]
    out: list[Misuse] = [
        Misuse(["nosuchcommand"]),
        Misuse(["-c"]),
        Misuse(["config"]),
        Misuse(["config", "show", "extra"]),
        Misuse(["config", "frob"]),
        Misuse(["status", "extra"]),
        Misuse(["status", "--bogus"]),
        Misuse(["up", "extra"]),
        Misuse(["down", "extra"]),
        Misuse(["plan", "--json"]),
        Misuse(["heal", "api-1"]),
        Misuse(["image"]),
        Misuse(["image", "frob"]),
        Misuse(["image", "build", "--bogus"]),
        Misuse(["doctor", "--bogus"]),
        Misuse(["tui", "--theme"]),
        Misuse(["restore", "extra"]),
        Misuse(["kill"]),
        Misuse(["kill", "api-1", "extra"]),
        Misuse([*g, "kill", "api-9"], expect="no node 'api-9'"),
        Misuse([*g, "kill", "bogus"], expect="no node"),
        Misuse([*g, "revive", "API-1"], expect="no node"),
        Misuse([*g, "pause", "db-7"], expect="no node"),
        Misuse([*g, "resume", ""], expect="no node"),
        Misuse([*g, "reboot", "mq-0"], expect="no node"),
        Misuse([*g, "netcut", "haproxy-3"], expect="no node"),
        Misuse([*g, "netrestore", "api-1\n"], expect="no node"),
        Misuse([*g, "kill", "api-1"], expect="not up"),
        Misuse([*g, "stop-service", "api-1", "--service"]),
        Misuse([*g, "stop-service", "api-1", "--service", "x; rm -rf /"], expect="error:"),
        Misuse(["start-service"]),
        Misuse(["netem"]),
        Misuse([*g, "netem", "api-1", "--delay-ms", "nan"], expect="--delay-ms"),
        Misuse([*g, "netem", "api-1", "--delay-ms", "-5"], expect="--delay-ms"),
        Misuse([*g, "netem", "api-1", "--delay-ms", "inf"], expect="--delay-ms"),
        Misuse([*g, "netem", "api-1", "--loss-pct", "101"], expect="--loss-pct"),
        Misuse([*g, "netem", "api-1", "--loss-pct", "nan"], expect="--loss-pct"),
        Misuse([*g, "netem", "api-1", "--jitter-ms", "abc"], expect="--jitter-ms"),
        Misuse([*g, "netem", "api-1", "--delay-ms", "0"], expect="not up"),
        Misuse([*g, "watch", "--rate", "-1"], expect="--rate"),
        Misuse([*g, "watch", "--rate", "nan"], expect="--rate"),
        Misuse([*g, "watch", "--rate", "inf"], expect="--rate"),
        Misuse([*g, "watch", "--rate", "lots"], expect="--rate"),
        Misuse([*g, "watch", "--seconds", "-3"], expect="--seconds"),
        Misuse([*g, "watch", "--seconds", "nan"], expect="--seconds"),
        Misuse([*g, "watch", "--seconds", "1"], expect="not up"),
        Misuse([*gone, "watch", "--seconds", "2"], expect="cannot connect to libvirt"),
        Misuse([*gone, "kill", "api-1"], expect="cannot connect to libvirt"),
        Misuse([*gone, "restore"], ok=True),  # nothing recorded: nothing to undo, libvirt not needed
        Misuse(["measure"]),
        Misuse(["measure", "--fault", "explode", "--node", "api-1"]),
        Misuse(["measure", "--fault", "kill"]),
        Misuse([*g, "measure", "--fault", "kill", "--node", "api-99"], expect="no node"),
        Misuse([*g, "measure", "--fault", "kill", "--node", "api-1", "--rate", "0"], expect="--rate"),
        Misuse([*g, "measure", "--fault", "kill", "--node", "api-1", "--settle", "nan"], expect="--settle"),
        Misuse([*g, "measure", "--fault", "kill", "--node", "api-1", "--json", "/nonexistent/d/x.json"],
               expect="does not exist"),
        Misuse([*g, "measure", "--fault", "kill", "--node", "api-1", "--timeline", str(w)],
               expect="is a directory"),
        Misuse(["scenario"]),
        Misuse(["scenario", "run"]),
        Misuse(["scenario", "list", "extra"]),
        Misuse(["scenario", "frob"]),
        Misuse([*g, "scenario", "run", "no-such-scenario"], expect="no such file"),
        Misuse(["scenario", "check", "no-such-scenario"], expect="no such file"),
        Misuse(["scenario", "check", str(w / "fifo")], expect="FIFO"),
        Misuse(["scenario", "check", "/dev/zero"], expect="not a regular file"),
        Misuse(["scenario", "check", str(w / "dir")], expect="directory"),
        Misuse(["scenario", "check", str(w / "big.yaml")], expect="too large"),
        Misuse(["scenario", "check", str(w / "latin1.yaml")], expect="UTF-8"),
        Misuse(["scenario", "check", "x" * 5000], expect="file name too long"),
        Misuse(["scenario", "check", "x" * 300], expect="File name too long"),
        Misuse(["scenario", "check", str(w / "scn-tags.yaml")], expect="scn-tags.yaml:3:"),
        Misuse(["scenario", "check", str(w / "scn-nan.yaml")], expect="scn-nan.yaml:3:"),
        Misuse(["scenario", "check", str(w / "scn-huge.yaml")], expect="scn-huge.yaml:3:"),
        Misuse(["scenario", "check", str(w / "scn-node.yaml")], expect="scn-node.yaml:3:"),
        Misuse([*g, "scenario", "run", "api-node-loss", "--rate", "nan"], expect="--rate"),
        Misuse([*g, "scenario", "run", "api-node-loss", "--rate", "-1"], expect="--rate"),
        Misuse([*g, "scenario", "compare", "api-node-loss", "--rate", "inf"], expect="--rate"),
        Misuse([*g, "scenario", "run", "api-node-loss", "--report", "/nonexistent/d/r"], expect="error:"),
        Misuse(["bench", "--json", str(w)], expect="is a directory"),
        Misuse(["bench", "--keep", "--bogus"]),
        Misuse(["config", "check", str(w / "fifo")], expect="FIFO"),
        Misuse(["config", "check", "/dev/zero"], expect="not a regular file"),
        Misuse(["config", "check", str(w / "dir")], expect="directory"),
        Misuse(["config", "check", str(w / "big.yaml")], expect="too large"),
        Misuse(["config", "check", str(w / "latin1.yaml")], expect="UTF-8"),
        Misuse(["config", "check", "y" * 5000], expect="file name too long"),
        Misuse(["-c", str(w / "fifo"), "status"], expect="FIFO"),
        Misuse(["-c", "/dev/zero", "status"], expect="not a regular file"),
        Misuse(["-c", str(w / "dir"), "up"], expect="directory"),
    ]
    for name in FILES:
        if name.startswith("scn-") or name in ("good.yaml", "gone.yaml"):
            continue
        out.append(Misuse(["config", "check", str(w / name)], expect=f"{w / name}:1:" if name in (
            "ext.yaml", "command.yaml", "netcat.yaml", "timestamp.yaml", "custom-tag.yaml", "nosuchuser.yaml",
            "longpath.yaml", "newline-name.yaml", "escape.yaml", "longvalue.yaml") else f"{w / name}:"))
    for name in ("ext.yaml", "command.yaml", "netcat.yaml"):  # every command, not only config check
        out.append(Misuse(["-c", str(w / name), "kill", "api-1"], expect="libvirt_uri"))
        out.append(Misuse(["-c", str(w / name), "status"], expect="libvirt_uri"))
    out.append(Misuse(["-c", str(w / "ext.yaml"), "down"], expect="libvirt_uri"))
    out.append(Misuse(["-c", str(w / "ext.yaml"), "doctor"], expect="libvirt_uri"))
    # A lab file found by default must be the user's and not writable by others; -c is a choice.
    out.append(Misuse(["status"], cwd="shared", expect="writable by group and others"))
    out.append(Misuse(["config", "show"], cwd="shared", expect="writable by group and others"))
    out.append(Misuse(["config", "check"], env={"HALAB_CONFIG": str(w / "shared" / "lab.yaml")},
                      expect="writable by group and others"))
    out.append(Misuse(["-c", str(w / "shared" / "lab.yaml"), "config", "check"], ok=True))
    for lab in DAMAGED_FAULTS:
        ok = lab in ("fa-list", "fa-dict")
        out.append(Misuse(["-c", str(w / f"{lab}.yaml"), "restore"], ok=ok,
                          expect="no active faults" if ok else "fault record"))
    return out


def prepare(w: Path) -> None:
    w.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (w / name).write_text(text, encoding="utf-8")
    (w / "big.yaml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    (w / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (w / "dir").mkdir(exist_ok=True)
    if not (w / "fifo").exists():
        os.mkfifo(w / "fifo")
    shared = w / "shared"
    shared.mkdir(exist_ok=True)
    (shared / "lab.yaml").write_text(GOOD)
    (shared / "lab.yaml").chmod(0o666)
    state = Path(os.environ["HALAB_STATE"])
    for lab, faults in {"gone": None, **DAMAGED_FAULTS}.items():
        if lab != "gone":
            (w / f"{lab}.yaml").write_text(f"name: {lab}\nlibvirt_uri: 'test:///default'\naccel: tcg\n")
        tf = state / lab / "terraform"
        tf.mkdir(parents=True, exist_ok=True, mode=0o700)
        (tf / "terraform.tfstate").write_text('{"version": 4, "resources": []}')
        if faults is not None:
            (state / lab / "faults.json").write_text(faults)


class _Hang(Exception):
    pass


def _alarm(_sig: int, _frame: object) -> None:
    raise _Hang()


def run_one(m: Misuse, w: Path, timeout: int = 30) -> dict:
    from cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.pop("HALAB_CONFIG", None)
    os.environ.update(m.env)
    os.chdir(w / m.cwd)
    err, out = io.StringIO(), io.StringIO()
    rc: int | None = None
    crash = ""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(list(m.argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except _Hang:
        crash = f"still running after {timeout} s"
    except BaseException:  # what is being counted
        crash = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return {"argv": m.argv, "rc": rc, "ok": m.ok, "expect": m.expect, "stderr": err.getvalue()[-2000:],
            "stdout": out.getvalue()[-500:], "crash": crash}


def main(argv: list[str]) -> int:
    w = Path(argv[0]).resolve()
    os.environ.setdefault("HALAB_STATE", str(w / "state"))
    os.environ.setdefault("HALAB_CACHE", str(w / "cache"))
    prepare(w)
    for m in misuses(w):
        print(json.dumps(run_one(m, w)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
