"""The scheduler's blocking calls, each on an actor of its own, never on the routing path.

``JobPollerActor`` polls the scheduler for every live swarm; ``SchedulerActor`` submits and
cancels jobs. A controller that hangs (``sbatch`` may wait minutes) delays only these
threads: their results reach the supervisor as messages, while it goes on routing events.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import pykka

from codeswarm.actors.messages import (
    AddAgents,
    AgentsAdded,
    Cancel,
    Cancelled,
    Continued,
    ContinueJob,
    Launched,
    LaunchFailed,
    LiveSwarms,
    Polled,
    PollJobs,
    Resubmit,
    Resubmitted,
    Submit,
    Sweep,
    Withdraw,
)
from codeswarm.backends import Scheduler
from codeswarm.timer import Timer

log = logging.getLogger(__name__)
BACKOFF_LIMIT_SECONDS = 60.0
UNSETTLED_SECONDS = 900.0  # how long a failed launch's job is looked for


def backoff(poll_seconds: float, failures: int) -> float:
    """Seconds to the next poll after ``failures`` failed polls in a row."""
    return min(poll_seconds * 2 ** min(failures, 16), max(poll_seconds, BACKOFF_LIMIT_SECONDS))


class JobPollerActor(pykka.ThreadingActor):
    """One scheduler call a cycle for every swarm the supervisor follows and has not seen end.

    The supervisor says which (``LiveSwarms``): it, not the registry, knows which swarms
    still have NodeActors waiting to hear that their nodes are gone.

    A failing scheduler is polled less and less often (up to once a minute) and reported
    once when it starts failing and once when it answers again, not on every cycle.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        supervisor: Any,
        timer: Timer,
        poll_seconds: float,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.live: list[Any] = []
        self.supervisor = supervisor
        self.timer = timer
        self.poll_seconds = poll_seconds
        self.failures = 0

    def on_start(self) -> None:
        self.timer.call_later(self.poll_seconds, self.actor_ref, PollJobs())

    def on_receive(self, message: Any) -> None:
        if isinstance(message, LiveSwarms):
            self.live = message.swarms
        elif isinstance(message, PollJobs):
            states = self.poll()
            with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
                self.supervisor.tell(Polled(states))
            if not message.urgent:
                delay = backoff(self.poll_seconds, self.failures)
                self.timer.call_later(delay, self.actor_ref, PollJobs())

    def poll(self) -> dict[str, dict[int, str]] | None:
        try:
            states = self.scheduler.poll(self.live) if self.live else {}
        except Exception as exc:  # a poll that fails for any reason is retried, never fatal
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "cannot poll the scheduler: %s (retrying less often; "
                    "a message follows when it answers again)",
                    exc,
                )
            else:
                log.debug("scheduler poll failed again (%d in a row): %s", self.failures, exc)
            return None
        if self.failures:
            log.warning("the scheduler answers again, after %d failed polls", self.failures)
            self.failures = 0
        return states


class SchedulerActor(pykka.ThreadingActor):
    """Submits and cancels jobs in the order asked, and answers each with a message.

    A launch reported failed may still have queued its job (sbatch timed out on a stalled
    controller that later accepted it). Such swarms are looked for by name every
    ``sweep_seconds`` for ``UNSETTLED_SECONDS``, and a job found is cancelled: nobody was told
    it exists, so nobody would ever stop it.
    """

    def __init__(
        self, scheduler: Scheduler, supervisor: Any, timer: Timer, sweep_seconds: float = 30.0
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.supervisor = supervisor
        self.timer = timer
        self.sweep_seconds = sweep_seconds
        self.unsettled: dict[str, float] = {}  # swarm id -> when to stop looking

    def on_receive(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
            if isinstance(message, Submit):
                self.supervisor.tell(self.submit(message))
            elif isinstance(message, Cancel):
                self.supervisor.tell(self.cancel(message))
            elif isinstance(message, Resubmit):
                self.supervisor.tell(self.resubmit(message))
            elif isinstance(message, ContinueJob):
                self.supervisor.tell(self.continue_job(message))
            elif isinstance(message, AddAgents):
                self.supervisor.tell(self.add_agents(message))
            elif isinstance(message, Withdraw):
                self.withdraw(message.swarm)
            elif isinstance(message, Sweep):
                self.sweep()

    def submit(self, message: Submit) -> Launched | LaunchFailed:
        command = message.command
        options = {
            "time": command.time,
            "partition": command.partition,
            "agents_per_node": command.agents_per_node,
        }
        try:
            submitted = self.scheduler.submit(
                message.swarm_id, command.nodes, message.settings, **options
            )
        except Exception as exc:  # answered as a failed launch, whatever went wrong
            if not self.unsettled:
                self.timer.call_later(self.sweep_seconds, self.actor_ref, Sweep())
            self.unsettled[message.swarm_id] = time.monotonic() + UNSETTLED_SECONDS
            return LaunchFailed(command, exc)
        return Launched(command, message.swarm_id, submitted)

    def sweep(self) -> None:
        for swarm_id, until in list(self.unsettled.items()):
            try:
                job_id = self.scheduler.cancel_unregistered(swarm_id)
            except Exception as exc:
                log.debug("cannot look for the job of failed launch %s yet: %s", swarm_id, exc)
                job_id = None
            if job_id is not None:
                log.warning(
                    "the launch of %s was reported failed, but the scheduler queued it after "
                    "all as job %s: cancelled it",
                    swarm_id,
                    job_id,
                )
            if job_id is not None or time.monotonic() >= until:
                del self.unsettled[swarm_id]
        if self.unsettled:
            self.timer.call_later(self.sweep_seconds, self.actor_ref, Sweep())

    def resubmit(self, message: Resubmit) -> Resubmitted:
        swarm = message.swarm
        try:
            tasks = self.scheduler.resubmit(swarm, message.tasks)
        except Exception as exc:  # answered as a failed restart, whatever went wrong
            return Resubmitted(swarm, {}, message.request_id, exc)
        return Resubmitted(swarm, tasks, message.request_id, None)

    def continue_job(self, message: ContinueJob) -> Continued:
        swarm, task = message.swarm, message.task
        try:
            if task is None:
                new_job = self.scheduler.continue_job(swarm)
            else:
                new_job = self.scheduler.resubmit(swarm, [task], continuation=True)[task]
        except Exception as exc:  # reported, and the job's agents end as they would have
            return Continued(swarm, message.slurm_job, message.nodes, task, "", exc)
        return Continued(swarm, message.slurm_job, message.nodes, task, new_job, None)

    def add_agents(self, message: AddAgents) -> AgentsAdded:
        swarm = message.swarm
        try:
            allocation = self.scheduler.add_agents(swarm, message.first, message.nodes)
        except Exception as exc:  # answered as a failed scale, whatever went wrong
            return AgentsAdded(swarm, None, message.request_id, exc)
        return AgentsAdded(swarm, allocation, message.request_id, None)

    def withdraw(self, swarm: Any) -> None:
        try:
            self.scheduler.cancel(swarm)
        except Exception as exc:
            log.error(
                "cannot cancel job %s, resubmitted for swarm %s after it ended: %s (scancel it)",
                swarm.job_id,
                swarm.swarm_id,
                exc,
            )

    def cancel(self, message: Cancel) -> Cancelled:
        try:
            self.scheduler.cancel(message.swarm)
        except Exception as exc:  # answered as a failed terminate, whatever went wrong
            return Cancelled(message.swarm, message.request_id, exc)
        return Cancelled(message.swarm, message.request_id, None)
