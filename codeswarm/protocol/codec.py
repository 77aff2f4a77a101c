"""Lines in, commands or error events out; events in, lines out. Never raises on input.

The router answers every line it reads. Whatever a client sends (bytes that are not UTF-8,
JSON nested a million deep, a verb it has never heard of, a lone surrogate escaped as
``\\udc80``) becomes an ``error`` event with a stable code, an excerpt of the line and, where it
can be recovered, the ``request_id``. On the way out, an event that cannot be encoded becomes
an ``error`` event too, so that it costs no other event its place on the line.
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from typing import Any

from marshmallow import ValidationError

from codeswarm.protocol import errors
from codeswarm.protocol.commands import COMMAND_SCHEMAS, Command, CommandSchema
from codeswarm.protocol.events import make_event
from codeswarm.protocol.fields import RequestId, surrogate_problem

# Large enough for a MAX_CONTENT_CHARS prompt with every character escaped.
MAX_LINE_BYTES = 32 * 1024 * 1024
EXCERPT_CHARS = 200
_MISSING_MESSAGE = "Missing data for required field."

_schemas: dict[str, CommandSchema] = {verb: cls() for verb, cls in COMMAND_SCHEMAS.items()}
_request_id_field = RequestId()
# One encoder for every event: json.dumps with options builds a new one per call.
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# Bytes after which a worker's line is not passed on as it is: JSON constants and escaped
# surrogates, which the encoder refuses (so the event becomes an ``unencodable_event`` error).
_NOT_PASSED_ON = re.compile(rb"NaN|Infinity|\\u[dD]")
# What an unencodable event's replacement keeps, so the client can tell which one it lost.
_CORRELATION_FIELDS = ("request_id", "swarm_id", "job_id", "node_id", "injection_id")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _escaped(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\udXXXX``, so UTF-8 can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(line: str | bytes) -> str:
    """The start of a line, safe to echo back inside an error event."""
    if isinstance(line, bytes):
        line = line[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    line = _escaped(line[: EXCERPT_CHARS + 2].rstrip("\r\n"))
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


def _unencodable_string(data: dict[str, Any]) -> tuple[str, str] | None:
    """The first field, at any depth, whose name or text UTF-8 cannot carry, and why.

    Checked before the schemas: a string that passes them reaches a node's inbox or the
    client's output, and the UTF-8 encoding there is too late to answer the client.
    Breadth-first, without recursion: nesting is as deep as the JSON parser allowed.
    """
    queue: deque[tuple[str, Any]] = deque([("", data)])
    while queue:
        path, value = queue.popleft()
        if isinstance(value, str):
            problem = surrogate_problem(value)
            if problem:
                return path, problem
        elif isinstance(value, dict):
            for key, item in value.items():
                name = _escaped(str(key))
                child = f"{path}.{name}" if path else name
                problem = surrogate_problem(key) if isinstance(key, str) else None
                if problem:
                    return child, f"the field name {problem}"
                queue.append((child, item))
        elif isinstance(value, (list, tuple)):
            queue.extend((f"{path}.{index}", item) for index, item in enumerate(value))
    return None


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
    unencodable = _unencodable_string(data)
    if unencodable is not None:
        name, problem = unencodable
        return error_event(errors.INVALID_FIELD, f"{name}: {problem}", line, name, request_id)
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


class EncodedEvent(dict):
    """An event that carries its protocol line, made once from the bytes it was decoded from."""

    __slots__ = ("line",)
    line: bytes


def routed(raw: bytes, event: dict[str, Any], swarm_id: Any, request_id: Any) -> dict[str, Any]:
    """``event``, decoded from a worker's UTF-8 JSON line ``raw``, with the router's ids added.

    ``swarm_id`` always, ``request_id`` unless None. Encoding a routed event again costs more
    than routing it, so its line is ``raw`` with the ids spliced in, unless ``raw`` holds what
    the encoder would refuse or an id field it would replace: then the event is encoded on
    its way out like any other.
    """
    passed_on = (
        event
        and raw.endswith(b"}")
        and "swarm_id" not in event
        and "request_id" not in event
        and not _NOT_PASSED_ON.search(raw)
    )
    try:
        suffix = _ids_suffix(swarm_id, request_id) if passed_on else b""
    except (TypeError, ValueError, RecursionError):
        suffix = b""
    encoded = EncodedEvent(event) if suffix else event
    encoded["swarm_id"] = swarm_id
    if request_id is not None:
        encoded["request_id"] = request_id
    if suffix:
        encoded.line = raw[:-1] + suffix
    return encoded


@functools.lru_cache(maxsize=1024, typed=True)
def _ids_suffix(swarm_id: Any, request_id: Any) -> bytes:
    """``,"swarm_id":..,"request_id":..}`` and a newline: the same few for a node's events."""
    fields = {"swarm_id": swarm_id}
    if request_id is not None:
        fields["request_id"] = request_id
    return b"," + _encoder.encode(fields)[1:].encode("utf-8") + b"\n"


def _line(event: dict[str, Any]) -> bytes:
    return event.line if isinstance(event, EncodedEvent) else encode_event(event)


def encode_event(event: dict[str, Any]) -> bytes:
    """One event as one protocol line: compact UTF-8 JSON ending in a newline.

    Raises:
        ValueError: a lone surrogate (UnicodeEncodeError), NaN or infinity, a reference cycle.
        TypeError: a value JSON has no type for.
    """
    return (_encoder.encode(event) + "\n").encode("utf-8")


def _encodes(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _unencodable_error(event: dict[str, Any], problem: str) -> dict[str, Any]:
    replacement = error_event(
        errors.UNENCODABLE_EVENT,
        f"an event could not be encoded and was left out: {problem}",
    )
    replacement.update(
        (key, event[key]) for key in _CORRELATION_FIELDS if key in event and _encodes(event[key])
    )
    return replacement


def encode_events(events: list[dict[str, Any]]) -> tuple[bytes, list[str]]:
    """Events as protocol lines, each encoded on its own, and what went wrong with any.

    An event that cannot be encoded is replaced by an ``unencodable_event`` error carrying its
    correlation fields; the others are sent as they are. The problems are for the log.
    An event decoded from a worker's line keeps that line (``routed``).
    """
    try:
        return b"".join(map(_line, events)), []
    except (TypeError, ValueError, RecursionError):
        pass  # find the culprits one by one
    lines: list[bytes] = []
    problems: list[str] = []
    for event in events:
        try:
            lines.append(_line(event))
        except (TypeError, ValueError, RecursionError) as exc:
            kind = _escaped(str(event.get("type")))
            problem = f"{kind} event: {_escaped(str(exc))}"
            problems.append(problem)
            lines.append(encode_event(_unencodable_error(event, problem)))
    return b"".join(lines), problems
