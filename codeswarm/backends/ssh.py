"""One paramiko connection to the login node, resolved through the user's ~/.ssh/config.

``ssh_config`` resolves the alias as OpenSSH does and ``ssh_hops`` opens the chain of jump
hosts; everything the router does on the cluster crosses the one connection at its end.
Commands are argv lists joined with ``shlex.join``; prompts travel on stdin only.
``ssh_transport`` builds the mailbox operations on top of it.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading

import paramiko

from codeswarm.backends.ssh_config import resolve_chain
from codeswarm.backends.ssh_hops import HopChain, describe, open_chain
from codeswarm.config import SshConfig
from codeswarm.errors import BackendError
from codeswarm.protocol import errors

log = logging.getLogger(__name__)
SFTP_ERRORS = (OSError, EOFError, paramiko.SSHException)
# Login nodes often allow 10 sessions per connection (sshd MaxSessions); stay under it.
MAX_CHANNELS = 8


class SSHConnection:
    """A reconnecting SSH client; its methods are safe to call from many actor threads."""

    def __init__(self, settings: SshConfig) -> None:
        if not settings.login_alias:
            raise BackendError("ssh.login_alias is not set in the config")
        self.settings = settings
        self.alias = settings.login_alias
        self._chain: HopChain | None = None
        self._lock = threading.Lock()
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)

    def transport(self) -> paramiko.Transport:
        """The live transport to the login node, connecting through every hop when needed."""
        with self._lock:
            if self._chain is not None and self._chain.login.is_active():
                return self._chain.login
            self.close_locked()
            hops = resolve_chain(self.alias, self.settings)
            self._chain = open_chain(
                self.alias,
                hops,
                self.settings.connect_timeout_seconds,
                hops[-1].server_alive_interval or self.settings.keepalive_seconds,
            )
            log.info("connected to %s (%s)", self.alias, " -> ".join(h.address for h in hops))
            return self._chain.login

    def _failed(self, transport: paramiko.Transport | None) -> None:
        """After an error on ``transport``: drop it if its connection is dead, and only then."""
        with self._lock:
            if transport is None or self._chain is None or transport is not self._chain.login:
                return
            if not transport.is_active():
                self.close_locked()

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None) -> bytes:
        """Run ``argv`` on the login node; its stdout, or BackendError with its stderr.

        A timeout closes this command's channel only (the command itself may go on running);
        the connection is dropped only if it is dead.
        """
        command = shlex.join(argv)
        timeout = timeout or self.settings.command_timeout_seconds
        transport = None
        with self._channels:
            try:
                transport = self.transport()
                channel = transport.open_session(timeout=timeout)
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
                self._failed(transport)
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
        transport = None
        try:
            transport = self.transport()
            channel = transport.open_session()
            channel.exec_command(shlex.join(argv))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._failed(transport)
            raise BackendError(f"ssh {self.alias}: {describe(exc)}", code=errors.SSH) from exc
        return channel

    def sftp(self) -> paramiko.SFTPClient:
        transport = None
        try:
            transport = self.transport()
            return paramiko.SFTPClient.from_transport(transport)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._failed(transport)
            raise BackendError(f"sftp {self.alias}: {describe(exc)}", code=errors.SSH) from exc

    def close_locked(self) -> None:
        if self._chain is not None:
            self._chain.close()
        self._chain = None

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
