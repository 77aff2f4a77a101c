"""Approvals and steering through ``codeswarm daemon``: local backend, real codex, model server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeswarm.model_server import Reply, last_user_text
from tests.support.daemon import Daemon

pytestmark = pytest.mark.integration

ESCALATE = {"sandbox_permissions": "require_escalated", "justification": "write the marker"}


@pytest.fixture
def daemon(config_file, tmp_path):
    config = json.loads(config_file.read_text())
    config["agent"].update(approval_policy="on-request", sandbox="workspace-write")
    config_file.write_text(json.dumps(config))
    workspace_root = Path(config["cluster"]["workspace_root"])
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    d.wait_event("ready", timeout=30)
    d.workspace_root = workspace_root
    yield d
    for event in d.events if d.process.poll() is None else []:
        if event["type"] == "swarm_launched":
            d.send({"command": "terminate", "swarm_id": event["swarm"]["swarm_id"]})
    d.close()


def launch(d: Daemon, nodes: int) -> dict:
    d.send({"command": "launch", "nodes": nodes, "request_id": "launch"})
    swarm = d.wait_event("swarm_launched", request_id="launch")["swarm"]
    d.wait_for(lambda evs: sum(e["type"] == "node_started" for e in evs) == nodes, timeout=60)
    return swarm


def markers(d: Daemon, job_id: str) -> list[str]:
    found = d.workspace_root.glob(f"**/workspaces/{job_id}_*/marker")
    return sorted(path.parent.name for path in found)


def of(events: list[dict], kind: str, **fields) -> list[dict]:
    return [
        e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


def test_one_approve_answers_the_same_request_on_every_node(daemon, model_server):
    d = daemon
    swarm = launch(d, 2)
    sid, job = swarm["swarm_id"], swarm["job_id"]
    reply = Reply(tool_call_cmd="touch marker", tool_call_args=ESCALATE)
    model_server.add_rule("TOUCH", reply, times=2)
    d.send({"command": "inject", "swarm_id": sid, "nodes": "all", "content": "TOUCH it"})
    events = d.wait_for(lambda evs: len(of(evs, "approval_request")) == 2)

    requests = of(events, "approval_request")
    asked = requests[0]["approval_id"]  # the same command at the same point: the same id
    assert asked.startswith("ap-1-")
    assert {(e["node_id"], e["approval_id"], e["swarm_id"]) for e in requests} == {
        (0, asked, sid),
        (1, asked, sid),
    }
    assert all("touch marker" in e["command"] for e in requests)
    assert markers(d, job) == []
    d.send({"command": "approvals", "swarm_id": sid, "request_id": "list-1"})
    listed = d.wait_event("approval_list", request_id="list-1")["approvals"]
    assert sorted((a["node_id"], a["approval_id"], a["approval_kind"]) for a in listed) == [
        (0, asked, "command"),
        (1, asked, "command"),
    ]

    approve = {"command": "approve", "swarm_id": sid, "approval_id": asked, "nodes": "all"}
    d.send({**approve, "decision": "accept", "request_id": "yes"})
    events = d.wait_for(lambda evs: len(of(evs, "usage")) == 2, timeout=90)

    assert sorted(e["node_id"] for e in of(events, "approve_ack", request_id="yes")) == [0, 1]
    resolved = of(events, "approval_resolved", request_id="yes")
    assert sorted((e["node_id"], e["decision"], e["by"]) for e in resolved) == [
        (0, "accept", "client"),
        (1, "accept", "client"),
    ]
    assert markers(d, job) == [f"{job}_0", f"{job}_1"]
    d.send({"command": "approvals", "swarm_id": sid, "request_id": "list-2"})
    assert d.wait_event("approval_list", request_id="list-2")["approvals"] == []


def test_decline_unknown_nodes_and_ids_fail_per_node(daemon, model_server):
    d = daemon
    swarm = launch(d, 1)
    sid, job = swarm["swarm_id"], swarm["job_id"]
    model_server.add_rule("TOUCH", Reply(tool_call_cmd="touch marker", tool_call_args=ESCALATE))
    d.send({"command": "inject", "swarm_id": sid, "nodes": 0, "content": "TOUCH it"})
    asked = d.wait_event("approval_request")["approval_id"]
    d.send(
        {
            "command": "approve",
            "swarm_id": sid,
            "approval_id": "ap-7",
            "nodes": [0, 5],
            "decision": "accept",
            "request_id": "wrong",
        },
        {
            "command": "approve",
            "swarm_id": sid,
            "approval_id": asked,
            "nodes": 0,
            "decision": "decline",
            "request_id": "no",
        },
    )
    events = d.wait_event("usage")
    events = d.wait_for(lambda evs: len(of(evs, "error", request_id="wrong")) == 2)

    errors = {e["node_id"]: e["error"] for e in of(events, "error", request_id="wrong")}
    assert errors == {0: "unknown_approval", 5: "unknown_target"}
    resolved = of(events, "approval_resolved", request_id="no")
    assert [(e["decision"], e["by"]) for e in resolved] == [("decline", "client")]
    assert markers(d, job) == []


def test_steer_reaches_the_running_turn_and_fails_without_one(daemon, model_server):
    d = daemon
    swarm = launch(d, 1)
    sid = swarm["swarm_id"]
    d.send(
        {"command": "steer", "swarm_id": sid, "nodes": "all", "content": "x", "request_id": "s0"}
    )
    failed = d.wait_event("steer_failed", request_id="s0")
    assert failed["error"] == "no_running_turn"
    assert of(d.events, "steer_ack", request_id="s0")[0]["steer_id"] == failed["steer_id"]

    model_server.add_rule("SLOW", Reply(text="a slow answer", deltas=6, delay_seconds=0.5))
    d.send({"command": "inject", "swarm_id": sid, "nodes": 0, "content": "SLOW work"})
    d.wait_event("assistant_delta")
    steer = {"command": "steer", "swarm_id": sid, "nodes": [0], "steer_id": "turn-left"}
    d.send({**steer, "content": "STEERED: turn left", "request_id": "s1"})
    applied = d.wait_event("steer_applied", request_id="s1")
    d.wait_event("usage")

    assert applied["steer_id"] == "turn-left"
    assert [last_user_text(body) for body in model_server.requests] == [
        "SLOW work",
        "STEERED: turn left",
    ]


def test_review_and_compact_run_as_turns(daemon, model_server):
    d = daemon
    swarm = launch(d, 1)
    sid = swarm["swarm_id"]
    model_server.add_rule("Review", Reply(text="P2: no tests"))
    d.send({"command": "review", "swarm_id": sid, "nodes": "all", "request_id": "rv"})
    reviewed = d.wait_event("turn_complete", request_id="rv")
    d.send({"command": "compact", "swarm_id": sid, "nodes": 0, "request_id": "cp"})
    done = d.wait_event("turn_complete", request_id="cp")

    items = [e["item"] for e in of(d.events, "item_completed", request_id="rv")]
    assert [item["phase"] for item in items if item["kind"] == "review"] == ["entered", "exited"]
    assert items[-1]["review"] == "P2: no tests"
    assert reviewed["status"] == "completed"
    assert of(d.events, "inject_ack", request_id="rv")[0]["node_id"] == 0
    assert done["status"] == "completed"
