"""Lines in, commands or error events out; events in, lines out. Never raises on input.

The router answers every line it reads. Whatever a client sends (bytes that are not UTF-8,
JSON nested a million deep, a verb it has never heard of) becomes an ``error`` event with a
stable code, an excerpt of the line and, where it can be recovered, the ``request_id``.
"""

from __future__ import annotations

import json
from typing import Any

from marshmallow import ValidationError

from codeswarm.protocol import errors
from codeswarm.protocol.commands import COMMAND_SCHEMAS, Command, CommandSchema
from codeswarm.protocol.events import make_event
from codeswarm.protocol.fields import RequestId

# Large enough for a MAX_CONTENT_CHARS prompt with every character escaped.
MAX_LINE_BYTES = 32 * 1024 * 1024
EXCERPT_CHARS = 200
_MISSING_MESSAGE = "Missing data for required field."

_schemas: dict[str, CommandSchema] = {verb: cls() for verb, cls in COMMAND_SCHEMAS.items()}
_request_id_field = RequestId()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def excerpt(line: str | bytes) -> str:
    """The start of a line, safe to echo back inside an error event."""
    if isinstance(line, bytes):
        line = line[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    return line if len(line) <= EXCERPT_CHARS else line[:EXCERPT_CHARS] + "..."


def error_event(
    code: str,
    message: str,
    line: str | bytes | None = None,
    field: str | None = None,
    request_id: Any = None,
) -> dict[str, Any]:
    return make_event(
        "error",
        error=code,
        message=message,
        line=None if line is None else excerpt(line),
        field=field,
        request_id=request_id,
    )


def _flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    """Marshmallow's nested error dict as (dotted field, message) pairs."""
    if isinstance(messages, dict):
        pairs: list[tuple[str, str]] = []
        for key, value in messages.items():
            name = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            pairs.extend(_flatten(value, name))
        return pairs
    if isinstance(messages, list):
        return [pair for item in messages for pair in _flatten(item, path)]
    return [(path, str(messages))]


def _request_id(data: dict[str, Any]) -> Any:
    try:
        return _request_id_field.deserialize(data["request_id"])
    except (KeyError, ValidationError):
        return None


def decode_line(line: str | bytes) -> Command | dict[str, Any]:
    """One input line as a command, or an ``error`` event saying why it is not one."""
    if len(line) > MAX_LINE_BYTES:
        return error_event(
            errors.LINE_TOO_LONG, f"line is longer than {MAX_LINE_BYTES} bytes", line
        )
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return error_event(errors.INVALID_ENCODING, f"line is not UTF-8: {exc}", line)
    try:
        data = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return error_event(errors.INVALID_JSON, f"not valid JSON: {exc}", line)
    if not isinstance(data, dict):
        return error_event(errors.NOT_AN_OBJECT, "a command is a JSON object", line)
    return decode_object(data, line)


def decode_object(data: dict[str, Any], line: str | bytes = "") -> Command | dict[str, Any]:
    """A decoded JSON object as a command, or an ``error`` event."""
    request_id = _request_id(data)
    verb = data.get("command", data.get("action"))
    if "command" in data and "action" in data and data["command"] != data["action"]:
        return error_event(
            errors.INVALID_FIELD,
            "command and action name different verbs; give one",
            line,
            "command",
            request_id,
        )
    if verb is None:
        return error_event(
            errors.MISSING_FIELD,
            f"name the verb in 'command' (or 'action'): one of {', '.join(_schemas)}",
            line,
            "command",
            request_id,
        )
    schema = _schemas.get(verb) if isinstance(verb, str) else None
    if schema is None:
        return error_event(
            errors.UNKNOWN_COMMAND,
            f"unknown command {excerpt(json.dumps(verb))}; known: {', '.join(_schemas)}",
            line,
            "command",
            request_id,
        )
    try:
        return schema.load(data)
    except ValidationError as exc:
        problems = _flatten(exc.messages)
        missing = [name for name, message in problems if message == _MISSING_MESSAGE]
        if missing:
            return error_event(
                errors.MISSING_FIELD,
                f"{verb}: missing {', '.join(missing)}",
                line,
                missing[0],
                request_id,
            )
        name, _ = problems[0]
        detail = "; ".join(f"{field}: {message}" for field, message in problems)
        return error_event(errors.INVALID_FIELD, f"{verb}: {detail}", line, name, request_id)


def encode_event(event: dict[str, Any]) -> str:
    """One event as one protocol line: compact JSON ending in a newline."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
