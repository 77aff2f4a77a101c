"""What became of injections: each node's final message, or why it has none.

The answer a waiting caller wants (``inject --wait``, the MCP ``wait`` tool, ``Codeswarm.wait``)
is spread over an injection's events: the last ``assistant`` message before its
``turn_complete``, or its ``inject_failed``. This folds events into one answer per injection,
without I/O, so every door reports the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# An answer's status: how the turn ended, or "failed" before it ran, or "pending" (not yet).
STATUSES = ("completed", "interrupted", "failed", "pending")


def pending(injection_id: str) -> dict[str, Any]:
    return {
        "injection_id": injection_id,
        "node_id": None,
        "status": "pending",
        "message": None,
        "error": None,
        "detail": None,
    }


class AnswerBook:
    """Answers for a fixed set of injection ids (one node each), filled in from their events."""

    def __init__(self, injection_ids: Iterable[str]) -> None:
        self.answers = {injection_id: pending(injection_id) for injection_id in injection_ids}
        self.open = len(self.answers)

    def done(self) -> bool:
        return self.open == 0

    def tracks(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` belongs to one of these injections, finished or not."""
        return event.get("injection_id") in self.answers

    def feed(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Take one event; returns the answer it completes, if it completes one."""
        answer = self.answers.get(event.get("injection_id"))  # type: ignore[arg-type]
        if answer is None or answer["status"] != "pending":
            return None
        if "node_id" in event:
            answer["node_id"] = event["node_id"]
        kind = event.get("type")
        if kind == "assistant":
            answer["message"] = event.get("content")
            return None
        if kind == "turn_complete":
            answer["status"] = event.get("status", "failed")
            if answer["status"] == "failed":
                answer["error"] = event.get("error_code") or "turn_failed"
                answer["detail"] = event.get("error")
        elif kind == "inject_failed":
            answer["status"] = "failed"
            answer["error"] = event.get("error")
            answer["detail"] = event.get("message")
        else:
            return None
        self.open -= 1
        return answer

    def take(
        self,
        event: dict[str, Any],
        on_answer: Callable[[dict[str, Any]], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``feed`` for a waiter: ``on_event`` sees each event of these injections,
        ``on_answer`` each answer as it completes."""
        if on_event is not None and self.tracks(event):
            on_event(event)
        answer = self.feed(event)
        if answer is not None and on_answer is not None:
            on_answer(answer)

    def results(self) -> list[dict[str, Any]]:
        """Every answer, in the order the ids were given; unfinished ones ``pending``."""
        return list(self.answers.values())


def failed(answers: Iterable[dict[str, Any]]) -> bool:
    """Whether any answer is not a completed turn (what ``inject --wait`` exits 1 for)."""
    return any(answer["status"] != "completed" for answer in answers)
