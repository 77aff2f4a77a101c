"""Publish the command and event schemas as JSON Schema (``docs/protocol.schema.json``).

Run ``python -m codeswarm.protocol.jsonschema > docs/protocol.schema.json`` after changing a
schema; a test fails while the committed copy is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from marshmallow import Schema, fields, validate

from codeswarm.protocol.commands import COMMAND_SCHEMAS
from codeswarm.protocol.events import EVENT_SCHEMAS

_SIMPLE = {
    fields.String: "string",
    fields.Integer: "integer",
    fields.Float: "number",
    fields.Boolean: "boolean",
    fields.Dict: "object",
}


def _field_schema(field: fields.Field) -> dict[str, Any]:
    out: dict[str, Any]
    if hasattr(field, "json_schema"):
        out = dict(field.json_schema)
    elif isinstance(field, fields.Constant):
        out = {"const": field.constant}
    elif isinstance(field, fields.Nested):
        nested = field.nested
        out = schema_of(nested if isinstance(nested, Schema) else nested())
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": _field_schema(field.inner)}
    else:
        out = next(({"type": t} for cls, t in _SIMPLE.items() if isinstance(field, cls)), {})
    for rule in field.validators:
        if isinstance(rule, validate.OneOf):
            out["enum"] = list(rule.choices)
        elif isinstance(rule, validate.Range):
            if rule.min is not None:
                out["minimum"] = rule.min
            if rule.max is not None:
                out["maximum"] = rule.max
        elif isinstance(rule, validate.Regexp):
            out["pattern"] = rule.regex.pattern
        elif isinstance(rule, validate.Equal):
            out["const"] = rule.comparable
        elif isinstance(rule, validate.Length):
            unit = "Items" if out.get("type") == "array" else "Length"
            if rule.min is not None:
                out[f"min{unit}"] = rule.min
            if rule.max is not None:
                out[f"max{unit}"] = rule.max
    if field.allow_none:
        out = {"anyOf": [out, {"type": "null"}]}
    if field.metadata.get("description"):
        out["description"] = field.metadata["description"]
    return out


def schema_of(schema: Schema) -> dict[str, Any]:
    """One marshmallow schema as a JSON Schema object."""
    props = {field.data_key or name: _field_schema(field) for name, field in schema.fields.items()}
    required = sorted(
        field.data_key or name for name, field in schema.fields.items() if field.required
    )
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    unknown = getattr(schema.Meta, "unknown", None) if hasattr(schema, "Meta") else None
    out["additionalProperties"] = unknown != "raise"
    return out


def protocol_schema() -> dict[str, Any]:
    """Every command (keyed by verb) and every event (keyed by type), as one document."""
    commands = {}
    for verb, cls in COMMAND_SCHEMAS.items():
        body = schema_of(cls())
        body["description"] = f'the "{verb}" command; give the verb as "command" or "action"'
        commands[verb] = body
    events = {}
    for kind, cls in EVENT_SCHEMAS.items():
        body = schema_of(cls())
        body["properties"]["type"] = {"const": kind}
        events[kind] = body
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "codeswarm router protocol: one JSON object per line",
        "$defs": {"commands": commands, "events": events},
    }


def render() -> str:
    return json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
