"""Boot order: waves by what each role needs for a large TCG lab, all at once otherwise."""

from __future__ import annotations

import pytest

from halab.errors import ConfigError
from halab.lab.config import parse_config
from halab.lab.lifecycle import boot_waves

HA = parse_config("profile: ha\n", "lab.yaml", host_mem_mib=1 << 20)
DEFAULT = parse_config("", "lab.yaml", host_mem_mib=1 << 20)


def test_ha_under_tcg_boots_clusters_first_then_api_then_balancers():
    assert boot_waves(HA, "tcg") == [["db-1", "db-2", "db-3"], ["mq-1", "mq-2", "mq-3"],
                                     ["api-1", "api-2", "api-3", "api-4"], ["haproxy-1", "haproxy-2"]]


def test_small_labs_and_kvm_boot_together():
    assert boot_waves(DEFAULT, "tcg") == [[n.name for n in DEFAULT.nodes()]]
    assert boot_waves(HA, "kvm") == [[n.name for n in HA.nodes()]]


def test_lab_yaml_chooses():
    waves = parse_config("boot: waves\n", "lab.yaml", host_mem_mib=1 << 20)
    assert [w[0] for w in boot_waves(waves, "kvm")] == ["db-1", "mq-1", "api-1", "haproxy-1"]
    together = parse_config("profile: ha\nboot: together\n", "lab.yaml", host_mem_mib=1 << 20)
    assert len(boot_waves(together, "tcg")) == 1
    with pytest.raises(ConfigError, match=r"lab.yaml:1: boot: must be one of auto, waves, together"):
        parse_config("boot: sideways\n", "lab.yaml", host_mem_mib=1 << 20)


def test_running_nodes_are_never_held_back():
    waves = boot_waves(HA, "tcg", already_running={"api-2", "haproxy-1"})
    assert waves[0] == ["haproxy-1", "api-2", "db-1", "db-2", "db-3"]
    assert "api-2" not in waves[2] and "haproxy-1" not in waves[3]
    assert sorted(n for w in waves for n in w) == sorted(n.name for n in HA.nodes())


def test_console_last_line_drops_terminal_colours(tmp_path):
    from halab.lab.lifecycle import _last_line

    log = tmp_path / "x.log"
    log.write_bytes(b"[    0.1] early\n\x1b[0;32m  OK  \x1b[0m] Started "
                    b"\x1b[0;1;39mssh.service\x1b[0m - SSH.\n\n")
    assert _last_line(log) == "OK  ] Started ssh.service - SSH."
    assert _last_line(tmp_path / "missing.log") == ""
