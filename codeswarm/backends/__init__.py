"""How the router reaches workers: a transport (files, processes) and a scheduler (jobs).

Two pairs exist by design: SSH + Slurm for clusters, local + local processes for one machine.
The router depends only on these interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.registry import Allocation, SwarmRecord


class FollowerStream(Protocol):
    """A running outbox follower: ``read`` its records (b"" at the end), ended by ``close()``."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Pruned:
    """What ``hpc.prune`` did to one swarm: the paths it removed, and why it kept the swarm's
    files when one of its git worktrees could not be retired (then the swarm stays listed)."""

    removed: list[str]
    error: str | None = None


class Transport(Protocol):
    mailbox: str
    installed_codex: str | None  # the codex binary prepare() installed (agent.codex_version)

    def prepare(self) -> None:
        """Install the hpc/ scripts and create the mailbox, before any launch."""

    def append_inbox(self, job_id: str, node_id: int, lines: list[bytes]) -> None:
        """Append whole lines to a node's inbox, atomically with respect to other writers."""

    def append_inboxes(
        self, appends: list[tuple[str, int, list[bytes]]]
    ) -> list[BackendError | None]:
        """Append to many inboxes, each (job id, node id, lines), in as few round trips as
        the transport allows; one result per append, None once it is durable."""

    def read_states(self, job_id: str, node_ids: list[int]) -> dict[int, bytes]:
        """The workers' state files of these nodes, those that exist (pending approvals)."""

    def start_follower(self, header: bytes) -> FollowerStream:
        """Start ``hpc.outbox_follower`` and send it ``header`` (``follower_wire``) first."""

    def remove_swarm_files(self, swarms: list[SwarmRecord]) -> dict[str, Pruned]:
        """Remove finished swarms' files with ``hpc.prune``: swarm id -> what was done."""

    def read_diffs(self, job_id: str, nodes: list[int], stat_only: bool) -> list[dict[str, Any]]:
        """Each node's changes in its git worktree, read with ``hpc.diff`` (bounded in size)."""

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


def agent_count(nodes: int, agents_per_node: int) -> int:
    """A swarm's agents; BackendError past the node ids the mailbox's file names allow."""
    agents = nodes * agents_per_node
    if agents > records.NODE_ID_MAX + 1:
        raise BackendError(
            f"{nodes} nodes x {agents_per_node} agents is {agents} agents; a swarm has at "
            f"most {records.NODE_ID_MAX + 1}: launch fewer nodes or agents per node"
        )
    return agents


@dataclass(frozen=True)
class Submitted:
    """A started job: its agents are ``nodes x agents_per_node`` protocol nodes.

    With ``layout`` ``array``, each array task runs ``task_agents`` of them.
    """

    job_id: str
    pids: list[int]
    agents_per_node: int = 1
    layout: str = "job"
    task_agents: int = 0


class Scheduler(Protocol):
    name: str

    def submit(
        self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any
    ) -> Submitted:
        """Start a job of ``nodes`` nodes with the given worker settings.

        ``options`` may hold ``agents_per_node`` (None: the configured number), ``time``
        and ``partition``.
        """

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        """Each job's node states (``pending``, ``running``, ``exited``), in one batched call."""

    def pending_reason(self, job_id: str) -> str | None:
        """Why a pending job waits, as of the last poll (Slurm's ``%r``), or None."""

    def cancel(self, swarm: SwarmRecord) -> None:
        """Ask every worker of the job to stop (SIGTERM, as ``scancel`` does)."""

    def resubmit(
        self, swarm: SwarmRecord, tasks: list[int], continuation: bool = False
    ) -> dict[int, str]:
        """Submit these tasks of a job array again, alone: task -> its new scheduler id;
        ``continuation``: as the continuation of the tasks (slurm.continue).

        Only a scheduler with job arrays (Slurm) is asked: ``restart`` refuses other swarms.
        """

    def continue_job(self, swarm: SwarmRecord) -> str:
        """Submit the swarm's launch job again, its workers filing under its first job id
        (``slurm.continue``): the new job's id. BackendError where there is none."""

    def add_agents(self, swarm: SwarmRecord, first: int, nodes: int) -> Allocation:
        """Start ``nodes`` more nodes of the swarm's shape and settings (those it was
        launched with), their agents numbered from ``first`` and filing under the swarm's
        first job id (``scale --add``)."""

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        """Cancel a job submitted for ``swarm_id`` although its launch was reported failed.

        A submit whose answer was lost may still have queued the job; returns its id if one
        was found (and cancelled), None if there is none.
        """
