"""The worker's approval bookkeeping, without codex: what it emits, answers and keeps."""

from __future__ import annotations

import time

from codeswarm.hpc import records
from codeswarm.hpc.approvals import Approvals, change_summary

DIFF = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-old\n+new\n+more\n context\n"


def book(timeout: float = 600.0, decision: str = "decline"):
    state = records.new_state()
    emitted, answered, saves = [], [], []
    agent = {"approval_timeout_seconds": timeout, "approval_decision": decision}
    approvals = Approvals(
        state,
        agent,
        lambda kind, **fields: emitted.append((kind, fields)),
        lambda request_id, result: answered.append((request_id, result)),
        lambda: saves.append(dict(state["approvals"])),
    )
    return approvals, state, emitted, answered, saves


def command_request(request_id: int = 5) -> dict:
    params = {"turnId": "t-1", "itemId": "call_1", "command": "make", "cwd": "/w", "reason": "r"}
    return {"id": request_id, "method": "item/commandExecution/requestApproval", "params": params}


def test_change_summary_counts_lines_but_not_file_headers():
    change = {"path": "x.py", "kind": {"type": "update", "move_path": "y.py"}, "diff": DIFF}
    assert change_summary(change) == {
        "path": "x.py",
        "change": "update",
        "move_path": "y.py",
        "additions": 2,
        "deletions": 1,
        "diff": DIFF,
    }


def test_a_file_change_request_carries_the_diff_codex_announced_with_its_item():
    approvals, _, emitted, _, _ = book()
    item = {
        "type": "fileChange",
        "id": "fc-1",
        "changes": [{"path": "n.txt", "kind": {"type": "add"}, "diff": "+hi\n"}],
    }
    approvals.note_item(item)
    params = {"turnId": "t-1", "itemId": "fc-1", "reason": "new file"}
    approvals.request(
        {"id": 1, "method": "item/fileChange/requestApproval", "params": params}, "i1"
    )

    kind, fields = emitted[0]
    assert (kind, fields["approval_kind"], fields["approval_id"]) == (
        "approval_request",
        "file_change",
        "ap-1",
    )
    assert fields["changes"] == [
        {"path": "n.txt", "change": "add", "additions": 1, "deletions": 0, "diff": "+hi\n"}
    ]
    assert "command" not in fields


def test_the_state_is_saved_before_each_event_and_ids_are_not_reused():
    approvals, state, emitted, answered, saves = book()
    approvals.request(command_request(5), "i1")
    approvals.request(command_request(6), "i1")
    assert saves == [{"ap-1": state["approvals"]["ap-1"]}, dict(state["approvals"])]
    approvals.answer({"approval_id": "ap-2", "decision": "accept_for_session", "request_id": "r"})

    assert answered == [(6, {"decision": "acceptForSession"})]
    assert list(state["approvals"]) == ["ap-1"] == list(saves[-1])
    assert emitted[-1] == (
        "approval_resolved",
        {
            "approval_id": "ap-2",
            "injection_id": "i1",
            "decision": "accept_for_session",
            "by": "client",
            "request_id": "r",
        },
    )
    approvals.answer({"approval_id": "ap-2", "decision": "accept"})
    assert emitted[-1][1]["error"] == records.ERROR_UNKNOWN_APPROVAL
    assert state["next_approval"] == 3


def test_expiry_answers_with_the_configured_decision_once():
    approvals, state, emitted, answered, _ = book(timeout=0.0, decision="accept")
    approvals.request(command_request(5), "i1")
    assert approvals.next_due() <= time.monotonic()
    approvals.expire()
    approvals.expire()

    assert answered == [(5, {"decision": "accept"})]
    resolved = [(f["decision"], f["by"]) for k, f in emitted if k == "approval_resolved"]
    assert resolved == [("accept", "timeout")]
    assert approvals.next_due() is None and state["approvals"] == {}


def test_a_turn_that_ends_settles_its_requests_without_answering_codex():
    approvals, state, emitted, answered, _ = book()
    approvals.request(command_request(5), "i1")
    approvals.turn_ended()

    assert answered == []  # codex dropped the request with the turn
    assert (emitted[-1][1]["by"], state["approvals"]) == ("turn_ended", {})
    approvals.expire()
    assert answered == []
