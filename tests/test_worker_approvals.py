"""Approvals and steering in the worker, against the real codex binary and the model server."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from codeswarm.hpc import records
from codeswarm.model_server import Reply, last_user_text
from tests.support.worker import WorkerRun, python38

pytestmark = pytest.mark.integration

# codex 0.171 asks under on-request only when the shell call asks to leave the sandbox.
ESCALATE = {"sandbox_permissions": "require_escalated", "justification": "write the marker"}


@pytest.fixture
def asking(worker):
    """A worker whose codex asks before it leaves the sandbox."""
    return lambda **agent: worker(approval_policy="on-request", sandbox="workspace-write", **agent)


def marker(run: WorkerRun):
    return run.mailbox.parent / "workspaces" / run.key / "marker"


def ask_to_touch(run: WorkerRun, model_server, injection_id: str = "i1") -> dict:
    """A prompt whose shell call needs approval; returns the approval_request event."""
    reply = Reply(tool_call_cmd="touch marker", tool_call_args=ESCALATE)
    model_server.add_rule("TOUCH", reply)
    run.inject(injection_id, "TOUCH the marker")
    events = run.wait_event("approval_request", injection_id)
    return next(e for e in events if e["type"] == "approval_request")


def of(events, kind):
    return [e for e in events if e["type"] == kind]


@pytest.mark.parametrize("python", ["py", "py38"])
def test_an_accepted_request_runs_the_command(asking, model_server, python):
    interpreter = sys.executable if python == "py" else python38()
    if interpreter is None:
        pytest.skip("no Python 3.8 interpreter on this machine")
    run = asking().start(python=interpreter)
    request = ask_to_touch(run, model_server)

    assert request["approval_kind"] == "command"
    assert "touch marker" in request["command"]
    assert request["reason"] == "write the marker"
    assert request["default_decision"] == "decline"
    assert run.state["approvals"][request["approval_id"]]["command"] == request["command"]
    assert not marker(run).exists()  # the turn waits for the answer
    run.write(records.inbox_approve(request["approval_id"], "accept", request_id="r7"))
    events = run.wait_event("usage", "i1")

    resolved = of(events, "approval_resolved")
    assert [(e["approval_id"], e["decision"], e["by"], e["request_id"]) for e in resolved] == [
        (request["approval_id"], "accept", "client", "r7")
    ]
    assert marker(run).exists()
    assert run.state["approvals"] == {}


def test_a_declined_request_does_not_run(asking, model_server):
    run = asking().start()
    request = ask_to_touch(run, model_server)
    run.write(records.inbox_approve(request["approval_id"], "decline"))
    events = run.wait_event("usage", "i1")

    assert of(events, "turn_complete")[-1]["status"] == "completed"
    assert [e["decision"] for e in of(events, "approval_resolved")] == ["decline"]
    assert not marker(run).exists()


def test_silence_applies_the_configured_decision(asking, model_server):
    run = asking(approval_timeout_seconds=0.5, approval_decision="accept").start()
    request = ask_to_touch(run, model_server)
    events = run.wait_event("usage", "i1")

    assert request["default_decision"] == "accept"
    resolved = of(events, "approval_resolved")
    assert [(e["decision"], e["by"]) for e in resolved] == [("accept", "timeout")]
    assert marker(run).exists()


def test_an_answer_for_no_pending_request_is_an_error(asking, model_server):
    run = asking().start()
    run.write(records.inbox_approve("ap-9", "accept", request_id=3))
    events = run.wait_for(lambda evs: of(evs, "error"))

    error = of(events, "error")[0]
    assert (error["error"], error["approval_id"], error["request_id"]) == (
        records.ERROR_UNKNOWN_APPROVAL,
        "ap-9",
        3,
    )


def test_a_restarted_worker_settles_what_its_old_codex_asked(asking, model_server):
    run = asking().start()
    request = ask_to_touch(run, model_server)
    run.stop()
    assert request["approval_id"] in run.state["approvals"]
    run.start()
    events = run.wait_event("approval_resolved")

    resolved = of(events, "approval_resolved")[0]
    assert (resolved["approval_id"], resolved["by"]) == (request["approval_id"], "turn_ended")
    assert run.state["approvals"] == {}
    # Ids are not reused: a late answer for the old request cannot reach a new one.
    assert run.state["next_approval"] == 2


def test_a_node_stopped_mid_request_settles_it_before_it_exits(asking, model_server):
    run = asking().start()
    request = ask_to_touch(run, model_server)
    os.kill(run.codex_pid(), signal.SIGTERM)  # scancel signals every process of the step
    run.process.send_signal(signal.SIGTERM)
    run.process.wait(30)
    events = run.events()

    kinds = [e["type"] for e in events]
    resolved = of(events, "approval_resolved")
    assert [(e["approval_id"], e["by"]) for e in resolved] == [
        (request["approval_id"], "turn_ended")
    ]
    assert kinds.index("approval_resolved") < kinds.index("node_exited")
    assert run.state["approvals"] == {}  # `approvals` lists nothing for a node that is gone


def test_a_restarted_worker_does_not_act_again_on_steers_it_had_read(worker, model_server):
    run = worker().start()
    model_server.add_rule("SLOW", Reply(text="a slow answer", deltas=6, delay_seconds=0.5))
    run.inject("i1", "SLOW work")
    run.wait_event("assistant_delta", "i1")
    run.inject("i2", "queued prompt")  # the inbox is read again from here after a restart
    run.write(records.inbox_steer("s1", "STEERED", request_id="r1"))
    run.wait_event("steer_applied")
    run.stop()
    run.start()
    events = run.wait_event("usage", "i2", timeout=60)

    steers = [(e["type"], e["steer_id"]) for e in events if e["type"].startswith("steer")]
    assert steers == [("steer_applied", "s1")]


def test_steer_reaches_the_model_in_the_running_turn(worker, model_server):
    run = worker().start()
    model_server.add_rule("SLOW", Reply(text="a slow answer", deltas=6, delay_seconds=0.5))
    run.inject("i1", "SLOW work")
    run.wait_event("assistant_delta", "i1")
    run.write(records.inbox_steer("s1", "STEERED: use tabs", request_id="r1"))
    events = run.wait_event("usage", "i1")

    applied = of(events, "steer_applied")
    assert [(e["steer_id"], e["injection_id"], e["request_id"]) for e in applied] == [
        ("s1", "i1", "r1")
    ]
    turn_ids = {e["turn_id"] for e in events if e["type"] in ("turn_started", "steer_applied")}
    assert len(turn_ids) == 1  # the same turn, not a new one
    seen = [last_user_text(body) for body in model_server.requests]
    assert seen == ["SLOW work", "STEERED: use tabs"]
    assert "SLOW work" in json.dumps(model_server.requests[1]["input"])


def test_steer_with_no_running_turn_fails_and_starts_nothing(worker, model_server):
    run = worker().start()
    run.wait_event("node_started")
    run.write(records.inbox_steer("s1", "anything"))
    events = run.wait_event("steer_failed")

    failed = of(events, "steer_failed")[0]
    assert (failed["steer_id"], failed["error"]) == ("s1", records.STEER_NO_TURN)
    assert not of(events, "turn_started")
    assert model_server.requests == []


def test_review_runs_as_a_turn_and_reports_its_findings(worker, model_server):
    run = worker().start()
    model_server.add_rule("Review", Reply(text="P1: the marker is missing"))
    run.write(records.inbox_injection(records.INBOX_REVIEW, "rv1", ""))
    events = run.wait_event("usage", "rv1")

    done = [e["item"] for e in of(events, "item_completed") if e["item"]["kind"] == "review"]
    assert [item["phase"] for item in done] == ["entered", "exited"]
    assert done[-1]["review"] == "P1: the marker is missing"
    assert of(events, "turn_complete")[0]["status"] == "completed"
    assert "staged, unstaged, and untracked" in last_user_text(model_server.requests[0])


def test_compact_completes_as_a_turn(worker, model_server):
    run = worker().start()
    run.inject("i1", "hello")
    run.write(records.inbox_injection(records.INBOX_COMPACT, "c1", ""))
    events = run.wait_event("usage", "c1")

    mine = [e for e in events if e.get("injection_id") == "c1"]
    assert [e["type"] for e in mine] == [
        "inject_delivered",
        "turn_started",
        "item_started",
        "item_completed",
        "turn_complete",
        "usage",
    ]
    assert {e["item"]["kind"] for e in mine if e["type"].startswith("item_")} == {"compaction"}
    assert of(events, "turn_complete")[-1]["status"] == "completed"
    assert len(model_server.requests) == 2  # the prompt, then the compaction's summary request
