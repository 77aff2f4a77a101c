"""What `codeswarm attach` shows a person: one event of every kind, colour on and off."""

from __future__ import annotations

import click
import pytest

from codeswarm.cli.activity import DECISIONS, clock, diff_stat
from codeswarm.cli.render import EventRenderer, node_place
from codeswarm.protocol.subscription import EVENT_TYPES

SWARM = {"swarm_id": "sw-1", "job_id": "41", "node_id": 3}
INJECTION = {**SWARM, "injection_id": "inj-1", "turn_id": "t-1"}
DIFF = (
    "diff --git a/src/x.py b/src/x.py\n"
    "--- a/src/x.py\n"
    "+++ b/src/x.py\n"
    "@@ -1,3 +1,2 @@\n"
    " keep\n"
    "-old\n"
    "+new\n"
    "--- not a header: inside the hunk\n"
    "diff --git a/new.txt b/new.txt\n"
    "--- /dev/null\n"
    "+++ b/new.txt\n"
    "@@ -0,0 +1 @@\n"
    "+++ a line that starts with pluses\n"
)


def ev(kind: str, **fields) -> dict:
    return {"type": kind, "ts": 1.0, "seq": 1, **INJECTION, **fields}


def command(**fields) -> dict:
    return {"id": "c1", "kind": "command", "command": "pytest -q", "cwd": "/w", **fields}


# One event of every kind, and the plain lines it renders as.
CASES = [
    (ev("inject_ack", held=True), ["[n3] prompt inj-1 queued (node not started yet)"]),
    (ev("inject_delivered"), ["[n3] prompt inj-1 read"]),
    (ev("turn_started"), ["[n3] turn started"]),
    (ev("assistant", content="Done.\nAll tests pass.\n"), ["[n3] Done.", "[n3] All tests pass."]),
    (ev("turn_complete", status="completed"), ["[n3] turn completed"]),
    (ev("turn_complete", status="interrupted"), ["[n3] turn interrupted"]),
    (
        ev(
            "turn_complete",
            status="failed",
            error="context full",
            error_code="context_window_exceeded",
        ),
        ["[n3] turn failed [context_window_exceeded]: context full"],
    ),
    (
        ev(
            "usage",
            input_tokens=10,
            cached_input_tokens=2,
            output_tokens=5,
            reasoning_output_tokens=1,
            total_tokens=15,
        ),
        ["[n3] tokens: 15 (input 10, cached 2, output 5, reasoning 1)"],
    ),
    (
        ev("inject_failed", error="agent_crashed", message="codex died", stderr="a\nb\n"),
        ["[n3] prompt inj-1 failed (agent_crashed): codex died", "[n3]   | a", "[n3]   | b"],
    ),
    (ev("interrupt_ack"), ["[n3] interrupt sent"]),
    (ev("approve_ack", approval_id="ap-1"), ["[n3] answer to ap-1 sent"]),
    (ev("steer_ack", steer_id="s1"), ["[n3] steer s1 sent"]),
    (ev("node_started", host="gpu7", pid=99), ["[n3] node started on gpu7 (pid 99)"]),
    (ev("node_exited", reason="sigterm"), ["[n3] node exited (sigterm)"]),
    (
        ev("error", error="invalid_inbox_line", message="bad line"),
        ["[n3] error invalid_inbox_line: bad line"],
    ),
    (
        {"type": "error", "ts": 1.0, "error": "unknown_swarm", "message": "no swarm sw-9"},
        ["[codeswarm] error unknown_swarm: no swarm sw-9"],
    ),
    (
        {"type": "ready", "ts": 1.0, "version": "0.1", "backend": "local", "pid": 1},
        ["[codeswarm] router ready (local)"],
    ),
    ({"type": "pong", "ts": 1.0}, ["[codeswarm] pong"]),
    ({"type": "shutting_down", "ts": 1.0}, ["[codeswarm] router shutting down"]),
    (
        {
            "type": "subscribed",
            "ts": 1.0,
            "patterns": ["item_*"],
            "events": ["item_started", "item_completed"],
        },
        ["[codeswarm] subscribed: item_started, item_completed"],
    ),
    (
        {
            "type": "swarm_launched",
            "ts": 1.0,
            "swarm": {"swarm_id": "sw-1", "job_id": "41", "state": "pending", "nodes": [{}, {}]},
        },
        ["[codeswarm] swarm sw-1 pending (job 41, 2 nodes)"],
    ),
    (
        {
            "type": "swarm_status",
            "ts": 1.0,
            "swarm": {"swarm_id": "sw-1", "job_id": "41", "state": "running", "nodes": [{}]},
        },
        ["[codeswarm] swarm sw-1 running (job 41, 1 node)"],
    ),
    (
        {
            "type": "swarm_status",
            "ts": 1.0,
            "swarm": {
                "swarm_id": "sw-1",
                "job_id": "41",
                "state": "running",
                "nodes": [{}],
                "jobs": ["41", "57"],
            },
        },
        ["[codeswarm] swarm sw-1 running (job 41, 1 node, ran as 41 57)"],
    ),
    (
        {
            "type": "swarm_list",
            "ts": 1.0,
            "swarms": [{"swarm_id": "sw-1", "job_id": "41", "state": "exited", "nodes": []}],
        },
        ["[codeswarm] swarm sw-1 exited (job 41, 0 nodes)"],
    ),
    (
        {"type": "swarm_terminated", "ts": 1.0, "swarm_id": "sw-1"},
        ["[sw-1] swarm sw-1 terminated"],
    ),
    (
        {
            "type": "swarm_diff",
            "ts": 1.0,
            "swarm_id": "sw-1",
            "job_id": "41",
            "nodes": [{"node_id": 0}, {"node_id": 2}],
        },
        ["[sw-1] diff read, node 0, 2"],
    ),
    (ev("item_started", item=command(status="in_progress", exit_code=None)), ["[n3] $ pytest -q"]),
    (
        ev(
            "item_completed",
            item=command(status="completed", exit_code=0, duration_ms=1234, output="ok\n"),
        ),
        ["[n3] $ pytest -q  (exit 0, 1.2s)"],
    ),
    (
        ev(
            "item_completed",
            item=command(
                status="failed",
                exit_code=2,
                duration_ms=50,
                output="1\n2\n3\n4\n5\n6\nFAILED x\n",
                output_truncated=True,
                output_path="/logs/c1.output",
            ),
        ),
        [
            "[n3] $ pytest -q  (exit 2, 0.1s)",
            *(f"[n3]   | {line}" for line in ("3", "4", "5", "6", "FAILED x")),
            "[n3]   full output: /logs/c1.output",
        ],
    ),
    (
        ev("item_completed", item=command(status="declined", exit_code=None)),
        ["[n3] $ pytest -q  (declined)"],
    ),
    (
        ev(
            "item_started",
            item={"id": "f1", "kind": "file_change", "status": "in_progress", "changes": []},
        ),
        [],
    ),
    (
        ev(
            "item_completed",
            item={
                "id": "f1",
                "kind": "file_change",
                "status": "completed",
                "changes": [
                    {
                        "path": "src/x.py",
                        "change": "update",
                        "additions": 12,
                        "deletions": 3,
                        "diff": "",
                    },
                    {
                        "path": "new.txt",
                        "change": "add",
                        "additions": 1,
                        "deletions": 0,
                        "diff": "",
                    },
                    {
                        "path": "gone.txt",
                        "change": "delete",
                        "additions": 0,
                        "deletions": 4,
                        "diff": "",
                    },
                    {
                        "path": "old.py",
                        "change": "update",
                        "move_path": "new.py",
                        "additions": 0,
                        "deletions": 0,
                        "diff": "",
                    },
                ],
                "diff_truncated": True,
                "diff_path": "/logs/f1.diff",
            },
        ),
        [
            "[n3] M src/x.py +12 -3",
            "[n3] A new.txt +1",
            "[n3] D gone.txt -4",
            "[n3] R old.py -> new.py",
            "[n3]   full diff: /logs/f1.diff",
        ],
    ),
    (
        ev(
            "item_completed",
            item={
                "id": "f2",
                "kind": "file_change",
                "status": "declined",
                "changes": [{"path": "a", "change": "add", "additions": 2}],
            },
        ),
        ["[n3] A a +2 (declined)"],
    ),
    (
        ev(
            "item_started",
            item={
                "id": "t1",
                "kind": "tool_call",
                "server": "docs",
                "tool": "search",
                "arguments": {"q": "x"},
            },
        ),
        ['[n3] tool docs.search {"q": "x"}'],
    ),
    (
        ev(
            "item_completed",
            item={
                "id": "t1",
                "kind": "tool_call",
                "server": None,
                "tool": "lookup",
                "status": "completed",
                "error": None,
                "duration_ms": 200,
            },
        ),
        ["[n3] tool lookup  (ok, 0.2s)"],
    ),
    (
        ev(
            "item_completed",
            item={
                "id": "t2",
                "kind": "tool_call",
                "server": "docs",
                "tool": "get",
                "status": "failed",
                "error": "timeout",
            },
        ),
        ["[n3] tool docs.get  (failed: timeout)"],
    ),
    (
        ev("item_completed", item={"id": "w1", "kind": "web_search", "query": "slurm requeue"}),
        ["[n3] search: slurm requeue"],
    ),
    (
        ev(
            "item_completed",
            item={"id": "r1", "kind": "reasoning", "summary": ["Look at tests", "Fix"]},
        ),
        ["[n3] thinking: Look at tests", "[n3] thinking: Fix"],
    ),
    (
        ev("item_completed", item={"id": "p1", "kind": "plan", "text": "1. read\n2. fix"}),
        ["[n3] plan:", "[n3]   1. read", "[n3]   2. fix"],
    ),
    (ev("item_started", item={"id": "k1", "kind": "compaction"}), ["[n3] compacting the context"]),
    (ev("item_completed", item={"id": "k1", "kind": "compaction"}), ["[n3] context compacted"]),
    (
        ev(
            "item_completed",
            item={
                "id": "v1",
                "kind": "review",
                "phase": "exited",
                "review": "Looks fine.\nOne nit.",
            },
        ),
        ["[n3] review exited", "[n3]   Looks fine.", "[n3]   One nit."],
    ),
    (
        ev("item_completed", item={"id": "z1", "kind": "hologram", "status": "completed"}),
        ["[n3] item hologram completed"],
    ),
    (ev("turn_diff", diff=DIFF, diff_truncated=False), ["[n3] diff so far: 2 files +2 -2"]),
    (
        ev("turn_diff", diff="", diff_truncated=True, diff_path="/logs/t-1.diff"),
        ["[n3] diff so far: 0 files +0 -0 (truncated; full diff: /logs/t-1.diff)"],
    ),
    (
        ev(
            "plan_updated",
            explanation="Two steps left",
            plan=[
                {"step": "Read the code", "status": "completed"},
                {"step": "Fix the bug", "status": "in_progress"},
                {"step": "Run the tests", "status": "pending"},
            ],
        ),
        [
            "[n3] plan: Two steps left",
            "[n3]   [x] Read the code",
            "[n3]   [>] Fix the bug",
            "[n3]   [ ] Run the tests",
        ],
    ),
    (
        ev(
            "rate_limits",
            rate_limits={
                "primary": {"usedPercent": 42, "windowDurationMins": 300},
                "secondary": None,
            },
        ),
        ["[n3] rate limits: primary 42% used of 300 min"],
    ),
    (
        ev("model_rerouted", from_model="gpt-a", to_model="gpt-b", reason="highRiskCyberActivity"),
        ["[n3] model rerouted: gpt-a -> gpt-b (highRiskCyberActivity)"],
    ),
    (
        ev(
            "approval_request",
            approval_id="n3-1",
            approval_kind="command",
            command="rm -rf build",
            cwd="/w",
            reason="needs write access",
            expires_at=2.0,
            default_decision="decline",
        ),
        [
            "[n3] APPROVAL n3-1 (command) $ rm -rf build",
            "[n3]   reason: needs write access",
            f"[n3]   answer: codeswarm approve sw-1 n3-1 --decision {DECISIONS}",
            f"[n3]   unanswered: decline at {clock(2.0)}",
        ],
    ),
    (
        ev(
            "approval_request",
            approval_id="n3-2",
            approval_kind="file_change",
            changes=[{"path": "a.py", "change": "update", "additions": 1, "deletions": 1}],
            reason=None,
            expires_at=2.0,
            default_decision="decline",
        ),
        [
            "[n3] APPROVAL n3-2 (file_change)",
            "[n3]   M a.py +1 -1",
            f"[n3]   answer: codeswarm approve sw-1 n3-2 --decision {DECISIONS}",
            f"[n3]   unanswered: decline at {clock(2.0)}",
        ],
    ),
    (
        ev("approval_resolved", approval_id="n3-1", decision="accept", by="client"),
        ["[n3] approval n3-1: accept (by client)"],
    ),
    (
        {
            "type": "approval_list",
            "ts": 1.0,
            "swarm_id": "sw-1",
            "approvals": [
                {
                    **ev("approval_request"),
                    "approval_id": "n3-1",
                    "approval_kind": "command",
                    "command": "ls",
                }
            ],
        },
        [
            "[sw-1] 1 pending approval",
            "[sw-1]   APPROVAL n3-1 (command) $ ls",
            f"[sw-1]     answer: codeswarm approve sw-1 n3-1 --decision {DECISIONS}",
        ],
    ),
    (ev("steer_applied", steer_id="s1"), ["[n3] steer s1 applied"]),
    (
        ev("steer_failed", steer_id="s1", error="no_running_turn", message="the node is idle"),
        ["[n3] steer s1 failed (no_running_turn): the node is idle"],
    ),
    (
        ev("telepathy", thought="hi"),
        ['[n3] telepathy {"injection_id": "inj-1", "turn_id": "t-1", "thought": "hi"}'],
    ),
]


def plain(*events: dict, show_swarm: bool = False) -> str:
    renderer = EventRenderer(color=False, show_swarm=show_swarm)
    return "".join(renderer.render(e) for e in events) + renderer.finish()


@pytest.mark.parametrize(
    ("event", "lines"), CASES, ids=[f"{i}-{c[0]['type']}" for i, c in enumerate(CASES)]
)
def test_each_kind_of_event_renders_plainly(event, lines):
    assert plain(event).splitlines() == lines


def test_every_event_type_has_a_case():
    covered = {event["type"] for event, _ in CASES}
    streamed = {"assistant_delta", "command_output_delta", "reasoning_delta"}
    assert set(EVENT_TYPES) - streamed <= covered


@pytest.mark.parametrize(
    ("event", "lines"), CASES, ids=[f"{i}-{c[0]['type']}" for i, c in enumerate(CASES)]
)
def test_colour_adds_only_styles_to_the_same_text(event, lines):
    renderer = EventRenderer(color=True)
    coloured = renderer.render(event) + renderer.finish()
    assert click.unstyle(coloured).splitlines() == lines
    if lines:
        assert "\x1b[" in coloured


def test_colours_mark_what_matters():
    renderer = EventRenderer(color=True)
    failed = renderer.render(ev("turn_complete", status="failed", error="x", error_code="other"))
    assert click.style("turn failed [other]: x", fg="red", bold=True) in failed
    approval = renderer.render(ev("approval_request", approval_id="n3-1", approval_kind="command"))
    assert click.style("APPROVAL n3-1 (command)", fg="magenta", bold=True) in approval
    ok = renderer.render(ev("item_completed", item=command(exit_code=0, status="completed")))
    assert click.style("(exit 0)", fg="green") in ok


def test_streamed_text_keeps_each_line_prefixed_when_nodes_interleave():
    n0 = {**INJECTION, "node_id": 0}
    n1 = {**INJECTION, "node_id": 1}
    events = [
        {"type": "assistant_delta", **n0, "delta": "Hel"},
        {"type": "assistant_delta", **n0, "delta": "lo\nwor"},
        {"type": "assistant_delta", **n1, "delta": "Hi"},
        {"type": "assistant_delta", **n0, "delta": "ld"},
        {"type": "assistant", **n0, "content": "Hello\nworld"},
        {"type": "assistant_delta", **n1, "delta": " there"},
        {"type": "turn_started", **n1},
        {"type": "assistant", **n1, "content": "Hi there"},
        {"type": "assistant", **n1, "content": "A second message, not streamed"},
    ]
    assert plain(*events).splitlines() == [
        "[n0] Hello",
        "[n0] wor",
        "[n1] Hi",
        "[n0] ld",
        "[n1]  there",
        "[n1] turn started",
        "[n1] A second message, not streamed",
    ]


def test_command_output_and_reasoning_stream_apart_from_the_answer():
    events = [
        {"type": "reasoning_delta", **INJECTION, "item_id": "r1", "delta": "thinking"},
        {"type": "command_output_delta", **INJECTION, "item_id": "c1", "delta": "line 1\nline"},
        {"type": "command_output_delta", **INJECTION, "item_id": "c1", "delta": " 2\n"},
        {
            "type": "command_output_delta",
            **INJECTION,
            "item_id": "c1",
            "delta": "more",
            "truncated": True,
            "output_path": "/logs/c1.output",
        },
        {"type": "assistant_delta", **INJECTION, "delta": "Answer"},
    ]
    assert plain(*events).splitlines() == [
        "[n3] thinking",
        "[n3] line 1",
        "[n3] line 2",
        "[n3] more",
        "[n3] output truncated; all of it in /logs/c1.output",
        "[n3] Answer",
    ]
    renderer = EventRenderer(color=True)
    dimmed = renderer.render(events[0])
    assert click.style("thinking", dim=True) in dimmed


def test_several_swarms_show_the_swarm_in_the_prefix():
    assert plain(ev("turn_started"), show_swarm=True) == "[sw-1 n3] turn started\n"


def test_control_characters_from_an_agent_are_shown_not_obeyed():
    text = plain(ev("assistant", content="\x1b[2Jcleared?\rback"))
    assert text == "[n3] \\x1b[2Jcleared?\\rback\n"
    assert "\x1b" not in plain(ev("assistant_delta", delta="\x1b]0;title\x07"))


def test_diff_stat_counts_inside_hunks_only():
    assert diff_stat(DIFF) == (2, 2, 2)
    assert diff_stat("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") == (1, 1, 1)
    assert diff_stat("") == (0, 0, 0)


def test_status_says_where_each_agent_runs():
    slurm = {"host": "vm", "slurm_node": "n1", "slurm_job": "40_1", "node_id": 3}
    assert node_place(slurm) == " on vm (Slurm node n1, job 40_1)"
    assert node_place({"host": "laptop", "node_id": 0}) == " on laptop"
    assert node_place({"host": None, "slurm_node": None, "slurm_job": "40", "node_id": 0}) == (
        " (job 40)"
    )
