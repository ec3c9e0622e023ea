"""Running Terraform for a lab: an executor, a client that speaks plans and resources, and the
parser of Terraform's machine-readable (``-json``) output.

- :class:`Executor` knows only argv, environment, streaming lines and cancel. Terraform runs in its
  own session, so a Ctrl-C in the terminal reaches halab only; halab then sends Terraform exactly one
  SIGINT, and Terraform stops gracefully and writes its state.
- :class:`TerraformClient` builds command lines with python-terraform (``generate_cmd_string``),
  runs them through the executor with ``-json`` and turns the stream into typed events
  (:func:`parse_line`). ``plan()`` returns a :class:`Plan` with changes and drift.
- python-terraform's ``destroy()`` adds ``-force``, which Terraform 1.x rejects. halab never calls it:
  destroying is ``apply -destroy``, and :func:`_argv` drops a stray ``-force`` — the one place this is
  handled.

Nothing here prints; progress goes to the ``on_event`` callback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, Terraform

from halab.atomic import write_atomic
from halab.errors import HalabError
from halab.lab.cloudinit import NodeSeed
from halab.lab.tfmirror import MirrorInfo, ensure_mirror, module_dir

VARS_FILE = "halab.auto.tfvars.json"


# ---- errors ------------------------------------------------------------------------------------


class TerraformError(HalabError):
    """Terraform failed. The message carries Terraform's own error diagnostics."""

    def __init__(self, command: str, returncode: int, diagnostics: list[Diagnostic], stderr: str = ""):
        self.command = command
        self.returncode = returncode
        self.diagnostics = diagnostics
        self.stderr = stderr
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            lines = [d.text() for d in errors]
        else:
            tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-8:]
            lines = tail or [f"exit status {returncode}"]
        super().__init__(f"terraform {command} failed:\n" + "\n".join(f"  {ln}" for ln in lines))


class TerraformNotFound(HalabError):
    def __init__(self, binary: str):
        super().__init__(
            f"{binary}: Terraform is not installed or not on PATH; install Terraform >= 1.6 "
            "(https://developer.hashicorp.com/terraform/install). `./lab.py doctor` checks this."
        )


class TerraformInterrupted(HalabError):
    """Terraform was interrupted (Ctrl-C or cancel) and stopped gracefully; its state is kept."""

    exit_code = 130

    def __init__(self, command: str):
        self.command = command
        super().__init__(
            f"terraform {command} was interrupted; Terraform stopped gracefully and kept its state. "
            "Run the command again to converge."
        )


# ---- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base of everything parsed from Terraform's ``-json`` stream."""

    type: str
    message: str
    level: str = "info"
    timestamp: str = ""


@dataclass(frozen=True)
class LogEvent(Event):
    """``version``, ``log`` and other messages with nothing but text."""


@dataclass(frozen=True)
class ResourceStart(Event):
    address: str = ""
    action: str = ""
    id_value: str | None = None


@dataclass(frozen=True)
class ResourceProgress(Event):
    address: str = ""
    action: str = ""
    elapsed: float = 0.0


@dataclass(frozen=True)
class ResourceComplete(Event):
    address: str = ""
    action: str = ""
    id_value: str | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class ResourceError(Event):
    address: str = ""
    action: str = ""
    elapsed: float = 0.0


@dataclass(frozen=True)
class RefreshStart(Event):
    address: str = ""
    id_value: str | None = None


@dataclass(frozen=True)
class RefreshComplete(Event):
    address: str = ""
    id_value: str | None = None


@dataclass(frozen=True)
class PlannedChange(Event):
    address: str = ""
    action: str = ""  # create, update, delete, replace, read, noop, move, remove, import
    reason: str | None = None  # e.g. "cannot_update", "delete_because_no_resource_config"


@dataclass(frozen=True)
class Drift(Event):
    """A resource changed outside Terraform (``resource_drift``): ``update`` or ``delete``."""

    address: str = ""
    action: str = ""


@dataclass(frozen=True)
class ChangeSummary(Event):
    add: int = 0
    change: int = 0
    remove: int = 0
    operation: str = ""  # plan, apply, destroy


@dataclass(frozen=True)
class Diagnostic(Event):
    severity: str = "error"
    summary: str = ""
    detail: str = ""
    address: str | None = None

    def text(self) -> str:
        where = f"{self.address}: " if self.address else ""
        detail = f" — {self.detail.strip()}" if self.detail and self.detail.strip() else ""
        return f"{where}{self.summary}{detail}"


@dataclass(frozen=True)
class Outputs(Event):
    values: dict[str, Any] = field(default_factory=dict)


def _addr(obj: Mapping[str, Any]) -> str:
    res = obj.get("resource") or {}
    return str(res.get("addr") or obj.get("addr") or "")


def parse_line(line: str) -> Event | None:
    """One line of ``terraform <cmd> -json`` output as a typed event; None for blank lines.

    Lines that are not JSON (Terraform prints some errors as plain text) become ``LogEvent`` with
    type ``text``.
    """
    line = line.strip()
    if not line:
        return None
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        return LogEvent(type="text", message=line)
    if not isinstance(msg, dict):
        return LogEvent(type="text", message=line)
    kind = str(msg.get("type", "log"))
    base = {
        "type": kind,
        "message": str(msg.get("@message", "")),
        "level": str(msg.get("@level", "info")),
        "timestamp": str(msg.get("@timestamp", "")),
    }
    hook = msg.get("hook") or {}
    change = msg.get("change") or {}
    if kind == "apply_start":
        return ResourceStart(
            **base, address=_addr(hook), action=hook.get("action", ""), id_value=hook.get("id_value")
        )
    if kind == "apply_progress":
        return ResourceProgress(
            **base,
            address=_addr(hook),
            action=hook.get("action", ""),
            elapsed=float(hook.get("elapsed_seconds", 0)),
        )
    if kind == "apply_complete":
        return ResourceComplete(
            **base,
            address=_addr(hook),
            action=hook.get("action", ""),
            id_value=hook.get("id_value"),
            elapsed=float(hook.get("elapsed_seconds", 0)),
        )
    if kind == "apply_errored":
        return ResourceError(
            **base,
            address=_addr(hook),
            action=hook.get("action", ""),
            elapsed=float(hook.get("elapsed_seconds", 0)),
        )
    if kind == "refresh_start":
        return RefreshStart(**base, address=_addr(hook), id_value=hook.get("id_value"))
    if kind == "refresh_complete":
        return RefreshComplete(**base, address=_addr(hook), id_value=hook.get("id_value"))
    if kind == "planned_change":
        return PlannedChange(
            **base, address=_addr(change), action=change.get("action", ""), reason=change.get("reason")
        )
    if kind == "resource_drift":
        return Drift(**base, address=_addr(change), action=change.get("action", ""))
    if kind == "change_summary":
        ch = msg.get("changes") or {}
        return ChangeSummary(
            **base,
            add=int(ch.get("add", 0)),
            change=int(ch.get("change", 0)),
            remove=int(ch.get("remove", 0)),
            operation=str(ch.get("operation", "")),
        )
    if kind == "diagnostic":
        d = msg.get("diagnostic") or {}
        return Diagnostic(
            **base,
            severity=str(d.get("severity", "error")),
            summary=str(d.get("summary", "")),
            detail=str(d.get("detail", "")),
            address=d.get("address"),
        )
    if kind == "outputs":
        outs = msg.get("outputs") or {}
        return Outputs(**base, values={k: v.get("value") for k, v in outs.items() if isinstance(v, dict)})
    return LogEvent(**base)


def parse_stream(lines: Iterable[str]) -> list[Event]:
    return [ev for ev in (parse_line(ln) for ln in lines) if ev is not None]


# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    address: str
    action: str
    reason: str | None = None


@dataclass(frozen=True)
class Plan:
    changes: list[Change]  # what apply would do (no-ops left out)
    drift: list[Change]  # what changed outside Terraform since the last apply
    summary: ChangeSummary | None
    plan_file: Path | None
    diagnostics: list[Diagnostic]
    seconds: float

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True)
class RunResult:
    command: str
    returncode: int
    events: list[Event]
    seconds: float

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [e for e in self.events if isinstance(e, Diagnostic)]

    @property
    def summary(self) -> ChangeSummary | None:
        found = [e for e in self.events if isinstance(e, ChangeSummary)]
        return found[-1] if found else None

    @property
    def outputs(self) -> dict[str, Any]:
        found = [e for e in self.events if isinstance(e, Outputs)]
        return found[-1].values if found else {}


# ---- executor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: list[str]
    stderr: str
    interrupted: bool
    seconds: float


class Executor:
    """Runs one command: argv, environment, line-by-line streaming, cancel.

    ``cancel`` (a ``threading.Event``) or a KeyboardInterrupt in the calling thread sends SIGINT to
    the command exactly once and then waits for it to finish on its own (Terraform saves its state
    on the way out). Only if it is still running ``kill_after`` seconds later is it terminated.
    """

    def __init__(self, kill_after: float = 300.0):
        self.kill_after = kill_after

    def run(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        pid_file: Path | None = None,
    ) -> ExecResult:
        full_env = {**os.environ, **(env or {})}
        full_env = {k: v for k, v in full_env.items() if v != "" or k not in ("TF_PLUGIN_CACHE_DIR",)}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                start_new_session=True,  # the terminal's Ctrl-C reaches us, not Terraform directly
                preexec_fn=_interrupt_when_parent_dies,
            )
        except FileNotFoundError:
            raise TerraformNotFound(argv[0]) from None
        if pid_file is not None:  # a later run waits for this one if halab is killed meanwhile
            write_atomic(pid_file, f"{proc.pid}\n")
        lines: queue.Queue[str | None] = queue.Queue()
        err_chunks: list[str] = []

        def pump_out() -> None:
            assert proc.stdout is not None
            for ln in proc.stdout:
                lines.put(ln.rstrip("\n"))
            lines.put(None)

        def pump_err() -> None:
            assert proc.stderr is not None
            err_chunks.append(proc.stderr.read())

        threads = [
            threading.Thread(target=pump_out, daemon=True),
            threading.Thread(target=pump_err, daemon=True),
        ]
        for t in threads:
            t.start()
        out: list[str] = []
        interrupted_at: float | None = None
        pending_kbd = False

        def interrupt() -> None:
            nonlocal interrupted_at
            if interrupted_at is None and proc.poll() is None:
                interrupted_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)

        done = False
        while not done:
            try:
                try:
                    item = lines.get(timeout=0.1)
                except queue.Empty:
                    item = ""
                if item is None:
                    done = True
                elif item:
                    out.append(item)
                    if on_line is not None:
                        on_line(item)
                if cancel is not None and cancel.is_set():
                    interrupt()
                if interrupted_at is not None and time.monotonic() - interrupted_at > self.kill_after:
                    proc.kill()
            except KeyboardInterrupt:
                pending_kbd = True
                interrupt()
        proc.wait()
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
        for t in threads:
            t.join(timeout=5)
        result = ExecResult(
            returncode=proc.returncode,
            stdout=out,
            stderr="".join(err_chunks),
            interrupted=interrupted_at is not None,
            seconds=time.monotonic() - start,
        )
        if pending_kbd:
            raise KeyboardInterrupt
        return result


# ---- client ------------------------------------------------------------------------------------


class _CommandLines(Terraform):
    """python-terraform, used only to build command lines. Its constructor parses
    ``terraform.tfstate`` itself, and an empty file (a run killed while Terraform wrote it) made that
    a JSONDecodeError traceback in every command; Terraform reads its own state, so this never does."""

    def read_state_file(self, file_path: str | None = None) -> None:
        self.tfstate = None

EventCallback = Callable[[Event], None]


def _argv(tf: Terraform, command: str, *args: str, **options: Any) -> list[str]:
    """The command line python-terraform builds, minus ``-force`` (Terraform 1.x rejects it)."""
    argv = tf.generate_cmd_string(command, *args, **options)
    return [a for a in argv if a != "-force"]


class TerraformClient:
    """init / plan / apply / destroy / show / output for one Terraform working directory."""

    def __init__(
        self,
        workdir: Path,
        *,
        mirror: MirrorInfo | None = None,
        env: Mapping[str, str] | None = None,
        executor: Executor | None = None,
        terraform_bin: str = "terraform",
        parallelism: int = 10,
    ):
        self.workdir = Path(workdir)
        self.mirror = mirror
        self.extra_env = dict(env or {})
        self.executor = executor or Executor()
        self.terraform_bin = terraform_bin
        self.parallelism = parallelism
        self._tf = _CommandLines(working_dir=str(self.workdir), terraform_bin_path=terraform_bin)

    # -- plumbing --
    def env(self) -> dict[str, str]:
        mirror = self.mirror or ensure_mirror()
        self.mirror = mirror
        return {**mirror.env, **self.extra_env}

    def _run(
        self,
        name: str,
        argv: list[str],
        on_event: EventCallback | None,
        cancel: threading.Event | None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> RunResult:
        events: list[Event] = []

        def on_line(line: str) -> None:
            ev = parse_line(line)
            if ev is None:
                return
            events.append(ev)
            if on_event is not None:
                on_event(ev)

        res = self.executor.run(argv, cwd=self.workdir, env=self.env(), on_line=on_line, cancel=cancel,
                                pid_file=self.workdir / PID_FILE)
        if res.interrupted:
            raise TerraformInterrupted(name)
        if res.returncode not in ok_codes:
            diags = [e for e in events if isinstance(e, Diagnostic)]
            raise TerraformError(name, res.returncode, diags, res.stderr)
        return RunResult(command=name, returncode=res.returncode, events=events, seconds=res.seconds)

    # -- commands --
    def init(self, on_event: EventCallback | None = None, cancel: threading.Event | None = None) -> RunResult:
        # The lock file pins the hash of the mirror's launcher, which differs per checkout; it is
        # derived data here, so it is regenerated every time.
        (self.workdir / ".terraform.lock.hcl").unlink(missing_ok=True)
        argv = _argv(self._tf, "init", json=IsFlagged, input=False, no_color=IsFlagged, upgrade=IsFlagged)
        return self._run("init", argv, on_event, cancel)

    def plan(
        self,
        on_event: EventCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        out: Path | None = None,
        destroy: bool = False,
        refresh_only: bool = False,
    ) -> Plan:
        opts: dict[str, Any] = {
            "json": IsFlagged,
            "input": False,
            "no_color": IsFlagged,
            "detailed_exitcode": IsFlagged,
            "lock_timeout": "30s",
            "parallelism": self.parallelism,
        }
        if out is not None:
            opts["out"] = str(out)
        if destroy:
            opts["destroy"] = IsFlagged
        if refresh_only:
            opts["refresh_only"] = IsFlagged
        res = self._run("plan", _argv(self._tf, "plan", **opts), on_event, cancel, ok_codes=(0, 2))
        return plan_from_events(res.events, plan_file=out, seconds=res.seconds)

    def apply(
        self,
        on_event: EventCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        plan_file: Path | None = None,
        replace: Iterable[str] = (),
    ) -> RunResult:
        """``terraform apply``; ``replace`` lists addresses to destroy and create again
        (``-replace=ADDR``), e.g. one node's domain, disk and seed."""
        opts: dict[str, Any] = {
            "json": IsFlagged,
            "input": False,
            "no_color": IsFlagged,
            "lock_timeout": "30s",
            "parallelism": self.parallelism,
        }
        if plan_file is None:
            opts["auto_approve"] = IsFlagged
        args = [str(plan_file)] if plan_file is not None else []
        argv = _argv(self._tf, "apply", *args, **opts)
        extra = [f"-replace={addr}" for addr in replace]
        argv = argv[:-len(args)] + extra + argv[-len(args):] if args else argv + extra
        return self._run("apply", argv, on_event, cancel)

    def destroy(
        self, on_event: EventCallback | None = None, cancel: threading.Event | None = None
    ) -> RunResult:
        """``terraform apply -destroy`` (python-terraform's destroy() would pass ``-force``)."""
        opts = {
            "json": IsFlagged,
            "input": False,
            "no_color": IsFlagged,
            "lock_timeout": "30s",
            "auto_approve": IsFlagged,
            "destroy": IsFlagged,
            "parallelism": self.parallelism,
        }
        return self._run("destroy", _argv(self._tf, "apply", **opts), on_event, cancel)

    def show(self) -> dict[str, Any]:
        """The current state as ``terraform show -json`` reports it ({} when there is none)."""
        res = self.executor.run(
            _argv(self._tf, "show", json=IsFlagged, no_color=IsFlagged), cwd=self.workdir, env=self.env()
        )
        if res.returncode != 0:
            raise TerraformError("show", res.returncode, [], res.stderr)
        return _json_or_error("show", res)

    def outputs(self) -> dict[str, Any]:
        """Root module outputs as plain values ({} before the first apply)."""
        res = self.executor.run(
            _argv(self._tf, "output", json=IsFlagged, no_color=IsFlagged), cwd=self.workdir, env=self.env()
        )
        if res.returncode != 0:
            raise TerraformError("output", res.returncode, [], res.stderr)
        raw = _json_or_error("output", res)
        return {k: v.get("value") for k, v in raw.items() if isinstance(v, dict)}

    def state_addresses(self) -> list[str]:
        """Addresses of every resource in the state."""
        state = self.show()
        found: list[str] = []

        def walk(module: Mapping[str, Any]) -> None:
            found.extend(r["address"] for r in module.get("resources", []))
            for child in module.get("child_modules", []):
                walk(child)

        walk((state.get("values") or {}).get("root_module") or {})
        return found


def _json_or_error(command: str, res: ExecResult) -> dict[str, Any]:
    """Terraform's JSON output, or a TerraformError saying it was not JSON (never a traceback)."""
    text = "\n".join(res.stdout).strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TerraformError(command, res.returncode, [],
                             f"output is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(data, dict):
        raise TerraformError(command, res.returncode, [], "output is not a JSON object")
    return data


def plan_from_events(events: list[Event], plan_file: Path | None = None, seconds: float = 0.0) -> Plan:
    changes = [
        Change(e.address, e.action, e.reason)
        for e in events
        if isinstance(e, PlannedChange) and e.action not in ("noop", "read")
    ]
    drift = [Change(e.address, e.action) for e in events if isinstance(e, Drift)]
    summaries = [e for e in events if isinstance(e, ChangeSummary)]
    return Plan(
        changes=changes,
        drift=drift,
        summary=summaries[-1] if summaries else None,
        plan_file=plan_file,
        diagnostics=[e for e in events if isinstance(e, Diagnostic)],
        seconds=seconds,
    )


# ---- working directory and variables -----------------------------------------------------------


MULTIHOST_DIR = "multihost"  # the multi-host root's variables.tf, beside the single-host root
HOST_MODULE = "host"  # modules/host: one host's pool, network, volumes and nodes


def prepare_workdir(
    workdir: Path, tfvars: Mapping[str, Any] | None = None, source: Path | None = None,
    hosts: Iterable[str] = (),
) -> Path:
    """Copy the root module (``*.tf`` and ``modules/``) into a lab's private working directory and
    write the variables as ``halab.auto.tfvars.json``. State, lock file and ``.terraform`` stay there,
    so labs never share Terraform state and the source tree stays clean.

    With ``hosts`` (a lab over several hosts, in lab.yaml's order) the root is the multi-host one:
    its variables.tf plus a generated main.tf and outputs.tf with one provider alias and one host
    module per host. Without, the workdir is exactly what it always was (a test holds it to that)."""
    source = source or module_dir()
    hosts = list(hosts)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in workdir.glob("*.tf"):
        if old.name != IMPORTS_FILE:  # pending imports of a lost state stay until an apply takes them
            old.unlink()
    if hosts:
        shutil.copy2(source / "versions.tf", workdir / "versions.tf")
        shutil.copy2(source / MULTIHOST_DIR / "variables.tf", workdir / "variables.tf")
        main_tf, outputs_tf = multihost_root(hosts)
        write_atomic(workdir / "main.tf", main_tf, 0o600)
        write_atomic(workdir / "outputs.tf", outputs_tf, 0o600)
    else:
        for tf_file in source.glob("*.tf"):
            shutil.copy2(tf_file, workdir / tf_file.name)
    if (workdir / "modules").exists():
        shutil.rmtree(workdir / "modules")
    if (source / "modules").is_dir():
        skip = () if hosts else (HOST_MODULE,)
        top = source / "modules"
        shutil.copytree(top, workdir / "modules",
                        ignore=lambda d, names: [n for n in names if Path(d) == top and n in skip])
    if tfvars is not None:
        write_tfvars(workdir / VARS_FILE, tfvars)
    return workdir


def host_module(host: str) -> str:
    """The Terraform module name of one host's objects (a host name is a valid identifier)."""
    return f"host_{host}"


def multihost_root(hosts: list[str]) -> tuple[str, str]:
    """main.tf and outputs.tf of a lab over ``hosts``: Terraform cannot loop over provider
    configurations, so each host gets its alias (configured from ``var.hosts``, never from text in
    this file) and its host module written out. Host names were validated as identifiers."""
    main = ["# Written by halab for a lab over several hosts (lab.yaml hosts:); see docs/MULTIHOST.md.\n"]
    for h in hosts:
        mod = host_module(h)
        main.append(f"""
provider "libvirt" {{
  alias = "{h}"
  uri   = var.hosts["{h}"].uri
  # The provider refuses to create or delete anything whose name lacks the lab's prefix.
  name_prefix = "${{var.lab}}-"
}}

module "{mod}" {{
  source    = "./modules/host"
  providers = {{ libvirt = libvirt.{h} }}

  lab         = var.lab
  host        = "{h}"
  gateway     = var.hosts["{h}"].gateway
  network     = var.network
  pool_path   = var.hosts["{h}"].pool_path
  base_image  = var.base_image
  kernel      = var.kernel
  initrd      = var.initrd
  accel       = var.accel
  cmdline     = var.cmdline
  console_log = var.console_log
  nodes       = {{ for k, n in var.nodes : k => n if n.host == "{h}" }}
  dhcp_nodes  = {{ for k, n in var.nodes : k => {{ mac = n.mac, ip = n.ip }} }}
}}
""")
    mods = ", ".join(f"module.{host_module(h)}.inventory" for h in hosts)
    gateway = " ".join(f'var.hosts["{h}"].gateway ? module.{host_module(h)}.network :' for h in hosts[:-1])
    outputs = f"""# Written by halab for a lab over several hosts.

output "inventory" {{
  description = "Every node: name, role, IP, MAC, libvirt domain name and host."
  value       = merge({mods})
}}

output "network" {{
  description = "The lab network on the host that carries its gateway."
  value       = {gateway} module.{host_module(hosts[-1])}.network
}}
"""
    return "".join(main), outputs


def node_module_address(cfg: Any, node: str) -> str:
    """The Terraform address of one node's module: ``module.node["api-2"]`` on one host,
    ``module.host_rack2.module.node["api-2"]`` on a lab over several."""
    host = cfg.host_of(node) if getattr(cfg, "hosts", ()) else None
    inner = f'module.node["{node}"]'
    return inner if host is None else f"module.{host_module(host.name)}.{inner}"


def host_address(cfg: Any, host: str | None, resource: str) -> str:
    """A host-level object's address (``libvirt_pool.lab``, ``libvirt_network.lab``, volumes)."""
    return resource if host is None else f"module.{host_module(host)}.{resource}"


def write_tfvars(path: Path, tfvars: Mapping[str, Any]) -> None:
    # 0600: user-data may hold secrets.
    write_atomic(path, json.dumps(tfvars, indent=2, sort_keys=True) + "\n", 0o600)


def default_pool_path(lab: str, libvirt_uri: str) -> str:
    """Where the lab's dir pool lives: for qemu:///system under /var/lib/libvirt/images so that
    libvirt's qemu user can read it; for session URIs under the user's libvirt images."""
    if libvirt_uri.startswith("qemu:///session"):
        return os.path.expanduser(f"~/.local/share/libvirt/images/{lab}")
    return f"/var/lib/libvirt/images/{lab}"


def lab_tfvars(
    cfg: Any,
    *,
    base_image: str | Path,
    kernel: str | Path,
    initrd: str | Path,
    accel: str,
    seeds: Mapping[str, NodeSeed],
    pool_path: str | None = None,
    cmdline: str | None = None,
    stopped: Iterable[str] = (),
    console_log: bool = True,
) -> dict[str, Any]:
    """The root module's variables from a ``LabConfig``. ``accel`` is the resolved domain type
    (``kvm`` or ``qemu``); ``seeds`` maps node name to its seed; nodes in ``stopped`` get
    ``running = false``."""
    if accel not in ("kvm", "qemu"):
        raise ValueError(f"accel must be 'kvm' or 'qemu' (got {accel!r}); resolve 'auto'/'tcg' first")
    stopped = set(stopped)
    net = ipaddress.IPv4Network(cfg.network.cidr, strict=False)
    nodes: dict[str, Any] = {}
    for n in cfg.nodes():
        if n.name not in seeds:
            raise ValueError(f"no cloud-init seed for node {n.name!r}")
        s = seeds[n.name]
        nodes[n.name] = {
            "name": n.name,
            "role": n.role,
            "ip": n.ip,
            "mac": n.mac.lower(),
            "memory_mib": n.memory_mib,
            "vcpus": n.vcpus,
            "user_data": s.user_data,
            "meta_data": s.meta_data,
            "network_config": s.network_config,
            "running": n.name not in stopped,
        }
    if getattr(cfg, "hosts", ()):
        for n in cfg.nodes():
            nodes[n.name]["host"] = n.host
    out: dict[str, Any] = {
        "lab": cfg.name,
        "libvirt_uri": cfg.libvirt_uri,
        "network": {
            "name": cfg.network_name,
            "bridge": cfg.bridge_name,
            "cidr": str(net),
            "mode": cfg.network.mode,
            "gateway": cfg.gateway,
        },
        "pool_path": pool_path or default_pool_path(cfg.name, cfg.libvirt_uri),
        "base_image": str(base_image),
        "kernel": str(kernel),
        "initrd": str(initrd),
        "accel": accel,
        "console_log": console_log,
        "nodes": nodes,
    }
    if cmdline is not None:
        out["cmdline"] = cmdline
    if getattr(cfg, "hosts", ()):
        del out["libvirt_uri"], out["pool_path"]
        out["hosts"] = {h.name: {"uri": h.uri, "gateway": i == 0,
                                 "pool_path": pool_path or default_pool_path(cfg.name, h.uri)}
                        for i, h in enumerate(cfg.hosts)}
    return out


# ---- crash recovery: state file, state lock, an orphaned terraform --------------------------------

STATE_FILE = "terraform.tfstate"
BACKUP_FILE = "terraform.tfstate.backup"
LOCK_INFO_FILE = ".terraform.tfstate.lock.info"
PID_FILE = ".halab-terraform.pid"  # the terraform a halab run started, while it runs
IMPORTS_FILE = "halab_imports.tf"  # import blocks that rebuild a lost state from libvirt

_PR_SET_PDEATHSIG = 1


def _interrupt_when_parent_dies() -> None:
    """In the child before exec: SIGINT (Terraform's graceful stop, which writes its state) when the
    halab that started it dies, even by SIGKILL. Without it Terraform runs on alone, unseen."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def _valid_state(path: Path) -> dict[str, Any] | None:
    """The state file's content if it is a Terraform state (a JSON object with a version and
    resources), else None: empty, truncated or not JSON at all."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return None
    if not isinstance(data.get("resources", []), list):
        return None
    return data


@dataclass(frozen=True)
class StateRepair:
    """What :func:`repair_state` did: ``backup`` (Terraform's own backup restored) or ``lost`` (no
    usable state: the caller rebuilds it from libvirt)."""

    action: str
    message: str


LOST_THEN_REBUILD = "rebuilding it from libvirt (the lab's objects, found by ownership)"


def repair_state(workdir: Path, lost_then: str = LOST_THEN_REBUILD) -> StateRepair | None:
    """Make a damaged ``terraform.tfstate`` usable again; None when it is fine or absent. The damaged
    file is kept beside it (``terraform.tfstate.damaged``) for whoever wants to look. ``lost_then``
    says what the caller does without a usable state (``down`` sweeps instead of rebuilding)."""
    state = Path(workdir) / STATE_FILE
    if not state.exists() or _valid_state(state) is not None:
        return None
    size = state.stat().st_size
    what = "empty" if size == 0 else f"not a Terraform state ({size} bytes)"
    damaged = state.with_name(STATE_FILE + ".damaged")
    os.replace(state, damaged)
    backup = _valid_state(state.with_name(BACKUP_FILE))
    if backup is not None and backup.get("resources"):
        write_atomic(state, json.dumps(backup, indent=2) + "\n", 0o600)
        return StateRepair("backup", f"{STATE_FILE} was {what} (a run killed while Terraform wrote it); "
                                     f"restored Terraform's backup (serial {backup.get('serial')}, "
                                     f"{len(backup['resources'])} resources), kept the damaged file as "
                                     f"{damaged.name}")
    return StateRepair("lost", f"{STATE_FILE} was {what} and there is no usable backup; {lost_then}, "
                               f"kept the damaged file as {damaged.name}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie holds no lock and writes no state
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def running_terraform(workdir: Path) -> int | None:
    """The pid of a terraform an earlier (killed) halab run started in ``workdir`` that is still
    running, else None. It is identified by its recorded pid and its working directory."""
    pid_file = Path(workdir) / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    if _pid_alive(pid) and cwd is not None and Path(cwd).resolve() == Path(workdir).resolve():
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def wait_for_running_terraform(workdir: Path, on_wait: Callable[[int], None] | None = None,
                               timeout_s: float = 600.0) -> None:
    """Wait until a terraform left by a killed run has stopped (it got SIGINT when its halab died,
    and is writing its state); never interrupt or unlock it. HalabError after ``timeout_s``."""
    pid = running_terraform(workdir)
    if pid is None:
        return
    if on_wait is not None:
        on_wait(pid)
    deadline = time.monotonic() + timeout_s
    while running_terraform(workdir) is not None:
        if time.monotonic() > deadline:
            raise HalabError(f"terraform (pid {pid}) from an earlier run is still running in {workdir} after "
                             f"{timeout_s:.0f}s; wait for it, or stop it (kill -INT {pid}) and run again")
        time.sleep(0.5)


def release_stale_lock(workdir: Path) -> str | None:
    """Remove the lock record of a Terraform that died holding the state lock; a lock a live process
    holds (its fcntl lock on the state file) is never touched. Returns what was done, or None."""
    info_path = Path(workdir) / LOCK_INFO_FILE
    if not info_path.exists():
        return None
    state = Path(workdir) / STATE_FILE
    if state.exists():
        import fcntl

        fd = os.open(state, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # a live terraform holds it: Terraform's -lock-timeout waits for it
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        who = f" (lock {info.get('ID', '?')}, {info.get('Operation', '?')} by {info.get('Who', '?')}, " \
              f"{info.get('Created', '?')})"
    except (OSError, ValueError, AttributeError):
        who = ""
    info_path.unlink(missing_ok=True)
    return f"released a Terraform state lock left by a process that no longer runs{who}"


def write_imports(workdir: Path, imports: Iterable[tuple[str, str]]) -> int:
    """Terraform ``import`` blocks (address, id) for the next plan/apply; returns how many."""
    items = list(imports)
    body = "".join(f"import {{\n  to = {addr}\n  id = {json.dumps(ident)}\n}}\n\n" for addr, ident in items)
    path = Path(workdir) / IMPORTS_FILE
    if items:
        write_atomic(path, "# Written by halab to rebuild a lost state from libvirt.\n\n" + body, 0o600)
    else:
        path.unlink(missing_ok=True)
    return len(items)


def clear_imports(workdir: Path) -> None:
    """Import blocks are done with once an apply has taken them into the state."""
    (Path(workdir) / IMPORTS_FILE).unlink(missing_ok=True)
