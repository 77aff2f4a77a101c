"""The swarm registry: which swarms exist, on disk, shared by every router on one state dir.

One JSON file per state directory, read and replaced under an ``flock`` so that processes (a
daemon, the CLI, a second daemon) never lose each other's updates. Every update is a
read-modify-write under the lock, and a swarm's final state is never undone by a later write
built from an older view.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from codeswarm.errors import RegistryError
from codeswarm.hpc.private import private_dir, private_file

LIVE_STATES = ("pending", "running")
FINAL_STATES = ("exited", "terminated", "failed")


def merged_state(old: str, new: str) -> str:
    """The state after ``new`` is reported for a swarm in ``old``: final states stay final.

    ``terminated`` may replace ``exited`` (the cancel that caused the exit is the better
    story); nothing replaces ``terminated``.
    """
    if old in FINAL_STATES:
        return "terminated" if new == "terminated" and old == "exited" else old
    return new


def job_number(slurm_job: str) -> int:
    """The job number of a Slurm id (``1240`` of ``1240_2``): later submissions have higher."""
    head = slurm_job.partition("_")[0]
    return int(head) if head.isdigit() else -1


@dataclass(frozen=True)
class Allocation:
    """A scheduler job that runs agents ``first`` .. ``first + count - 1`` of a swarm after
    its launch: a ``scale`` add, or a job that takes over agents already there (a
    continuation). Its workers file under the swarm's first job id, so an agent's mailbox
    files, seq and thread never change with the job that runs it.

    ``job_id`` is the scheduler's id (``1250``; an array's tasks are ``1250_<t>``, task ``t``
    running ``task_agents`` agents from ``first + t x task_agents``); ``pids`` are the local
    backend's workers, agent ``first + i`` at ``i``.
    """

    job_id: str
    first: int
    count: int
    layout: str = "job"
    task_agents: int = 0
    pids: list[int] = field(default_factory=list)
    continues: bool = False  # a continuation (slurm.continue), not agents scale added

    def covers(self, node_id: int) -> bool:
        return self.first <= node_id < self.first + self.count

    def slurm_job(self, node_id: int) -> str:
        if self.layout == "array" and self.task_agents:
            return f"{self.job_id}_{(node_id - self.first) // self.task_agents}"
        return self.job_id

    def pid(self, node_id: int) -> int | None:
        index = node_id - self.first
        return self.pids[index] if 0 <= index < len(self.pids) else None

    @classmethod
    def load(cls, value: dict[str, Any]) -> Allocation:
        return cls(**{key: v for key, v in value.items() if key in ALLOCATION_FIELDS})


ALLOCATION_FIELDS = {f.name for f in fields(Allocation)}


@dataclass(frozen=True)
class SwarmRecord:
    """One swarm: a scheduler job of ``nodes`` workers and where its mailbox lives.

    ``nodes`` counts agents (Slurm nodes x ``agents_per_node``): every agent is a protocol
    node. With ``layout`` ``array``, agents ``t x task_agents`` on run in array task ``t``.
    ``hosts`` is each agent's [host, Slurm node] from its last ``node_started``; ``tasks``
    the job ids of array tasks resubmitted alone (task -> ``<new job>_<task>``).
    ``allocations`` are the jobs submitted after the launch, in order: an agent runs in the
    last one that covers it, or else in the launch's job (``job_id``, ``tasks``).
    ``removed`` are agents ``scale`` took out: their indices are never used again.
    ``add_started`` is the wall-clock time an ``add`` claimed the indices from ``nodes`` on
    (under the registry's lock, so that two routers never submit agents with the same
    indices); None once it was answered.
    ``ended`` is when it reached a final state; ``last_seqs`` is each node's last emitted
    ``seq``, kept once the router has released the swarm so that late lines are not repeated.
    """

    swarm_id: str
    job_id: str
    backend: str
    mailbox: str
    nodes: int
    created: float
    state: str = "pending"
    node_states: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    ended: float | None = None
    last_seqs: dict[str, int] = field(default_factory=dict)
    agents_per_node: int = 1
    layout: str = "job"
    task_agents: int = 0
    hosts: dict[str, list[str | None]] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    allocations: list[Allocation] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    add_started: float | None = None

    def allocation(self, node_id: int) -> Allocation | None:
        """The job after the launch that runs this agent now; None: the launch's job."""
        return next((a for a in reversed(self.allocations) if a.covers(node_id)), None)

    def slurm_job(self, node_id: int) -> str:
        """The scheduler job an agent runs in: the array task's id (``1234_2``) in an array,
        that of its resubmission (``1240_2``) once ``restart`` resubmitted it, that of the
        latest allocation that covers it once there is one."""
        allocation = self.allocation(node_id)
        if allocation is not None:
            return allocation.slurm_job(node_id)
        if self.layout == "array" and self.task_agents:
            task = node_id // self.task_agents
            return self.tasks.get(str(task), f"{self.job_id}_{task}")
        return self.job_id

    def pid(self, node_id: int) -> int | None:
        """The local backend's worker process of an agent."""
        allocation = self.allocation(node_id)
        if allocation is not None:
            return allocation.pid(node_id)
        return self.pids[node_id] if node_id < len(self.pids) else None

    def jobs(self) -> list[str]:
        """Every scheduler job the swarm has run as (array tasks resubmitted alone as their
        job), first submitted first."""
        found = [self.job_id, *(t.partition("_")[0] for t in self.tasks.values())]
        found += [a.job_id for a in self.allocations]
        return list(dict.fromkeys(found))

    def active_nodes(self) -> list[int]:
        """The agents not removed by ``scale``."""
        removed = set(self.removed)
        return [n for n in range(self.nodes) if n not in removed]

    def task_nodes(self, task: int) -> range:
        """The agents array task ``task`` runs."""
        return range(task * self.task_agents, min((task + 1) * self.task_agents, self.nodes))

    def node_event(self, node_id: int) -> dict[str, Any]:
        """One entry of the swarm event's ``nodes`` (see the protocol's NodeStateSchema)."""
        host, slurm_node = self.hosts.get(str(node_id)) or (None, None)
        entry = {"node_id": node_id, "state": self.node_state(node_id), "host": host}
        if node_id in self.removed:
            entry["removed"] = True
        if self.backend == "slurm":
            entry.update(slurm_node=slurm_node, slurm_job=self.slurm_job(node_id))
        return entry

    def node_state(self, node_id: int) -> str:
        return self.node_states.get(str(node_id), "pending")

    def all_exited(self) -> bool:
        return all(self.node_state(n) == "exited" for n in range(self.nodes))

    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def with_state(self, state: str) -> SwarmRecord:
        """This record moved to ``state`` by the never-downgrade rule, stamped when it ends."""
        new = merged_state(self.state, state)
        if new == self.state:
            return self
        ended = self.ended
        if new in FINAL_STATES and ended is None:
            ended = round(time.time(), 3)
        return replace(self, state=new, ended=ended)

    @classmethod
    def load(cls, value: dict[str, Any]) -> SwarmRecord:
        """A stored record; keys a newer codeswarm added are left aside (and kept on write)."""
        known = {key: v for key, v in value.items() if key in RECORD_FIELDS}
        known["allocations"] = [Allocation.load(a) for a in known.get("allocations", [])]
        return cls(**known)

    def to_event(self) -> dict[str, Any]:
        """The ``swarm`` object of swarm events (see the protocol's SwarmSchema)."""
        return {
            "swarm_id": self.swarm_id,
            "job_id": self.job_id,
            "backend": self.backend,
            "nodes": [self.node_event(n) for n in range(self.nodes)],
            "state": self.state,
            "created": self.created,
            "agents_per_node": self.agents_per_node,
            "layout": self.layout,
            "jobs": self.jobs(),
        }


RECORD_FIELDS = {f.name for f in fields(SwarmRecord)}


class SwarmRegistry:
    """Swarm records in ``<state_dir>/swarms.json`` for one mailbox (one cluster)."""

    def __init__(self, state_dir: str | os.PathLike[str], mailbox: str) -> None:
        self.dir = Path(private_dir(state_dir))
        self.path = self.dir / "swarms.json"
        self.mailbox = mailbox

    @contextlib.contextmanager
    def _locked(
        self, versions: list[tuple[int, int, int]] | None = None
    ) -> Iterator[dict[str, dict[str, Any]]]:
        """The records, read and (if changed) written back under the lock.

        ``versions`` receives the file's version as it was read and as it was left, both
        taken under the lock.
        """
        with open(self.dir / "swarms.lock", "a", opener=private_file) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if versions is not None:
                    versions.append(self.version())
                data = self._read()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
                    with open(tmp, "w", opener=private_file) as out:
                        # Compact: an indented dump takes the pure-Python encoder, and a
                        # 10,000-agent record cost every write most of a second.
                        out.write(json.dumps(data, sort_keys=True, separators=(",", ":")))
                    os.replace(tmp, self.path)
                if versions is not None:
                    versions.append(self.version())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            for value in data.values():
                SwarmRecord.load(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise RegistryError(
                f"{self.path} is damaged ({exc}); move it aside to start with no swarms"
            ) from None
        return data

    def version(self) -> tuple[int, int, int]:
        """Changes whenever the file is replaced: a cheap test before reading it again."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def all(self) -> list[SwarmRecord]:
        with self._locked() as data:
            records = [SwarmRecord.load(value) for value in data.values()]
        mine = [r for r in records if r.mailbox == self.mailbox]
        return sorted(mine, key=lambda r: r.created)

    def get(self, swarm_id: str) -> SwarmRecord | None:
        with self._locked() as data:
            value = data.get(swarm_id)
        return SwarmRecord.load(value) if value and value["mailbox"] == self.mailbox else None

    def by_job(self, job_id: str) -> SwarmRecord | None:
        return next((r for r in self.all() if r.job_id == job_id), None)

    def put(self, record: SwarmRecord) -> None:
        with self._locked() as data:
            data[record.swarm_id] = asdict(record)

    def update(
        self, swarm_id: str, change: Callable[[SwarmRecord], SwarmRecord]
    ) -> SwarmRecord | None:
        """Apply ``change`` to the swarm's current record under the lock; None if it is gone."""
        with self._locked() as data:
            if swarm_id not in data:
                return None
            record = change(SwarmRecord.load(data[swarm_id]))
            data[swarm_id] = {**data[swarm_id], **asdict(record)}
        return record

    def update_all(
        self, changes: dict[str, Callable[[SwarmRecord], SwarmRecord]]
    ) -> tuple[dict[str, SwarmRecord | None], tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """``update`` for many swarms in one locked read and write.

        Also returns the file's ``version()`` before and after this write (both taken under
        the lock), so that a writer that had read the "before" need not read its own write.
        """
        stored: dict[str, SwarmRecord | None] = {}
        versions: list[tuple[int, int, int]] = []
        with self._locked(versions) as data:
            for swarm_id, change in changes.items():
                if swarm_id not in data:
                    stored[swarm_id] = None
                    continue
                record = change(SwarmRecord.load(data[swarm_id]))
                data[swarm_id] = {**data[swarm_id], **asdict(record)}
                stored[swarm_id] = record
        return stored, (versions[0], versions[1])

    def remove(self, swarm_ids: list[str]) -> None:
        with self._locked() as data:
            for swarm_id in swarm_ids:
                data.pop(swarm_id, None)


def peek(state_dir: str | os.PathLike[str], mailbox: str) -> list[SwarmRecord]:
    """The swarms of ``mailbox`` as last written, read without the lock and creating nothing.

    For shell completion, which must be quick and leave no trace: the file is replaced by
    rename, so an unlocked read sees one whole version; any problem reads as no swarms.
    """
    try:
        data = json.loads((Path(os.path.expanduser(state_dir)) / "swarms.json").read_text())
        records = [SwarmRecord.load(value) for value in data.values()]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    return sorted((r for r in records if r.mailbox == mailbox), key=lambda r: r.created)
