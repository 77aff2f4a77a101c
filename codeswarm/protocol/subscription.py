"""Which events a client receives: event types or ``fnmatch`` globs over ``type``.

A subscription only narrows the activity stream. The answers to a client's own commands reach
it whatever it subscribed to (``ANSWER_TYPES``): a client that asked for ``assistant`` only
still learns that its ``inject`` failed. They are chosen by type, not by ``request_id``,
because the router stamps an injection's ``request_id`` on every event the worker writes for
it, deltas included.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from codeswarm.protocol.events import EVENT_SCHEMAS

EVENT_TYPES: tuple[str, ...] = tuple(EVENT_SCHEMAS)

# High-volume streams a person watching does not want; a program asks for them by name.
HIGH_VOLUME_TYPES = ("command_output_delta", "reasoning_delta")
DEFAULT_PATTERNS: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t not in HIGH_VOLUME_TYPES)

# Events that answer a command of this client, or concern the connection itself.
ANSWER_TYPES = frozenset(
    {
        "ready",
        "error",
        "shutting_down",
        "pong",
        "subscribed",
        "swarm_launched",
        "swarm_status",
        "swarm_list",
        "swarm_terminated",
        "swarm_diff",
        "inject_ack",
        "inject_failed",
        "interrupt_ack",
        "approve_ack",
        "steer_ack",
        "approval_list",
        "approval_resolved",
        "steer_applied",
        "steer_failed",
    }
)


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` cannot select events, or None when it matches some event type."""
    if not isinstance(pattern, str) or not pattern:
        return "an event type or glob is a non-empty string"
    if not any(fnmatchcase(kind, pattern) for kind in EVENT_TYPES):
        return f"{pattern!r} matches no event type; known types: {', '.join(EVENT_TYPES)}"
    return None


class Subscription:
    """A client's event filter: answers always, other events when a pattern matches their type.

    Decisions for the known types are made once: the filter sits on the path of every event.
    """

    __slots__ = ("_known", "patterns")

    def __init__(self, patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self.patterns = tuple(patterns)
        self._known = {kind: self._decide(kind) for kind in EVENT_TYPES}

    @classmethod
    def checked(cls, patterns: Iterable[str]) -> Subscription:
        """A subscription to ``patterns``; ValueError naming the first one that matches nothing."""
        patterns = tuple(patterns)
        for pattern in patterns:
            problem = pattern_problem(pattern)
            if problem:
                raise ValueError(problem)
        return cls(patterns)

    def _decide(self, kind: str) -> bool:
        return kind in ANSWER_TYPES or any(fnmatchcase(kind, p) for p in self.patterns)

    def wants(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if not isinstance(kind, str):
            return True  # not the filter's to judge
        decision = self._known.get(kind)
        return self._decide(kind) if decision is None else decision

    def select(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [event for event in events if self.wants(event)]

    def resolved(self) -> list[str]:
        """The known event types the patterns select, in the protocol's order."""
        return [kind for kind in EVENT_TYPES if any(fnmatchcase(kind, p) for p in self.patterns)]
