"""Per-lab secrets and SSH keys: generated once, 0600 files in a 0700 directory, never in repr/str."""

from __future__ import annotations

import json
import stat

import paramiko
import pytest

from halab.lab.config import parse_config
from halab.lab.secrets import (
    LabSecrets,
    SecretsError,
    ensure_lab_credentials,
    load_or_create_keys,
    load_or_create_secrets,
)


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


def _cfg(profile: str = "default"):
    return parse_config(f"name: lab1\nprofile: {profile}\n", host_mem_mib=1 << 20)


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_secrets_generated_once_and_stored_0600(state):
    cfg = _cfg()
    s1 = load_or_create_secrets(cfg)
    path = state / "lab1" / "secrets.json"
    assert _mode(path) == 0o600
    assert _mode(state / "lab1") == 0o700
    s2 = load_or_create_secrets(cfg)
    assert s1 == s2
    assert len(set(s1.values())) == len(s1.values())  # all different
    assert len(s1.keepalived_auth_pass) == 8  # VRRP PASS uses 8 characters
    assert all(v.isalnum() for v in s1.values())


def test_loosened_mode_is_tightened(state):
    cfg = _cfg()
    load_or_create_secrets(cfg)
    path = state / "lab1" / "secrets.json"
    path.chmod(0o644)
    load_or_create_secrets(cfg)
    assert _mode(path) == 0o600


def test_missing_secret_is_added_existing_kept(state):
    cfg = _cfg()
    s1 = load_or_create_secrets(cfg)
    path = state / "lab1" / "secrets.json"
    data = json.loads(path.read_text())
    del data["secrets"]["keepalived_auth_pass"]
    path.write_text(json.dumps(data))
    s2 = load_or_create_secrets(cfg)
    assert s2.db_app_password == s1.db_app_password
    assert s2.keepalived_auth_pass and "keepalived_auth_pass" in json.loads(path.read_text())["secrets"]


def test_damaged_file_names_file_not_content(state):
    cfg = _cfg()
    load_or_create_secrets(cfg)
    path = state / "lab1" / "secrets.json"
    path.write_text('{"secrets": "hunter2-not-json-object"')
    with pytest.raises(SecretsError) as exc:
        load_or_create_secrets(cfg)
    assert str(path) in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_repr_and_str_never_show_secrets(state):
    cfg = _cfg("ha")
    secrets, keys = ensure_lab_credentials(cfg)
    texts = [repr(secrets), str(secrets), repr(keys), str(keys), repr(keys.client), str(keys.client),
             repr(keys.host_keys), f"{secrets}", repr([secrets])]
    private_bits = [keys.client.private_openssh.splitlines()[1]] + [
        k.private_openssh.splitlines()[1] for k in keys.host_keys.values()]
    for text in texts:
        for value in secrets.values() + private_bits:
            assert value not in text


def test_keys_files_modes_and_formats(state):
    cfg = _cfg("ha")
    keys = load_or_create_keys(cfg)
    ssh = state / "lab1" / "ssh"
    assert _mode(ssh) == 0o700
    assert _mode(keys.client_key_path) == 0o600
    assert keys.client.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert keys.client.public_openssh.startswith("ssh-ed25519 ")
    assert set(keys.host_keys) == {n.name for n in cfg.nodes()}
    for name in keys.host_keys:
        assert _mode(ssh / "host_keys" / name) == 0o600
    assert _mode(keys.known_hosts_path) == 0o600
    # paramiko (what halab.lab.ssh uses) reads both files
    pkey = paramiko.Ed25519Key.from_private_key_file(str(keys.client_key_path))
    assert keys.client.public_openssh.split()[1] == pkey.get_base64()
    hk = paramiko.HostKeys(str(keys.known_hosts_path))
    for node in cfg.nodes():
        for host in (node.ip, cfg.domain_name(node)):
            entry = hk.lookup(host)
            assert entry is not None, host
            assert entry["ssh-ed25519"].get_base64() == keys.host_keys[node.name].public_openssh.split()[1]


def test_keys_stable_and_new_nodes_get_keys(state):
    keys1 = load_or_create_keys(_cfg("default"))
    keys2 = load_or_create_keys(_cfg("ha"))  # more nodes, same lab
    assert keys2.client == keys1.client
    for name, pair in keys1.host_keys.items():
        assert keys2.host_keys[name] == pair
    assert len(keys2.known_hosts_path.read_text().splitlines()) == len(_cfg("ha").nodes())


def test_generate_is_random():
    assert LabSecrets.generate() != LabSecrets.generate()
