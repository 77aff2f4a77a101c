"""JobPollerActor: the scheduler's periodic poll, off the supervisor's thread.

A slow controller (``squeue`` taking seconds) must not hold up event routing, so the poll runs
here and only its result reaches the supervisor, as a message.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pykka

from codeswarm.actors.messages import JobStates, PollJobs
from codeswarm.backends import Scheduler
from codeswarm.errors import BackendError
from codeswarm.registry import SwarmRegistry
from codeswarm.timer import Timer

log = logging.getLogger(__name__)


def poll(scheduler: Scheduler, registry: SwarmRegistry) -> JobStates | None:
    """One scheduler call for every swarm not yet known to be over; None if it failed."""
    live = [swarm for swarm in registry.all() if not swarm.all_exited()]
    if not live:
        return None
    try:
        return JobStates(live, scheduler.poll(live))
    except BackendError as exc:
        log.warning("cannot poll the scheduler: %s", exc)
        return None


class JobPollerActor(pykka.ThreadingActor):
    def __init__(
        self,
        scheduler: Scheduler,
        registry: SwarmRegistry,
        supervisor: Any,
        timer: Timer,
        poll_seconds: float,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.registry = registry
        self.supervisor = supervisor
        self.timer = timer
        self.poll_seconds = poll_seconds

    def on_start(self) -> None:
        self.timer.call_later(self.poll_seconds, self.actor_ref, PollJobs())

    def on_receive(self, message: Any) -> None:
        if isinstance(message, PollJobs):
            states = poll(self.scheduler, self.registry)
            if states is not None:
                with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
                    self.supervisor.tell(states)
            self.timer.call_later(self.poll_seconds, self.actor_ref, PollJobs())
