"""The worker against the real codex binary and the local model server."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from codeswarm.model_server import Reply, default_usage, last_user_text
from tests.support.worker import (
    kill_quietly,
    lifecycle_ok,
    python38,
    turn_events,
)

pytestmark = pytest.mark.integration


def seqs(events):
    return [e["seq"] for e in events]


def test_twenty_quick_prompts_queue_in_order_with_exact_lifecycles(worker, model_server):
    run = worker().start()
    ids = [f"q{i:02d}" for i in range(20)]
    run.write(*[{"type": "user", "injection_id": i, "content": f"prompt {i}"} for i in ids])
    events = run.wait_event("usage", ids[-1], timeout=90)

    assert events[0]["type"] == "node_started"
    assert seqs(events) == list(range(len(events)))
    delivered = [e["injection_id"] for e in events if e["type"] == "inject_delivered"]
    assert delivered == ids
    # Turns never overlap: each starts only after the previous one's usage.
    turn_order = [e["injection_id"] for e in events if e["type"] in ("turn_started", "usage")]
    assert turn_order == [i for i in ids for _ in range(2)]
    requests = model_server.requests
    assert [last_user_text(body) for body in requests] == [f"prompt {i}" for i in ids]
    for injection_id, body in zip(ids, requests, strict=True):
        types = turn_events(events, injection_id)
        assert lifecycle_ok(types), types
        mine = [e for e in events if e.get("injection_id") == injection_id]
        assert [e["content"] for e in mine if e["type"] == "assistant"] == [
            f"echo: prompt {injection_id}"
        ]
        assert "".join(e["delta"] for e in mine if e["type"] == "assistant_delta") == (
            f"echo: prompt {injection_id}"
        )
        (complete,) = [e for e in mine if e["type"] == "turn_complete"]
        assert complete["status"] == "completed"
        (usage,) = [e for e in mine if e["type"] == "usage"]
        expected = default_usage(body, deltas=3)
        assert usage["input_tokens"] == expected.input_tokens
        assert usage["output_tokens"] == expected.output_tokens
        assert usage["total_tokens"] == expected.input_tokens + expected.output_tokens


def test_codex_killed_mid_turn_fails_that_prompt_and_resumes_the_thread(worker, model_server):
    model_server.add_rule("slow one", Reply(text="never finishes", hang=True))
    run = worker().start()
    run.inject("first", "remember the word zebra")
    run.wait_event("usage", "first")
    thread_id = run.state["thread_id"]
    run.inject("doomed", "slow one")
    run.wait_event("turn_started", "doomed")
    run.inject("after", "what was the word?")
    kill_quietly(run.codex_pid())

    events = run.wait_event("usage", "after", timeout=60)
    (failed,) = [e for e in events if e["type"] == "inject_failed"]
    assert failed["injection_id"] == "doomed"
    assert failed["error"] == "agent_crashed"
    assert "stderr" in failed or "code" in failed["message"]
    assert lifecycle_ok(turn_events(events, "after"))
    assert run.state["thread_id"] == thread_id
    # The resumed thread re-sends the history: the first prompt reaches the model again.
    resumed = model_server.requests[-1]
    assert last_user_text(resumed) == "what was the word?"
    assert "remember the word zebra" in json.dumps(resumed["input"])
    (usage,) = [e for e in events if e["type"] == "usage" and e["injection_id"] == "after"]
    # A loaded machine can make codex send the turn's request again; usage adds them up.
    sent = [r for r in model_server.requests if last_user_text(r) == "what was the word?"]
    expected = sum(default_usage(r, deltas=3).input_tokens for r in sent)
    assert usage["input_tokens"] == expected, [len(json.dumps(r["input"])) for r in sent]


def test_restarted_worker_never_replays_and_continues_seq(worker, model_server):
    run = worker().start()
    run.inject("one", "first prompt")
    run.wait_event("usage", "one")
    run.process.kill()
    run.process.wait(10)
    before = run.events()

    run.start()
    run.inject("two", "second prompt")
    events = run.wait_event("usage", "two")
    assert seqs(events) == list(range(len(events)))
    assert events[len(before)]["type"] == "node_started"
    assert [last_user_text(b) for b in model_server.requests] == ["first prompt", "second prompt"]
    assert sum(1 for e in events if e["type"] == "inject_delivered") == 2


def test_worker_killed_mid_turn_reports_the_lost_turn_after_restart(worker, model_server):
    model_server.add_rule("hang", Reply(hang=True))
    run = worker().start()
    run.inject("lost", "hang please")
    run.wait_event("turn_started", "lost")
    codex = run.codex_pid()
    run.process.kill()
    run.process.wait(10)
    kill_quietly(codex)

    run.start()
    run.inject("next", "carry on")
    events = run.wait_event("usage", "next")
    (failed,) = [e for e in events if e["type"] == "inject_failed"]
    assert (failed["injection_id"], failed["error"]) == ("lost", "worker_restarted")
    texts = [last_user_text(b) for b in model_server.requests]
    assert texts[-1] == "carry on" and texts.count("hang please") <= 1


def test_sigterm_mid_turn_archives_and_exits_quickly(worker, model_server):
    model_server.add_rule("hang", Reply(hang=True))
    run = worker().start()
    run.inject("running", "hang please")
    run.inject("queued", "never started")
    run.wait_event("turn_started", "running")

    started = time.monotonic()
    assert run.terminate() == 0
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed

    assert not run.outbox.exists()
    events = [json.loads(line) for line in run.archive.read_text().splitlines()]
    assert events[-1]["type"] == "node_exited" and events[-1]["reason"] == "sigterm"
    running = [e for e in events if e.get("injection_id") == "running"]
    assert running[-1]["type"] in ("usage", "inject_failed")
    assert any(e["type"] == "turn_complete" and e["status"] == "interrupted" for e in running) or (
        running[-1]["type"] == "inject_failed"
    )
    queued = [e for e in events if e.get("injection_id") == "queued"]
    assert [e["type"] for e in queued] == ["inject_delivered", "inject_failed"]
    assert queued[-1]["error"] == "node_exiting"


@pytest.mark.parametrize("codex_first_by", [0.0, 0.3], ids=["together", "codex-first"])
def test_scancel_mid_turn_is_node_exiting_not_a_crash(worker, model_server, codex_first_by):
    """scancel and Slurm's time limit signal every process of the step, codex included, in
    no set order: codex dying then is the node going down, not the agent crashing."""
    model_server.add_rule("hang", Reply(hang=True))
    run = worker().start()
    run.inject("running", "hang please")
    run.wait_event("turn_started", "running")

    os.killpg(run.codex_pid(), signal.SIGTERM)  # codex leads its own process group
    time.sleep(codex_first_by)
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(60) == 0  # a loaded CI machine is slow to shut codex down

    events = [json.loads(line) for line in run.archive.read_text().splitlines()]
    failed = [e for e in events if e["type"] == "inject_failed"]
    assert [(e["injection_id"], e["error"]) for e in failed] == [("running", "node_exiting")]
    assert not [e for e in events if e["type"] == "error"], events
    assert events[-1]["type"] == "node_exited" and events[-1]["reason"] == "sigterm"


def test_sigterm_ends_an_idle_worker_however_many_signals_came_before(worker):
    """Signals that land while the worker waits for its next event (here faulthandler's
    SIGUSR1, sent faster than the worker polls) never wedge that wait: a later SIGTERM ends
    it. CPython's SimpleQueue.get(timeout) waited forever once a signal was handled past its
    deadline; a daemon's terminate then never reached that node."""
    run = worker().start()
    run.wait_for(lambda events: any(e["type"] == "node_started" for e in events))
    for _ in range(400):
        run.process.send_signal(signal.SIGUSR1)
        time.sleep(0.002)
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(60) == 0
    events = [json.loads(line) for line in run.archive.read_text().splitlines()]
    assert events[-1]["type"] == "node_exited" and events[-1]["reason"] == "sigterm"


def test_interrupt_stops_the_turn_and_keeps_the_queue(worker, model_server):
    model_server.add_rule("hang", Reply(hang=True))
    run = worker().start()
    run.inject("long", "hang please")
    run.inject("later", "then this")
    run.wait_event("turn_started", "long")
    run.write({"type": "interrupt"})
    events = run.wait_event("usage", "later")
    (complete,) = [
        e for e in events if e["type"] == "turn_complete" and e["injection_id"] == "long"
    ]
    assert complete["status"] == "interrupted"
    assert lifecycle_ok(turn_events(events, "later"))


@pytest.mark.parametrize(("decision", "ran"), [("accept", True), ("decline", False)])
def test_unanswered_approval_requests_get_the_configured_decision(
    worker, model_server, tmp_path, decision, ran
):
    marker = tmp_path / f"marker-{decision}"
    model_server.add_rule("make the marker", Reply(tool_call_cmd=f"touch {marker}"))
    model_server.add_rule("make the marker", Reply(text="done"))
    agent = {"approval_decision": decision, "approval_timeout_seconds": 0.2}
    run = worker(approval_policy="untrusted", **agent).start()
    run.inject("tool", "make the marker")
    events = run.wait_event("usage", "tool", timeout=60)
    asked = [e["type"] for e in events if e["type"].startswith("approval_")]
    assert asked == ["approval_request", "approval_resolved"]  # untrusted: touch is not "safe"
    resolved = next(e for e in events if e["type"] == "approval_resolved")
    assert (resolved["decision"], resolved["by"]) == (decision, "timeout")
    others = [t for t in turn_events(events, "tool") if not t.startswith("approval_")]
    assert lifecycle_ok(others)
    assert marker.exists() == ran


def test_inbox_line_written_in_two_halves_is_read_once_whole(worker, model_server):
    run = worker().start()
    run.inject("warm", "warm up")
    run.wait_event("usage", "warm")
    line = json.dumps({"type": "user", "injection_id": "split", "content": "two halves"}) + "\n"
    run.write(line[:20].encode())
    time.sleep(0.5)
    assert not any(e.get("injection_id") == "split" for e in run.events())
    run.write(line[20:].encode())
    events = run.wait_event("usage", "split")
    assert lifecycle_ok(turn_events(events, "split"))
    assert not any(e["type"] == "error" for e in events)
    assert last_user_text(model_server.requests[-1]) == "two halves"


def test_malformed_inbox_lines_are_reported_and_skipped(worker):
    run = worker().start()
    run.write(b"{not json\n", b'{"type":"user","injection_id":"../x","content":"x"}\n')
    run.inject("fine", "still works")
    events = run.wait_event("usage", "fine")
    errors = [e for e in events if e["type"] == "error"]
    assert [e["error"] for e in errors] == ["invalid_inbox_line", "invalid_inbox_line"]
    assert "not valid JSON" in errors[0]["message"] and errors[0]["line"] == "{not json"
    assert "injection_id" in errors[1]["message"]
    assert lifecycle_ok(turn_events(events, "fine"))


HOSTILE = "quotes \" ' `uname` $(rm -rf ~) ${HOME} \\ \n\nnew lines\t tabs é 漢字 🚀 \u2028 end"


@pytest.mark.parametrize("content", [HOSTILE, "x" * 1024 * 1024], ids=["hostile", "one-megabyte"])
def test_prompts_reach_the_model_byte_exact(worker, model_server, content):
    run = worker().start()
    run.inject("exact", content)
    run.wait_event("usage", "exact", timeout=60)
    assert last_user_text(model_server.requests[-1]) == content


def test_model_failure_completes_the_turn_as_failed(worker, model_server):
    model_server.add_rule("break", Reply(http_status=500))
    run = worker().start()
    run.inject("bad", "break please")
    run.inject("good", "then fine")
    events = run.wait_event("usage", "good", timeout=60)
    (complete,) = [e for e in events if e["type"] == "turn_complete" and e["injection_id"] == "bad"]
    assert complete["status"] == "failed"
    assert lifecycle_ok(turn_events(events, "good"))


def test_shutdown_message_finishes_earlier_prompts_then_exits(worker, model_server):
    run = worker().start()
    run.inject("before", "answer me first")
    run.write({"type": "shutdown"})
    run.inject("after", "written after the shutdown")
    assert run.process.wait(30) == 0
    events = [json.loads(line) for line in run.archive.read_text().splitlines()]
    assert lifecycle_ok(turn_events(events, "before"))
    assert turn_events(events, "after") == []
    assert events[-1] == {**events[-1], "type": "node_exited", "reason": "shutdown"}
    assert [last_user_text(b) for b in model_server.requests] == ["answer me first"]


def test_removal_lets_the_running_turn_end_and_fails_the_queued_prompts(worker, model_server):
    """``scale --remove``: a shutdown record with ``removed`` drains the running turn only."""
    model_server.add_rule("slow one", Reply(text="slowly done", delay_seconds=2.0))
    run = worker().start()
    run.inject("running", "slow one")
    run.wait_event("turn_started", "running")
    run.inject("queued", "queued behind it")
    run.wait_event("inject_delivered", "queued")
    run.write({"type": "shutdown", "removed": True})
    run.inject("after", "written after the removal")
    assert run.process.wait(60) == 0
    events = [json.loads(line) for line in run.archive.read_text().splitlines()]
    assert lifecycle_ok(turn_events(events, "running"))
    (failed,) = [e for e in events if e["type"] == "inject_failed"]
    assert (failed["injection_id"], failed["error"]) == ("queued", "node_removed")
    assert turn_events(events, "after") == []
    assert events[-1] == {**events[-1], "type": "node_exited", "reason": "removed"}
    assert [last_user_text(b) for b in model_server.requests] == ["slow one"]
    # Started again (a continuation or a requeue reruns every agent of the job): it reads
    # the removal again and ends, and runs nothing written after it.
    run.start()
    assert run.process.wait(60) == 0
    rerun = run.events()[len(events) :]
    assert [e["type"] for e in rerun][-1:] == ["node_exited"] and rerun[-1]["reason"] == "removed"
    assert turn_events(rerun, "after") == []
    assert [last_user_text(b) for b in model_server.requests] == ["slow one"]


def test_worker_runs_on_python_38(worker):
    python = python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter on this machine")
    run = worker().start(python=python)
    run.inject("old", "hello from 3.8")
    events = run.wait_event("usage", "old")
    assert lifecycle_ok(turn_events(events, "old"))
