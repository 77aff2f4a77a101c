"""``scale`` on the test Slurm cluster: an agent added in a job of its own answers in the same
swarm; removed by another process (the CLI), it drains, its job ends, and it refuses prompts.

Run under the shared lock: ``flock /tmp/slurm-tests.lock .venv/bin/python -m pytest
tests/test_slurm_scale.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from codeswarm.backends.slurm import tagged_job
from codeswarm.model_server import Reply
from tests.support.cli import run_cli
from tests.support.daemon import Daemon
from tests.test_slurm import cluster_codex, slurm_config, slurm_config_file  # noqa: F401

pytestmark = pytest.mark.integration


def squeue(env: dict[str, str], swarm_id: str, fmt: str = "%i") -> str:
    argv = ["squeue", "-h", "-r", "-n", f"codeswarm-{swarm_id}", "-o", fmt]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


def inject(d: Daemon, swarm_id: str, node: int, content: str, injection_id: str) -> None:
    d.send(
        {
            "command": "inject",
            "swarm_id": swarm_id,
            "nodes": node,
            "content": content,
            "injection_id": injection_id,
        }
    )


@pytest.mark.timeout(300)
def test_an_agent_added_in_its_own_job_answers_then_drains_when_removed(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
    minicluster,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    model_server.add_rule("slow one", Reply(text="slowly done", delay_seconds=2.0))
    env = {**os.environ, "SLURM_CONF": f"{minicluster['MINICLUSTER_DIR']}/etc/slurm.conf"}
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 1, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        swarm_id, job_id = swarm["swarm_id"], swarm["job_id"]
        d.send({"command": "scale", "swarm_id": swarm_id, "add": 1, "request_id": "A"})
        grown = d.wait_event("swarm_status", request_id="A", timeout=120)["swarm"]
        assert grown["swarm_id"] == swarm_id and grown["job_id"] == job_id
        added_job = grown["nodes"][1]["slurm_job"]
        assert [n["node_id"] for n in grown["nodes"]] == [0, 1]
        assert grown["nodes"][0]["slurm_job"] == job_id and added_job not in (job_id, None)

        inject(d, swarm_id, 1, "hello added agent", "hello")
        assert d.wait_event("assistant", injection_id="hello", timeout=180)["node_id"] == 1
        started = d.wait_event("node_started", node_id=1)
        assert started["job_id"] == job_id  # the swarm's mailbox key, not the added job's
        assert added_job in squeue(env, swarm_id).split()
        # tagged for a lost sbatch answer: find_tagged matches this very output
        comments = dict(line.split(" ", 1) for line in squeue(env, swarm_id, "%F %k").splitlines())
        assert comments[added_job].startswith("codeswarm-add-1-"), comments
        assert tagged_job(squeue(env, swarm_id, "%F %k").encode(), comments[added_job]) == added_job

        inject(d, swarm_id, 1, "slow one", "running")
        d.wait_event("turn_started", injection_id="running", timeout=60)
        inject(d, swarm_id, 1, "queued behind it", "queued")
        d.wait_event("inject_delivered", injection_id="queued", timeout=60)
        done = run_cli(config_file, "scale", swarm_id, "--remove", "1", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["nodes"][1]["removed"] is True

        assert d.wait_event("usage", injection_id="running", timeout=120)["node_id"] == 1
        failed = d.wait_event("inject_failed", injection_id="queued", timeout=60)
        assert failed["error"] == "node_removed", failed
        assert d.wait_event("node_exited", node_id=1, timeout=60)["reason"] == "removed"
        for _ in range(120):  # its job ran only the removed agent: it ends
            if added_job not in squeue(env, swarm_id).split():
                break
            time.sleep(0.5)
        assert added_job not in squeue(env, swarm_id).split()

        inject(d, swarm_id, 1, "anyone?", "late")
        late = d.wait_event("inject_failed", injection_id="late", timeout=60)
        assert late["error"] == "node_removed", late
        inject(d, swarm_id, 0, "still here?", "zero")
        assert d.wait_event("assistant", injection_id="zero", timeout=180)["node_id"] == 0

        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T")
        for _ in range(120):
            if not squeue(env, swarm_id).strip():
                break
            time.sleep(0.5)
        assert squeue(env, swarm_id).strip() == ""
    finally:
        d.close()


@pytest.mark.timeout(300)
def test_agents_added_to_an_array_swarm_run_as_tasks_of_a_new_array(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    data = json.loads(config_file.read_text())
    data["slurm"].update(layout="array")
    config_file.write_text(json.dumps(data))
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 1, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        swarm_id, job_id = swarm["swarm_id"], swarm["job_id"]
        d.send({"command": "scale", "swarm_id": swarm_id, "add": 2, "request_id": "A"})
        grown = d.wait_event("swarm_status", request_id="A", timeout=120)["swarm"]
        jobs = [n["slurm_job"] for n in grown["nodes"]]
        added = jobs[1].partition("_")[0]
        assert jobs == [f"{job_id}_0", f"{added}_0", f"{added}_1"] and added != job_id, jobs
        d.send({"command": "inject", "swarm_id": swarm_id, "nodes": "all", "content": "count off"})
        events = d.wait_for(lambda evs: sum(e["type"] == "usage" for e in evs) == 3, timeout=180)
        started = {e["node_id"]: e["job_id"] for e in events if e["type"] == "node_started"}
        assert started == dict.fromkeys(range(3), job_id), started
        assert {e["node_id"] for e in events if e["type"] == "assistant"} == {0, 1, 2}
        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T")
    finally:
        d.close()
