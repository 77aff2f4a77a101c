"""slurm.continue on the worker: Slurm's signal before the time limit, then the next job's
worker resumes the same codex thread. Real codex against the local model server."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from codeswarm.model_server import Reply, last_user_text
from tests.support.worker import WorkerRun, agent_settings, lifecycle_ok, turn_events

pytestmark = pytest.mark.integration


@pytest.fixture
def continuing_worker(tmp_path, codex_bin, model_server):
    """make(grace) -> a WorkerRun whose running turn may go on ``grace`` seconds."""
    runs: list[WorkerRun] = []

    def make(grace: float) -> WorkerRun:
        settings = agent_settings(codex_bin, model_server.url)
        settings["worker"]["continue"] = {"turn_grace_seconds": grace}
        run = WorkerRun(tmp_path, settings)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()


def continue_signal(run: WorkerRun) -> None:
    assert run.process is not None
    run.process.send_signal(signal.SIGUSR2)
    assert run.process.wait(60) == 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, as Slurm's linuxproc tracking finds a step's processes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def test_signal_to_every_process_of_the_step_leaves_codex_to_finish_the_turn(
    continuing_worker, model_server
):
    """Slurm signals the whole step, codex included: codex ignores it, the turn completes."""
    model_server.add_rule("take a second", Reply(delay_seconds=1.0))
    run = continuing_worker(grace=60).start()
    run.inject("short", "take a second")
    run.wait_event("turn_started", "short")
    assert run.process is not None
    tree = process_tree(run.process.pid)
    assert len(tree) > 1  # codex runs under the worker
    for pid in tree:
        os.kill(pid, signal.SIGUSR2)
    assert run.process.wait(60) == 0
    events = run.events()
    assert lifecycle_ok(turn_events(events, "short"))
    assert events[-1]["type"] == "node_exited" and events[-1]["reason"] == "continuing"
    assert run.state["requeued"] == []
    assert [last_user_text(b) for b in model_server.requests] == ["take a second"]


def test_signal_mid_turn_requeues_the_prompt_and_the_next_worker_resumes_the_thread(
    continuing_worker, model_server
):
    model_server.add_rule("slow one", Reply(text="never finishes", hang=True))
    run = continuing_worker(grace=0.5).start()
    run.inject("first", "remember the word zebra")
    run.wait_event("usage", "first")
    thread_id = run.state["thread_id"]
    run.inject("long", "slow one")
    run.wait_event("turn_started", "long")
    run.inject("queued", "what was the word?")
    run.wait_event("inject_delivered", "queued")

    continue_signal(run)
    before = run.events()
    assert before[-1]["type"] == "node_exited" and before[-1]["reason"] == "continuing"
    assert not [e for e in before if e["type"] in ("inject_failed", "error")], before
    assert "turn_complete" not in turn_events(before, "long")
    state = run.state
    assert state["requeued"] == ["long", "queued"]
    assert state["in_flight"] is None and state["thread_id"] == thread_id
    assert "long" not in state["handled"]

    run.start(continuation=True)
    events = run.wait_event("usage", "queued", timeout=60)
    assert [e["seq"] for e in events] == list(range(len(events)))
    after = events[len(before) :]
    assert after[0]["type"] == "node_started"
    # Delivered once, before the continuation; run again from the turn on, in order.
    delivered = [e["injection_id"] for e in events if e["type"] == "inject_delivered"]
    assert delivered == ["first", "long", "queued"]
    assert [e["injection_id"] for e in after if e["type"] == "turn_started"] == ["long", "queued"]
    assert lifecycle_ok(["inject_delivered", *turn_events(after, "queued")])
    assert lifecycle_ok(["inject_delivered", *turn_events(after, "long")])
    assert run.state["thread_id"] == thread_id and run.state["requeued"] == []
    # The resumed thread sends its history: the turn before the signal reaches the model.
    texts = [last_user_text(body) for body in model_server.requests]
    assert texts == ["remember the word zebra", "slow one", "slow one", "what was the word?"]
    resumed = model_server.requests[-1]
    assert "remember the word zebra" in json.dumps(resumed["input"])
    assert "echo: remember the word zebra" in json.dumps(resumed["input"])


def test_a_turn_ending_within_its_grace_completes_before_the_worker_continues(
    continuing_worker, model_server
):
    model_server.add_rule("take a second", Reply(delay_seconds=1.0))
    run = continuing_worker(grace=60).start()
    run.inject("short", "take a second")
    run.wait_event("turn_started", "short")
    run.inject("next", "after the continuation")
    run.wait_event("inject_delivered", "next")

    continue_signal(run)
    events = run.events()
    assert lifecycle_ok(turn_events(events, "short"))
    assert events[-1]["type"] == "node_exited" and events[-1]["reason"] == "continuing"
    assert run.state["requeued"] == ["next"]

    run.start(continuation=True)
    events = run.wait_event("usage", "next", timeout=60)
    assert lifecycle_ok(turn_events(events, "next"))
    assert [last_user_text(b) for b in model_server.requests] == [
        "take a second",
        "after the continuation",
    ]


def test_sigterm_during_the_grace_interrupts_at_once_and_still_continues(
    continuing_worker, model_server
):
    """Slurm's SIGTERM at the limit ends the grace: the prompt is kept all the same."""
    model_server.add_rule("hang", Reply(hang=True))
    run = continuing_worker(grace=600).start()
    run.inject("long", "hang please")
    run.wait_event("turn_started", "long")
    assert run.process is not None
    run.process.send_signal(signal.SIGUSR2)
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(60) == 0
    events = run.events()
    assert events[-1]["reason"] == "continuing"
    assert run.state["requeued"] == ["long"]
