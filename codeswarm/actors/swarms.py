"""Every swarm a router knows, as a plain object the SupervisorActor drives.

Like ``NodeCorrelation`` it decides and does not act: which swarms are followed (have
NodeActors), what the scheduler's reports mean for each node, which records must be written
back to the registry, when a finished swarm may be released, and what to do with lines of a
swarm no registry has shown yet. The supervisor owns the actors, the registry and the cursor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from codeswarm.actors.messages import NodeGone, NodePending, NodeRunning
from codeswarm.actors.scaled_table import ScaledTable, with_scale
from codeswarm.hpc import records
from codeswarm.registry import SwarmRecord, job_number

log = logging.getLogger(__name__)

HELD_SECONDS = 300.0  # lines of a job no registry knows are kept this long, then dropped
HELD_BYTES = 64 << 20  # and never more than this in all


def job_of(key: str) -> str:
    """The job id of a ``<JOB>_<NODE>`` node key."""
    return key.rpartition("_")[0]


def with_node_states(record: SwarmRecord, node_states: dict[str, str]) -> SwarmRecord:
    """The record with these node states, and the swarm state they imply."""
    record = replace(record, node_states=node_states)
    states = [record.node_state(n) for n in range(record.nodes)]
    if states and all(s == "exited" for s in states):
        return record.with_state("exited")
    if any(s == "running" for s in states):
        return record.with_state("running")
    return record.with_state("pending")  # before the start, or requeued


def newer_tasks(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    """Both routers' resubmissions, each task at its latest (highest job number)."""
    merged = dict(ours)
    for task, job in theirs.items():
        if task not in merged or job_number(job) > job_number(merged[task]):
            merged[task] = job
    return merged


def moved_on(mine: SwarmRecord, other: SwarmRecord) -> list[int]:
    """The array tasks ``other`` resubmitted later than ``mine`` knows (another router's
    ``restart``): their agents' states and hosts are ``other``'s to say."""
    return sorted(
        int(task)
        for task, job in other.tasks.items()
        if job_number(job) > job_number(mine.tasks.get(task, mine.job_id))
    )


def only_resubmitted(record: SwarmRecord, tasks: dict[int, str]) -> SwarmRecord:
    """The record as one whose cancel stops only these resubmitted tasks' jobs."""
    jobs = sorted({job_number(job) for job in tasks.values()})
    return replace(record, job_id=str(jobs[0]), tasks={str(t): j for t, j in tasks.items()})


def nodes_of(record: SwarmRecord, tasks: list[int]) -> set[str]:
    """The agents these array tasks run again: removed agents are not brought back."""
    removed = set(record.removed)
    return {str(node) for task in tasks for node in record.task_nodes(task) if node not in removed}


def written_over(stored: SwarmRecord, mine: SwarmRecord) -> SwarmRecord:
    """What to store when this router writes ``mine`` over ``stored`` (read under the lock).

    Node states and last seqs are this router's observations, except for array tasks another
    router resubmitted meanwhile: each task keeps its latest resubmission, and those tasks'
    agents keep the stored states and hosts. Jobs added and agents removed by ``scale`` here
    or there are both kept. The swarm state only moves forward, so a terminate written
    meanwhile by another process is never undone.
    """
    theirs = nodes_of(stored, moved_on(mine, stored))
    node_states = {n: s for n, s in mine.node_states.items() if n not in theirs}
    node_states.update({n: s for n, s in stored.node_states.items() if n in theirs})
    # agents another process added, not yet adopted here: its observations
    node_states.update({n: s for n, s in stored.node_states.items() if int(n) >= mine.nodes})
    hosts = {n: h for n, h in mine.hosts.items() if n not in theirs}
    updated = replace(
        stored,
        node_states=node_states,
        last_seqs={**stored.last_seqs, **mine.last_seqs},
        hosts={**stored.hosts, **hosts},
        tasks=newer_tasks(mine.tasks, stored.tasks),
    )
    updated = with_scale(updated, mine)
    if not theirs:
        return updated.with_state(mine.state)
    # Agents restarted elsewhere run again: the state follows the merged node states, and
    # only a terminate or a failure of ours is kept.
    updated = with_node_states(updated, node_states)
    return updated.with_state(mine.state) if mine.state != "exited" else updated


def restart_tasks(record: SwarmRecord, nodes: tuple[int, ...] | str) -> list[int]:
    """The array tasks ``restart`` resubmits for these agents; ValueError says why none.

    Only a live swarm's array tasks whose agents have all exited are resubmitted: a running
    task would run twice, and an ended swarm is never brought back.
    """
    if record.layout != "array" or not record.task_agents:
        raise ValueError(
            f"swarm {record.swarm_id} is one Slurm job, not an array: restart resubmits the "
            'tasks of a job array (slurm.layout "array")'
        )
    if record.is_final():
        raise ValueError(f"swarm {record.swarm_id} has {record.state}: launch a new one")
    wanted = range(record.nodes) if nodes == "all" else nodes
    if any(node >= record.nodes for node in wanted):
        raise ValueError(f"swarm {record.swarm_id} has nodes 0 to {record.nodes - 1}")
    if nodes == "all":
        wanted = [n for n in wanted if record.allocation(n) is None and n not in record.removed]
    removed = next((n for n in wanted if n in record.removed), None)
    if removed is not None:
        raise ValueError(f"node {removed} was removed from swarm {record.swarm_id} (scale)")
    later = next((n for n in wanted if record.allocation(n) is not None), None)
    if later is not None:
        raise ValueError(
            f"node {later} runs in job {record.slurm_job(later)}, submitted after the launch: "
            "restart resubmits the launch's array tasks"
        )
    tasks = sorted({node // record.task_agents for node in wanted})
    live = [t for t in tasks if any(record.node_state(n) != "exited" for n in record.task_nodes(t))]
    if nodes == "all":
        tasks = [t for t in tasks if t not in live]
        if not tasks:
            raise ValueError(f"no task of swarm {record.swarm_id} has exited")
    elif live:
        raise ValueError(
            f"array task {live[0]} ({record.slurm_job(live[0] * record.task_agents)}) still "
            "runs or waits: restart resubmits tasks whose agents have all exited"
        )
    return tasks


@dataclass
class Held:
    """Lines of a job that no registry has shown yet, kept in order until it appears."""

    since: float
    batches: list[tuple[str, list[Any]]] = field(default_factory=list)
    size: int = 0


class SwarmTable(ScaledTable):
    """Swarms by job id; ``followed`` are those with NodeActors."""

    def __init__(self, gone_grace: float, drain_seconds: float) -> None:
        super().__init__()
        self.gone_grace = gone_grace
        self.drain_seconds = drain_seconds
        self.records: dict[str, SwarmRecord] = {}
        self.followed: set[str] = set()
        self.active: dict[str, float] = {}  # followed job -> last line or state change
        self.gone_since: dict[str, float] = {}  # node key -> first "exited" from the scheduler
        # node key -> the scheduler's state its node was last told: a poll tells only changes
        self.reported: dict[str, str] = {}
        self.dirty: set[str] = set()  # jobs whose record must be written to the registry
        self.held: dict[str, Held] = {}
        self.held_bytes = 0
        # job -> (the poll's node states, the record after applying them): a poll that says
        # the same of the same record again changes nothing, and 10,000 nodes cost a core.
        self.applied: dict[str, tuple[dict[int, str], SwarmRecord]] = {}

    # ---- lookups ----------------------------------------------------------------------------

    def get(self, job_id: str) -> SwarmRecord | None:
        return self.records.get(job_id)

    def by_swarm(self, swarm_id: str) -> SwarmRecord | None:
        return next((r for r in self.records.values() if r.swarm_id == swarm_id), None)

    def all(self) -> list[SwarmRecord]:
        return sorted(self.records.values(), key=lambda r: r.created)

    # ---- which swarms are followed ----------------------------------------------------------

    def follow(self, record: SwarmRecord, now: float) -> None:
        self.records[record.job_id] = record
        self.followed.add(record.job_id)
        self.active[record.job_id] = now

    def merge(
        self, stored: list[SwarmRecord], now: float
    ) -> tuple[list[SwarmRecord], list[str], list[tuple[str, Any]]]:
        """Take in the registry's records: (swarms to start following, jobs it no longer has,
        (node key, message) for each node told of a change).

        Other processes launch, terminate, restart and prune swarms: a new live swarm is
        followed; a state they made final is adopted; array tasks they resubmitted are
        adopted (their agents wait for the new job); a record they removed is forgotten.
        """
        new = []
        seen = set()
        told: list[tuple[str, Any]] = []
        for record in stored:
            seen.add(record.job_id)
            mine = self.records.get(record.job_id)
            if mine is None:
                self.records[record.job_id] = record
                if not record.all_exited():
                    self.follow(record, now)
                    new.append(record)
            elif record.job_id in self.followed:
                told += self._adopt_restarts(mine, record, now)
                told += self._adopt_scale(self.records[record.job_id], record, now)
                if record.is_final():  # terminated elsewhere; live states are ours to say
                    mine = self.records[record.job_id]
                    self.records[record.job_id] = mine.with_state(record.state)
            elif record.job_id not in self.dirty:
                self.records[record.job_id] = record
                grew = record.nodes > mine.nodes
                if (moved_on(mine, record) or grew) and not record.is_final():
                    self.follow(record, now)  # released here, then restarted elsewhere
                    new.append(record)
        removed = [
            job
            for job in self.records
            if job not in seen and job not in self.dirty and job not in self.followed
        ]
        for job in removed:
            del self.records[job]
        return new, removed, told

    def _adopt_restarts(
        self, mine: SwarmRecord, stored: SwarmRecord, now: float
    ) -> list[tuple[str, Any]]:
        """Array tasks another router resubmitted: poll their new jobs, their agents wait."""
        restarted = moved_on(mine, stored)
        if not restarted:
            return []
        nodes = nodes_of(mine, restarted)
        node_states = {n: s for n, s in mine.node_states.items() if n not in nodes}
        hosts = {n: h for n, h in mine.hosts.items() if n not in nodes}
        told = []
        for node in sorted(nodes, key=int):
            key = records.node_key(mine.job_id, int(node))
            self.gone_since.pop(key, None)
            # A new job already ended is found gone by the next poll, after the grace.
            state = "running" if stored.node_states.get(node) == "running" else "pending"
            node_states[node] = state
            if node in stored.hosts:
                hosts[node] = stored.hosts[node]
            told.append((key, NodeRunning() if state == "running" else NodePending()))
        record = replace(mine, tasks=newer_tasks(mine.tasks, stored.tasks), hosts=hosts)
        if record.state == "exited" and not stored.is_final():  # ended here, not there
            record = replace(record, state=stored.state, ended=None)
        self.records[mine.job_id] = record
        self._update(record, node_states, now)
        self.touched(mine.job_id, now)
        return told

    def releasable(self, now: float) -> list[str]:
        """Followed swarms whose nodes have all exited and whose outboxes went quiet."""
        return [
            job
            for job in self.followed
            if self.records[job].all_exited() and now - self.active[job] >= self.drain_seconds
        ]

    def release(self, job_id: str, last_seqs: dict[str, int]) -> SwarmRecord:
        """Stop following a finished swarm; its record keeps each node's last seq."""
        self.followed.discard(job_id)
        self.active.pop(job_id, None)
        self.applied.pop(job_id, None)
        record = self.records[job_id]
        for node_id in range(record.nodes):
            key = records.node_key(job_id, node_id)
            self.gone_since.pop(key, None)
            self.reported.pop(key, None)
        record = replace(record, last_seqs={**record.last_seqs, **last_seqs}).with_state("exited")
        self.records[job_id] = record
        self.dirty.add(job_id)
        return record

    # ---- what nodes do ----------------------------------------------------------------------

    def touched(self, job_id: str, now: float) -> None:
        if job_id in self.followed:
            self.active[job_id] = now

    def node_started(
        self,
        job_id: str,
        started: dict[int, tuple[str | None, str | None]],
        now: float,
    ) -> None:
        """Workers' own ``node_started`` were routed: they run before the next poll says so.

        ``started`` maps each node to its (host, Slurm node), kept for ``swarm_status``. Their
        ``node_exited`` is not taken as the node's end: a requeued job runs again, and only
        the scheduler knows. A final swarm stays final.
        """
        record = self.records.get(job_id)
        if record is None or record.is_final():
            return
        hosts = record.hosts
        moved = {
            str(node_id): list(where)
            for node_id, where in started.items()
            if where != (None, None) and tuple(hosts.get(str(node_id)) or ()) != where
        }
        if moved:
            record = replace(record, hosts={**hosts, **moved})
            self.records[job_id] = record
            self.dirty.add(job_id)
        running = {str(n): "running" for n in started if record.node_state(n) != "running"}
        if running:
            self._update(record, {**record.node_states, **running}, now)

    def apply(self, states: dict[str, dict[int, str]], now: float) -> list[tuple[str, Any]]:
        """The scheduler's node states: (node key, message) for each node told of a change.

        A node is told a state once, not on every poll: 10,000 nodes are polled every second.

        A node reported gone stays as it was for ``gone_grace`` seconds, so that the follower
        can deliver the worker's own last events before its open injections are failed.
        """
        told = []
        for job_id, nodes in states.items():
            record = self.records.get(job_id)
            if record is None or job_id not in self.followed:
                continue
            last = self.applied.get(job_id)
            if (
                last is not None
                and last[1] is record
                and last[0] == nodes
                and "exited" not in nodes.values()  # a node in its grace may be due now
            ):
                continue
            node_states = dict(record.node_states)
            removed = set(record.removed)
            for node_id, state in nodes.items():
                key = records.node_key(job_id, node_id)
                if node_id in removed:  # told only its end
                    if str(node_id) not in record.last_seqs:  # not yet released
                        polled = self._removed_polled(key, state, now, told)
                        if polled is not None:
                            node_states[str(node_id)] = polled
                    continue
                if state != "exited":
                    self.gone_since.pop(key, None)
                    if self.reported.get(key) != state:
                        self.reported[key] = state
                        told.append((key, NodeRunning() if state == "running" else NodePending()))
                    node_states[str(node_id)] = state
                    continue
                since = self.gone_since.setdefault(key, now)
                if now - since >= self.gone_grace:
                    if record.node_state(node_id) != "exited":
                        told.append((key, NodeGone("the worker process ended")))
                    self.reported[key] = "exited"
                    node_states[str(node_id)] = "exited"
            self._update(record, node_states, now)
            self.applied[job_id] = (nodes, self.records[job_id])
        return told

    def _update(self, record: SwarmRecord, node_states: dict[str, str], now: float) -> None:
        updated = with_node_states(record, node_states)
        if updated != record:
            self.records[record.job_id] = updated
            self.dirty.add(record.job_id)
            self.touched(record.job_id, now)

    def resubmitted(self, job_id: str, tasks: dict[int, str], now: float) -> list[tuple[str, Any]]:
        """Array tasks resubmitted alone: their agents wait for the new job, (key, NodePending)
        for each."""
        record = self.records[job_id]
        record = replace(record, tasks={**record.tasks, **{str(t): j for t, j in tasks.items()}})
        node_states = dict(record.node_states)
        told = []
        for task in tasks:
            for node_id in record.task_nodes(task):
                if node_id in record.removed:  # stays exited: it takes no more work
                    continue
                key = records.node_key(job_id, node_id)
                self.gone_since.pop(key, None)
                node_states[str(node_id)] = "pending"
                told.append((key, NodePending()))
        self.records[job_id] = record
        self._update(record, node_states, now)
        self.dirty.add(job_id)
        return told

    def continued(
        self, job_id: str, record: SwarmRecord, nodes: list[int], now: float
    ) -> list[str]:
        """The swarm continues these agents in a new job (``record`` says which): they wait
        for it; the keys of the nodes to tell."""
        node_states = dict(record.node_states)
        keys = []
        for node_id in nodes:
            key = records.node_key(job_id, node_id)
            self.gone_since.pop(key, None)
            self.reported[key] = "pending"
            node_states[str(node_id)] = "pending"
            keys.append(key)
        self.records[job_id] = record
        self._update(record, node_states, now)
        self.dirty.add(job_id)
        return keys

    def polled(self, job_id: str) -> SwarmRecord | None:
        """The swarm as the last poll saw it: nodes reported gone count as exited, although
        they are kept running for the grace (``restart`` decides on this)."""
        record = self.records.get(job_id)
        if record is None:
            return None
        gone = {
            str(node): "exited"
            for node in range(record.nodes)
            if records.node_key(job_id, node) in self.gone_since
        }
        return replace(record, node_states={**record.node_states, **gone}) if gone else record

    def set_state(self, job_id: str, state: str) -> SwarmRecord | None:
        """A swarm-level change made here (terminate); None if the swarm is unknown."""
        record = self.records.get(job_id)
        if record is None:
            return None
        self.records[job_id] = record.with_state(state)
        self.dirty.add(job_id)
        return self.records[job_id]

    def stored(self, record: SwarmRecord | None, job_id: str, now: float) -> list[tuple[str, Any]]:
        """The registry's answer to a write: adopt it (another process may have moved on),
        with (node key, message) for the agents of array tasks another process restarted."""
        self.dirty.discard(job_id)
        told: list[tuple[str, Any]] = []
        if record is None:  # pruned by another process: forget it once no longer followed
            if job_id not in self.followed:
                self.records.pop(job_id, None)
            return told
        mine = self.records.get(job_id)
        if mine is not None and job_id in self.followed:
            told = self._adopt_restarts(mine, record, now)
            told += self._adopt_scale(self.records[job_id], record, now)
            self.dirty.discard(job_id)  # what it changed is what the registry holds
        self.records[job_id] = record
        return told

    # ---- lines of swarms not yet known ------------------------------------------------------

    def hold(self, key: str, lines: list[Any], now: float) -> bool:
        """Keep lines of an unknown job until the registry shows it; False if over the bound."""
        size = sum(len(line[-1]) for line in lines)
        if self.held_bytes + size > HELD_BYTES:
            return False
        held = self.held.setdefault(job_of(key), Held(now))
        held.batches.append((key, lines))
        held.size += size
        self.held_bytes += size
        return True

    def take_held(self, job_id: str) -> list[tuple[str, list[Any]]]:
        held = self.held.pop(job_id, None)
        if held is None:
            return []
        self.held_bytes -= held.size
        return held.batches

    def expire_held(self, now: float) -> list[str]:
        """Jobs whose held lines waited ``HELD_SECONDS`` for a registry record: dropped."""
        expired = [job for job, held in self.held.items() if now - held.since >= HELD_SECONDS]
        for job in expired:
            self.take_held(job)
        return expired
