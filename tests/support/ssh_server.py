"""A real SSH server (paramiko's server side) on loopback, for testing halab's SSH client against
the handshake timings of a busy TCG guest without booting one."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import paramiko

EXEC_REPLY_GRACE_S = 0.5


class _Interface(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey, commands: list[bytes]):
        self.client_key = client_key
        self.commands = commands
        self.exec_done = threading.Event()

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = username == "root" and key.get_base64() == self.client_key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_exec_request(self, channel, command):
        # paramiko sends the request's success reply only after this returns: output and close
        # sent at once can overtake it, and the client then sees "Channel closed." (CI on stop 24).
        # sshd replies first, so the answer waits until the reply is surely out.
        self.commands.append(command)

        def answer():
            time.sleep(EXEC_REPLY_GRACE_S)
            if command.startswith(b"sleep "):  # a slow command: silent for that long
                time.sleep(float(command.split()[1]))
            try:
                channel.sendall(b"ran: " + command + b"\n")
                channel.send_exit_status(0)
            except OSError:  # the client gave up and closed the channel
                return
            with contextlib.suppress(OSError):
                channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


class SlowHandshakeSSHServer:
    """Accepts TCP at once, then starts SSH only after ``handshake_delay_s`` (what a guest's sshd
    does while the guest's vCPU is starved). Every command answers ``ran: COMMAND`` with rc 0
    (``sleep N``: after N s of silence).
    Writes the client key and a known_hosts naming this server's host key into ``directory``."""

    def __init__(self, directory: Path, handshake_delay_s: float = 0.0):
        self.delay = handshake_delay_s
        self.host_key = paramiko.RSAKey.generate(2048)
        self.client_key = paramiko.RSAKey.generate(2048)
        self.key_file = directory / "id_rsa"
        self.client_key.write_private_key_file(str(self.key_file))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key.get_name()} "
                                    f"{self.host_key.get_base64()}\n")
        self._transports: list[paramiko.Transport] = []
        self.commands: list[bytes] = []  # every command the server was asked to run, in order
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        time.sleep(self.delay)
        t = paramiko.Transport(conn)
        t.add_server_key(self.host_key)
        self._transports.append(t)
        try:
            t.start_server(server=_Interface(self.client_key, self.commands))
        except (paramiko.SSHException, EOFError, OSError):
            return
        while t.is_active() and not self._stop.is_set():
            chan = t.accept(0.2)
            if chan is None:
                continue

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._transports:
            t.close()
