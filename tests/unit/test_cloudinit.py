"""Per-node NoCloud seeds: content, least-privilege secrets, determinism, and validation with the
real tools (`cloud-init schema`, `cloud-init devel net-convert`, `bash -n`) where installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from halab.lab.cloudinit import (
    READY_MARKER,
    parse_ready,
    render_all,
    render_node,
    role_services,
    templates_dir,
    timeout_scale,
)
from halab.lab.config import parse_config
from halab.lab.secrets import ensure_lab_credentials

PROFILES = ("default", "ha")
PRESETS = ("fast", "kolla")


def _cfg(profile: str, preset: str = "fast"):
    return parse_config(f"name: t1\nprofile: {profile}\nhaproxy:\n  preset: {preset}\n", host_mem_mib=1 << 20)


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    return ensure_lab_credentials(_cfg("ha"), state)  # ha has every node the default lab has


@pytest.fixture(scope="module")
def seeds(creds):
    secrets, keys = creds
    return {(p, pre): render_all(_cfg(p, pre), secrets, keys) for p in PROFILES for pre in PRESETS}


def _ud(seed) -> dict:
    assert seed.user_data.startswith("#cloud-config\n")
    return yaml.safe_load(seed.user_data)


def _files(seed) -> dict[str, dict]:
    return {f["path"]: f for f in _ud(seed)["write_files"]}


def test_user_data_basics(seeds, creds):
    secrets, keys = creds
    for (profile, _), by_node in seeds.items():
        cfg = _cfg(profile)
        assert set(by_node) == {n.name for n in cfg.nodes()}
        for name, seed in by_node.items():
            ud = _ud(seed)
            assert ud["hostname"] == name
            assert ud["disable_root"] is False and ud["ssh_pwauth"] is False
            assert ud["ssh_authorized_keys"] == [keys.client.public_openssh]
            assert ud["ssh_deletekeys"] is True
            assert ud["ssh_keys"]["ed25519_private"] == keys.host_keys[name].private_openssh
            assert ud["ssh_keys"]["ed25519_public"] == keys.host_keys[name].public_openssh
            assert ud["runcmd"] == [["/usr/local/lib/halab/setup.sh"]]
            files = _files(seed)
            assert files["/usr/local/lib/halab/setup.sh"]["permissions"] == "0755"
            assert READY_MARKER.rsplit("/", 1)[0] in files["/usr/local/lib/halab/lib.sh"]["content"]
            for f in files.values():
                assert "{{" not in f["content"] or f["path"].endswith(".py"), f["path"]
            meta = yaml.safe_load(seed.meta_data)
            assert meta == {"instance-id": seed.instance_id, "local-hostname": name}
            assert "<contents redacted>" in repr(seed)
            for value in secrets.values():
                assert value not in repr(seed)


def test_network_config(seeds):
    for (profile, _), by_node in seeds.items():
        cfg = _cfg(profile)
        for node in cfg.nodes():
            nc = yaml.safe_load(by_node[node.name].network_config)
            eth = nc["ethernets"]["eth0"]
            assert nc["version"] == 2
            assert eth["match"] == {"macaddress": node.mac}
            assert eth["set-name"] == "eth0"
            assert eth["addresses"] == [f"{node.ip}/24"]
            assert eth["routes"] == [{"to": "0.0.0.0/0", "via": cfg.gateway}]
            assert eth["nameservers"] == {"addresses": [cfg.gateway]}


def test_secrets_only_where_needed(seeds, creds):
    secrets, _ = creds
    need = {
        "haproxy": {secrets.haproxy_stats_password, secrets.keepalived_auth_pass},
        "api": {secrets.db_app_password, secrets.mq_password},
        "db": {secrets.db_root_password, secrets.db_app_password, secrets.db_check_password,
               secrets.galera_sst_password},
        "mq": {secrets.mq_password, secrets.erlang_cookie},
    }
    cfg = _cfg("ha")
    for node in cfg.nodes():
        text = seeds[("ha", "fast")][node.name].user_data
        for value in secrets.values():
            if value in need[node.role]:
                assert value in text, (node.name, "missing a secret it needs")
            else:
                assert value not in text, (node.name, "has a secret it does not need")


def test_services_enabled_are_the_roles_own(seeds):
    for (profile, _), by_node in seeds.items():
        cfg = _cfg(profile)
        for node in cfg.nodes():
            setup = _files(by_node[node.name])["/usr/local/lib/halab/setup.sh"]["content"]
            setup = setup.replace('"ha" = "ha"', "true").replace('"default" = "ha"', "false")
            enabled = {u for line in re.findall(r"\bhalab_enable ((?:[\w-]+\.service ?)+)", setup)
                       for u in re.findall(r"([\w-]+)\.service", line)}
            # `systemctl enable` runs perl update-rc.d for units with SysV scripts: slow under TCG
            code = "\n".join(line for line in setup.splitlines() if not line.lstrip().startswith("#"))
            assert "systemctl enable" not in code and "daemon-reload" not in code, node.name
            # the ha branch of a default setup script is dead code: drop what a false branch enables
            if profile == "default":
                enabled -= {"keepalived", "halab-galera", "halab-clustercheck"}
            else:
                enabled.discard("mariadb")  # the default-profile branch
            assert enabled == set(role_services(cfg, node.role)), (profile, node.name, enabled)


def test_profile_specific_files(seeds):
    ha, default = seeds[("ha", "fast")], seeds[("default", "fast")]
    assert "/etc/keepalived/keepalived.conf" in _files(ha["haproxy-1"])
    assert "/etc/keepalived/keepalived.conf" not in _files(default["haproxy-1"])
    kc1 = _files(ha["haproxy-1"])["/etc/keepalived/keepalived.conf"]["content"]
    kc2 = _files(ha["haproxy-2"])["/etc/keepalived/keepalived.conf"]["content"]
    cfg = _cfg("ha")
    assert f"{cfg.vip}/24 dev eth0" in kc1
    assert "priority 150" in kc1 and "priority 140" in kc2
    assert f"unicast_peer {{\n        {cfg.node('haproxy-2').ip}\n" in kc1
    galera = _files(ha["db-2"])["/etc/mysql/mariadb.conf.d/91-halab-galera.cnf"]["content"]
    dbs = ",".join(n.ip for n in cfg.nodes() if n.role == "db")
    assert f"wsrep_cluster_address = gcomm://{dbs}" in galera
    assert "/etc/mysql/mariadb.conf.d/91-halab-galera.cnf" not in _files(default["db-1"])
    api_ha = json.loads(_files(ha["api-1"])["/etc/halab/api.json"]["content"])
    api_def = json.loads(_files(default["api-1"])["/etc/halab/api.json"]["content"])
    assert api_ha["db"]["host"] == cfg.vip
    assert api_def["db"]["host"] == _cfg("default").node("db-1").ip
    assert len(api_ha["mq"]["hosts"]) == 3 and len(api_def["mq"]["hosts"]) == 1


def test_instance_id_deterministic_and_follows_changes(seeds, creds):
    secrets, keys = creds
    again = render_all(_cfg("ha", "fast"), secrets, keys)
    fast, kolla = seeds[("ha", "fast")], seeds[("ha", "kolla")]
    for name, seed in fast.items():
        assert again[name].instance_id == seed.instance_id
        assert again[name].user_data == seed.user_data
        changed = fast[name].instance_id != kolla[name].instance_id
        assert changed == name.startswith("haproxy-"), name  # only haproxy.cfg depends on the preset
    assert render_node(_cfg("ha"), "db-1", secrets, keys).instance_id == fast["db-1"].instance_id


def test_parse_ready():
    info = parse_ready("instance-id=t1-api-1-abc\nnode=api-1\nrole=api\nfinished=2026-01-01T00:00:00Z\n"
                       "uptime=81.52\n")
    assert (info.instance_id, info.node, info.role, info.uptime_s) == ("t1-api-1-abc", "api-1", "api", 81.52)


def test_shell_scripts_parse(seeds):
    bash = shutil.which("bash")
    assert bash
    for by_node in seeds.values():
        for seed in by_node.values():
            for path, f in _files(seed).items():
                if path.endswith(".sh"):
                    r = subprocess.run([bash, "-n"], input=f["content"], text=True, capture_output=True)
                    assert r.returncode == 0, (seed.node, path, r.stderr)


def test_python_files_compile(seeds):
    for by_node in seeds.values():
        for seed in by_node.values():
            for path, f in _files(seed).items():
                if path.endswith(".py"):
                    compile(f["content"], path, "exec")


def _cloud_init() -> str:
    exe = shutil.which("cloud-init")
    if not exe:
        pytest.skip("SKIPPED LOUDLY: cloud-init is not installed; user-data was NOT validated with "
                    "`cloud-init schema` (setup.sh installs it)")
    return exe


def test_every_user_data_passes_cloud_init_schema(seeds, tmp_path):
    exe = _cloud_init()
    # Identical user-data (e.g. non-haproxy nodes under both presets) is checked once.
    by_content: dict[str, list[str]] = {}
    for (profile, preset), by_node in seeds.items():
        for name, seed in by_node.items():
            by_content.setdefault(seed.user_data, []).append(f"{profile}/{preset}/{name}")
    assert sum(len(v) for v in by_content.values()) == 2 * (7 + 12)
    jobs = []
    for i, (text, labels) in enumerate(by_content.items()):
        path = tmp_path / f"user-data-{i}.yaml"
        path.write_text(text)
        jobs.append((path, labels))

    def check(job):
        path, labels = job
        r = subprocess.run([exe, "schema", "--config-file", str(path)], capture_output=True, text=True,
                           timeout=60)
        return labels, r.returncode, r.stdout + r.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, jobs))
    bad = [(labels, out) for labels, rc, out in results if rc != 0 or "Valid cloud-config" not in out]
    assert not bad, bad


def test_network_config_converts_with_cloud_init(seeds, tmp_path):
    exe = _cloud_init()
    seed = seeds[("ha", "fast")]["db-2"]
    src = tmp_path / "network-config"
    src.write_text(seed.network_config)
    out = tmp_path / "out"
    r = subprocess.run([exe, "devel", "net-convert", "-p", str(src), "-k", "yaml", "-d", str(out),
                        "-D", "debian", "-O", "networkd"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rendered = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    node = _cfg("ha").node("db-2")
    assert f"Address={node.ip}/24" in rendered
    assert f"MACAddress={node.mac}" in rendered
    assert "Gateway=10.77.0.1" in rendered


def test_keepalived_accepts_config(seeds, tmp_path):
    exe = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    if not exe:
        pytest.skip("SKIPPED LOUDLY: keepalived is not installed; keepalived.conf was NOT checked with "
                    "`keepalived -t` (apt-get install keepalived)")
    for name in ("haproxy-1", "haproxy-2"):
        text = _files(seeds[("ha", "fast")][name])["/etc/keepalived/keepalived.conf"]["content"]
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        r = subprocess.run([exe, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (name, r.stdout + r.stderr)


@pytest.mark.parametrize("profile", PROFILES)
def test_mariadb_accepts_options(seeds, tmp_path, profile):
    exe = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/sbin")
    if not exe:
        pytest.skip("SKIPPED LOUDLY: mariadbd is not installed; the MariaDB/Galera options were NOT checked "
                    "(apt-get install mariadb-server)")
    files = _files(seeds[(profile, "fast")]["db-1"])
    text = "".join(f["content"] for p, f in files.items() if p.endswith(".cnf"))
    conf = tmp_path / "my.cnf"
    conf.write_text(text)
    # --help --verbose parses every option and fails on an unknown one, without starting the server.
    r = subprocess.run([exe, f"--defaults-file={conf}", "--help", "--verbose", "--user=root"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "unknown variable" not in r.stderr


# The cloud-init module that acts on each top-level user-data key halab writes.
_KEY_MODULE = {
    "hostname": "set_hostname", "preserve_hostname": "set_hostname", "manage_etc_hosts": None,
    "users": "users-groups", "disable_root": "ssh", "ssh_pwauth": "set-passwords",
    "ssh_authorized_keys": "ssh", "ssh_deletekeys": "ssh", "ssh_genkeytypes": "ssh", "ssh_keys": "ssh",
    "growpart": None,  # no partition table on the built-in image: growpart stays out of the image
    "write_files": "write-files", "bootcmd": "bootcmd", "runcmd": "runcmd", "final_message": "final-message",
}


def test_image_runs_every_cloud_init_module_the_user_data_needs(seeds):
    from halab.lab import image

    cfg = yaml.safe_load(image.CLOUD_CFG)
    modules = {*cfg["cloud_init_modules"], *cfg["cloud_config_modules"], *cfg["cloud_final_modules"]}
    assert "scripts-user" in modules  # runs what runcmd wrote
    assert "locale" not in modules  # failed on every boot (no en_US.UTF-8 in minbase)
    assert cfg["datasource_list"] == ["NoCloud", "None"]
    for by_node in seeds.values():
        for seed in by_node.values():
            for key in _ud(seed):
                assert key in _KEY_MODULE, f"user-data key {key!r}: which image module handles it?"
                if _KEY_MODULE[key]:
                    assert _KEY_MODULE[key] in modules, (key, _KEY_MODULE[key])


def test_halab_enable_makes_the_links_systemctl_enable_makes(tmp_path):
    """halab_enable/halab_disable (common/lib.sh) on a fake unit tree: WantedBy, RequiredBy and
    Alias links, a unit in /etc wins over /lib, a missing unit is an error."""
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "mariadb.service").write_text(
        "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\nAlias=mysql.service mysqld.service\n"
        "[Service]\nExecStart=/bin/true\n")
    (lib / "haproxy.service").write_text("[Install]\nWantedBy = multi-user.target other.target\n"
                                         "RequiredBy=x.target\n")
    (etc / "halab-api.service").write_text("[Service]\nExecStart=/bin/true\n[Install]\n"
                                           "WantedBy=multi-user.target\n")
    lib_sh = templates_dir() / "common" / "lib.sh"
    script = (f"set -Eeuo pipefail\n. {lib_sh}\n"
              "halab_enable mariadb.service haproxy.service halab-api.service\n"
              "find \"$HALAB_UNIT_ETC\" -type l -printf '%P -> %l\\n' | sort\n"
              "echo --\nhalab_disable mariadb.service\n"
              "find \"$HALAB_UNIT_ETC\" -type l -printf '%P\\n' | sort\n"
              "echo --\nhalab_enable nosuch.service || echo failed=$?\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HALAB_UNIT_ETC": str(etc), "HALAB_UNIT_LIB": str(lib)})
    assert r.returncode == 0, r.stderr
    enabled, after, missing = r.stdout.split("--\n")
    assert enabled.splitlines() == [
        f"multi-user.target.wants/halab-api.service -> {etc}/halab-api.service",
        f"multi-user.target.wants/haproxy.service -> {lib}/haproxy.service",
        f"multi-user.target.wants/mariadb.service -> {lib}/mariadb.service",
        f"mysql.service -> {lib}/mariadb.service",
        f"mysqld.service -> {lib}/mariadb.service",
        f"other.target.wants/haproxy.service -> {lib}/haproxy.service",
        f"x.target.requires/haproxy.service -> {lib}/haproxy.service",
    ]
    assert after.splitlines() == ["multi-user.target.wants/halab-api.service",
                                  "multi-user.target.wants/haproxy.service",
                                  "other.target.wants/haproxy.service", "x.target.requires/haproxy.service"]
    assert missing.strip() == "failed=1"


def test_rabbitmq_definitions_carry_the_lab_user_with_a_verifiable_hash(seeds, creds):
    """RabbitMQ imports these at boot: the hash must check against the lab's password (salt first,
    then sha256(salt + password)), the file must be readable by rabbitmq only, and re-rendering
    must give the same bytes (else Terraform would replace mq-1 on every `up`)."""
    import base64
    import hashlib

    secrets, keys = creds
    for profile in PROFILES:
        f = _files(seeds[(profile, "fast")]["mq-1"])["/etc/rabbitmq/definitions.json"]
        assert (f["owner"], f["permissions"]) == ("root:rabbitmq", "0640")
        defs = json.loads(f["content"])
        (user,) = defs["users"]
        assert user["name"] == secrets.mq_user
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert digest == hashlib.sha256(salt + secrets.mq_password.encode()).digest()
        assert hashlib.sha256(salt + b"wrong").digest() != digest
        assert defs["vhosts"] == [{"name": secrets.mq_vhost}]
        assert defs["permissions"][0]["user"] == secrets.mq_user
        assert secrets.mq_password not in f["content"]
    again = render_all(_cfg("default"), secrets, keys)["mq-1"].user_data
    assert again == seeds[("default", "fast")]["mq-1"].user_data
    assert "load_definitions = /etc/rabbitmq/definitions.json" in \
        _files(seeds[("default", "fast")]["mq-1"])["/etc/rabbitmq/rabbitmq.conf"]["content"]


def test_mq_starts_rabbitmq_from_the_early_hook_only(seeds):
    """bootcmd (right after write_files) runs the role's early hook: mq nodes install the lab's
    cookie and start RabbitMQ there; no other role gets a bootcmd, and setup.sh refuses to go on if
    the hook never ran (an image without bootcmd in its module list)."""
    for by_node in seeds.values():
        for name, seed in by_node.items():
            ud = _ud(seed)
            if name.startswith("mq-"):
                assert ud["bootcmd"] == [["/usr/local/lib/halab/early.sh"]]
                early = _files(seed)["/usr/local/lib/halab/early.sh"]
                assert early["permissions"] == "0755"
                assert "/etc/halab/erlang.cookie" in early["content"]
                assert "systemctl start --no-block rabbitmq-server" in early["content"]
                # erl-guard.sh goes in place of erl before RabbitMQ starts, copied as it is
                guard = _files(seed)["/usr/local/lib/halab/erl-guard.sh"]
                assert guard["content"] == (templates_dir() / "mq/erl-guard.sh").read_text()
                assert early["content"].index("/usr/local/lib/halab/erl-guard.sh \"$ERL\"") \
                    < early["content"].index("systemctl start --no-block rabbitmq-server")
                setup = _files(seed)["/usr/local/lib/halab/setup.sh"]["content"]
                assert "test -f /var/lib/halab/mq-initialised" in setup
            else:
                assert "bootcmd" not in ud


def test_option_files_with_secrets_are_readable_by_their_daemon_only(seeds):
    """mariadbd (user mysql) silently skips an option file it cannot read: the Galera settings
    must be group mysql, not world-readable (they hold the SST password)."""
    for by_node in (seeds[("ha", "fast")],):
        for name, seed in by_node.items():
            if name.startswith("db-"):
                f = _files(seed)["/etc/mysql/mariadb.conf.d/91-halab-galera.cnf"]
                assert (f["owner"], f["permissions"]) == ("root:mysql", "0640")


def test_a_failed_mq_join_retries_and_never_leaves_the_app_stopped(seeds, tmp_path):
    """join_first of the rendered mq-2 setup, with a rabbitmqctl whose join_cluster always fails
    (the Erlang link to mq-1 timing out under TCG): it tries three times, then starts the app again,
    so the setup's re-run finds a serving node instead of waiting for an AMQP port that never opens."""
    setup = _files(seeds[("ha", "fast")]["mq-2"])["/usr/local/lib/halab/setup.sh"]["content"]
    func = re.search(r"^join_first\(\) \{\n.*?^\}\n", setup, re.S | re.M).group(0)
    member = re.search(r"^is_member_of_first\(\).*\n", setup, re.M).group(0)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "rabbitmqctl").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'case "$*" in *join_cluster*) exit 69;; *cluster_status*) echo "rabbit@mq-2"; exit 0;; esac\n')
    (bin_dir / "rabbitmqctl").chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/sh\n")
    (bin_dir / "sleep").chmod(0o755)
    script = (f'FIRST=rabbit@mq-1\nCLUSTER_FILE={tmp_path}/no-such-file\n{member}{func}'
              'join_first; echo "rc=$?"\n')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30)
    calls = [c.replace("-q ", "") for c in log.read_text().split("\n") if c]
    assert "rc=69" in out.stdout, out
    assert [c for c in calls if c.startswith("join_cluster")] == ["join_cluster rabbit@mq-1"] * 3
    assert calls[-1] == "start_app", calls


def _join_first_script(seeds, cluster_file):
    setup = _files(seeds[("ha", "fast")]["mq-2"])["/usr/local/lib/halab/setup.sh"]["content"]
    func = re.search(r"^join_first\(\) \{\n.*?^\}\n", setup, re.S | re.M).group(0)
    member = re.search(r"^is_member_of_first\(\).*\n", setup, re.M).group(0)
    return (f"FIRST=rabbit@mq-1\nCLUSTER_FILE={cluster_file}\nJOINED_BY_HAND=0\n{member}{func}"
            'join_first; echo "rc=$? by_hand=$JOINED_BY_HAND"\n')


def test_a_node_that_peer_discovery_clustered_runs_no_rabbitmqctl(seeds, tmp_path):
    """mq-2's server joined mq-1 at first boot (RabbitMQ's own record says so): join_first asks no
    Erlang VM (each rabbitmqctl is 10-55 s of a TCG vCPU). A record that lists only itself (discovery
    gave up and it started standalone) is joined by hand, with rabbitmqctl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "rabbitmqctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexit 0\n')
    (bin_dir / "rabbitmqctl").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    clustered = tmp_path / "clustered.config"
    clustered.write_text("{['rabbit@mq-1','rabbit@mq-2'],['rabbit@mq-1','rabbit@mq-2']}.\n")
    out = subprocess.run(["bash", "-c", _join_first_script(seeds, clustered)], capture_output=True,
                         text=True, env=env, timeout=30)
    assert "rc=0 by_hand=0" in out.stdout, out
    assert not log.exists(), log.read_text()
    alone = tmp_path / "alone.config"
    alone.write_text("{['rabbit@mq-2'],['rabbit@mq-2']}.\n")
    out = subprocess.run(["bash", "-c", _join_first_script(seeds, alone)], capture_output=True,
                         text=True, env=env, timeout=30)
    assert "rc=0 by_hand=1" in out.stdout, out
    calls = [c.replace("-q ", "") for c in log.read_text().split("\n") if c]
    assert calls == ["stop_app", "reset", "join_cluster rabbit@mq-1", "start_app"], calls


def test_mq_cluster_forms_by_peer_discovery_from_the_first_node(seeds):
    """ha: the first mq node lists only itself (it starts the cluster at once, no wait), every other
    one lists the first and retries long enough for a TCG boot of it; one broker has no discovery."""
    def conf(profile, node):
        return _files(seeds[(profile, "fast")][node])["/etc/rabbitmq/rabbitmq.conf"]["content"]

    for node in ("mq-1", "mq-2", "mq-3"):
        lines = dict(ln.split(" = ", 1) for ln in conf("ha", node).splitlines()
                     if ln.startswith("cluster_formation."))
        assert lines["cluster_formation.peer_discovery_backend"] == "classic_config"
        assert [k for k in lines if k.startswith("cluster_formation.classic_config.nodes.")] == \
            ["cluster_formation.classic_config.nodes.1"], lines
        assert lines["cluster_formation.classic_config.nodes.1"] == "rabbit@mq-1"
        waited_s = int(lines["cluster_formation.discovery_retry_limit"]) * \
            int(lines["cluster_formation.discovery_retry_interval"]) / 1000
        # as long as the lab's other waits (mq-1's Erlang VM took 5 min to serve in a TCG wave), but
        # ending before systemd's 10 min start timeout kills the waiting server
        assert min(60 * timeout_scale(_cfg("ha")), 300) <= waited_s < 600, lines
    assert "cluster_formation" not in conf("default", "mq-1")
