"""Marshmallow views of the mailbox records that ``codeswarm.hpc.records`` defines.

The worker and follower check records with the standard library alone; these schemas say the
same thing in the router's terms, and the tests hold the two to agreement.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from codeswarm.hpc import records
from codeswarm.protocol.events import EVENT_SCHEMAS
from codeswarm.protocol.fields import SafeId


class InboxUserSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.Constant(records.INBOX_USER, required=True)
    injection_id = SafeId(required=True)
    content = fields.String(required=True)


class InboxControlSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(
        required=True, validate=validate.OneOf((records.INBOX_INTERRUPT, records.INBOX_SHUTDOWN))
    )


class WorkerStateSchema(Schema):
    class Meta:
        unknown = RAISE

    version = fields.Integer(required=True, strict=True, validate=validate.Equal(1))
    inbox_offset = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    thread_id = fields.String(required=True, allow_none=True)
    handled = fields.List(SafeId(), required=True)
    in_flight = SafeId(required=True, allow_none=True)
    next_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))


def inbox_record_errors(record: Any) -> dict[str, Any]:
    """Validation errors of one inbox record; empty when the worker would accept it."""
    if not isinstance(record, dict):
        return {"_schema": ["not a JSON object"]}
    if record.get("type") == records.INBOX_USER:
        return InboxUserSchema().validate(record)
    return InboxControlSchema().validate(record)


def outbox_event_errors(event: Any) -> dict[str, Any]:
    """Validation errors of one outbox event: its envelope and its router event schema."""
    if not isinstance(event, dict):
        return {"_schema": ["not a JSON object"]}
    if event.get("type") not in records.OUTBOX_EVENT_FIELDS:
        return {"type": [f"not an outbox event type: {event.get('type')!r}"]}
    found: dict[str, Any] = EVENT_SCHEMAS[event["type"]]().validate(event)
    for name in records.OUTBOX_ENVELOPE:
        if name not in event:
            found.setdefault(name, ["Missing data for required field."])
    seq = event.get("seq")
    if "seq" in event and (isinstance(seq, bool) or not isinstance(seq, int)):
        found.setdefault("seq", ["must be an integer"])
    return found
