"""Elastic size: ``scale`` adds agents to a running swarm in a job of their own, or drains and
removes some.

Added agents take the next indices and file under the swarm's first job id, so the swarm id,
its mailbox keys and every client stay as they were; the new job is an ``Allocation`` of the
record. A removed agent finishes its running turn, fails what it had queued with
``node_removed``, and refuses anything sent to it later; once it is gone, its actor entry,
timers and cursor entries are released while the rest of the swarm runs on.
The pure rules come first; ``Scaling`` is the SupervisorActor's part (a mixin, as
``NodeTargeting`` is).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import pykka

from codeswarm.actors.messages import (
    AddAgents,
    AgentsAdded,
    NodeRemoved,
    Passed,
    RemoveNodes,
    Withdraw,
)
from codeswarm.errors import RegistryError
from codeswarm.hpc import records
from codeswarm.protocol import commands, errors, make_event
from codeswarm.registry import Allocation, SwarmRecord

log = logging.getLogger(__name__)

# An add's claim on the next indices lapses after this long (its router died during sbatch).
ADD_CLAIM_SECONDS = 900.0


def scale_problem(record: SwarmRecord) -> str | None:
    """Why the swarm cannot change size, or None."""
    if record.is_final():
        return f"swarm {record.swarm_id} has {record.state}: launch a new one"
    return None


def add_problem(record: SwarmRecord, first: int, nodes: int) -> str | None:
    """Why ``nodes`` more nodes from agent index ``first`` do not fit, or None. A job array
    grows by whole tasks as large as its first ones (checked before anything is claimed)."""
    if record.layout == "array" and record.task_agents:
        per_task = max(record.task_agents // record.agents_per_node, 1)
        if nodes % per_task:
            return (
                f"swarm {record.swarm_id} is an array of tasks of {per_task} nodes: "
                f"add a multiple of {per_task}, not {nodes}"
            )
    agents = nodes * record.agents_per_node
    if first + agents > records.NODE_ID_MAX + 1:
        return (
            f"swarm {record.swarm_id} would have {first + agents} agents; a swarm has at most "
            f"{records.NODE_ID_MAX + 1}"
        )
    return scale_problem(record)


def claimed(record: SwarmRecord, now: float) -> SwarmRecord:
    """The stored record with an add's claim on the indices from its ``nodes`` on (run under
    the registry's lock); ValueError while another add of the swarm is being submitted:
    one add per swarm at a time, so that neither two jobs nor a failed one share indices."""
    started = record.add_started
    if started is not None and now - started < ADD_CLAIM_SECONDS:
        raise ValueError(
            f"another scale --add of swarm {record.swarm_id} is being submitted: "
            "try again once it is answered"
        )
    return replace(record, add_started=now)


def unclaimed(record: SwarmRecord) -> SwarmRecord:
    return replace(record, add_started=None)


def remove_problem(record: SwarmRecord, nodes: tuple[int, ...]) -> str | None:
    """Why these agents cannot be removed, or None: each must be one of the swarm's active
    agents, and one must stay (``terminate`` ends them all)."""
    problem = scale_problem(record)
    if problem:
        return problem
    for node in nodes:
        if node >= record.nodes:
            return f"swarm {record.swarm_id} has nodes 0 to {record.nodes - 1}, not {node}"
        if node in record.removed:
            return f"node {node} of swarm {record.swarm_id} was removed already"
    if not set(record.active_nodes()) - set(nodes):
        return f"that would remove every agent of swarm {record.swarm_id}: terminate it"
    return None


def idle_jobs(record: SwarmRecord, nodes: tuple[int, ...]) -> list[str]:
    """The scheduler jobs (or array tasks) that would run only removed agents and have not
    started: cancelled, so that they never take an allocation. Jobs that run drain instead."""
    removed = {*record.removed, *nodes}
    by_job: dict[str, list[int]] = {}
    for node in range(record.nodes):
        by_job.setdefault(record.slurm_job(node), []).append(node)
    return [
        job
        for job, agents in by_job.items()
        if all(n in removed for n in agents)
        and any(n in nodes for n in agents)
        and all(record.node_state(n) == "pending" for n in agents if n in nodes)
    ]


def only_jobs(record: SwarmRecord, allocations: list[Allocation]) -> SwarmRecord:
    """The record as one whose cancel stops only these jobs (``Withdraw``). Local workers
    are told by the swarm's first job id, which their command line carries."""
    first = record.job_id if record.backend == "local" else allocations[0].job_id
    return replace(record, job_id=first, tasks={}, pids=[], allocations=allocations)


class Scaling:
    """The supervisor's ``scale`` (a mixin of SupervisorActor)."""

    table: Any
    registry: Any
    registry_trouble: Any
    nodes: dict[str, Any]
    jobs: Any
    scheduler: Any
    cursor: Any
    answer_tokens: Any
    # token -> (shards to pass, answer, failed inbox writes)
    after_shards: dict[int, tuple[int, dict[str, Any], list[str]]]

    def scale(self, command: commands.Scale) -> None:
        record = self.known_swarm(command.swarm_id, command.request_id)
        if record is None:
            return
        if command.add is not None:
            self.add_agents(record, command)
        else:
            self.remove_agents(record, command)

    def add_agents(self, record: SwarmRecord, command: commands.Scale) -> None:
        assert command.add is not None
        problem = add_problem(record, record.nodes, command.add)
        if problem:
            self.error(errors.INVALID_FIELD, problem, command.request_id, field="add")
            return
        try:
            stored = self.registry.update(record.swarm_id, lambda r: claimed(r, time.time()))
        except ValueError as exc:
            self.error(errors.INVALID_FIELD, str(exc), command.request_id, field="add")
            return
        except (RegistryError, OSError) as exc:
            self.backend_error("scale", exc, command.request_id)
            return
        first = max(record.nodes, stored.nodes if stored else 0)
        problem = add_problem(stored or record, first, command.add)
        if problem:
            self.unclaim(record.swarm_id)
            self.error(errors.INVALID_FIELD, problem, command.request_id, field="add")
            return
        self.jobs.tell(AddAgents(record, first, command.add, command.request_id))

    def unclaim(self, swarm_id: str) -> None:
        """The add was answered: the next one may claim indices (after this one's, if any)."""
        try:
            self.registry.update(swarm_id, unclaimed)
        except (RegistryError, OSError) as exc:  # it lapses after ADD_CLAIM_SECONDS
            self.registry_trouble(exc)

    def agents_added(self, message: AgentsAdded) -> None:
        if message.error is not None:
            self.unclaim(message.swarm.swarm_id)
            self.backend_error("scale", message.error, message.request_id)
            return
        allocation = message.allocation
        record = self.table.by_swarm(message.swarm.swarm_id)
        if record is None or record.is_final():
            # Ended or pruned while sbatch ran: nobody would follow or stop the new job.
            self.unclaim(message.swarm.swarm_id)
            self.withdraw_added(message, record)
            return
        record = self.table.add_allocation(record.job_id, allocation, time.monotonic())
        self.start_nodes(record)
        self.tell_live_swarms()  # the next poll asks about the new job
        self.write_registry()  # the indices are the record's before the claim goes
        self.unclaim(record.swarm_id)
        swarm = self.table.get(record.job_id)
        if swarm is None or swarm.is_final():
            # Another process terminated it meanwhile: its cancel did not know this job.
            self.withdraw_added(message, swarm)
            return
        self.emit(make_event("swarm_status", request_id=message.request_id, swarm=swarm.to_event()))

    def withdraw_added(self, message: AgentsAdded, record: SwarmRecord | None) -> None:
        """Cancel the job of an add whose swarm ended meanwhile, and say so."""
        allocation = message.allocation
        self.jobs.tell(Withdraw(only_jobs(message.swarm, [allocation])))
        ended = f"has {record.state}" if record else "was removed"
        self.error(
            errors.BACKEND,
            f"swarm {message.swarm.swarm_id} {ended} while agents were added: "
            f"cancelled {allocation.job_id}",
            message.request_id,
        )

    def remove_agents(self, record: SwarmRecord, command: commands.Scale) -> None:
        problem = remove_problem(record, command.remove)
        if problem:
            self.error(errors.INVALID_FIELD, problem, command.request_id, field="remove")
            return
        idle = idle_jobs(record, command.remove) if self.scheduler.name == "slurm" else []
        record = self.table.remove_nodes(record.job_id, command.remove, time.monotonic())
        keys = [records.node_key(record.job_id, n) for n in command.remove]
        keys = [key for key in keys if key in self.nodes]
        token = next(self.answer_tokens)
        self.tell_nodes_at_once([(key, NodeRemoved(token=token)) for key in keys])
        if idle:
            self.jobs.tell(Withdraw(only_jobs(record, [Allocation(job, 0, 0) for job in idle])))
        self.write_registry()
        swarm = self.table.get(record.job_id) or record
        answer = make_event("swarm_status", request_id=command.request_id, swarm=swarm.to_event())
        # Answered once the inboxes are written: a CLI that exits on the answer loses nothing.
        shards = {self.nodes[key] for key in keys}
        self.after_shards[token] = (len(shards), answer, [])
        for shard in shards:
            try:
                shard.tell(Passed(token))
            except pykka.ActorDeadError:  # a bug; its nodes are started afresh elsewhere
                self.shard_passed(token)
        if not shards:
            self.shard_passed(token, counted=False)

    def shard_passed(
        self, token: int, counted: bool = True, failures: tuple[str, ...] = ()
    ) -> None:
        """A shard handled what it was told before ``token``; the last one sends the answer,
        or a ``backend`` error if an inbox could not be written."""
        left, answer, failed = self.after_shards.pop(token)
        left -= counted
        failed += failures
        if left > 0:
            self.after_shards[token] = (left, answer, failed)
        elif failed:
            self.error(
                errors.BACKEND,
                "; ".join(failed) + ": the node is removed (it takes no more work) but runs "
                "until its job ends; check the mailbox, or terminate the swarm to stop it",
                answer["request_id"],
            )
        else:
            self.emit(answer)

    def release_nodes(self, drained: list[tuple[str, int]]) -> None:
        """Removed agents that are gone: their actor entries, timers and cursor entries go,
        their last seqs stay in the record (late lines are not routed again)."""
        leaving: dict[Any, list[str]] = {}
        by_job: dict[str, dict[str, int]] = {}
        for key, last_seq in drained:
            shard = self.nodes.pop(key, None)
            if shard is None:
                continue
            leaving.setdefault(shard, []).append(key)
            job_id, node_id = records.parse_node_key(key)
            seq = max(self.cursor.forget_node(key), last_seq)
            by_job.setdefault(job_id, {})[str(node_id)] = seq
        for shard, gone in leaving.items():
            shard.tell(RemoveNodes(gone))
        if by_job:
            self.write_registry_first()
        for job_id, last_seqs in by_job.items():
            self.table.release_nodes(job_id, last_seqs)
            log.info("released removed nodes %s of job %s", sorted(last_seqs, key=int), job_id)

    def spawn_grown(self) -> None:
        """Follow the agents other processes added to swarms followed here."""
        for job_id in sorted(self.table.grown):
            record = self.table.get(job_id)
            if record is not None and job_id in self.table.followed:
                self.start_nodes(record)
        self.table.grown.clear()
