"""How the router reaches workers: a transport (files, processes) and a scheduler (jobs).

Two pairs exist by design: SSH + Slurm for clusters, local + local processes for one machine.
The router depends only on these interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from codeswarm.protocol import errors
from codeswarm.registry import SwarmRecord


class BackendError(Exception):
    """A transport or scheduler operation failed; the message says what to fix."""

    def __init__(self, message: str, stderr: str = "", code: str = errors.BACKEND) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.code = code


class FollowerStream(Protocol):
    """A running outbox follower: ``read`` its records (b"" at the end), ended by ``close()``."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class Transport(Protocol):
    mailbox: str
    installed_codex: str | None  # the codex binary prepare() installed (agent.codex_version)

    def prepare(self) -> None:
        """Install the hpc/ scripts and create the mailbox, before any launch."""

    def append_inbox(self, job_id: str, node_id: int, lines: list[bytes]) -> None:
        """Append whole lines to a node's inbox, atomically with respect to other writers."""

    def start_follower(self, start: dict[str, Any]) -> FollowerStream:
        """Start ``hpc.outbox_follower`` and send it ``start`` (cursor and jobs) first."""

    def close(self) -> None:
        """Release connections; called once the actors are stopped."""


def follower_args(mailbox: str, poll_seconds: float, idle_poll_seconds: float) -> list[str]:
    """The arguments of ``hpc.outbox_follower``, the same on every transport."""
    return [
        "--mailbox",
        mailbox,
        "--poll-seconds",
        str(poll_seconds),
        "--idle-poll-seconds",
        str(idle_poll_seconds),
    ]


@dataclass(frozen=True)
class Submitted:
    job_id: str
    pids: list[int]


class Scheduler(Protocol):
    name: str

    def submit(
        self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any
    ) -> Submitted:
        """Start a job of ``nodes`` workers with the given worker settings."""

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        """Each job's node states (``pending``, ``running``, ``exited``), in one batched call."""

    def cancel(self, swarm: SwarmRecord) -> None:
        """Ask every worker of the job to stop (SIGTERM, as ``scancel`` does)."""
