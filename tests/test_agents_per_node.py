"""Several agents a node on the local backend: real codex agents, each in its own directory;
and what ``restart`` says to a swarm that is not a job array."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from codeswarm.config import load_config
from codeswarm.embed import Codeswarm
from codeswarm.errors import CommandError
from codeswarm.model_server import Reply
from tests.support.simulated_workers import SimulatedScheduler, local_config

pytestmark = pytest.mark.integration


def test_two_nodes_of_two_agents_each_answer_from_their_own_directory(config_file, model_server):
    data = json.loads(config_file.read_text())
    data["slurm"] = {"agents_per_node": 2}
    config_file.write_text(json.dumps(data))
    for node in range(4):
        model_server.add_rule(f"where is agent {node}", Reply(tool_call_cmd="pwd"))
        model_server.add_rule(f"where is agent {node}", Reply(text=f"agent {node} here"))
    with Codeswarm(load_config(config_file)) as swarms:
        swarm = swarms.launch(nodes=2)
        swarm_id = swarm["swarm_id"]
        try:
            assert [n["node_id"] for n in swarm["nodes"]] == [0, 1, 2, 3]
            assert swarm["agents_per_node"] == 2
            for node in range(4):
                swarms.inject(swarm_id, f"where is agent {node}", nodes=node)
            cwd, answers = {}, {}
            for event in swarms.events(timeout=120):
                if event["type"] == "item_completed" and event["item"].get("command"):
                    cwd[event["node_id"]] = event["item"]["output"].strip()
                elif event["type"] == "assistant":
                    answers[event["node_id"]] = event["content"]
                if len(answers) == 4:
                    break
            status = swarms.status(swarm_id)
        finally:
            swarms.terminate(swarm_id)
    assert answers == {n: f"agent {n} here" for n in range(4)}
    job_id = swarm["job_id"]
    assert sorted(cwd) == [0, 1, 2, 3] and len(set(cwd.values())) == 4
    assert all(cwd[n].endswith(f"/workspaces/{job_id}_{n}") for n in range(4)), cwd
    assert [n["node_id"] for n in status["nodes"]] == [0, 1, 2, 3]
    assert all(n["host"] for n in status["nodes"]), status


def test_restart_of_a_one_job_swarm_is_refused_with_why(tmp_path):
    config = local_config(tmp_path)
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    try:
        with Codeswarm(config, scheduler=scheduler) as swarms:
            swarm_id = swarms.launch(nodes=2)["swarm_id"]
            with pytest.raises(CommandError, match="is one Slurm job, not an array") as refused:
                swarms.restart(swarm_id, nodes=1)
            assert refused.value.event["field"] == "nodes"
            swarms.terminate(swarm_id)
    finally:
        scheduler.close()


def test_the_cli_launches_agents_per_node_and_status_shows_where_each_runs(config_file):
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "codeswarm", *argv, "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    launched = cli("launch", "--nodes", "1", "--agents-per-node", "3")
    assert launched.returncode == 0, launched.stderr
    swarm_id = launched.stdout.strip()
    assert "1 nodes, 3 agents" in launched.stderr, launched.stderr
    try:
        # a router that routes each agent's node_started (here inject --wait's) records where
        answered = cli("inject", swarm_id, "--prompt", "count off", "--wait")
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.count("echo: count off") == 3, answered.stdout
        status = cli("status", swarm_id)
        assert status.returncode == 0, status.stderr
        host = socket.gethostname()
        for node in range(3):
            assert f"node {node}: running on {host}" in status.stdout, status.stdout
    finally:
        cli("terminate", swarm_id)
