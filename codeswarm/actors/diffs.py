"""DiffReaderActor: reads nodes' worktree diffs over the transport, off the routing path.

Reading a diff runs git on the cluster (over SSH for Slurm) and may take seconds on a large
worktree; the supervisor hands the request over and goes on routing events.
"""

from __future__ import annotations

from typing import Any

from codeswarm.actors.answering import AnsweringActor
from codeswarm.actors.messages import ReadDiffs
from codeswarm.errors import BackendError
from codeswarm.protocol import errors, make_event


class DiffReaderActor(AnsweringActor):
    """Answers each ``ReadDiffs`` with a ``swarm_diff`` event, or an ``error`` event."""

    handles = ReadDiffs

    def request_id(self, message: ReadDiffs) -> Any:
        return message.command.request_id

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
