"""EventLogActor: logs each swarm event, then passes it on to the client, in order."""

from __future__ import annotations

import contextlib
from typing import Any

import pykka

from codeswarm.actors.messages import AfterLog, CloseLog, Emit
from codeswarm.eventlog import EventLog


class EventLogActor(pykka.ThreadingActor):
    """Stands between the router's actors and its sink; owns every open log file."""

    def __init__(self, event_log: EventLog, sink: Any) -> None:
        super().__init__()
        self.event_log = event_log
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Emit):
            self.sink.tell(Emit(self.event_log.record(message.events)))
        elif isinstance(message, AfterLog):
            with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
                message.target.tell(message.message)
        elif isinstance(message, CloseLog):
            self.event_log.close(message.swarm_id)

    def on_stop(self) -> None:
        self.event_log.close_all()
