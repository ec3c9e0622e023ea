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
