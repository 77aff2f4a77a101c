"""Steering a node's codex: input for the running turn, and turns that are not prompts.

``steer`` adds input to the running turn (``turn/steer``); with no running turn it fails, it
never starts one. ``review`` and ``compact`` are injections like prompts: queued, then run as a
turn (``review/start`` on the working tree, ``thread/compact/start``), so their events carry
an injection_id and the router correlates them as it does a prompt's.
"""

from . import records


def turn_request(kind, thread_id, content):
    """The (method, params) that starts an injection's turn."""
    if kind == records.INBOX_REVIEW:
        target = {"type": "custom", "instructions": content} if content else None
        return "review/start", {
            "threadId": thread_id,
            "target": target or {"type": "uncommittedChanges"},
        }
    if kind == records.INBOX_COMPACT:
        return "thread/compact/start", {"threadId": thread_id}
    return "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": content}]}


def started_turn_id(result):
    """The turn id in codex's answer (compaction names none: its turn/started will)."""
    return ((result or {}).get("turn") or {}).get("id")


class Steering:
    """Applies ``steer`` inbox records; ``emit`` writes events, ``call`` sends codex a request."""

    def __init__(self, emit, call):
        self.emit = records.without_nulls(emit)
        self.call = call

    def steer(self, record, turn, thread_id):
        """Add the record's content to ``turn`` (None: no turn runs, so the steer fails)."""
        steer_id, request_id = record["steer_id"], record.get("request_id")
        if turn is None or turn.turn_id is None:
            self.emit(
                "steer_failed",
                steer_id=steer_id,
                request_id=request_id,
                error=records.STEER_NO_TURN,
                message="no turn is running on this node",
            )
            return
        injection_id, turn_id = turn.injection_id, turn.turn_id

        def answered(result, error):
            if error:
                self.emit(
                    "steer_failed",
                    steer_id=steer_id,
                    request_id=request_id,
                    injection_id=injection_id,
                    error=records.STEER_REFUSED,
                    message="codex refused the steer: %s" % error.get("message"),
                )
                return
            self.emit(
                "steer_applied",
                steer_id=steer_id,
                request_id=request_id,
                injection_id=injection_id,
                turn_id=turn_id,
            )

        params = {
            "threadId": thread_id,
            "expectedTurnId": turn_id,
            "input": [{"type": "text", "text": record["content"]}],
        }
        self.call("turn/steer", params, answered)
