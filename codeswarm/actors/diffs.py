"""DiffReaderActor: reads nodes' worktree diffs over the transport, off the routing path.

Reading a diff runs git on the cluster (over SSH for Slurm) and may take seconds on a large
worktree; the supervisor hands the request over and goes on routing events.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pykka

from codeswarm.actors.messages import Emit, ReadDiffs
from codeswarm.backends import Transport
from codeswarm.errors import BackendError
from codeswarm.protocol import errors, make_event


class DiffReaderActor(pykka.ThreadingActor):
    """Answers each ``ReadDiffs`` with a ``swarm_diff`` event, or an ``error`` event."""

    def __init__(self, transport: Transport, sink: Any) -> None:
        super().__init__()
        self.transport = transport
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        if isinstance(message, ReadDiffs):
            with contextlib.suppress(pykka.ActorDeadError):  # the client has gone
                self.sink.tell(Emit([self.answer(message)]))

    def answer(self, message: ReadDiffs) -> dict[str, Any]:
        swarm, command = message.swarm, message.command
        nodes = list(range(swarm.nodes)) if command.nodes == "all" else list(command.nodes)
        unknown = [node for node in nodes if node >= swarm.nodes]
        if unknown:
            return make_event(
                "error",
                error=errors.INVALID_FIELD,
                message=f"swarm {swarm.swarm_id} has no node {unknown[0]} (it has {swarm.nodes})",
                field="nodes",
                request_id=command.request_id,
            )
        try:
            found = self.transport.read_diffs(swarm.job_id, nodes, command.stat)
        except BackendError as exc:
            return make_event(
                "error",
                error=exc.code,
                message=f"diff failed: {exc}",
                stderr=exc.stderr or None,
                request_id=command.request_id,
            )
        return make_event(
            "swarm_diff",
            swarm_id=swarm.swarm_id,
            job_id=swarm.job_id,
            nodes=found,
            request_id=command.request_id,
        )
