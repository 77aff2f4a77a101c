"""Commands a client sends the router, as marshmallow schemas and the frozen values they load.

Both spellings of the seed's inject are one command: ``action`` or ``command`` names the verb,
``job_id`` or ``swarm_id`` names the target, ``node_id`` or ``nodes`` names the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from codeswarm.hpc import records
from codeswarm.protocol.fields import (
    Content,
    NodeId,
    NodeSelector,
    RequestId,
    SafeId,
    SinceField,
    SlurmTime,
)
from codeswarm.protocol.since import Since
from codeswarm.protocol.subscription import pattern_problem

Nodes = tuple[int, ...] | Literal["all"]
MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 128


@dataclass(frozen=True, slots=True)
class Inject:
    """Send ``content`` to each selected node of a swarm (or job) as one injection per node.

    ``kind`` says what the worker does with it: a prompt (``user``), a ``review`` of the
    working tree (content: instructions, may be empty) or a ``compact`` of the thread.
    """

    content: str
    nodes: Nodes
    swarm_id: str | None = None
    job_id: str | None = None
    injection_id: str | None = None
    request_id: str | int | None = None
    kind: str = records.INBOX_USER


@dataclass(frozen=True, slots=True)
class Approve:
    """Answer the pending approval ``approval_id`` on each selected node."""

    approval_id: str
    decision: str
    nodes: Nodes
    swarm_id: str | None = None
    job_id: str | None = None
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Steer:
    """Add ``content`` to the running turn of each selected node; no running turn fails."""

    content: str
    nodes: Nodes
    swarm_id: str | None = None
    job_id: str | None = None
    steer_id: str | None = None
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class ListApprovals:
    """The pending approvals of a swarm's selected nodes, read from their workers' state."""

    swarm_id: str
    nodes: Nodes = "all"
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the running turn on each selected node; queued prompts stay queued."""

    nodes: Nodes
    swarm_id: str | None = None
    job_id: str | None = None
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """Start a swarm on ``nodes`` nodes, optionally sending each agent the first ``prompt``.

    Each node runs ``agents_per_node`` agents (None: the config's ``slurm.agents_per_node``).
    """

    nodes: int
    prompt: str | None = None
    time: str | None = None
    partition: str | None = None
    request_id: str | int | None = None
    agents_per_node: int | None = None


@dataclass(frozen=True, slots=True)
class ListSwarms:
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Status:
    swarm_id: str
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Terminate:
    swarm_id: str
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Restart:
    """Resubmit, alone, the job-array tasks of these agents, once they have exited."""

    swarm_id: str
    nodes: Nodes
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Scale:
    """Grow a swarm by ``add`` nodes of agents (new indices, the same swarm), or drain and
    stop the agents ``remove``: exactly one of the two is given."""

    swarm_id: str
    add: int | None = None
    remove: tuple[int, ...] = ()
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Shutdown:
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Receive only events whose type matches one of ``events`` (answers always come); with
    ``since``, first what ``swarm_id``'s event log holds after it.

    It concerns the connection, not the swarms: the daemon's ProtocolActor answers it.
    ``events`` None keeps the connection's filter.
    """

    events: tuple[str, ...] | None
    request_id: str | int | None = None
    swarm_id: str | None = None
    since: Since | None = None


@dataclass(frozen=True, slots=True)
class Diff:
    """Each selected node's changes in its git worktree against the commit it started from."""

    swarm_id: str
    nodes: Nodes = "all"
    stat: bool = False
    request_id: str | int | None = None


Command = (
    Inject
    | Interrupt
    | Approve
    | Steer
    | ListApprovals
    | Launch
    | ListSwarms
    | Status
    | Terminate
    | Restart
    | Scale
    | Ping
    | Shutdown
    | Subscribe
    | Diff
)


class CommandSchema(Schema):
    """Fields every command may carry; the verb itself is checked by the codec."""

    class Meta:
        unknown = RAISE

    command = fields.String(metadata={"description": "the verb; `action` is accepted too"})
    action = fields.String(metadata={"description": "the verb; `command` is accepted too"})
    request_id = RequestId(metadata={"description": "echoed on every event the command causes"})


class _TargetedSchema(CommandSchema):
    """Commands aimed at nodes: a swarm or job, and one node, a list, or all of them."""

    swarm_id = SafeId()
    job_id = SafeId()
    node_id = NodeSelector(metadata={"description": "one node index (seed spelling)"})
    nodes = NodeSelector(metadata={"description": 'a node index, a list of them, or "all"'})

    @validates_schema
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("swarm_id" in data) == ("job_id" in data):
            raise ValidationError("give exactly one of swarm_id or job_id", "swarm_id")
        if ("node_id" in data) == ("nodes" in data):
            raise ValidationError("give exactly one of nodes or node_id", "nodes")

    @staticmethod
    def _target(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "swarm_id": data.get("swarm_id"),
            "job_id": data.get("job_id"),
            "nodes": data["nodes"] if "nodes" in data else data["node_id"],
            "request_id": data.get("request_id"),
        }


class InjectSchema(_TargetedSchema):
    content = Content(required=True)
    injection_id = SafeId(metadata={"description": "client-chosen; makes a retry idempotent"})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Inject:
        return Inject(
            content=data["content"], injection_id=data.get("injection_id"), **self._target(data)
        )


class InterruptSchema(_TargetedSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Interrupt:
        return Interrupt(**self._target(data))


class ReviewSchema(_TargetedSchema):
    instructions = Content(metadata={"description": "what to review for; default: the changes"})
    injection_id = SafeId(metadata={"description": "client-chosen; makes a retry idempotent"})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Inject:
        return Inject(
            content=data.get("instructions", ""),
            injection_id=data.get("injection_id"),
            kind=records.INBOX_REVIEW,
            **self._target(data),
        )


class CompactSchema(_TargetedSchema):
    injection_id = SafeId(metadata={"description": "client-chosen; makes a retry idempotent"})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Inject:
        return Inject(
            content="",
            injection_id=data.get("injection_id"),
            kind=records.INBOX_COMPACT,
            **self._target(data),
        )


class ApproveSchema(_TargetedSchema):
    approval_id = SafeId(required=True, metadata={"description": "from `approval_request`"})
    decision = fields.String(required=True, validate=validate.OneOf(records.APPROVAL_DECISIONS))

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Approve:
        return Approve(
            approval_id=data["approval_id"], decision=data["decision"], **self._target(data)
        )


class SteerSchema(_TargetedSchema):
    content = Content(required=True)
    steer_id = SafeId(metadata={"description": "client-chosen; echoed by steer_applied/failed"})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Steer:
        return Steer(content=data["content"], steer_id=data.get("steer_id"), **self._target(data))


class LaunchSchema(CommandSchema):
    nodes = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=1, max=4096),
        metadata={"description": "Slurm nodes (local: groups of agents_per_node agents)"},
    )
    agents_per_node = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=256),
        metadata={"description": "agents a node; default: the config's slurm.agents_per_node"},
    )
    prompt = Content()
    time = SlurmTime()
    partition = SafeId()

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Launch:
        data.pop("command", None)
        data.pop("action", None)
        return Launch(**data)


class _SwarmSchema(CommandSchema):
    swarm_id = SafeId(required=True)


class StatusSchema(_SwarmSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Status:
        return Status(swarm_id=data["swarm_id"], request_id=data.get("request_id"))


class TerminateSchema(_SwarmSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Terminate:
        return Terminate(swarm_id=data["swarm_id"], request_id=data.get("request_id"))


class RestartSchema(_SwarmSchema):
    nodes = NodeSelector(
        required=True,
        metadata={"description": 'agents whose array tasks to resubmit: an index, a list, "all"'},
    )

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Restart:
        return Restart(data["swarm_id"], data["nodes"], data.get("request_id"))


class ScaleSchema(_SwarmSchema):
    add = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=4096),
        metadata={
            "description": "nodes to add, each running the swarm's agents_per_node agents "
            "(local: groups of agents), as launch's nodes"
        },
    )
    remove = fields.List(
        NodeId(),
        validate=validate.Length(min=1),
        metadata={"description": "agents (node ids) to drain and stop"},
    )

    @validates_schema
    def _one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("add" in data) == ("remove" in data):
            raise ValidationError("give either add (a count of nodes) or remove (node ids)", "add")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Scale:
        remove = tuple(sorted(set(data.get("remove", ()))))
        return Scale(data["swarm_id"], data.get("add"), remove, data.get("request_id"))


class ApprovalsSchema(_SwarmSchema):
    nodes = NodeSelector(metadata={"description": 'a node index, a list of them, or "all"'})

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ListApprovals:
        return ListApprovals(
            swarm_id=data["swarm_id"],
            nodes=data.get("nodes", "all"),
            request_id=data.get("request_id"),
        )


class ListSchema(CommandSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ListSwarms:
        return ListSwarms(request_id=data.get("request_id"))


class PingSchema(CommandSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Ping:
        return Ping(request_id=data.get("request_id"))


class ShutdownSchema(CommandSchema):
    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Shutdown:
        return Shutdown(request_id=data.get("request_id"))


class DiffSchema(_SwarmSchema):
    nodes = NodeSelector(
        metadata={"description": 'a node index, a list of them, or "all" (default)'}
    )
    stat = fields.Boolean(
        truthy={True},
        falsy={False},
        error_messages={"invalid": "must be true or false"},
        metadata={"description": "true: changed files and line counts only"},
    )

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Diff:
        return Diff(
            swarm_id=data["swarm_id"],
            nodes=data.get("nodes", "all"),
            stat=data.get("stat", False),
            request_id=data.get("request_id"),
        )


def _patterns(value: list[str]) -> None:
    for pattern in value:
        problem = pattern_problem(pattern)
        if problem:
            raise ValidationError(problem)


class SubscribeSchema(CommandSchema):
    events = fields.List(
        fields.String(validate=validate.Length(min=1, max=MAX_PATTERN_CHARS)),
        validate=[validate.Length(max=MAX_PATTERNS), _patterns],
        metadata={
            "description": "event types or fnmatch globs over `type`; [] keeps answers only; "
            "left out with `since`: the filter stays as it is"
        },
    )
    swarm_id = SafeId(metadata={"description": "with `since`: the swarm whose log to replay"})
    since = SinceField(
        metadata={"description": "replay the swarm's logged events after this cursor or time"}
    )

    @validates_schema
    def _replay(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "swarm_id" not in data:
            raise ValidationError("since needs the swarm_id whose log to replay", "swarm_id")
        if "swarm_id" in data and "since" not in data:
            raise ValidationError("swarm_id names a log to replay: give since too", "since")
        if "since" not in data and "events" not in data:  # a filter, or a replay, or both
            raise ValidationError(fields.Field.default_error_messages["required"], "events")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> Subscribe:
        events = data.get("events")
        return Subscribe(
            events=None if events is None else tuple(events),
            request_id=data.get("request_id"),
            swarm_id=data.get("swarm_id"),
            since=data.get("since"),
        )


COMMAND_SCHEMAS: dict[str, type[CommandSchema]] = {
    "inject": InjectSchema,
    "interrupt": InterruptSchema,
    "approve": ApproveSchema,
    "approvals": ApprovalsSchema,
    "steer": SteerSchema,
    "review": ReviewSchema,
    "compact": CompactSchema,
    "launch": LaunchSchema,
    "list": ListSchema,
    "status": StatusSchema,
    "terminate": TerminateSchema,
    "restart": RestartSchema,
    "scale": ScaleSchema,
    "ping": PingSchema,
    "shutdown": ShutdownSchema,
    "subscribe": SubscribeSchema,
    "diff": DiffSchema,
}
