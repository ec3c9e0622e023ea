"""`bench --profile ha` on the same lab file: the override changes the profile (and so the node
counts) and keeps everything else the file says."""

from __future__ import annotations

import pytest

from halab.errors import ConfigError
from halab.lab.config import load_config
from halab.live.bench import up_waves


def test_profile_override_keeps_the_rest_of_the_file(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: mine\nnetwork: {cidr: 10.90.0.0/24}\nroles:\n  api: {count: 2, memory_mib: 640}\n")
    plain = load_config(f)
    assert plain.profile == "default" and plain.roles["api"].count == 2
    ha = load_config(f, profile="ha")
    assert (ha.name, ha.profile, ha.network.cidr) == ("mine", "ha", "10.90.0.0/24")
    assert ha.roles["db"].count == 3 and ha.roles["mq"].count == 3 and ha.roles["haproxy"].count == 2
    assert ha.roles["api"].memory_mib == 640  # kept; the count is the ha profile's own
    assert load_config(f, profile="default") == plain


def test_profile_override_of_the_built_in_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HALAB_CONFIG", raising=False)
    assert load_config(None, profile="ha").profile == "ha"
    with pytest.raises(ConfigError, match="--profile: must be one of"):
        load_config(None, profile="huge")


def test_bench_reports_the_boot_by_wave(tmp_path):
    ha = load_config(None, profile="ha")
    phases = {"boot wave 1": 241.9, "boot wave 2": 329.0, "boot wave 3": 169.8, "boot wave 4": 149.4}
    waves = up_waves(ha, "tcg", phases)
    assert [w["nodes"] for w in waves] == [["db-1", "db-2", "db-3"], ["mq-1", "mq-2", "mq-3"],
                                           ["api-1", "api-2", "api-3", "api-4"], ["haproxy-1", "haproxy-2"]]
    assert [w["boot_s"] for w in waves] == [241.9, 329.0, 169.8, 149.4]
    default = load_config(None)
    assert up_waves(default, "tcg", {"boot": 250.0}) == [
        {"nodes": [n.name for n in default.nodes()], "boot_s": 250.0}]
