"""Swarms beyond the time limit (``slurm.continue``): a job whose workers said ``continuing``
is followed by a continuation job, same layout and agent indices, under the same swarm id.

``Continuations`` decides, as a plain object: which agents wait for a continuation (their
worker's ``node_exited`` said ``continuing``), how the scheduler's poll is to be read for
them (their job ended, but they are pending: another job comes), and which jobs are due for
a continuation (every agent of that Slurm job gone, one of them continuing). The supervisor
mixes in ``ContinuingSwarms``, which submits through the SchedulerActor and records the new
job: a job layout's as an ``Allocation`` covering the job's agents, an array task's as its
resubmission (``tasks``), as ``restart`` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pykka

from codeswarm.actors.messages import Continued, ContinueJob, NodePending, Withdraw
from codeswarm.actors.swarms import SwarmTable
from codeswarm.hpc import records
from codeswarm.protocol import errors, make_event
from codeswarm.registry import Allocation, SwarmRecord

log = logging.getLogger(__name__)


class Continuations:
    """The agents waiting for a continuation job, by the swarm's first job id, each with the
    Slurm job it exited from."""

    def __init__(self) -> None:
        self.waiting: dict[str, dict[int, str]] = {}
        self.submitting: set[str] = set()  # Slurm jobs whose continuation sbatch is running
        self.submitted: set[str] = set()  # the continuation jobs submitted here

    def note(self, record: SwarmRecord, node_id: int) -> None:
        """This agent's worker exited to continue in the next job. A note that comes once the
        continuation is submitted (the agent pending in it) is about the job before: ignored."""
        slurm_job = record.slurm_job(node_id)
        if slurm_job in self.submitted and record.node_state(node_id) == "pending":
            return
        self.waiting.setdefault(record.job_id, {})[node_id] = slurm_job

    def forget(self, job_id: str) -> None:
        """The swarm ended (terminated, pruned, dropped): nothing continues, nobody waits."""
        self.waiting.pop(job_id, None)

    def moved(self, record: SwarmRecord) -> None:
        """Agents whose continuation another router submitted (the registry names their new
        job) wait no more."""
        waiting = self.waiting.get(record.job_id, {})
        for node_id, slurm_job in list(waiting.items()):
            if record.slurm_job(node_id) != slurm_job:
                del waiting[node_id]
        if not waiting:
            self.waiting.pop(record.job_id, None)

    def hold(self, states: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
        """The poll's states, an agent waiting for its continuation shown pending, not gone."""
        held = {}
        for job_id, nodes in states.items():
            waiting = self.waiting.get(job_id)
            if waiting:
                nodes = {
                    n: "pending" if n in waiting and s == "exited" else s for n, s in nodes.items()
                }
            held[job_id] = nodes
        return held

    def due(self, record: SwarmRecord, polled: dict[int, str]) -> list[tuple[str, list[int]]]:
        """(Slurm job, its agents) to continue: the job has ended (every agent it ran exited,
        as the poll says) and at least one of its workers said ``continuing``."""
        waiting = self.waiting.get(record.job_id)
        if not waiting:
            return []
        groups: dict[str, list[int]] = {}
        for node_id in record.active_nodes():
            groups.setdefault(record.slurm_job(node_id), []).append(node_id)
        found = []
        for slurm_job, nodes in groups.items():
            ended = all(polled.get(n, "exited") == "exited" for n in nodes)
            if ended and set(waiting) & set(nodes) and slurm_job not in self.submitting:
                self.submitting.add(slurm_job)
                found.append((slurm_job, nodes))
        return found

    def done(self, job_id: str, slurm_job: str, nodes: list[int], new_job: str = "") -> None:
        """The continuation of ``slurm_job`` was submitted (as ``new_job``), or failed: its
        agents wait no more."""
        self.submitting.discard(slurm_job)
        if new_job:
            self.submitted.add(new_job)
        waiting = self.waiting.get(job_id, {})
        for node_id in nodes:
            waiting.pop(node_id, None)
        if not waiting:
            self.waiting.pop(job_id, None)


def continuable(record: SwarmRecord, agents: list[int]) -> bool:
    """Whether the job running ``agents`` is one to continue: the launch's job or array task
    (resubmitted or not), or a continuation of it; not a job ``scale`` added."""
    allocation = record.allocation(agents[0])
    return allocation is None or (allocation.continues and record.layout != "array")


def continued_record(record: SwarmRecord, message: Continued) -> SwarmRecord:
    """The swarm with its continuation job: an array task's resubmission, or an allocation
    of the job's agents (the latest allocation covering an agent is the job it runs in)."""
    if message.task is not None:
        return replace(record, tasks={**record.tasks, str(message.task): message.new_job})
    first, count = job_agents(record, min(message.nodes))
    allocation = Allocation(message.new_job, first, count, continues=True)
    return replace(record, allocations=[*record.allocations, allocation])


def job_agents(record: SwarmRecord, agent: int) -> tuple[int, int]:
    """(first, count) of the agents the job running ``agent`` runs: the continuation reruns
    that job's script, so it runs all of them, removed ones included (they read their
    removal again and end)."""
    allocation = record.allocation(agent)
    if allocation is not None:
        return allocation.first, allocation.count
    added = [a.first for a in record.allocations if not a.continues]
    return 0, min(added, default=record.nodes)


class ContinuingSwarms:
    """The supervisor's part in continuations (a mixin of SupervisorActor)."""

    table: SwarmTable
    jobs: pykka.ActorRef  # the SchedulerActor
    continuations: Continuations
    continue_jobs: bool
    submits_continuations: bool  # only the router holding the cursor lock: one sbatch per job
    emit: Callable[..., None]
    tell_node: Callable[[str, Any], bool]
    tell_live_swarms: Callable[[], None]
    write_registry: Callable[[], None]
    refresh_registry: Callable[..., None]

    def nodes_continuing(self, keys: list[str]) -> None:
        if not self.continue_jobs:
            return
        for key in keys:
            job_id, node_id = records.parse_node_key(key)
            record = self.table.get(job_id)
            if record is not None:
                self.continuations.note(record, node_id)

    def hold_continuing(self, states: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
        """The poll as the swarm table is to see it; submits the continuations now due."""
        if not self.continuations.waiting:
            return states
        for job_id, nodes in states.items():
            record = self.table.get(job_id)
            if record is None or record.is_final():
                self.continuations.forget(job_id)  # its agents are gone, their prompts fail
                continue
            self.continuations.moved(record)
            if not self.submits_continuations:
                continue
            for slurm_job, agents in self.continuations.due(record, nodes):
                self.continue_job(record, slurm_job, agents)
        return self.continuations.hold(states)

    def continue_job(self, record: SwarmRecord, slurm_job: str, agents: list[int]) -> None:
        """Submit the job's continuation: the launch's script again (its agents start at 0),
        or, in an array, the task again. A job ``scale`` added is not continued."""
        task = None
        if record.layout == "array":
            task = agents[0] // record.task_agents if record.task_agents else None
        if not continuable(record, agents) or (record.layout == "array" and task is None):
            log.warning(
                "job %s of swarm %s is not continued: it was added by scale",
                slurm_job,
                record.swarm_id,
            )
            self.continuations.done(record.job_id, slurm_job, agents)
            return
        log.info("job %s of swarm %s ended to continue: submitting", slurm_job, record.swarm_id)
        self.jobs.tell(ContinueJob(record, slurm_job, agents, task))

    def continued(self, message: Continued) -> None:
        job_id = message.swarm.job_id
        self.continuations.done(job_id, message.slurm_job, message.nodes, message.new_job)
        if message.error is None:
            self.refresh_registry(force=True)  # a terminate by another process since the poll
        record = self.table.get(job_id)
        if message.error is not None or record is None or record.is_final():
            why = (
                f"its continuation could not be submitted: {message.error}"
                if message.error is not None
                else "the swarm ended while its continuation was submitted"
            )
            log.error("job %s of swarm %s: %s", message.slurm_job, message.swarm.swarm_id, why)
            if message.error is None:  # nobody would follow or stop the new job
                self.withdraw(message)
            else:
                self.emit(
                    make_event(
                        "error",
                        error=errors.BACKEND,
                        message=f"swarm {message.swarm.swarm_id}: job {message.slurm_job} "
                        f"ended to continue, but {why}",
                        swarm_id=message.swarm.swarm_id,
                    )
                )
            return
        log.info("swarm %s continues in job %s", record.swarm_id, message.new_job)
        told = self.table.continued(
            job_id, continued_record(record, message), message.nodes, time.monotonic()
        )
        for key in told:
            self.tell_node(key, NodePending())
        self.tell_live_swarms()  # the next poll asks about the new job
        self.write_registry()
        stored = self.table.get(job_id)
        if stored is None or stored.is_final():
            # Terminated by another process as we wrote: its scancel did not know the new job.
            log.error("swarm %s ended as it continued", record.swarm_id)
            self.withdraw(message)

    def withdraw(self, message: Continued) -> None:
        """Cancel the continuation job of a swarm that ended meanwhile."""
        job = message.new_job.partition("_")[0]
        self.jobs.tell(Withdraw(replace(message.swarm, job_id=job, tasks={}, allocations=[])))
