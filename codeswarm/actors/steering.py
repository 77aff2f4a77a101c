"""Approvals and steering on the router's side: what each node is told, and the pending list.

``approve`` and ``steer`` become inbox records written to each selected running node (acked
per node with ``approve_ack`` or ``steer_ack``; the worker answers with ``approval_resolved`` or
``steer_applied``/``steer_failed``). ``approvals`` is answered from the workers' state files,
which hold every pending request: the one source a short-lived CLI router and a daemon share,
with no outbox to replay.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from codeswarm.actors.answering import AnsweringActor
from codeswarm.actors.messages import ListApprovals
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.protocol import commands, make_event

log = logging.getLogger(__name__)


def node_command(
    command: commands.Approve | commands.Steer,
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(verb, inbox record, fields of its acks) for each node the command names."""
    if isinstance(command, commands.Approve):
        record = records.inbox_approve(command.approval_id, command.decision, command.request_id)
        return "approve", record, {"approval_id": command.approval_id}
    steer_id = command.steer_id or f"st-{uuid.uuid4().hex[:12]}"
    record = records.inbox_steer(steer_id, command.content, command.request_id)
    return "steer", record, {"steer_id": steer_id}


class ApprovalsActor(AnsweringActor):
    """Answers ``approvals`` by reading state files: a slow SSH read never stalls the router."""

    handles = ListApprovals

    def answer(self, message: ListApprovals) -> dict[str, Any]:
        try:
            states = self.transport.read_states(message.job_id, message.nodes)
        except BackendError as exc:
            return make_event(
                "error", error=exc.code, message=str(exc), request_id=message.request_id
            )
        pending = []
        for node_id, data in sorted(states.items()):
            try:
                approvals = records.pending_approvals(data)
            except records.RecordError as exc:
                log.warning("node %s of job %s: %s", node_id, message.job_id, exc)
                continue
            for approval_id, request in approvals.items():
                pending.append(
                    dict(request, approval_id=approval_id, job_id=message.job_id, node_id=node_id)
                )
        return make_event(
            "approval_list",
            request_id=message.request_id,
            swarm_id=message.swarm_id,
            approvals=pending,
        )
