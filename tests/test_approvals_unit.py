"""The worker's approval bookkeeping, without codex: what it emits, answers and keeps."""

from __future__ import annotations

import time

from codeswarm.hpc import records
from codeswarm.hpc.activity import Activity
from codeswarm.hpc.approvals import Approvals

DIFF = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-old\n+new\n+more\n context\n"


def book(timeout: float = 600.0, decision: str = "decline", workspace: str = "/ws/77_0"):
    state = records.new_state()
    emitted, answered, saves = [], [], []
    agent = {
        "approval_timeout_seconds": timeout,
        "approval_decision": decision,
        "approval_policy": "on-request",
    }
    approvals = Approvals(
        state,
        agent,
        lambda kind, **fields: emitted.append((kind, fields)),
        lambda request_id, result: answered.append((request_id, result)),
        lambda: saves.append((len(emitted), dict(state["approvals"]))),  # events before it
        workspace,
    )
    return approvals, state, emitted, answered, saves


def described(raw: dict, log_dir: str = "/nonexistent") -> dict:
    """A fileChange item as the worker's activity stream shows it, which approvals keep."""
    return Activity(lambda kind, **fields: None, log_dir, max_event_bytes=1024).item(raw, False)


def command_request(request_id: int = 5) -> dict:
    params = {"turnId": "t-1", "itemId": "call_1", "command": "make", "cwd": "/w", "reason": "r"}
    return {"id": request_id, "method": "item/commandExecution/requestApproval", "params": params}


def test_a_file_change_request_carries_the_diff_codex_announced_with_its_item():
    approvals, _, emitted, _, _ = book()
    item = {
        "type": "fileChange",
        "id": "fc-1",
        "changes": [{"path": "n.txt", "kind": {"type": "add"}, "diff": "hi\n"}],
    }
    approvals.note_item("item/started", described(item))
    params = {"turnId": "t-1", "itemId": "fc-1", "reason": "new file"}
    approvals.request(
        {"id": 1, "method": "item/fileChange/requestApproval", "params": params}, "i1"
    )

    kind, fields = emitted[0]
    assert (kind, fields["approval_kind"]) == ("approval_request", "file_change")
    assert fields["approval_id"].startswith("ap-1-")
    assert fields["changes"] == [
        {
            "path": "n.txt",
            "change": "add",
            "additions": 1,
            "deletions": 0,
            "diff": "--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1,1 @@\n+hi\n",
        }
    ]
    assert "command" not in fields


def test_the_state_is_saved_before_each_event_and_ids_are_not_reused():
    approvals, state, emitted, answered, saves = book()
    approvals.request(command_request(5), "i1")
    approvals.request(command_request(6), "i1")
    first, second = (fields["approval_id"] for _, fields in emitted)
    assert first.startswith("ap-1-") and second == "ap-2-" + first[5:]
    # each save came before its event: 0 events before the first, 1 before the second
    assert saves == [(0, {first: state["approvals"][first]}), (1, dict(state["approvals"]))]
    approvals.answer({"approval_id": second, "decision": "accept_for_session", "request_id": "r"})

    assert answered == [(6, {"decision": "acceptForSession"})]
    assert list(state["approvals"]) == [first] == list(saves[-1][1])
    assert saves[-1][0] == len(emitted) - 1  # saved, then approval_resolved
    assert emitted[-1] == (
        "approval_resolved",
        {
            "approval_id": second,
            "injection_id": "i1",
            "decision": "accept_for_session",
            "by": "client",
            "request_id": "r",
        },
    )
    approvals.answer({"approval_id": second, "decision": "accept"})
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


def test_an_id_names_what_is_asked_so_one_answer_never_accepts_another_command():
    approvals, _, emitted, _, _ = book()
    other, _, other_emitted, _, _ = book()
    approvals.request(command_request(5), "i1")
    asked = command_request(5)
    asked["params"]["command"] = "rm -rf ~/data"
    other.request(asked, "i1")
    mine, theirs = emitted[0][1]["approval_id"], other_emitted[0][1]["approval_id"]
    assert mine.startswith("ap-1-") and theirs.startswith("ap-1-") and mine != theirs
    again, _, again_emitted, _, _ = book()
    again.request(command_request(7), "i9")  # the same command at the same point on a node
    assert again_emitted[0][1]["approval_id"] == mine


def test_file_diffs_are_kept_only_when_codex_may_ask_and_are_bounded(tmp_path):
    approvals, _, emitted, _, _ = book()
    huge = "".join(f"line {n}\n" for n in range(1000))
    item = {
        "type": "fileChange",
        "id": "fc-9",
        "changes": [{"path": "big.txt", "kind": {"type": "add"}, "diff": huge}],
    }
    approvals.note_item("item/started", described(item, str(tmp_path)))
    params = {"turnId": "t-1", "itemId": "fc-9"}
    approvals.request(
        {"id": 1, "method": "item/fileChange/requestApproval", "params": params}, "i1"
    )
    (change,) = emitted[0][1]["changes"]
    assert len(change["diff"].encode()) < 1024 + 200 and "truncated at 1024 bytes" in change["diff"]
    (kept,) = tmp_path.glob("*fc-9.diff")
    assert kept.read_text().count("line ") == 1000
    never = Approvals(
        records.new_state(),
        {"approval_timeout_seconds": 1, "approval_decision": "decline", "approval_policy": "never"},
        print,
        print,
        print,
    )
    never.note_item("item/started", described(item, str(tmp_path)))
    assert never.changes == {}


def test_nodes_changing_the_same_file_in_their_own_worktrees_ask_the_same_id(tmp_path):
    asked = []
    for node, extra in ((0, {}), (1, {}), (2, {"grantRoot": "/"})):
        workspace = f"/scratch/ws/77_{node}"
        approvals, _, emitted, _, _ = book(workspace=workspace)
        change = {"path": f"{workspace}/app.py", "kind": {"type": "update"}, "diff": DIFF}
        item = {"type": "fileChange", "id": "fc", "changes": [change]}
        approvals.note_item("item/started", described(item, str(tmp_path)))
        params = {"turnId": f"t-{node}", "itemId": "fc", "reason": "edit", **extra}
        approvals.request(
            {"id": 1, "method": "item/fileChange/requestApproval", "params": params}, "i"
        )
        asked.append(emitted[0][1]["approval_id"])
    assert asked[0] == asked[1]  # one approve on all nodes answers both
    assert asked[2] != asked[0]  # asking for more (write access under /) is another request
