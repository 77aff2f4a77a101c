"""Where a replay of a swarm's event log starts: after a cursor, or from a moment.

Every logged event carries ``cursor``, an integer that grows by one per event of its swarm, so
a client that remembers the last cursor it saw resumes exactly. A person remembers times
instead: ``since`` is also ``"start"`` or an ISO-8601 time (naive times are local).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class Since(NamedTuple):
    """Replay events with a cursor above ``cursor``, or stamped at or after ``ts``."""

    cursor: int = 0
    ts: float | None = None

    def admits(self, event: dict[str, Any]) -> bool:
        if self.ts is not None:
            return event.get("ts", 0.0) >= self.ts
        return event.get("cursor", 0) > self.cursor


START = Since()


def parse_since(value: Any) -> Since:
    """A ``since`` from the protocol: an int cursor, ``"start"`` or an ISO-8601 time.

    Python callers may also pass a float, seconds since the epoch. ValueError says what is
    wrong.
    """
    if isinstance(value, bool):
        raise ValueError('since is a cursor (an integer), "start" or an ISO-8601 time')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a cursor is 0 or more (0 replays from the start)")
        return Since(cursor=value)
    if isinstance(value, float):
        return Since(ts=value)
    if isinstance(value, str):
        if value == "start":
            return START
        if value.isdigit():
            return Since(cursor=int(value))
        return Since(ts=parse_time(value))
    raise ValueError('since is a cursor (an integer), "start" or an ISO-8601 time')


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time such as ``2026-12-02T13:00:00Z``."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f'{text!r} is not a cursor, "start" or an ISO-8601 time such as 2026-12-02T13:00:00Z'
        ) from None
    return moment.timestamp()
