"""Swarm shapes on the test Slurm cluster: agents per node, and the array layout.

Run under the shared lock: ``flock /tmp/slurm-tests.lock .venv/bin/python -m pytest
tests/test_slurm_shapes.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from codeswarm.model_server import Reply
from tests.support.daemon import Daemon
from tests.test_slurm import cluster_codex, slurm_config, slurm_config_file  # noqa: F401

pytestmark = pytest.mark.integration


def shaped_config(config_file: Path, **slurm: Any) -> Path:
    data = json.loads(config_file.read_text())
    data["slurm"].update(slurm)
    config_file.write_text(json.dumps(data))
    return config_file


def status(d: Daemon, swarm_id: str, request_id: str) -> dict[str, Any]:
    d.send({"command": "status", "swarm_id": swarm_id, "request_id": request_id})
    return d.wait_event("swarm_status", request_id=request_id, timeout=60)["swarm"]


@pytest.mark.timeout(300)
def test_two_nodes_of_two_agents_each_answer_from_their_own_directory(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    shaped_config(config_file, agents_per_node=2)
    for node in range(4):
        model_server.add_rule(f"where is agent {node}", Reply(tool_call_cmd="pwd"))
        model_server.add_rule(f"where is agent {node}", Reply(text=f"agent {node} here"))
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 2, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        assert [n["node_id"] for n in swarm["nodes"]] == [0, 1, 2, 3]
        for node in range(4):
            d.send(
                {
                    "command": "inject",
                    "swarm_id": swarm["swarm_id"],
                    "nodes": node,
                    "content": f"where is agent {node}",
                }
            )
        events = d.wait_for(lambda evs: sum(e["type"] == "usage" for e in evs) == 4, timeout=180)
        answers = {e["node_id"]: e["content"] for e in events if e["type"] == "assistant"}
        assert answers == {n: f"agent {n} here" for n in range(4)}
        cwd = {
            e["node_id"]: e["item"]["output"].strip()
            for e in events
            if e["type"] == "item_completed" and e["item"].get("command")
        }
        assert sorted(cwd) == [0, 1, 2, 3] and len(set(cwd.values())) == 4, cwd
        nodes = status(d, swarm["swarm_id"], "S")["nodes"]
        d.send({"command": "terminate", "swarm_id": swarm["swarm_id"]})
    finally:
        d.close()
    assert all(n["state"] == "running" and n["host"] for n in nodes), nodes
    assert all(n["slurm_job"] == swarm["job_id"] for n in nodes), nodes
    slurm_nodes = [n["slurm_node"] for n in nodes]
    # block order: a node's agents are neighbours, two Slurm nodes in all
    assert slurm_nodes[0] == slurm_nodes[1] != slurm_nodes[2] == slurm_nodes[3], nodes


@pytest.mark.timeout(300)
def test_an_array_task_cancelled_alone_is_reported_alone_and_resubmitted_alone(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
    minicluster,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    shaped_config(config_file, layout="array", array_throttle=2)
    env = {**os.environ, "SLURM_CONF": f"{minicluster['MINICLUSTER_DIR']}/etc/slurm.conf"}
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 2, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        swarm_id, job_id = swarm["swarm_id"], swarm["job_id"]
        assert swarm["layout"] == "array"
        assert [n["slurm_job"] for n in swarm["nodes"]] == [f"{job_id}_0", f"{job_id}_1"]
        d.wait_for(lambda evs: sum(e["type"] == "node_started" for e in evs) == 2, timeout=120)
        subprocess.run(["scancel", f"{job_id}_1"], env=env, check=True)
        exited = d.wait_event("node_exited", timeout=60)
        assert exited["node_id"] == 1 and exited["reason"] == "sigterm", exited
        for attempt in range(120):  # a node gone is held a grace first
            nodes = status(d, swarm_id, f"S{attempt}")["nodes"]
            if nodes[1]["state"] == "exited":
                break
            time.sleep(0.5)
        assert [n["state"] for n in nodes] == ["running", "exited"], nodes
        d.send(
            {
                "command": "inject",
                "swarm_id": swarm_id,
                "nodes": 0,
                "content": "still here",
                "injection_id": "after",
            }
        )
        assert d.wait_event("assistant", injection_id="after", timeout=120)["node_id"] == 0
        assert [e for e in d.events if e["type"] == "node_exited" and e["node_id"] == 0] == []

        # node 0's task still runs: only the cancelled one can be resubmitted
        d.send({"command": "restart", "swarm_id": swarm_id, "nodes": [0], "request_id": "R0"})
        refused = d.wait_event("error", request_id="R0")
        assert "still runs" in refused["message"], refused
        d.send({"command": "restart", "swarm_id": swarm_id, "nodes": 1, "request_id": "R1"})
        restarted = d.wait_event("swarm_status", request_id="R1")["swarm"]["nodes"]
        assert restarted[1]["slurm_job"] not in (f"{job_id}_1", None), restarted
        assert restarted[1]["slurm_job"].endswith("_1") and restarted[0]["state"] == "running"
        d.send(
            {
                "command": "inject",
                "swarm_id": swarm_id,
                "nodes": 1,
                "content": "back again",
                "injection_id": "back",
            }
        )
        assert d.wait_event("assistant", injection_id="back", timeout=120)["node_id"] == 1
        started = [e for e in d.events if e["type"] == "node_started" and e["node_id"] == 1]
        assert len(started) == 2 and started[1]["job_id"] == job_id, started
        seqs = [e["seq"] for e in d.events if e.get("node_id") == 1 and "seq" in e]
        assert seqs == sorted(set(seqs)), "the resubmitted agent's seq continues"
        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T")
        squeue = ["squeue", "-h", "-r", "-n", f"codeswarm-{swarm_id}", "-o", "%i|%T"]
        for _ in range(120):  # both jobs, the array and the resubmission, are cancelled
            left = subprocess.run(squeue, env=env, capture_output=True, text=True).stdout
            if not left.strip():
                break
            time.sleep(0.5)
        assert left.strip() == "", left
    finally:
        d.close()


@pytest.mark.timeout(300)
def test_an_array_of_two_agents_a_node_numbers_its_agents_over_the_tasks(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    shaped_config(config_file, layout="array", agents_per_node=2)
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 2, "prompt": "count off", "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        job_id = swarm["job_id"]
        tasks = [n["slurm_job"] for n in swarm["nodes"]]
        assert tasks == [f"{job_id}_0", f"{job_id}_0", f"{job_id}_1", f"{job_id}_1"], tasks
        events = d.wait_for(
            lambda evs: sum(e["type"] == "usage" and e.get("request_id") == "L" for e in evs) == 4,
            timeout=180,
        )
        started = {e["node_id"]: e["job_id"] for e in events if e["type"] == "node_started"}
        assert started == dict.fromkeys(range(4), job_id), started
        answers = {e["node_id"] for e in events if e["type"] == "assistant"}
        assert answers == {0, 1, 2, 3}
        d.send({"command": "terminate", "swarm_id": swarm["swarm_id"], "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T")
    finally:
        d.close()
