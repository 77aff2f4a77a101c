"""One paramiko connection to the login node, resolved through the user's ~/.ssh/config.

Everything the router does on the cluster crosses this one connection. Commands are argv
lists joined with ``shlex.join``; prompts travel on stdin only. ``ssh_transport`` builds the
mailbox operations on top of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paramiko

from codeswarm.config import SshConfig
from codeswarm.errors import BackendError
from codeswarm.protocol import errors

log = logging.getLogger(__name__)
SFTP_ERRORS = (OSError, EOFError, paramiko.SSHException)
# Login nodes often allow 10 sessions per connection (sshd MaxSessions); stay under it.
MAX_CHANNELS = 8


@dataclass(frozen=True)
class Endpoint:
    """Where an ssh_config alias points, with what ssh itself would use to log in."""

    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    known_hosts: tuple[str, ...]
    proxy_jump: str | None


def resolve(alias: str, settings: SshConfig) -> Endpoint:
    """Resolve ``alias`` through the ssh_config file, as ``ssh <alias>`` would."""
    found = paramiko.SSHConfig()
    path = Path(os.path.expanduser(settings.ssh_config))
    if path.exists():
        found = paramiko.SSHConfig.from_path(str(path))
    entry = found.lookup(alias)
    identities = [settings.identity_file] if settings.identity_file else []
    identities += entry.get("identityfile", [])
    known = entry.get("userknownhostsfile", settings.known_hosts).split()
    return Endpoint(
        hostname=entry.get("hostname", alias),
        port=int(entry.get("port", 22)),
        user=entry.get("user", os.environ.get("USER", "root")),
        identity_files=tuple(os.path.expanduser(p) for p in identities),
        known_hosts=tuple(os.path.expanduser(p) for p in known),
        proxy_jump=entry.get("proxyjump"),
    )


def parse_jump(value: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` of a ProxyJump; several hops are refused with a clear error."""
    if "," in value:
        raise BackendError(
            f"ProxyJump {value!r} has several hops; codeswarm follows one. Put the chain in the "
            "jump host's own ssh_config entry instead.",
            code=errors.SSH,
        )
    user, _, rest = value.rpartition("@")
    host, _, port = rest.partition(":")
    return user or None, host, int(port) if port.isdigit() else None


class SSHConnection:
    """A reconnecting SSH client; its methods are safe to call from many actor threads."""

    def __init__(self, settings: SshConfig) -> None:
        if not settings.login_alias:
            raise BackendError("ssh.login_alias is not set in the config")
        self.settings = settings
        self.alias = settings.login_alias
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)

    def _open_client(self, endpoint: Endpoint, sock: Any) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            for path in endpoint.known_hosts:
                if os.path.exists(path):
                    client.load_host_keys(path)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            if sock is None:
                sock = socket.create_connection(
                    (endpoint.hostname, endpoint.port), self.settings.connect_timeout_seconds
                )
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                endpoint.hostname,
                endpoint.port,
                username=endpoint.user,
                key_filename=list(endpoint.identity_files) or None,
                sock=sock,
                timeout=self.settings.connect_timeout_seconds,
                banner_timeout=self.settings.connect_timeout_seconds,
                auth_timeout=self.settings.connect_timeout_seconds,
                allow_agent=True,
                look_for_keys=not endpoint.identity_files,
            )
        except BaseException:
            # A refused host key or login leaves paramiko's transport thread and socket open;
            # retries would pile up half-open sessions until sshd's MaxStartups drops logins.
            client.close()
            if sock is not None:
                sock.close()
            raise
        transport = client.get_transport()
        if transport is not None and self.settings.keepalive_seconds:
            transport.set_keepalive(int(self.settings.keepalive_seconds))
        return client

    def _endpoints(self) -> tuple[Endpoint, Endpoint | None]:
        endpoint = resolve(self.alias, self.settings)
        if not endpoint.proxy_jump or endpoint.proxy_jump.lower() == "none":
            return endpoint, None
        user, host, port = parse_jump(endpoint.proxy_jump)
        jump = resolve(host, self.settings)
        jump = replace(jump, user=user or jump.user, port=port or jump.port)
        return endpoint, jump

    def client(self) -> paramiko.SSHClient:
        """The live client, connecting (through ProxyJump if configured) when needed."""
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                return self._client
            self.close_locked()
            endpoint, jump = self._endpoints()
            try:
                sock = None
                if jump is not None:
                    self._jump = self._open_client(jump, None)
                    sock = self._jump.get_transport().open_channel(
                        "direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0)
                    )
                self._client = self._open_client(endpoint, sock)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close_locked()
                raise BackendError(
                    f"cannot connect to {self.alias} ({endpoint.user}@{endpoint.hostname}:"
                    f"{endpoint.port}): {describe(exc)}. Check that `ssh {self.alias} true` "
                    "works without a password or prompt (BatchMode), and ssh.ssh_config.",
                    code=errors.SSH,
                ) from exc
            log.info("connected to %s", self.alias)
            return self._client

    def _failed(self, client: paramiko.SSHClient | None) -> None:
        """After an error on ``client``: drop it if its connection is dead, and only then."""
        with self._lock:
            if client is None or client is not self._client:
                return
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                self.close_locked()

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None) -> bytes:
        """Run ``argv`` on the login node; its stdout, or BackendError with its stderr.

        A timeout closes this command's channel only (the command itself may go on running);
        the connection is dropped only if it is dead.
        """
        command = shlex.join(argv)
        timeout = timeout or self.settings.command_timeout_seconds
        client = None
        with self._channels:
            try:
                client = self.client()
                channel = client.get_transport().open_session(timeout=timeout)
                try:
                    channel.settimeout(timeout)
                    channel.exec_command(command)
                    stderr: list[bytes] = []
                    drain = threading.Thread(target=_drain, args=(channel, stderr), daemon=True)
                    drain.start()
                    if stdin:
                        channel.sendall(stdin)
                    channel.shutdown_write()
                    out = channel.makefile("rb").read()
                    drain.join(timeout)
                    status = channel.recv_exit_status()
                finally:
                    channel.close()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._failed(client)
                raise BackendError(
                    f"`{command}` on {self.alias}: {describe(exc)}", code=errors.SSH
                ) from exc
        if status != 0:
            text = b"".join(stderr).decode("utf-8", "replace").strip()
            raise BackendError(
                f"`{command}` on {self.alias} exited {status}: {text[-500:]}",
                stderr=text,
                code=errors.SSH,
            )
        return out

    def stream(self, argv: list[str]) -> paramiko.Channel:
        """A long-lived command (the follower, the inbox writer) on its own channel."""
        client = None
        try:
            client = self.client()
            channel = client.get_transport().open_session()
            channel.exec_command(shlex.join(argv))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._failed(client)
            raise BackendError(f"ssh {self.alias}: {describe(exc)}", code=errors.SSH) from exc
        return channel

    def sftp(self) -> paramiko.SFTPClient:
        client = None
        try:
            client = self.client()
            return client.open_sftp()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._failed(client)
            raise BackendError(f"sftp {self.alias}: {describe(exc)}", code=errors.SSH) from exc

    def close_locked(self) -> None:
        for client in (self._client, self._jump):
            if client is not None:
                client.close()
        self._client = self._jump = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def exit_report(channel: paramiko.Channel, command: str, alias: str, wait: float = 2.0) -> str:
    """How a long-lived command ended, once its output has: "`cmd` on alias exited N: stderr".

    Empty when it exited 0, or gave no status (killed by a signal, or closed from this side).
    """
    channel.status_event.wait(wait)  # exit-status follows the end of output
    status = channel.exit_status
    if status in (0, -1):
        return ""
    stderr = b""
    while channel.recv_stderr_ready():
        stderr += channel.recv_stderr(65536)
    text = stderr.decode("utf-8", "replace").strip()
    return f"`{command}` on {alias} exited {status}: {text[-500:]}"


def _drain(channel: paramiko.Channel, into: list[bytes]) -> None:
    """Read a command's stderr while its stdout is read, so neither pipe fills up."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        into.append(channel.makefile_stderr("rb").read())


def describe(exc: BaseException) -> str:
    """An exception as a reason a person can act on (timeouts have empty messages)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
