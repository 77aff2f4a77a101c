"""The cluster side of the mailbox over SSH: the inbox writer, the follower, installed files.

Everything crosses the one SSHConnection: the follower and the inbox writer each on a
long-lived channel, files over SFTP.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import shlex
import stat
import threading
import time
from importlib import resources
from typing import Any

import paramiko

from codeswarm.backends import Pruned, follower_args
from codeswarm.backends.ssh import SFTP_ERRORS, SSHConnection, describe, exit_report
from codeswarm.errors import BackendError
from codeswarm.hpc import inbox_writer_wire, records
from codeswarm.hpc.private import DIR_MODE, FILE_MODE
from codeswarm.protocol import errors
from codeswarm.registry import SwarmRecord

MIN_PYTHON = (3, 8)
CODEX_INSTALL_TIMEOUT = 900.0  # npm fetches about 170 MB the first time
BATCH_APPENDS = 1024  # appends a batch frame: the writer answers a batch in one flush


class ChannelStream:
    """The follower's channel as a FollowerStream; a follower that fails is a read error."""

    def __init__(self, channel: paramiko.Channel, command: str, alias: str) -> None:
        self.channel = channel
        self.command = command
        self.alias = alias

    def read(self, size: int) -> bytes:
        data = self.channel.recv(size)
        if not data and (failure := exit_report(self.channel, self.command, self.alias)):
            raise OSError(failure)
        return data

    def close(self) -> None:
        self.channel.close()


class InboxWriter:
    """One ``hpc.inbox_writer`` on its own channel, shared by every NodeShard's writes.

    A write is a framed request answered with ``ok`` once the lines are in the inbox. A write
    that cannot be sent or is not answered within the timeout (a hung filesystem under the
    writer) fails with ``ssh``, and so does every write waiting on that channel; the channel is
    closed and the next write opens a new one. Such a failure means "not confirmed": the lines
    may have landed.
    """

    def __init__(self, connection: SSHConnection, argv: list[str], timeout: float) -> None:
        self.connection = connection
        self.argv = argv
        self.timeout = timeout
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._channel: paramiko.Channel | None = None
        self._waiting: dict[str, tuple[paramiko.Channel, tuple[threading.Event, list[Any]]]] = {}
        self._ids = itertools.count()

    def append(self, key: str, data: bytes) -> None:
        error = self.append_many([(key, data)])[0]
        if error is not None:
            raise error

    def append_many(self, appends: list[tuple[str, bytes]]) -> list[BackendError | None]:
        """Append each (node key, lines) in batches sent at once; one result per append.

        Each is answered on its own once durable; the batches go out in one ``sendall`` and
        their answers come back together, so many appends cost about one round trip.
        """
        slots: list[tuple[str, str, threading.Event, list[Any]]] = []
        frames = []
        for key, data in appends:
            request_id = str(next(self._ids))
            frames.append(inbox_writer_wire.encode_request(request_id, key, data))
            slots.append((key, request_id, threading.Event(), [None]))
        payload = b"".join(
            inbox_writer_wire.encode_batch(frames[start : start + BATCH_APPENDS])
            for start in range(0, len(frames), BATCH_APPENDS)
        )
        with self._lock:
            try:
                channel = self._open()
            except BackendError as exc:  # the login node is down: every append fails, now
                return [
                    BackendError(f"inbox write to {key}: {exc}", code=exc.code) for key, *_ in slots
                ]
            for _, request_id, done, result in slots:
                self._waiting[request_id] = (channel, (done, result))
        try:
            with self._send_lock:
                channel.sendall(payload)
        except (OSError, paramiko.SSHException) as exc:
            reason = self._ended(channel) or describe(exc)
            self._broken(channel, reason)
            return [
                BackendError(f"inbox write to {key}: {reason}", code=errors.SSH)
                for key, *_ in slots
            ]
        deadline = time.monotonic() + self.timeout
        results: list[BackendError | None] = []
        for key, _, done, result in slots:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                self._broken(channel)
                results.append(
                    BackendError(
                        f"inbox write to {key}: no answer from {self.connection.alias} in "
                        f"{self.timeout:g} s",
                        code=errors.SSH,
                    )
                )
            elif result[0] is not None:
                results.append(
                    BackendError(
                        f"inbox write to {key}: {result[0]}", stderr=result[0], code=errors.SSH
                    )
                )
            else:
                results.append(None)
        return results

    def _open(self) -> paramiko.Channel:
        """The live channel, opened when needed (called with the lock held)."""
        if self._channel is None or self._channel.closed:
            channel = self.connection.stream(self.argv)
            channel.settimeout(self.timeout)
            self._channel = channel
            threading.Thread(
                target=self._answers, args=(channel,), name="inbox-writer", daemon=True
            ).start()
        return self._channel

    def _answers(self, channel: paramiko.Channel) -> None:
        buffer = b""
        while True:
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                if channel.closed:
                    break
                continue
            except (OSError, EOFError, paramiko.SSHException):
                break
            if not chunk:
                self._broken(channel, self._ended(channel))
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                request_id, error = inbox_writer_wire.parse_reply(raw)
                with self._lock:
                    waiting = self._waiting.pop(request_id, None)
                if waiting is not None:
                    _, (done, result) = waiting
                    result[0] = error
                    done.set()
        self._broken(channel)

    def _ended(self, channel: paramiko.Channel) -> str:
        """Why the writer's channel ended, if its command failed (e.g. no such python)."""
        return exit_report(channel, shlex.join(self.argv), self.connection.alias)

    def _broken(self, channel: paramiko.Channel, reason: str = "") -> None:
        """Close ``channel`` and fail every write still waiting on it, with ``reason``."""
        channel.close()
        with self._lock:
            if self._channel is channel:
                self._channel = None
            for request_id, (owner, (done, result)) in list(self._waiting.items()):
                if owner is channel:
                    del self._waiting[request_id]
                    result[0] = reason or (
                        f"the inbox writer's channel to {self.connection.alias} closed before "
                        "answering (the login node dropped the session?)"
                    )
                    done.set()

    def close(self) -> None:
        with self._lock:
            channel = self._channel
        if channel is not None:
            self._broken(channel)


class SSHTransport:
    """The cluster side of the mailbox, reached through one SSHConnection."""

    def __init__(
        self,
        connection: SSHConnection,
        cluster_dir: str,
        python: str,
        poll_seconds: float,
        idle_poll_seconds: float,
        codex_version: str | None = None,
    ) -> None:
        self.connection = connection
        self.codex_version = codex_version
        self.installed_codex: str | None = None
        self.cluster_dir = cluster_dir
        self.mailbox = posixpath.join(cluster_dir, "mailbox")
        self.python = python
        self.poll_seconds = poll_seconds
        self.idle_poll_seconds = idle_poll_seconds
        self.writer = InboxWriter(
            connection,
            self.hpc_command("inbox_writer", "--mailbox", self.mailbox),
            connection.settings.command_timeout_seconds,
        )

    def prepare(self) -> None:
        """Copy hpc/ to ``<cluster_dir>/hpc`` and create the mailbox: directories 0700 and
        files 0600, those already there tightened.

        Running jobs import these files from the shared filesystem, so a changed file is
        written beside its target and renamed over it, and an unchanged one is left alone.
        """
        self.check_python()
        sftp = self.connection.sftp()
        try:
            for path in [self.cluster_dir, *self._dirs()]:
                _mkdir(sftp, path)
            for entry in resources.files("codeswarm.hpc").iterdir():
                if entry.name.endswith(".py"):
                    target = posixpath.join(self.cluster_dir, "hpc", entry.name)
                    _replace(sftp, target, entry.read_bytes())
        except SFTP_ERRORS as exc:
            raise BackendError(
                f"cannot prepare {self.cluster_dir} on {self.connection.alias}: "
                f"{describe(exc)}. Check cluster.workspace_root: it must exist and be "
                "writable by you.",
                code=errors.SSH,
            ) from exc
        finally:
            sftp.close()
        if self.codex_version:
            self.installed_codex = self.install_codex(self.codex_version)

    def install_codex(self, version: str) -> str:
        """Install ``@openai/codex@<version>`` under ``<cluster_dir>/codex`` with npm on the
        login node, once (``hpc.codex_install``); the path of its binary."""
        root = posixpath.join(self.cluster_dir, "codex")
        argv = self.hpc_command("codex_install", "--dir", root, "--version", version)
        try:
            out = self.connection.run(argv, timeout=CODEX_INSTALL_TIMEOUT)
        except BackendError as exc:
            raise BackendError(
                f"cannot install @openai/codex@{version} (agent.codex_version) on "
                f"{self.connection.alias}: {exc.stderr or exc}",
                stderr=exc.stderr,
                code=errors.SSH,
            ) from exc
        return out.decode("utf-8", "replace").strip()

    def check_python(self) -> None:
        """Fail early, and clearly, if ``cluster.python`` does not run or is older than 3.8."""
        code = "import sys; print('%d.%d' % sys.version_info[:2])"
        try:
            out = self.connection.run([self.python, "-c", code])
        except BackendError as exc:
            raise BackendError(
                f"cluster.python {self.python!r} cannot run on {self.connection.alias}: {exc}",
                stderr=exc.stderr,
                code=errors.SSH,
            ) from exc
        version = out.decode("utf-8", "replace").strip()
        major, _, minor = version.partition(".")
        if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < MIN_PYTHON:
            raise BackendError(
                f"cluster.python {self.python!r} on {self.connection.alias} is Python "
                f"{version or '?'}; codeswarm's cluster scripts need 3.8 or newer. Set "
                "cluster.python to one that is (an absolute path works).",
                code=errors.SSH,
            )

    def _dirs(self) -> list[str]:
        # hpc/__pycache__ is made here: Python would make it under the login shell's umask
        names = ["hpc", "hpc/__pycache__", "logs", "swarms", "mailbox"]
        names += [posixpath.join("mailbox", d) for d in records.MAILBOX_DIRS]
        return [posixpath.join(self.cluster_dir, name) for name in names]

    def hpc_command(self, module: str, *args: str) -> list[str]:
        """argv that runs ``python3 -m hpc.<module>`` from the copy in the cluster directory."""
        return ["env", f"PYTHONPATH={self.cluster_dir}", self.python, "-m", f"hpc.{module}", *args]

    def append_inbox(self, job_id: str, node_id: int, lines: list[bytes]) -> None:
        self.writer.append(records.node_key(job_id, node_id), b"".join(lines))

    def append_inboxes(
        self, appends: list[tuple[str, int, list[bytes]]]
    ) -> list[BackendError | None]:
        keyed = [(records.node_key(job, node), b"".join(lines)) for job, node, lines in appends]
        return self.writer.append_many(keyed)

    def start_follower(self, header: bytes) -> ChannelStream:
        argv = self.hpc_command(
            "outbox_follower",
            *follower_args(self.mailbox, self.poll_seconds, self.idle_poll_seconds),
        )
        channel = self.connection.stream(argv)
        stream = ChannelStream(channel, shlex.join(argv), self.connection.alias)
        try:
            channel.sendall(header)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            reason = exit_report(channel, stream.command, stream.alias) or describe(exc)
            channel.close()
            raise BackendError(f"starting the follower: {reason}", code=errors.SSH) from exc
        return stream

    def read_states(self, job_id: str, node_ids: list[int]) -> dict[int, bytes]:
        """The workers' state files, over one SFTP session."""
        found = {}
        state_dir = posixpath.join(self.mailbox, records.STATE_DIR)
        sftp = self.connection.sftp()
        try:
            for node_id in node_ids:
                path = posixpath.join(state_dir, records.state_name(job_id, node_id))
                try:
                    with sftp.open(path, "rb") as f:
                        found[node_id] = f.read()
                except FileNotFoundError:
                    continue
        except SFTP_ERRORS as exc:
            raise BackendError(
                f"cannot read {state_dir}: {describe(exc)}", code=errors.SSH
            ) from exc
        finally:
            sftp.close()
        return found

    def remove_swarm_files(self, swarms: list[SwarmRecord]) -> dict[str, Pruned]:
        listed = [{"swarm_id": s.swarm_id, "job_id": s.job_id, "nodes": s.nodes} for s in swarms]
        argv = self.hpc_command("prune", "--cluster-dir", self.cluster_dir)
        out = self.connection.run(argv, stdin=json.dumps(listed).encode())
        removed = {}
        for line in out.decode("utf-8", "replace").splitlines():
            answer = json.loads(line)
            removed[answer["swarm_id"]] = Pruned(answer["removed"], answer.get("error"))
        return removed

    def read_diffs(self, job_id: str, nodes: list[int], stat_only: bool) -> list[dict[str, Any]]:
        asked = json.dumps({"job_id": job_id, "nodes": nodes, "stat": stat_only}).encode()
        out = self.connection.run(self.hpc_command("diff", "--mailbox", self.mailbox), stdin=asked)
        return json.loads(out)["nodes"]

    def close(self) -> None:
        self.writer.close()
        self.connection.close()

    def write_file(self, path: str, data: bytes) -> None:
        """Write a private file on the cluster (0600), e.g. a swarm's worker settings."""
        sftp = self.connection.sftp()
        try:
            _mkdir(sftp, posixpath.dirname(path))
            _replace(sftp, path, data)
        except SFTP_ERRORS as exc:
            raise BackendError(f"cannot write {path}: {describe(exc)}", code=errors.SSH) from exc
        finally:
            sftp.close()


def _mkdir(sftp: paramiko.SFTPClient, path: str) -> None:
    """Make ``path`` a 0700 directory: sftp-server's umask may loosen a new one."""
    try:
        mode = sftp.stat(path).st_mode
    except FileNotFoundError:
        sftp.mkdir(path, DIR_MODE)
        mode = sftp.stat(path).st_mode
    if stat.S_IMODE(mode or 0) != DIR_MODE:
        sftp.chmod(path, DIR_MODE)


def _replace(sftp: paramiko.SFTPClient, path: str, data: bytes) -> None:
    """Put ``data`` at ``path`` (0600) by rename, unless it is there already (then 0600)."""
    try:
        with sftp.open(path, "rb") as f:
            if f.read() == data:
                if stat.S_IMODE(f.stat().st_mode or 0) != FILE_MODE:
                    sftp.chmod(path, FILE_MODE)
                return
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp.{os.getpid()}"
    with sftp.open(tmp, "wb") as f:
        f.chmod(FILE_MODE)  # before the data goes in
        f.write(data)
    sftp.posix_rename(tmp, path)
