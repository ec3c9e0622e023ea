"""One test per class of bad input issue 15 found (each was a traceback, a hang or a wrong message
before): refused as `file:line: field: message` on one line, never another exception."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from halab.chaos.faults import Faults, FaultStore
from halab.chaos.scenario import load_scenario, parse_scenario
from halab.errors import ConfigError, HalabError, UsageError
from halab.lab.config import MAX_FILE_BYTES, libvirt_uri_problem, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
BIG_HOST = 1 << 20


def lab_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lab.yaml", host_mem_mib=BIG_HOST)
    for e in info.value.errors:
        assert "\n" not in e and len(e) < 500, e
    return info.value.errors


def scenario_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, "s.yaml")
    for e in info.value.errors:
        assert "\n" not in e and len(e) < 500, e
    return info.value.errors


# ---- explicit YAML tags --------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("name: !!timestamp x\n", "lab.yaml:1: name: unsupported YAML tag '!!timestamp': write the plain value"),
    ("name: lab\naccel: !!bool maybe\n", "lab.yaml:2: accel: 'maybe' is not a valid !!bool value"),
    ("roles:\n  api:\n    count: !!int many\n",
     "lab.yaml:3: roles.api.count: 'many' is not a valid !!int value"),
    ("traffic:\n  rate: !!float fast\n", "lab.yaml:2: traffic.rate: 'fast' is not a valid !!float value"),
    ("image: !!binary aGk=\n", "lab.yaml:1: image: unsupported YAML tag '!!binary': write the plain value"),
    ("name: !mine x\n", "lab.yaml:1: name: unsupported YAML value: could not determine a constructor for "
                        "the tag '!mine'"),
])
def test_explicit_tags_are_refused_at_their_line(text, expected):
    assert lab_errors(text) == [expected]


def test_plain_scalar_tags_still_work():
    cfg = parse_config("name: !!str lab\nroles:\n  api: {count: !!int 3}\n", host_mem_mib=BIG_HOST)
    assert cfg.name == "lab" and cfg.roles["api"].count == 3


def test_tags_in_scenarios():
    errs = scenario_errors("steps:\n  - traffic: start\n  - wait: !!timestamp 2001-01-01\n")
    assert errs == ["s.yaml:3: steps[1].wait: unsupported YAML tag '!!timestamp': write the plain value"]


# ---- integers of thousands of digits -------------------------------------------------------------
@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "0b" + "1" * 20000,
                                    ":".join(["59"] * 3000)], ids=lambda t: t[:4])
def test_huge_integers(number):
    (err,) = lab_errors(f"name: lab\nroles:\n  api:\n    count: {number}\n")
    assert err.startswith("lab.yaml:4: roles.api.count: ") and "far too large" in err


def test_huge_integers_in_scenarios():
    (err,) = scenario_errors("steps:\n  - wait: " + "1" * 5000 + "\n")
    assert err.startswith("s.yaml:2: steps[0].wait: ") and "far too large" in err
    (err,) = scenario_errors("steps:\n  - traffic: start\n  - wait: {until: steady " + "9" * 5000 + " s}\n")
    assert err.startswith("s.yaml:3: steps[1].wait.until: unknown condition")


# ---- paths ---------------------------------------------------------------------------------------
def test_image_in_an_unknown_users_home():
    (err,) = lab_errors("image: ~nosuchuser-halab/disk.qcow2\n")
    assert err == ("lab.yaml:1: image: 'builtin' or the path of a cloud image; "
                   "'~nosuchuser-halab/disk.qcow2' names the home of 'nosuchuser-halab', a user this system "
                   "does not know")


@pytest.mark.parametrize("path", ["/" + "a" * 256 + "/disk.qcow2", "/d" * 2100], ids=["name", "path"])
def test_image_paths_longer_than_the_system_takes(path):
    (err,) = lab_errors(f"image: {path}\n")
    assert err.startswith("lab.yaml:1: image: 'builtin' or the path of a cloud image; '/")
    assert "is too long" in err and len(err) < 250


def test_definition_file_names_longer_than_the_system_takes(tmp_path):
    for name in ("x" * 300, "x" * 5000):
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / name)
        (err,) = info.value.errors
        assert "too long" in err and len(err) < 500


# ---- not a regular file --------------------------------------------------------------------------
def _in_thread(fn, timeout: float = 10.0):
    """Run fn; fail (instead of hanging the suite) if it does not return."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still reading after {timeout} s"
    if "exc" in box:
        raise box["exc"]
    return box.get("value")


@pytest.mark.parametrize("loader", [load_config, load_scenario])
def test_dev_zero_fifo_and_directory_are_refused_without_reading(tmp_path, loader):
    fifo = tmp_path / "lab.fifo"
    os.mkfifo(fifo)
    cases = {Path("/dev/zero"): "is a device", fifo: "is a FIFO", tmp_path: "is a directory"}
    for path, what in cases.items():
        with pytest.raises(ConfigError) as info:
            _in_thread(lambda p=path: loader(p))
        assert info.value.errors == [f"{path}: {what}, not a regular file"]


def test_a_file_over_one_mib_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"too large for a definition \(at most 1048576 bytes\)"):
        load_config(big)


# ---- names must be single-line -------------------------------------------------------------------
@pytest.mark.parametrize("text", ['name: "lab\\n"\n', "name: 'lab\n\n'\n", "name: |\n  lab\n"])
def test_a_lab_name_with_a_trailing_newline_is_refused(text):
    (err,) = lab_errors(text)
    assert err.startswith("lab.yaml:1: name: 'lab\\n' is not a usable lab name")


def test_scenario_names_and_nodes_with_a_trailing_newline_are_refused():
    (err,) = scenario_errors('name: "s\\n"\nsteps:\n  - traffic: start\n')
    assert err.startswith("s.yaml:1: name: 's\\n': lowercase")
    errs = scenario_errors('steps:\n  - fault: {action: kill, node: "api-2\\n"}\n')
    assert errs[0] == "s.yaml:2: steps[0].fault.node: not a node name like api-2 or db-1 (got 'api-2\\n')"


# ---- control characters --------------------------------------------------------------------------
def test_control_characters_are_reported_at_their_line_in_one_line():
    assert lab_errors("name: lab\nprofile: default\naccel: tc\x01g\n") == [
        "lab.yaml:3: control character U+0001 at column 10 is not allowed (YAML takes tab and line breaks "
        "only)"]
    assert scenario_errors("steps:\n  - traffic: start\n  - mark: a\x1b[31m\n")[0].startswith(
        "s.yaml:3: control character U+001B")


def test_escaped_control_characters_are_refused_too():
    assert lab_errors('name: lab\nimage: "\\e[2J"\n') == [
        "lab.yaml:2: image: control character U+001B is not allowed"]
    (err,) = scenario_errors('description: "x\\u0007"\nsteps:\n  - traffic: start\n')
    assert err == "s.yaml:1: description: control character U+0007 is not allowed"


def test_keys_with_line_breaks_are_shown_escaped():
    (err,) = lab_errors('"na\\nme": x\n')
    assert err.startswith("lab.yaml:1: na\\nme: unknown key")


# ---- NaN and infinity ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_nan_and_inf_in_lab_numbers(value):
    for field in ("rate", "read_share"):
        errs = lab_errors(f"traffic:\n  {field}: {value}\n")
        assert errs[0].startswith(f"lab.yaml:2: traffic.{field}: must be between")


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_nan_and_inf_in_scenario_numbers(value):
    for step in (f"traffic: {{rate: {value}}}", f"wait: {value}", f"wait: {{seconds: {value}}}",
                 f"fault: {{action: netem, node: api-2, params: {{delay_ms: {value}}}}}"):
        errs = scenario_errors(f"steps:\n  - {step}\n")
        assert any(e.startswith("s.yaml:2: steps[0].") and "must be between" in e for e in errs), errs


def test_netem_refuses_nan_and_inf(monkeypatch, tmp_path):
    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    cfg = parse_config("name: nanlab\nlibvirt_uri: 'test:///default'\n", host_mem_mib=BIG_HOST)
    calls = []
    faults = Faults(cfg, host_run=lambda argv: calls.append(argv) or (0, "", ""), state_dir=tmp_path)
    for kw in ({"delay_ms": math.nan}, {"delay_ms": math.inf}, {"jitter_ms": math.nan, "delay_ms": 5},
               {"loss_pct": math.nan}, {"loss_pct": -math.inf}):
        with pytest.raises(UsageError, match="finite"):
            faults.netem("api-1", **kw)
    assert calls == []  # refused before tc ran


# ---- the fault record ----------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["[]", "{}", "null", '{"active": []}'])
def test_an_empty_fault_record_is_no_faults(tmp_path, content):
    (tmp_path / "faults.json").write_text(content)
    assert FaultStore(tmp_path / "faults.json").load() == []


@pytest.mark.parametrize("content,problem", [
    ('{"active": [{"kind": "kill", "started": 1}]}', "entry 1 names no node"),
    ('[{"node": "api-1"}]', "entry 1 has no fault kind"),
    ('{"active": [{"kind": "kill", "node": "api-1"}, 5]}', "entry 2 is not an object"),
    ('{"active": [{"kind": "explode", "node": "api-1"}]}', "entry 1 has an unknown kind 'explode'"),
    ('{"active": [{"kind": 3, "node": ["api-1"]}]}', "entry 1 has no fault kind"),
    ('{"active": 7}', "'active' is not a list"),
])
def test_a_damaged_fault_record_is_a_clear_error(tmp_path, content, problem):
    (tmp_path / "faults.json").write_text(content)
    with pytest.raises(HalabError) as info:
        FaultStore(tmp_path / "faults.json").load()
    assert problem in str(info.value) and "remove the file" in str(info.value)


def test_wrong_types_in_optional_fields_are_tolerated(tmp_path):
    (tmp_path / "faults.json").write_text('[{"kind": "kill", "node": "api-1", "started": "x", "params": 5}]')
    (f,) = FaultStore(tmp_path / "faults.json").load()
    assert (f.kind, f.node, f.started, f.params) == ("kill", "api-1", 0.0, {})


# ---- echoed values are cut to a readable length --------------------------------------------------
@pytest.mark.parametrize("text", ["name: " + "x" * 1_000_000 + "\n", "profile: " + "x" * 1_000_000 + "\n",
                                  "network: {cidr: '" + "9" * 100_000 + "'}\n",
                                  "? " + "x" * 100_000 + "\n: 1\n",
                                  "haproxy: {retry_on: " + "z " * 100_000 + "}\n"], ids=lambda t: t[:10])
def test_a_megabyte_value_is_not_echoed_whole(text):
    (err,) = lab_errors(text)
    assert "…" in err and len(err) < 400


def test_a_long_hypothesis_is_not_echoed_whole():
    (err,) = scenario_errors("hypotheses:\n  - " + "w" * 100_000 + "\nsteps:\n  - traffic: start\n")
    assert err.startswith("s.yaml:2: hypotheses[0]: 'wwww") and "…" in err and len(err) < 500


# ---- libvirt_uri runs no program -----------------------------------------------------------------
@pytest.mark.parametrize("uri", ["qemu:///system", "qemu:///session", "test:///default", "qemu+ssh://u@h/system",
                                 "qemu+ssh://h/system?keyfile=/k&no_verify=1", "qemu+tls://h/system",
                                 "qemu+tcp://h/system", "qemu+unix:///system?socket=/run/x.sock",
                                 "qemu+libssh2://h/system?known_hosts=/k", "qemu+ssh://h/system?mode=direct"])
def test_allowed_libvirt_uris(uri):
    assert libvirt_uri_problem(uri) == ""


@pytest.mark.parametrize("uri,why", [
    ("qemu+ext:///system?command=/path/prog", "transport 'ext' is not allowed"),
    ("QEMU+EXT:///system", "transport 'ext' is not allowed"),
    ("qemu+ssh://h/system?command=/tmp/prog", "'command' names a program to run"),
    ("qemu+ssh://h/system?no_verify=1&COMMAND=/tmp/prog", "'command' names a program to run"),
    ("qemu+ssh://h/system?comm%61nd=/tmp/prog", "'command' names a program to run"),
    ("qemu+ssh://h/system?no_verify=1;netcat=/tmp/nc", "'netcat' names a program to run"),
    ("qemu+libssh://h/system?netcat=nc", "'netcat' names a program to run"),
    ("qemu+ssh://h/system?whatever=1", "'whatever' is not a connection option"),
    ("qemu+fd:///system", "transport 'fd' is not allowed"),
    ("qemu+ssh://-oProxyCommand=sh/system", "user and host must be plain names"),
    ("qemu+ssh://-oProxyCommand=sh@host/system", "user and host must be plain names"),
    ("qemu:///system with space", "must be a libvirt URI"),
    ("system", "must be a libvirt URI"),
])
def test_refused_libvirt_uris(uri, why):
    (err,) = lab_errors(f"libvirt_uri: '{uri}'\n")
    assert err.startswith("lab.yaml:1: libvirt_uri: ") and why in err


def lab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "HALAB_CONFIG"}
    e.update(HALAB_STATE=str(cwd / "state"), HALAB_CACHE=str(cwd / "cache"), **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=60, check=False)


def test_a_program_running_uri_is_refused_by_every_command(tmp_path):
    f = tmp_path / "ext.yaml"
    f.write_text("libvirt_uri: 'qemu+ext:///system?command=/tmp/halab-should-never-run'\n")
    for argv in (["config", "check", str(f)], ["-c", str(f), "kill", "api-2"], ["-c", str(f), "status"],
                 ["-c", str(f), "down"], ["-c", str(f), "restore"]):
        out = lab(*argv, cwd=tmp_path)
        assert out.returncode == 2, (argv, out.stderr)
        assert f"{f}:1: libvirt_uri: transport 'ext' is not allowed" in out.stderr, argv
        assert "Traceback" not in out.stderr


# ---- a lab file found by default must be trusted -------------------------------------------------
def test_a_world_writable_lab_yaml_in_the_current_directory_is_refused(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: shared\n")
    f.chmod(0o666)
    out = lab("config", "show", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == ("error: lab.yaml: refusing a lab file found by default that is writable by "
                          "group and others (mode 0666); fix it (chmod go-w / chown) or name it with -c "
                          "lab.yaml if you trust it\n")
    f.chmod(0o644)
    assert lab("config", "show", cwd=tmp_path).returncode == 0


def test_a_lab_file_named_explicitly_is_the_users_choice(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: shared\n")
    f.chmod(0o666)
    out = lab("-c", "lab.yaml", "config", "check", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_halab_config_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "theirs.yaml"
    f.write_text("name: theirs\n")
    os.chown(f, 54321, 54321)
    monkeypatch.setenv("HALAB_CONFIG", str(f))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.errors == [f"{f}: refusing a lab file found by default that is owned by another user "
                                 f"(uid 54321); fix it (chmod go-w / chown) or name it with -c {f} if you "
                                 "trust it"]
    assert load_config(f).name == "theirs"


def test_group_writable_halab_config_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "lab.yaml"
    f.write_text("name: g\n")
    f.chmod(0o664)
    monkeypatch.setenv("HALAB_CONFIG", str(f))
    with pytest.raises(ConfigError, match=r"is writable by group \(mode 0664\)"):
        load_config()


# ---- watch without libvirt -----------------------------------------------------------------------
def test_watch_says_so_when_libvirt_cannot_be_reached(tmp_path):
    f = tmp_path / "gone.yaml"
    f.write_text("name: gone\nlibvirt_uri: 'qemu+unix:///system?socket=/nonexistent/halab-sock'\n"
                 "accel: tcg\n")
    tf = tmp_path / "state" / "gone" / "terraform"
    tf.mkdir(parents=True)
    (tf / "terraform.tfstate").write_text('{"version": 4, "resources": []}')  # "the lab is up"
    out = lab("-c", str(f), "watch", "--seconds", "2", cwd=tmp_path)
    assert out.returncode != 0
    assert "cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent/halab-sock" in out.stderr
    assert "Traceback" not in out.stderr
