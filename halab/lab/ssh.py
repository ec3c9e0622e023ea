"""SSH to lab nodes with strict host-key checking.

halab generates every node's host key and hands it over in the seed, so the known_hosts file is
written before the first connection and an unknown or changed key is always refused.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from halab.errors import HalabError

# paramiko logs every failed handshake with a traceback through logging's last-resort handler;
# halab reports those failures itself, as SSHUnavailable.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class HostKeyMismatch(HalabError):
    """The node presented a host key halab did not give it: possible man in the middle."""


class SSHUnavailable(HalabError):
    """The node did not accept SSH within the deadline."""


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise HostKeyMismatch(
            f"{hostname} presented an unknown {key.get_name()} host key "
            f"(fingerprint {key.fingerprint}); refusing to connect. halab gave this node its host key, "
            "so a different key means the node was not built by this lab, or someone is in the middle."
        )


class ShellSession:
    """Lines to a remote bash and its answers, one line each (see NodeSSH.shell)."""

    def __init__(self, host: str, channel: paramiko.Channel):
        self.host, self._chan, self._buf = host, channel, b""

    def ask(self, line: str) -> str:
        try:
            self._chan.sendall((line.rstrip("\n") + "\n").encode())
            while b"\n" not in self._buf:
                data = self._chan.recv(4096)
                if not data:
                    raise SSHUnavailable(f"shell on {self.host} closed")
                self._buf += data
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            raise SSHUnavailable(f"shell on {self.host} failed: {exc}") from None
        answer, _, self._buf = self._buf.partition(b"\n")
        return answer.decode(errors="replace").strip()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.close()


# The SSH handshake (banner, key exchange, authentication) after the TCP connection is up. A node
# that accepted the connection is alive; on a busy TCG guest its sshd can take many seconds for the
# key exchange. paramiko's `timeout` bounds the TCP connect *and* the key exchange, and when the
# exchange outlasts it paramiko goes on silently to fail with "No existing session": `status` saw
# every mq node that way while they answered ssh(1) in 10 s. So the two get their own bounds.
HANDSHAKE_TIMEOUT_S = 30.0


_GUEST_BOUND = re.compile(r"^timeout\s+(\d+(?:\.\d+)?)s?\s")


def answer_wait_s(command: str, default: float = 30.0, margin: float = 15.0) -> float:
    """How long to wait for a command's answer: a command bounded on the guest (``timeout N cmd``)
    gets N plus a margin for SSH on a starved vCPU, so the guest's bound, not ours, ends it and its
    own message comes back; any other command gets ``default``."""
    m = _GUEST_BOUND.match(command)
    return max(default, float(m.group(1)) + margin) if m else default


class NodeSSH:
    """Runs commands on lab nodes as root with the lab's key.

    ``connect_timeout`` bounds the TCP connect only (a powered-off or paused node is seen quickly);
    ``handshake_timeout`` the SSH handshake once a node answered."""

    def __init__(self, key_file: Path, known_hosts: Path, connect_timeout: float = 5.0,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S, port: int = 22):
        self.key_file = Path(key_file)
        self.known_hosts = Path(known_hosts)
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.port = port
        self._clients: dict[str, paramiko.SSHClient] = {}
        # Probe threads and fault actions share one NodeSSH: one lock per host guards its client.
        self._guard = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}

    def _client(self, host: str) -> paramiko.SSHClient:
        with self._guard:
            lock = self._host_locks.setdefault(host, threading.Lock())
        with lock:
            client = self._clients.get(host)
            transport = client.get_transport() if client is not None else None
            if client is None or transport is None or not transport.is_active():
                client = self._connect(host)
                self._clients[host] = client
            return client

    def _connect(self, host: str) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_Refuse())
        try:
            sock = socket.create_connection((host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            client.close()
            raise SSHUnavailable(f"cannot reach {host} over SSH: {exc}") from None
        started = time.monotonic()
        try:
            client.connect(
                host, port=self.port, sock=sock, username="root", key_filename=str(self.key_file),
                timeout=self.handshake_timeout, banner_timeout=self.handshake_timeout,
                auth_timeout=self.handshake_timeout, allow_agent=False, look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"{host} presented a {exc.key.get_name()} host key "
                f"(fingerprint {exc.key.fingerprint}) that "
                "differs from the one halab generated for it; refusing to connect "
                "(possible man in the middle)"
            ) from None
        except HostKeyMismatch:
            client.close()
            raise
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            sock.close()
            # paramiko words a handshake that outlasted its bound as "No existing session" (key
            # exchange) or "Error reading SSH protocol banner" (banner): the clock says which it was
            outlasted = ("No existing session" in str(exc)
                         or time.monotonic() - started >= self.handshake_timeout * 0.95)
            why = f"did not finish it within {self.handshake_timeout:g} s" if outlasted else f"failed: {exc}"
            raise SSHUnavailable(f"{host} answered on port {self.port}, but the SSH handshake {why}"
                                 ) from None
        return client

    def run(self, host: str, command: str, timeout: float = 30.0) -> CommandResult:
        """Run a command; reuses one connection per host and reconnects once if it went stale.

        ``timeout`` bounds the silence while waiting for the command's output. A command that
        outlasts it is *not* run again: the node answered, the command is slow (a second
        rabbitmqctl on a starved guest only doubles the load that made the first one slow)."""
        for attempt in (1, 2):
            client = self._client(host)
            chan: paramiko.Channel | None = None
            try:
                _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
                chan = stdout.channel
                out = stdout.read().decode(errors="replace")
                err = stderr.read().decode(errors="replace")
                rc = stdout.channel.recv_exit_status()
                return CommandResult(rc, out, err)
            except TimeoutError:
                if chan is None:  # opening the channel timed out: the connection is stale
                    self._drop(host, client)
                    if attempt == 2:
                        raise SSHUnavailable(f"{host} did not open a command channel within "
                                             f"{timeout:g} s") from None
                    continue
                with contextlib.suppress(Exception):
                    chan.close()
                shown = textwrap.shorten(command, 60, placeholder=" …")
                raise SSHUnavailable(f"{host}: `{shown}` gave no answer within {timeout:g} s") from None
            except (OSError, paramiko.SSHException, EOFError) as exc:
                self._drop(host, client)
                if attempt == 2:
                    raise SSHUnavailable(f"command on {host} failed: {exc or type(exc).__name__}"
                                         ) from None
        raise AssertionError("unreachable")

    def _drop(self, host: str, client: paramiko.SSHClient) -> None:
        if self._clients.get(host) is client:
            self._clients.pop(host, None)
        client.close()

    def shell(self, host: str, timeout: float = 30.0) -> ShellSession:
        """One long-lived `bash` on the node: each line sent is answered without a new process
        (e.g. reading the clock to the microsecond with bash's $EPOCHREALTIME)."""
        client = self._client(host)
        try:
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("no transport")
            chan = transport.open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.exec_command("exec bash --norc --noprofile")
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            self._clients.pop(host, None)
            raise SSHUnavailable(f"cannot open a shell on {host}: {exc}") from None
        return ShellSession(host, chan)

    def wait_ready(self, host: str, deadline: float, poll: float = 2.0) -> None:
        """Wait until SSH answers with the expected host key (HostKeyMismatch is never retried)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.run(host, "true", timeout=10)
                return
            except SSHUnavailable as exc:
                last = exc
                time.sleep(poll)
        raise SSHUnavailable(f"{host} did not accept SSH in time: {last}")

    def close(self) -> None:
        with self._guard:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
