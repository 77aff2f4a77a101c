"""AnsweringActor: one request message in, one event out to the client, off the routing path.

The diff reader and the approvals reader read the cluster (git over SSH, state files over SFTP)
for one client request each. An unexpected failure in one of them answers that request with an
error and leaves the actor serving the next: an actor that died would make the
supervisor's next ``tell`` fail and stop the whole router. The answer is a ``backend`` error,
not ``internal``: that code says the router itself stopped.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pykka

from codeswarm.actors.messages import Emit
from codeswarm.backends import Transport
from codeswarm.protocol import errors, make_event

log = logging.getLogger(__name__)


class AnsweringActor(pykka.ThreadingActor):
    """Answers each message of type ``handles`` with the event ``answer`` makes."""

    handles: type

    def __init__(self, transport: Transport, sink: Any) -> None:
        super().__init__()
        self.transport = transport
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        if not isinstance(message, self.handles):
            return
        try:
            event = self.answer(message)
        except Exception as exc:
            # `internal` would tell embedders the router died; it did not: this request failed.
            log.exception("%s failed on %r", type(self).__name__, message)
            event = make_event(
                "error",
                error=errors.BACKEND,
                message=f"reading the cluster failed: {exc!r} (the router's log has the trace)",
                request_id=self.request_id(message),
            )
        with contextlib.suppress(pykka.ActorDeadError):  # the client has gone
            self.sink.tell(Emit([event]))

    def answer(self, message: Any) -> dict[str, Any]:
        raise NotImplementedError

    def request_id(self, message: Any) -> Any:
        return message.request_id
