"""Bad input to the demo commands: a clear error and exit 2, nothing left running."""

from __future__ import annotations

import socket

from cli import main


def test_serve_refuses_a_port_in_use_before_starting_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", "--demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "--port" in err
    assert not list(tmp_path.rglob("feed.sock"))


def test_replay_of_a_file_that_is_not_a_timeline(capsys, tmp_path):
    bad = tmp_path / "notes.timeline.jsonl"
    bad.write_text('{"type": "event", "at": 1, "kind": "note", "message": "x"}\n{"type": "ev')
    assert main(["tui", "--replay", str(bad)]) == 2
    assert main(["serve", "--replay", str(bad), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count(f"{bad}:2: truncated") == 2 and "Traceback" not in err
    assert main(["serve", "--demo", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_serve_beyond_loopback_warns_who_can_reach_it(capsys, tmp_path, monkeypatch):
    from cli.serve_cmd import exposure_warning

    for quiet in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert exposure_warning(quiet, 8000) is None
    every = exposure_warning("0.0.0.0", 8000)
    assert "any address of this machine on port 8000" in every and "only guard" in every
    assert "anyone who can reach 192.0.2.7 on port 9000" in exposure_warning("192.0.2.7", 9000)
    assert "in clear" in exposure_warning("::", 8000)

    # A bad host or a busy port is refused before the warning: nothing is served, nothing said.
    monkeypatch.setenv("HALAB_STATE", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", "--demo", "--host", "0.0.0.0", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 0.0.0.0:{port}" in err and "--port" in err and "warning" not in err
    assert main(["serve", "--demo", "--host", "no-such-host.invalid", "--port", "8000"]) == 2
    assert "--host no-such-host.invalid: not an address" in capsys.readouterr().err
    assert main(["serve", "--demo", "--host", "192.0.2.7", "--port", "8000"]) == 2  # TEST-NET-1
    assert "--host 192.0.2.7: not an address of this machine" in capsys.readouterr().err
    assert not list(tmp_path.rglob("feed.sock"))


def test_serve_on_every_interface_says_so_then_serves(tmp_path):
    """A real `serve --demo --host 0.0.0.0`: the warning on stderr, the viewer link on stdout, and on
    SIGTERM it stops with the port free and no feed socket left."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HALAB_STATE": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(root / "lab.py"), "serve", "--demo", "--host", "0.0.0.0",
                             "--port", str(port)], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        warning = proc.stderr.readline()
        out = "".join(proc.stdout.readline() for _ in range(2))
        deadline = time.monotonic() + 60
        while True:  # serving (its signal handlers set) once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "serve never listened"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert warning.startswith("warning: serve listens on 0.0.0.0, not on loopback")
    assert "only guard" in warning and f"port {port}" in warning
    assert f":{port}/?token=" in out
    assert rc == 0 and not list(tmp_path.rglob("feed.sock"))
    deadline = time.monotonic() + 5
    while True:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def test_serve_replay_of_a_foreign_or_empty_file_starts_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    foreign = tmp_path / "lab.timeline.jsonl"
    foreign.write_text('{"name": "lab", "nodes": 7}\n')
    empty = tmp_path / "empty.timeline.jsonl"
    empty.write_text("")
    assert main(["serve", "--replay", str(foreign), "--port", "8000"]) == 2
    assert main(["serve", "--replay", str(empty), "--port", "8000"]) == 2
    err = capsys.readouterr().err
    assert f"{foreign}:1: not a timeline row" in err and f"{empty}:1: empty" in err
    assert "Traceback" not in err and not (tmp_path / "state").exists()
