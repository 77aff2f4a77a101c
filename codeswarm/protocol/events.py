"""Events the router emits, one schema per ``type``.

Events travel as plain dicts: most are worker outbox records passed through with the router's
fields added, and re-serialising each through marshmallow would cost more than the rest of the
hot path. The schemas here are the contract: tests validate every event the system emits against
them, and ``codeswarm.protocol.jsonschema`` publishes them.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

from codeswarm.hpc import activity, records
from codeswarm.protocol.errors import ERROR_CODES, FAILURE_CODES
from codeswarm.protocol.fields import NodeId, RequestId, SafeId

SWARM_STATES = ("pending", "running", "exited", "terminated", "failed")


class EventSchema(Schema):
    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    ts = fields.Float(required=True, metadata={"description": "seconds since the epoch"})
    request_id = RequestId(metadata={"description": "the request_id of the causing command"})
    cursor = fields.Integer(
        validate=validate.Range(min=1),
        metadata={
            "description": "the event's place in its swarm's event log: 1, 2, 3... per swarm, "
            "kept across router restarts; resume with subscribe `since`"
        },
    )


class NodeEventSchema(EventSchema):
    swarm_id = SafeId(allow_none=True)
    job_id = SafeId(required=True)
    node_id = NodeId(required=True)
    seq = fields.Integer(
        validate=validate.Range(min=0), metadata={"description": "per-node, from the worker"}
    )


class InjectionEventSchema(NodeEventSchema):
    injection_id = SafeId(required=True)


class ReadySchema(EventSchema):
    version = fields.String(required=True)
    backend = fields.String(required=True, validate=validate.OneOf(("local", "slurm")))
    pid = fields.Integer(required=True)


class ErrorSchema(EventSchema):
    error = fields.String(required=True, validate=validate.OneOf(ERROR_CODES))
    message = fields.String(required=True)
    line = fields.String(metadata={"description": "an excerpt of the offending input"})
    field = fields.String(metadata={"description": "the offending field, dotted"})
    stderr = fields.String(metadata={"description": "the tail of the failing process's stderr"})
    error_code = fields.String(metadata={"description": "agent_error: codex's typed error"})
    http_status_code = fields.Integer(metadata={"description": "with an HTTP error_code"})
    job_id = SafeId()
    node_id = NodeId()
    seq = fields.Integer()


class InjectAckSchema(InjectionEventSchema):
    held = fields.Boolean(
        required=True, metadata={"description": "true while the node is not yet running"}
    )
    duplicate = fields.Boolean(
        metadata={"description": "true when this injection_id was already accepted"}
    )


class TurnStartedSchema(InjectionEventSchema):
    turn_id = fields.String(required=True)


class AssistantDeltaSchema(InjectionEventSchema):
    delta = fields.String(required=True)


class AssistantSchema(InjectionEventSchema):
    content = fields.String(required=True)


class TurnCompleteSchema(InjectionEventSchema):
    status = fields.String(required=True, validate=validate.OneOf(records.TURN_STATUSES))
    turn_id = fields.String()
    error = fields.String(allow_none=True, metadata={"description": "codex's message"})
    error_code = fields.String(
        metadata={
            "description": "codex's typed error (codexErrorInfo) in snake_case, such as "
            "context_window_exceeded, usage_limit_exceeded, http_connection_failed"
        }
    )
    http_status_code = fields.Integer(metadata={"description": "with an HTTP error_code"})


class TurnEventSchema(InjectionEventSchema):
    turn_id = fields.String(required=True)


class ChangeSchema(Schema):
    path = fields.String(required=True)
    change = fields.String(required=True, validate=validate.OneOf(activity.CHANGE_KINDS))
    move_path = fields.String(metadata={"description": "the new path of a renamed file"})
    diff = fields.String(required=True, metadata={"description": "unified diff"})
    additions = fields.Integer(required=True)
    deletions = fields.Integer(required=True)


class ItemSchema(Schema):
    """One unit of an agent's work; which fields it has depends on ``kind``."""

    class Meta:
        unknown = INCLUDE

    id = fields.String(required=True, metadata={"description": "codex's item id"})
    kind = fields.String(
        required=True, validate=validate.OneOf(tuple(dict.fromkeys(activity.ITEM_KINDS.values())))
    )
    status = fields.String(
        metadata={"description": "in_progress, completed, failed or declined (commands, changes)"}
    )
    command = fields.String(metadata={"description": "command: codex's full shell line"})
    cwd = fields.String(metadata={"description": "command"})
    exit_code = fields.Integer(metadata={"description": "command, when completed"})
    duration_ms = fields.Integer(metadata={"description": "command, tool_call, when completed"})
    output = fields.String(metadata={"description": "command: stdout and stderr, bounded"})
    output_truncated = fields.Boolean(metadata={"description": "command: output was cut"})
    output_path = fields.String(metadata={"description": "command: the file with all of it"})
    changes = fields.List(fields.Nested(ChangeSchema), metadata={"description": "file_change"})
    diff_truncated = fields.Boolean(metadata={"description": "file_change: diffs were cut"})
    diff_path = fields.String(metadata={"description": "file_change: the file with all of them"})
    changes_omitted = fields.Integer(
        metadata={"description": "file_change: files past the bound, listed only in diff_path"}
    )
    tool = fields.String(metadata={"description": "tool_call"})
    server = fields.String(metadata={"description": "tool_call: the MCP server or namespace"})
    arguments = fields.Raw(metadata={"description": "tool_call"})
    error = fields.String(metadata={"description": "tool_call: why it failed"})
    query = fields.String(metadata={"description": "web_search"})
    summary = fields.List(fields.String(), metadata={"description": "reasoning"})
    text = fields.String(metadata={"description": "plan"})
    phase = fields.String(validate=validate.OneOf(("entered", "exited")))
    review = fields.String(metadata={"description": "review"})


class ItemEventSchema(TurnEventSchema):
    item = fields.Nested(ItemSchema, required=True)


class CommandOutputDeltaSchema(TurnEventSchema):
    item_id = fields.String(required=True)
    delta = fields.String(required=True)
    truncated = fields.Boolean(
        metadata={"description": "the output reached worker.max_event_bytes: no more deltas"}
    )
    output_path = fields.String(metadata={"description": "with truncated: the file with all of it"})


class ReasoningDeltaSchema(TurnEventSchema):
    item_id = fields.String(required=True)
    delta = fields.String(required=True)
    summary_index = fields.Integer()


class TurnDiffSchema(TurnEventSchema):
    diff = fields.String(required=True, metadata={"description": "the turn's unified diff so far"})
    diff_truncated = fields.Boolean()
    diff_path = fields.String(metadata={"description": "with diff_truncated: all of it"})


class PlanStepSchema(Schema):
    step = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(activity.PLAN_STATUSES))


class PlanUpdatedSchema(TurnEventSchema):
    explanation = fields.String()
    plan = fields.List(fields.Nested(PlanStepSchema), required=True)


class RateLimitsSchema(NodeEventSchema):
    injection_id = SafeId(metadata={"description": "the turn running, if any"})
    rate_limits = fields.Dict(
        required=True, metadata={"description": "codex's RateLimitSnapshot, as codex sends it"}
    )


class ModelReroutedSchema(TurnEventSchema):
    from_model = fields.String(required=True)
    to_model = fields.String(required=True)
    reason = fields.String(required=True, metadata={"description": "snake_case, from codex"})


class UsageSchema(InjectionEventSchema):
    input_tokens = fields.Integer(required=True)
    cached_input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)
    reasoning_output_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)


class InjectFailedSchema(InjectionEventSchema):
    error = fields.String(required=True, validate=validate.OneOf(FAILURE_CODES))
    message = fields.String(required=True)
    stderr = fields.String(metadata={"description": "the tail of the failing process's stderr"})


class ApproveAckSchema(NodeEventSchema):
    approval_id = SafeId(required=True, metadata={"description": "the approval answered"})


class SteerAckSchema(NodeEventSchema):
    steer_id = SafeId(
        required=True, metadata={"description": "the id steer_applied or steer_failed will carry"}
    )


class ChangeSchema(Schema):
    path = fields.String(required=True)
    change = fields.String(required=True, validate=validate.OneOf(("add", "delete", "update")))
    move_path = fields.String()
    additions = fields.Integer(required=True)
    deletions = fields.Integer(required=True)
    diff = fields.String(required=True, metadata={"description": "unified diff"})


class PendingApprovalSchema(Schema):
    """What a pending approval asks; ``approval_request`` and ``approval_list`` both carry it."""

    class Meta:
        unknown = INCLUDE

    approval_id = SafeId(required=True)
    approval_kind = fields.String(required=True, validate=validate.OneOf(records.APPROVAL_KINDS))
    injection_id = SafeId(required=True)
    turn_id = fields.String()
    command = fields.String(metadata={"description": "approval_kind command: the command line"})
    cwd = fields.String(metadata={"description": "approval_kind command: where it would run"})
    changes = fields.List(
        fields.Nested(ChangeSchema), metadata={"description": "approval_kind file_change"}
    )
    diff_truncated = fields.Boolean(metadata={"description": "file_change: diffs were cut"})
    diff_path = fields.String(metadata={"description": "file_change: the file with all of them"})
    changes_omitted = fields.Integer(
        metadata={"description": "file_change: files past the bound, listed only in diff_path"}
    )
    reason = fields.String(metadata={"description": "why codex asks"})
    default_decision = fields.String(
        validate=validate.OneOf(records.APPROVAL_DECISIONS),
        metadata={"description": "agent.approval_decision: what silence decides"},
    )
    expires_at = fields.Float(
        required=True, metadata={"description": "when silence decides (seconds since the epoch)"}
    )


class ApprovalRequestSchema(NodeEventSchema, PendingApprovalSchema):
    pass


class ApprovalResolvedSchema(NodeEventSchema):
    approval_id = SafeId(required=True)
    injection_id = SafeId()
    decision = fields.String(required=True, validate=validate.OneOf(records.APPROVAL_DECISIONS))
    by = fields.String(
        required=True,
        validate=validate.OneOf(records.RESOLVED_BY),
        metadata={
            "description": "client: an approve; timeout: agent.approval_decision; "
            "turn_ended: the turn ended (or the worker restarted) first"
        },
    )


class ListedApprovalSchema(PendingApprovalSchema):
    job_id = SafeId(required=True)
    node_id = NodeId(required=True)


class ApprovalListSchema(EventSchema):
    swarm_id = SafeId(required=True)
    approvals = fields.List(fields.Nested(ListedApprovalSchema), required=True)


class SteerAppliedSchema(NodeEventSchema):
    steer_id = SafeId(required=True)
    injection_id = SafeId(required=True)
    turn_id = fields.String(required=True)


class SteerFailedSchema(NodeEventSchema):
    steer_id = SafeId(required=True)
    injection_id = SafeId()
    error = fields.String(
        required=True, validate=validate.OneOf((records.STEER_NO_TURN, records.STEER_REFUSED))
    )
    message = fields.String(required=True)


class NodeStartedSchema(NodeEventSchema):
    host = fields.String(required=True, metadata={"description": "the worker's host name"})
    slurm_node = fields.String(
        allow_none=True,
        metadata={"description": "the Slurm node it runs on ($SLURMD_NODENAME); null locally"},
    )
    pid = fields.Integer(required=True)


class NodeExitedSchema(NodeEventSchema):
    reason = fields.String(required=True)


class InterruptAckSchema(NodeEventSchema):
    pass


class NodeStateSchema(Schema):
    node_id = NodeId(required=True)
    state = fields.String(required=True, validate=validate.OneOf(SWARM_STATES))
    host = fields.String(
        allow_none=True, metadata={"description": "its host, from its last node_started"}
    )
    slurm_node = fields.String(
        allow_none=True, metadata={"description": "its Slurm node, from its last node_started"}
    )
    slurm_job = fields.String(
        metadata={"description": "the Slurm job (array task) it runs in: 1234 or 1234_2"}
    )
    removed = fields.Boolean(
        metadata={"description": "true once scale removed it: it runs no new prompt"}
    )


class SwarmSchema(Schema):
    swarm_id = SafeId(required=True)
    job_id = SafeId(required=True)
    backend = fields.String(required=True)
    nodes = fields.List(fields.Nested(NodeStateSchema), required=True)
    state = fields.String(required=True, validate=validate.OneOf(SWARM_STATES))
    created = fields.Float(required=True)
    agents_per_node = fields.Integer(metadata={"description": "agents a node (1 by default)"})
    layout = fields.String(
        validate=validate.OneOf(("job", "array")),
        metadata={"description": "one Slurm job, or a job array"},
    )
    pending_reason = fields.String()  # status and list, while Slurm holds the job
    jobs = fields.List(
        fields.String(),
        metadata={
            "description": "every scheduler job the swarm has run as, first first: "
            "continuations, array tasks restarted alone, agents added"
        },
    )


class SwarmLaunchedSchema(EventSchema):
    swarm = fields.Nested(SwarmSchema, required=True)


class SwarmStatusSchema(EventSchema):
    swarm = fields.Nested(SwarmSchema, required=True)


class SwarmListSchema(EventSchema):
    swarms = fields.List(fields.Nested(SwarmSchema), required=True)


class SwarmTerminatedSchema(EventSchema):
    swarm_id = SafeId(required=True)


class PongSchema(EventSchema):
    pass


class ShuttingDownSchema(EventSchema):
    pass


class SubscribedSchema(EventSchema):
    patterns = fields.List(
        fields.String(), required=True, metadata={"description": "as the client gave them"}
    )
    events = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the known event types they select; answers come as well"},
    )
    swarm_id = SafeId(metadata={"description": "with since: the swarm replayed"})
    replayed = fields.Integer(metadata={"description": "with since: events replayed, next"})
    replay_until = fields.Integer(
        metadata={"description": "with since: the last cursor replayed; live events follow it"}
    )


class FileChangeSchema(Schema):
    path = fields.String(required=True)
    added = fields.Integer(required=True, allow_none=True, metadata={"description": "null: binary"})
    deleted = fields.Integer(required=True, allow_none=True)


class NodeDiffSchema(Schema):
    node_id = NodeId(required=True)
    branch = fields.String(metadata={"description": "codeswarm/<swarm_id>/<node_id>"})
    base = fields.String(metadata={"description": "the commit the branch started from"})
    path = fields.String(metadata={"description": "the worktree, on the cluster"})
    files = fields.List(fields.Nested(FileChangeSchema), metadata={"description": "at most 1000"})
    files_omitted = fields.Integer(metadata={"description": "changed files past the first 1000"})
    diff = fields.String(metadata={"description": "unified diff against base; absent with stat"})
    truncated = fields.Boolean(metadata={"description": "the diff was cut; it ends in a marker"})
    error = fields.String(metadata={"description": "why this node has no diff (no worktree, git)"})


class SwarmDiffSchema(EventSchema):
    swarm_id = SafeId(required=True)
    job_id = SafeId(required=True)
    nodes = fields.List(fields.Nested(NodeDiffSchema), required=True)


EVENT_SCHEMAS: dict[str, type[EventSchema]] = {
    "ready": ReadySchema,
    "error": ErrorSchema,
    "pong": PongSchema,
    "shutting_down": ShuttingDownSchema,
    "subscribed": SubscribedSchema,
    "inject_ack": InjectAckSchema,
    "inject_delivered": InjectionEventSchema,
    "turn_started": TurnStartedSchema,
    "assistant_delta": AssistantDeltaSchema,
    "assistant": AssistantSchema,
    "turn_complete": TurnCompleteSchema,
    "usage": UsageSchema,
    "inject_failed": InjectFailedSchema,
    "interrupt_ack": InterruptAckSchema,
    "approve_ack": ApproveAckSchema,
    "steer_ack": SteerAckSchema,
    "approval_request": ApprovalRequestSchema,
    "approval_resolved": ApprovalResolvedSchema,
    "approval_list": ApprovalListSchema,
    "steer_applied": SteerAppliedSchema,
    "steer_failed": SteerFailedSchema,
    "node_started": NodeStartedSchema,
    "node_exited": NodeExitedSchema,
    "swarm_launched": SwarmLaunchedSchema,
    "swarm_status": SwarmStatusSchema,
    "swarm_list": SwarmListSchema,
    "swarm_terminated": SwarmTerminatedSchema,
    "swarm_diff": SwarmDiffSchema,
    "item_started": ItemEventSchema,
    "item_completed": ItemEventSchema,
    "command_output_delta": CommandOutputDeltaSchema,
    "reasoning_delta": ReasoningDeltaSchema,
    "turn_diff": TurnDiffSchema,
    "plan_updated": PlanUpdatedSchema,
    "rate_limits": RateLimitsSchema,
    "model_rerouted": ModelReroutedSchema,
}


def make_event(kind: str, **fields_: Any) -> dict[str, Any]:
    """An event of ``kind`` stamped with the current time; None-valued fields are left out."""
    event = {"type": kind, "ts": round(time.time(), 6)}
    for key, value in fields_.items():  # a loop: a generator costs a fan-out's acks a tenth
        if value is not None:
            event[key] = value
    return event


def event_errors(event: dict[str, Any]) -> dict[str, Any]:
    """Validation errors of ``event`` against its schema; empty when it follows the contract."""
    schema = EVENT_SCHEMAS.get(event.get("type", ""))
    if schema is None:
        return {"type": [f"unknown event type {event.get('type')!r}"]}
    return schema().validate(event)
