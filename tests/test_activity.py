"""The activity stream: codex's notifications translated, bounded, and what real codex sends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from codeswarm.cli.render import EventRenderer
from codeswarm.hpc import records
from codeswarm.hpc.activity import (
    MARKER,
    Activity,
    error_fields,
    line_counts,
    snake,
    unified_diff,
)
from codeswarm.model_server import Reply
from codeswarm.protocol import event_errors
from tests.support.worker import (
    WorkerRun,
    agent_settings,
    lifecycle_ok,
    python38,
    turn_events,
)

TURN = {"threadId": "th", "turnId": "t-1"}
DIFF_OF_ONE = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n"


class Recorder:
    """An Activity's emit that builds real outbox events and checks them against the schemas."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, kind: str, **fields) -> None:
        event = records.outbox_event(kind, "77", 2, len(self.events), **fields)
        assert records.parse_outbox_line(records.encode_line(event)) == event
        assert event_errors(event) == {}, (event, event_errors(event))
        self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def activity(tmp_path):
    recorder = Recorder()
    return Activity(recorder, str(tmp_path / "logs" / "77_2"), 1024), recorder


def command_item(status: str = "inProgress", **done) -> dict:
    item = {
        "type": "commandExecution",
        "id": "call_1",
        "command": "/bin/bash -lc 'echo hello'",
        "cwd": "/w",
        "status": status,
        "commandActions": [],
        "aggregatedOutput": None,
        "exitCode": None,
        "durationMs": None,
    }
    return {**item, **done}


def test_snake_case_and_typed_errors():
    assert snake("contextWindowExceeded") == "context_window_exceeded"
    assert snake("inProgress") == "in_progress"
    assert error_fields(None) == {}
    assert error_fields({"message": "full", "codexErrorInfo": "usageLimitExceeded"}) == {
        "error": "full",
        "error_code": "usage_limit_exceeded",
    }
    info = {"httpConnectionFailed": {"httpStatusCode": 502}}
    assert error_fields({"message": "down", "codexErrorInfo": info}) == {
        "error": "down",
        "error_code": "http_connection_failed",
        "http_status_code": 502,
    }
    assert error_fields({"message": "odd", "codexErrorInfo": None}) == {"error": "odd"}


def test_a_command_item_starts_streams_and_completes(activity):
    act, out = activity
    act.handle("item/started", {**TURN, "item": command_item()}, "inj")
    act.handle(
        "item/commandExecution/outputDelta", {**TURN, "itemId": "call_1", "delta": "hello\n"}, "inj"
    )
    done = command_item("completed", aggregatedOutput="hello\n", exitCode=0, durationMs=12)
    act.handle("item/completed", {**TURN, "item": done}, "inj")
    assert [e["type"] for e in out.events] == [
        "item_started",
        "command_output_delta",
        "item_completed",
    ]
    assert all(e["injection_id"] == "inj" and e["turn_id"] == "t-1" for e in out.events)
    assert out.events[0]["item"] == {
        "id": "call_1",
        "kind": "command",
        "status": "in_progress",
        "command": "/bin/bash -lc 'echo hello'",
        "cwd": "/w",
    }
    assert out.events[1]["item_id"] == "call_1" and out.events[1]["delta"] == "hello\n"
    item = out.events[2]["item"]
    assert (item["status"], item["exit_code"], item["duration_ms"], item["output"]) == (
        "completed",
        0,
        12,
        "hello\n",
    )
    assert "output_truncated" not in item and "output_path" not in item


def test_output_past_the_bound_is_cut_once_and_kept_whole_in_the_log_dir(activity, tmp_path):
    act, out = activity
    pieces = [f"{i:05d} é\n" * 20 for i in range(50)]  # 9 bytes a line, 9,000 bytes in all
    for piece in pieces:
        act.handle(
            "item/commandExecution/outputDelta", {**TURN, "itemId": "call_1", "delta": piece}, "inj"
        )
    deltas = out.of("command_output_delta")
    marked = [d for d in deltas if d.get("truncated")]
    assert len(marked) == 1 and marked[0] is deltas[-1]
    path = Path(marked[0]["output_path"])
    assert path.parent == tmp_path / "logs" / "77_2"
    assert marked[0]["delta"].endswith(MARKER % (1024, path))
    streamed = "".join(d["delta"] for d in deltas).removesuffix(MARKER % (1024, path))
    assert 1024 - 3 <= len(streamed.encode()) <= 1024  # a character is never split
    assert "".join(pieces).startswith(streamed)
    full = "".join(pieces)
    done = command_item("completed", aggregatedOutput=full, exitCode=0, durationMs=5)
    act.handle("item/completed", {**TURN, "item": done}, "inj")
    assert path.read_text() == full
    item = out.of("item_completed")[0]["item"]
    assert item["output_truncated"] is True and item["output_path"] == str(path)
    assert item["output"] == streamed + MARKER % (1024, path)


def test_a_cut_stream_names_its_file_even_when_codex_sends_no_total(activity):
    act, out = activity
    big = {**TURN, "itemId": "call_1", "delta": "x" * 2000}
    act.handle("item/commandExecution/outputDelta", big, "inj")
    path = out.of("command_output_delta")[-1]["output_path"]
    done = command_item("completed", aggregatedOutput=None, exitCode=0, durationMs=5)
    act.handle("item/completed", {**TURN, "item": done}, "inj")
    item = out.of("item_completed")[0]["item"]
    assert (item["output_truncated"], item["output_path"]) == (True, path)
    assert Path(path).read_text() == "x" * 2000


def test_the_log_file_keeps_codexs_total_when_it_has_more_than_the_stream(activity):
    act, out = activity
    act.handle(
        "item/commandExecution/outputDelta",
        {**TURN, "itemId": "call_1", "delta": "a" * 1500},
        "inj",
    )
    total = "a" * 1500 + "b" * 3000  # codex dropped part of a fast flood from its stream
    done = command_item("completed", aggregatedOutput=total, exitCode=0, durationMs=5)
    act.handle("item/completed", {**TURN, "item": done}, "inj")
    item = out.of("item_completed")[0]["item"]
    assert Path(item["output_path"]).read_text() == total
    assert item["output_path"] == out.of("command_output_delta")[-1]["output_path"]


def test_an_output_cut_never_splits_a_character(activity):
    act, out = activity
    act.handle(
        "item/commandExecution/outputDelta",
        {**TURN, "itemId": "c", "delta": "x" + "é" * 1000},
        "inj",
    )
    (delta,) = out.of("command_output_delta")
    kept = delta["delta"].split("\n[codeswarm")[0]
    assert kept == "x" + "é" * 511 and len(kept.encode()) == 1023


def test_file_changes_become_unified_diffs_with_counts(activity):
    act, out = activity
    update = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-a\n+b\n c\n"
    changes = [
        {"path": "/w/new.txt", "kind": {"type": "add"}, "diff": "one\ntwo"},
        {"path": "/w/x.py", "kind": {"type": "update", "move_path": "/w/y.py"}, "diff": update},
        {"path": "/w/old.txt", "kind": {"type": "delete"}, "diff": "gone\n"},
    ]
    item = {"type": "fileChange", "id": "call_2", "changes": changes, "status": "completed"}
    act.handle("item/completed", {**TURN, "item": item}, "inj")
    (event,) = out.of("item_completed")
    got = event["item"]
    assert got["kind"] == "file_change" and got["status"] == "completed"
    add, upd, delete = got["changes"]
    assert add == {
        "path": "/w/new.txt",
        "change": "add",
        "diff": "--- /dev/null\n+++ /w/new.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n",
        "additions": 2,
        "deletions": 0,
    }
    assert (upd["change"], upd["move_path"], upd["diff"]) == ("update", "/w/y.py", update)
    assert (upd["additions"], upd["deletions"]) == (1, 1)
    assert delete["diff"].startswith("--- /w/old.txt\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-gone")
    assert (delete["additions"], delete["deletions"]) == (0, 1)


def test_large_diffs_are_cut_and_kept_whole(activity):
    act, out = activity
    big = "".join(f"line {i}\n" for i in range(1000))
    item = {
        "type": "fileChange",
        "id": "call_3",
        "status": "completed",
        "changes": [{"path": "/w/big.txt", "kind": {"type": "add"}, "diff": big}],
    }
    act.handle("item/completed", {**TURN, "item": item}, "inj")
    got = out.of("item_completed")[0]["item"]
    path = Path(got["diff_path"])
    assert got["diff_truncated"] is True
    assert path.read_text() == unified_diff("/w/big.txt", "add", big)
    assert len(got["changes"][0]["diff"].encode()) <= 1024 + len(MARKER % (1024, path))
    act.handle("turn/diff/updated", {**TURN, "diff": "diff --git a/x b/x\n" + big}, "inj")
    (turn_diff,) = out.of("turn_diff")
    assert turn_diff["diff_truncated"] is True
    assert Path(turn_diff["diff_path"]).read_text() == "diff --git a/x b/x\n" + big
    act.handle("turn/diff/updated", {**TURN, "diff": "diff --git a/x b/x\n" + big}, "inj")
    assert len(out.of("turn_diff")) == 1  # an unchanged turn diff is no news
    act.handle("turn/diff/updated", {**TURN, "diff": "small"}, "inj")
    assert out.of("turn_diff")[1] == {**out.of("turn_diff")[1], "diff": "small"}
    assert "diff_truncated" not in out.of("turn_diff")[1]


def test_a_patch_of_many_files_is_one_bounded_event_naming_what_it_left_out(activity):
    act, out = activity
    files = [
        {"path": f"/w/src/module_{n}.py", "kind": {"type": "update"}, "diff": DIFF_OF_ONE}
        for n in range(2000)
    ]
    item = {"type": "fileChange", "id": "call_4", "status": "completed", "changes": files}
    act.handle("item/completed", {**TURN, "item": item}, "inj")
    (event,) = out.of("item_completed")
    got = event["item"]
    assert len(json.dumps(event)) < 2 * 1024  # the bound is 1024 bytes; 2,000 files came
    listed = got["changes"]
    assert [c["path"] for c in listed] == [f"/w/src/module_{n}.py" for n in range(len(listed))]
    assert listed and got["changes_omitted"] == 2000 - len(listed)
    whole = [c for c in listed if "truncated at" not in c["diff"]]
    assert all(c["diff"] == DIFF_OF_ONE for c in whole)  # only the diff that crossed is marked
    assert len(listed) - len(whole) <= 1
    assert Path(got["diff_path"]).read_text().count("+new\n") == 2000


def test_lines_are_counted_inside_hunks_not_by_how_they_start():
    sql = "--- a/q.sql\n+++ b/q.sql\n@@ -1,2 +1,2 @@\n-- old comment\n++ new\n keep\n"
    assert line_counts(sql) == (1, 1)  # the deleted "-- old comment" reads "--- old comment"
    two = "@@ -1 +1 @@\n-a\n+b\n\\ No newline at end of file\n--- a/y\n+++ b/y\n@@ -0,0 +1 @@\n+c\n"
    assert line_counts(two) == (2, 1)


def test_plans_reroutes_reasoning_and_rate_limits(activity):
    act, out = activity
    plan = [{"step": "read", "status": "completed"}, {"step": "fix", "status": "inProgress"}]
    act.handle("turn/plan/updated", {**TURN, "explanation": None, "plan": plan}, "inj")
    reroute = {"fromModel": "a", "toModel": "b", "reason": "highRiskCyberActivity"}
    act.handle("model/rerouted", {**TURN, **reroute}, "inj")
    delta = {"itemId": "rs_1", "delta": "hmm", "summaryIndex": 0}
    act.handle("item/reasoning/summaryTextDelta", {**TURN, **delta}, "inj")
    limits = {"rateLimits": {"primary": {"usedPercent": 40, "windowDurationMins": 300}}}
    act.handle("account/rateLimits/updated", limits, None)
    act.handle("account/rateLimits/updated", limits, "inj")
    act.handle("item/started", {**TURN, "item": command_item()}, None)  # between turns: dropped
    assert out.of("plan_updated")[0]["plan"] == [
        {"step": "read", "status": "completed"},
        {"step": "fix", "status": "in_progress"},
    ]
    assert "explanation" not in out.of("plan_updated")[0]
    rerouted = out.of("model_rerouted")[0]
    assert (rerouted["from_model"], rerouted["to_model"]) == ("a", "b")
    assert rerouted["reason"] == "high_risk_cyber_activity"
    assert out.of("reasoning_delta")[0]["delta"] == "hmm"
    (rate,) = out.of("rate_limits")  # the repeat is not news
    assert rate["rate_limits"] == limits["rateLimits"] and "injection_id" not in rate
    assert out.of("item_started") == []


def test_what_the_worker_writes_renders_for_a_person(activity):
    act, out = activity
    done = command_item("completed", aggregatedOutput="no such file\n", exitCode=2, durationMs=1500)
    act.handle("item/completed", {**TURN, "item": done}, "inj")
    change = {"path": "src/x.py", "kind": {"type": "add"}, "diff": "a\nb\n"}
    item = {"type": "fileChange", "id": "c2", "changes": [change], "status": "completed"}
    act.handle("item/completed", {**TURN, "item": item}, "inj")
    act.handle("turn/completed", {**TURN}, "inj")  # the worker's business, not activity's
    renderer = EventRenderer(color=False)
    text = "".join(renderer.render(e) for e in out.events)
    assert text == (
        "[n2] $ /bin/bash -lc 'echo hello'  (exit 2, 1.5s)\n"
        "[n2]   | no such file\n"
        "[n2] A src/x.py +2\n"
    )


# ---- real codex, the bundled model server, the real worker --------------------------------


@pytest.fixture
def node(tmp_path, codex_bin, model_server):
    runs: list[WorkerRun] = []

    def make(max_event_bytes: int | None = None, python: str = sys.executable) -> WorkerRun:
        settings = agent_settings(codex_bin, model_server.url)
        if max_event_bytes is not None:
            settings["worker"]["max_event_bytes"] = max_event_bytes
        run = WorkerRun(tmp_path, settings)
        runs.append(run)
        return run.start(python)

    yield make
    for run in runs:
        run.stop()


def turn(run: WorkerRun, injection_id: str, prompt: str) -> list[dict]:
    run.inject(injection_id, prompt)
    events = [
        e
        for e in run.wait_event("usage", injection_id, 60)
        if e.get("injection_id") == injection_id
    ]
    for event in events:
        assert event_errors(event) == {}, event
    assert lifecycle_ok(turn_events(events, injection_id))
    return events


def completed(events: list[dict], kind: str) -> list[dict]:
    return [
        e["item"] for e in events if e["type"] == "item_completed" and e["item"]["kind"] == kind
    ]


@pytest.mark.integration
@pytest.mark.parametrize("python", ["current", "3.8"])
def test_echo_hello_is_a_command_item_with_its_output(node, model_server, python):
    interpreter = sys.executable if python == "current" else python38()
    if interpreter is None:
        pytest.skip("no Python 3.8 interpreter on this machine")
    model_server.add_rule("say hello", Reply(tool_call_cmd="echo hello"))
    model_server.add_rule("say hello", Reply(text="said"))
    run = node(python=interpreter)
    events = turn(run, "hi", "say hello")
    (item,) = completed(events, "command")
    assert "echo hello" in item["command"] and item["exit_code"] == 0
    assert "hello" in item["output"] and item["cwd"].endswith("4242_0")
    assert isinstance(item["duration_ms"], int)
    started = [e for e in events if e["type"] == "item_started"]
    assert started[0]["item"]["id"] == item["id"]
    outputs = [e for e in events if e["type"] == "command_output_delta"]
    assert all(e["item_id"] == item["id"] for e in outputs)  # codex may stream none of so little
    turn_id = next(e["turn_id"] for e in events if e["type"] == "turn_started")
    activity = [
        e for e in events if e["type"] in ("item_started", "item_completed", "command_output_delta")
    ]
    assert {e["turn_id"] for e in activity} == {turn_id}


@pytest.mark.integration
def test_a_failing_command_gives_its_exit_code(node, model_server):
    model_server.add_rule("fail", Reply(tool_call_cmd="echo oops >&2; exit 3"))
    model_server.add_rule("fail", Reply(text="it failed"))
    (item,) = completed(turn(node(), "bad", "fail please"), "command")
    assert item["exit_code"] == 3 and "oops" in item["output"]


@pytest.mark.integration
def test_a_patch_is_a_file_change_with_its_diff(node, model_server):
    patch = "\n".join(
        [
            *("apply_patch <<'EOF'", "*** Begin Patch", "*** Add File: hello.txt"),
            *("+hi there", "*** End Patch", "EOF"),
        ]
    )
    model_server.add_rule("patch", Reply(tool_call_cmd=patch))
    model_server.add_rule("patch", Reply(text="patched"))
    run = node()
    events = turn(run, "p", "patch it")
    (item,) = completed(events, "file_change")
    (change,) = item["changes"]
    assert change["path"].endswith("hello.txt") and change["change"] == "add"
    assert "+hi there" in change["diff"] and change["additions"] == 1
    diffs = [e["diff"] for e in events if e["type"] == "turn_diff"]
    assert diffs and "+++ b/hello.txt" in diffs[-1]


@pytest.mark.integration
def test_a_reasoning_summary_streams_and_completes(node, model_server):
    model_server.add_rule("think", Reply(reasoning="weighing it", text="ok"))
    events = turn(node(), "r", "think first")
    (item,) = completed(events, "reasoning")
    assert item["summary"] == ["weighing it"]
    assert "".join(e["delta"] for e in events if e["type"] == "reasoning_delta") == "weighing it"


@pytest.mark.integration
def test_a_full_context_window_fails_the_turn_with_its_code(node, model_server):
    model_server.add_rule("long", Reply(failed=True, error_code="context_length_exceeded"))
    run = node()
    events = turn_until_complete(run, "ctx", "long story")
    (done,) = [e for e in events if e["type"] == "turn_complete"]
    assert done["status"] == "failed" and done["error_code"] == "context_window_exceeded"
    assert done["error"]
    errors = [e for e in run.events() if e["type"] == "error"]
    assert [e.get("error_code") for e in errors] == ["context_window_exceeded"]


def turn_until_complete(run: WorkerRun, injection_id: str, prompt: str) -> list[dict]:
    run.inject(injection_id, prompt)
    return [
        e
        for e in run.wait_event("usage", injection_id, 60)
        if e.get("injection_id") == injection_id
    ]


@pytest.mark.integration
def test_a_huge_output_is_cut_in_the_stream_and_whole_in_the_log_dir(node, model_server):
    # 3.4 MB in 50 bursts: codex itself drops part of an unpaced flood, so a test could not
    # tell what it streamed
    paced = "for i in $(seq 0 49); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.02; done"
    model_server.add_rule("count", Reply(tool_call_cmd=paced))
    model_server.add_rule("count", Reply(text="counted"))
    run = node(max_event_bytes=4096)
    events = turn(run, "big", "count a lot")
    deltas = [e for e in events if e["type"] == "command_output_delta"]
    (marked,) = [d for d in deltas if d.get("truncated")]
    path = Path(marked["output_path"])
    assert path.parent == run.mailbox / "logs" / "4242_0"
    marker = MARKER % (4096, path)
    assert marked["delta"].endswith(marker) and deltas[-1] is marked
    assert sum(len(d["delta"].encode()) for d in deltas) == 4096 + len(marker.encode())
    numbers = [int(n) for n in path.read_text().split()]
    # codex itself may drop a burst of a flood from its stream (seen in full test runs: the
    # first 10,000 numbers); what it sent is all in the file, in order, to the end.
    assert numbers == sorted(set(numbers)) and numbers[-1] == 500000
    assert len(numbers) >= 480000, len(numbers)
    head = "".join(d["delta"] for d in deltas).removesuffix(marker).split()[:-1]
    assert set(map(int, head)) <= set(numbers)  # what reached the router is in the file too
    (item,) = completed(events, "command")
    assert item["output_truncated"] is True and len(item["output"].encode()) <= 4096 + 200
    outbox_bytes = sum(len(json.dumps(e)) for e in events)
    assert outbox_bytes < 64 * 1024


def test_a_notification_the_worker_cannot_report_is_an_error_not_its_end(tmp_path):
    """codex sending an odd shape, or a full disk under the log dir, costs a report only."""
    from types import SimpleNamespace

    from codeswarm.hpc.approvals import Approvals
    from codeswarm.hpc.codex_worker import Worker

    blocked = tmp_path / "logs"
    blocked.write_text("a file where the log directory should be")
    recorder = Recorder()
    activity = Activity(recorder, str(blocked / "77_2"), 16)
    agent = {"approval_timeout_seconds": 1, "approval_decision": "decline"}
    worker = SimpleNamespace(
        activity=activity,
        approvals=Approvals(records.new_state(), agent, recorder, None, None),
        emit=recorder,
    )
    big = {**TURN, "itemId": "call_1", "delta": "x" * 64}
    Worker.observe(worker, "item/commandExecution/outputDelta", big, "inj")  # cannot spill
    Worker.observe(worker, "item/started", {**TURN, "item": ["not", "an", "item"]}, "inj")

    errors = recorder.of("error")
    assert [e["error"] for e in errors] == ["worker_error", "worker_error"]
    assert "NotADirectoryError" in errors[0]["message"]
    assert all(e["injection_id"] == "inj" for e in errors)
