"""A continuing worker's saved state, by the worker's own code in this process: what the
continuation job's worker reads again. No codex runs (it starts only in ``run``)."""

from __future__ import annotations

import json
from pathlib import Path

from codeswarm.hpc import records, slurm_env, worker_settings
from codeswarm.hpc.codex_worker import CONTINUING, Worker


def worker(tmp_path: Path) -> Worker:
    agent, settings = worker_settings.load_settings(None)
    return Worker(
        str(tmp_path / "mb"), "7", 0, str(tmp_path / "ws"), str(tmp_path / "h"), agent, settings
    )


def write(tmp_path: Path, *lines: dict) -> list[int]:
    """Append records to the node's inbox; the byte offset each starts at."""
    inbox = tmp_path / "mb" / records.INBOX_DIR / records.record_name("7", 0)
    starts = []
    with inbox.open("ab") as f:
        for line in lines:
            starts.append(f.tell())
            f.write(records.encode_line(line).encode())
    return starts


def saved(tmp_path: Path) -> dict:
    path = tmp_path / "mb" / records.STATE_DIR / records.state_name("7", 0)
    return json.loads(path.read_text())


def delivered(tmp_path: Path) -> list[str]:
    """The injection ids of every inject_delivered the node's workers wrote."""
    found = []
    for path in sorted((tmp_path / "mb").glob("*/7_0*.jsonl")):
        if path.parent.name != records.INBOX_DIR:
            lines = path.read_text().splitlines()
            found += [json.loads(x) for x in lines]
    return [e["injection_id"] for e in found if e["type"] == "inject_delivered"]


def test_a_shutdown_read_as_the_signal_came_is_read_again_by_the_continuation(tmp_path):
    first = worker(tmp_path)
    (start,) = write(tmp_path, records.inbox_shutdown())
    first.read_inbox()
    assert first.draining == "shutdown"
    first.request_stop(CONTINUING)  # before the step that would have stopped it
    first.finish()
    assert saved(tmp_path)["inbox_offset"] == start
    again = worker(tmp_path)
    again.read_inbox()
    assert again.draining == "shutdown"


def test_prompts_requeued_before_and_not_read_again_stay_requeued(tmp_path, monkeypatch):
    monkeypatch.setenv(slurm_env.CONTINUATION, "1")
    first = worker(tmp_path)
    write(tmp_path, records.inbox_user("a", "one"), records.inbox_user("b", "two"))
    first.read_inbox()
    first.request_stop(CONTINUING)
    first.finish()
    assert saved(tmp_path)["requeued"] == ["a", "b"]
    # The next worker exits continuing at once, before it read its inbox again.
    second = worker(tmp_path)
    second.request_stop(CONTINUING)
    second.finish()
    assert saved(tmp_path)["requeued"] == ["a", "b"]
    third = worker(tmp_path)
    third.read_inbox()
    assert [entry[1] for entry in third.queue] == ["a", "b"]
    third.outbox.close()
    assert delivered(tmp_path) == ["a", "b"]  # once each, by the first worker


def failed(tmp_path: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted((tmp_path / "mb").glob("*/7_0*.jsonl")):
        if path.parent.name != records.INBOX_DIR:
            found += [json.loads(x) for x in path.read_text().splitlines()]
    return [(e["injection_id"], e["error"]) for e in found if e["type"] == "inject_failed"]


def test_prompts_requeued_for_a_continuation_that_never_ran_fail_in_any_other_job(
    tmp_path, monkeypatch
):
    """The router failed them (node_gone) when no continuation came; a restarted array task
    or a requeued job must not run them later."""
    monkeypatch.delenv(slurm_env.CONTINUATION, raising=False)
    first = worker(tmp_path)
    write(tmp_path, records.inbox_user("a", "one"))
    first.read_inbox()
    first.request_stop(CONTINUING)
    first.finish()
    restarted = worker(tmp_path)
    write(tmp_path, records.inbox_user("b", "after the restart"))
    restarted.read_inbox()
    restarted.outbox.close()
    assert [entry[1] for entry in restarted.queue] == ["b"]
    assert failed(tmp_path) == [("a", "worker_restarted")]
    assert restarted.state["requeued"] == [] and "a" in restarted.state["handled"]
