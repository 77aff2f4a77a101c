"""Marshmallow fields for the values that reach file names, command lines and fan-out."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from marshmallow import ValidationError, fields

from codeswarm.hpc import records
from codeswarm.protocol.since import Since, parse_since

MAX_CONTENT_CHARS = 4 * 1024 * 1024
MAX_REQUEST_ID_CHARS = 128
MAX_NODES = 4096
# JSON can escape a lone surrogate ("\udc80"); json.loads decodes it, UTF-8 cannot encode it.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SLURM_TIME = r"[0-9][0-9:-]{0,15}"


def surrogate_problem(text: str) -> str | None:
    """Say where ``text`` holds a lone surrogate, which no UTF-8 line can carry, or None."""
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"must be valid Unicode; character {found.start()} is a lone surrogate "
        f"(U+{ord(found.group()):04X})"
    )


class SafeId(fields.String):
    """A job, swarm or injection id: safe in a file name and on a shell command line."""

    json_schema: ClassVar[dict[str, Any]] = {
        "type": "string",
        "pattern": f"^{records.ID_PATTERN}$",
        "maxLength": records.ID_MAX_LENGTH,
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        problem = records.id_problem(value)
        if problem:
            raise ValidationError(problem)
        return value


class SlurmTime(fields.String):
    """A Slurm time limit (``30``, ``01:00:00``, ``2-12``): it reaches sbatch's command line."""

    json_schema: ClassVar[dict[str, Any]] = {"type": "string", "pattern": f"^{_SLURM_TIME}$"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        # fullmatch, not a "$"-anchored match: "$" also matches before a trailing newline.
        if re.fullmatch(_SLURM_TIME, text) is None:
            raise ValidationError("must be a Slurm time limit such as 30, 01:00:00 or 2-12")
        return text


class NodeId(fields.Integer):
    """A node index within a job (Slurm's SLURM_NODEID): an int, never a bool."""

    json_schema: ClassVar[dict[str, Any]] = {
        "type": "integer",
        "minimum": 0,
        "maximum": records.NODE_ID_MAX,
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        problem = records.node_id_problem(value)
        if problem:
            raise ValidationError(problem)
        return value


def _node_list(value: Any) -> tuple[int, ...]:
    if not value:
        raise ValidationError("must name at least one node")
    if len(value) > MAX_NODES:
        raise ValidationError(f"must name at most {MAX_NODES} nodes")
    for item in value:
        problem = records.node_id_problem(item)
        if problem:
            raise ValidationError(f"node {item!r} {problem}")
    if len(set(value)) != len(value):
        raise ValidationError("must not name a node twice")
    return tuple(value)


class NodeSelector(fields.Field):
    """Which nodes a command targets: one index, a list of indexes, or ``"all"``."""

    json_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            NodeId.json_schema,
            {"type": "array", "items": NodeId.json_schema, "minItems": 1, "maxItems": MAX_NODES},
            {"const": "all"},
        ]
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[int, ...] | str:
        if value == "all":
            return "all"
        if isinstance(value, list):
            return _node_list(value)
        problem = records.node_id_problem(value)
        if problem:
            raise ValidationError(f'must be a node index, a list of them, or "all"; {problem}')
        return (value,)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value if value == "all" else list(value)


class Content(fields.String):
    """A prompt: any text, bounded so one line cannot exhaust a node's memory."""

    json_schema: ClassVar[dict[str, Any]] = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CONTENT_CHARS,
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text:
            raise ValidationError("must not be empty")
        if len(text) > MAX_CONTENT_CHARS:
            raise ValidationError(f"must be at most {MAX_CONTENT_CHARS} characters")
        return text


class RequestId(fields.Field):
    """A client's correlation token, echoed on every event its command causes."""

    json_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [{"type": "string", "maxLength": MAX_REQUEST_ID_CHARS}, {"type": "integer"}]
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("must be a string or an integer")
        if isinstance(value, str):
            if len(value) > MAX_REQUEST_ID_CHARS:
                raise ValidationError(f"must be at most {MAX_REQUEST_ID_CHARS} characters")
            problem = surrogate_problem(value)
            if problem:
                raise ValidationError(problem)
        return value


class SinceField(fields.Field):
    """Where a replay starts: a cursor, ``"start"`` or an ISO-8601 time (see ``since``)."""

    json_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "maxLength": 64, "description": '"start" or an ISO-8601 time'},
        ]
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Since:
        if isinstance(value, float) or (isinstance(value, str) and len(value) > 64):
            raise ValidationError('must be a cursor (an integer), "start" or an ISO-8601 time')
        try:
            return parse_since(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
