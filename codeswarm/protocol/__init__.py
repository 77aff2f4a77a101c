"""The router protocol, free of I/O: commands, events and the line codec."""

from codeswarm.protocol.codec import (
    decode_line,
    decode_object,
    encode_event,
    encode_events,
    error_event,
)
from codeswarm.protocol.commands import (
    Command,
    Inject,
    Interrupt,
    Launch,
    ListSwarms,
    Ping,
    Shutdown,
    Status,
    Subscribe,
    Terminate,
)
from codeswarm.protocol.events import EVENT_SCHEMAS, event_errors, make_event
from codeswarm.protocol.subscription import Subscription

__all__ = [
    "EVENT_SCHEMAS",
    "Command",
    "Inject",
    "Interrupt",
    "Launch",
    "ListSwarms",
    "Ping",
    "Shutdown",
    "Status",
    "Subscribe",
    "Subscription",
    "Terminate",
    "decode_line",
    "decode_object",
    "encode_event",
    "encode_events",
    "error_event",
    "event_errors",
    "make_event",
]
