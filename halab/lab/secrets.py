"""Per-lab secrets and SSH keys, generated once by halab and kept in the lab's state directory.

Layout under ``lab_state_dir(cfg.name)`` (directory 0700, every file holding a secret 0600)::

    secrets.json                  passwords, Erlang cookie (LabSecrets)
    ssh/id_ed25519                the lab's SSH client key (OpenSSH format), ssh/id_ed25519.pub
    ssh/host_keys/<node>          each node's ed25519 host key (OpenSSH format), <node>.pub
    ssh/known_hosts               written from the host keys: "<ip>,<domain> ssh-ed25519 ..." per node

Nothing here prints or logs; ``repr()``/``str()`` of every object holding a secret is redacted, so a
secret cannot leak through a traceback, a log line or a debugger's variable view by accident.
"""

from __future__ import annotations

import json
import secrets as _rng
import string
from dataclasses import dataclass, fields
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from halab.atomic import write_atomic
from halab.errors import HalabError
from halab.lab.config import LabConfig
from halab.paths import lab_state_dir

SECRETS_FILE = "secrets.json"
SECRETS_VERSION = 1

# Names that are not secret: the same in every lab, used by templates and probes.
DB_NAME = "halab"
DB_APP_USER = "halab"
DB_CHECK_USER = "clustercheck"  # local-only MariaDB user the Galera health endpoint uses
MQ_USER = "halab"
MQ_VHOST = "halab"
HAPROXY_STATS_USER = "halab"

_ALNUM = string.ascii_letters + string.digits


def _token(n: int, alphabet: str = _ALNUM) -> str:
    # Alphanumeric only: the values go into YAML, shell, SQL, INI and HAProxy/keepalived configs
    # unquoted, and must never need escaping there.
    return "".join(_rng.choice(alphabet) for _ in range(n))


class SecretsError(HalabError):
    """The lab's secrets or keys on disk are unreadable or damaged."""


@dataclass(frozen=True, repr=False)
class LabSecrets:
    db_root_password: str
    db_app_password: str
    db_check_password: str
    galera_sst_password: str
    mq_password: str
    erlang_cookie: str
    haproxy_stats_password: str
    keepalived_auth_pass: str  # VRRP PASS authentication uses only 8 characters

    # Non-secret companions, so a caller needs only this object to log in somewhere.
    db_name: str = DB_NAME
    db_app_user: str = DB_APP_USER
    db_check_user: str = DB_CHECK_USER
    mq_user: str = MQ_USER
    mq_vhost: str = MQ_VHOST
    haproxy_stats_user: str = HAPROXY_STATS_USER

    def __repr__(self) -> str:
        return "LabSecrets(<redacted>)"

    __str__ = __repr__

    @classmethod
    def generate(cls) -> LabSecrets:
        return cls(
            db_root_password=_token(32),
            db_app_password=_token(32),
            db_check_password=_token(32),
            galera_sst_password=_token(32),
            mq_password=_token(32),
            # RabbitMQ accepts any printable cookie; upper-case letters like the one it makes itself.
            erlang_cookie=_token(32, string.ascii_uppercase),
            haproxy_stats_password=_token(24),
            keepalived_auth_pass=_token(8),
        )

    def values(self) -> list[str]:
        """Every secret value (for tests and redaction filters)."""
        return [getattr(self, f.name) for f in fields(self) if f.name in _SECRET_FIELDS]


_SECRET_FIELDS = (
    "db_root_password", "db_app_password", "db_check_password", "galera_sst_password", "mq_password",
    "erlang_cookie", "haproxy_stats_password", "keepalived_auth_pass",
)


@dataclass(frozen=True, repr=False)
class SSHKeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----..."
    public_openssh: str  # "ssh-ed25519 AAAA... comment"

    def __repr__(self) -> str:
        return f"SSHKeyPair(public={self.public_openssh!r}, private=<redacted>)"

    __str__ = __repr__

    @classmethod
    def generate(cls, comment: str) -> SSHKeyPair:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        return cls(private, f"{public} {comment}")

    @classmethod
    def from_private(cls, private_openssh: str, comment: str) -> SSHKeyPair:
        key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an ed25519 key")
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        return cls(private_openssh, f"{public} {comment}")

    @property
    def public_key_only(self) -> str:
        """"ssh-ed25519 AAAA..." without the comment (known_hosts form)."""
        return " ".join(self.public_openssh.split()[:2])


@dataclass(frozen=True)
class LabKeys:
    client: SSHKeyPair
    client_key_path: Path  # private key file, 0600; give it to paramiko / ssh -i
    host_keys: dict[str, SSHKeyPair]  # node name -> host key pair
    known_hosts_path: Path

    def __repr__(self) -> str:
        return (f"LabKeys(client_key_path={str(self.client_key_path)!r}, "
                f"nodes={sorted(self.host_keys)!r}, known_hosts_path={str(self.known_hosts_path)!r})")

    __str__ = __repr__


# ---- files -------------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 from the first byte (never world-readable, even briefly)."""
    write_atomic(path, text, 0o600)


def _write_public(path: Path, text: str) -> None:
    write_atomic(path, text, 0o644)


def _read_private(path: Path) -> str:
    st = path.stat()
    if st.st_mode & 0o077:
        path.chmod(0o600)  # tighten what someone loosened; the content is still ours
    return path.read_text(encoding="utf-8")


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


# ---- secrets -----------------------------------------------------------------------------------


def secrets_path(cfg: LabConfig, state_dir: Path | None = None) -> Path:
    return (state_dir or lab_state_dir(cfg.name)) / SECRETS_FILE


def load_or_create_secrets(cfg: LabConfig, state_dir: Path | None = None) -> LabSecrets:
    """The lab's secrets: read from ``secrets.json``, generated (once) when absent.

    A file from an older halab that lacks a newer secret gets that secret added; existing values are
    never changed, because the running guests were configured with them.
    """
    base = _ensure_dir(state_dir or lab_state_dir(cfg.name))
    path = base / SECRETS_FILE
    fresh = LabSecrets.generate()
    if not path.exists():
        write_private(path, _dump_secrets(fresh))
        return fresh
    try:
        data = json.loads(_read_private(path))
        stored = data["secrets"]
        if not isinstance(stored, dict):
            raise TypeError("'secrets' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # The message names the file and the problem, never the content.
        raise SecretsError(
            f"{path}: cannot read the lab's secrets ({type(exc).__name__}). The running lab was "
            "configured with them; restore the file, or destroy the lab and remove the file to start over."
        ) from None
    values = {name: stored.get(name) for name in _SECRET_FIELDS}
    missing = [n for n, v in values.items() if not isinstance(v, str) or not v]
    for name in missing:
        values[name] = getattr(fresh, name)
    result = LabSecrets(**values)
    if missing:
        write_private(path, _dump_secrets(result))
    return result


def _dump_secrets(s: LabSecrets) -> str:
    body = {"version": SECRETS_VERSION, "secrets": {n: getattr(s, n) for n in _SECRET_FIELDS}}
    return json.dumps(body, indent=2) + "\n"


# ---- SSH keys ----------------------------------------------------------------------------------


def ssh_dir(cfg: LabConfig, state_dir: Path | None = None) -> Path:
    return (state_dir or lab_state_dir(cfg.name)) / "ssh"


def _load_or_create_pair(priv: Path, comment: str) -> SSHKeyPair:
    if priv.exists():
        try:
            pair = SSHKeyPair.from_private(_read_private(priv), comment)
        except (OSError, ValueError) as exc:
            raise SecretsError(
                f"{priv}: not a readable ed25519 OpenSSH private key ({type(exc).__name__}); remove it "
                "and recreate the lab's nodes to get a new one"
            ) from None
    else:
        pair = SSHKeyPair.generate(comment)
        write_private(priv, pair.private_openssh)
    pub = priv.with_name(priv.name + ".pub")
    if not pub.exists() or pub.read_text(encoding="utf-8").strip() != pair.public_openssh:
        _write_public(pub, pair.public_openssh + "\n")
    return pair


def known_hosts_text(cfg: LabConfig, host_keys: dict[str, SSHKeyPair]) -> str:
    """One line per node: ``<ip>,<lab>-<node> ssh-ed25519 AAAA...``."""
    lines = []
    for node in cfg.nodes():
        pair = host_keys[node.name]
        lines.append(f"{node.ip},{cfg.domain_name(node)} {pair.public_key_only}")
    return "\n".join(lines) + "\n"


def load_or_create_keys(cfg: LabConfig, state_dir: Path | None = None) -> LabKeys:
    """The lab's SSH client key and one host key per node (created when missing), and a
    ``known_hosts`` rewritten from them for the nodes the config has now."""
    base = _ensure_dir(ssh_dir(cfg, state_dir))
    hk_dir = _ensure_dir(base / "host_keys")
    client_path = base / "id_ed25519"
    client = _load_or_create_pair(client_path, f"halab@{cfg.name}")
    host_keys = {
        node.name: _load_or_create_pair(hk_dir / node.name, f"root@{cfg.domain_name(node)}")
        for node in cfg.nodes()
    }
    kh = base / "known_hosts"
    write_private(kh, known_hosts_text(cfg, host_keys))
    return LabKeys(client=client, client_key_path=client_path, host_keys=host_keys, known_hosts_path=kh)


def ensure_lab_credentials(cfg: LabConfig, state_dir: Path | None = None) -> tuple[LabSecrets, LabKeys]:
    """Both at once: what ``render_node`` needs."""
    return load_or_create_secrets(cfg, state_dir), load_or_create_keys(cfg, state_dir)
