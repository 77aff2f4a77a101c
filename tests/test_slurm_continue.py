"""slurm.continue on the test Slurm cluster: a conversation outlives its job's time limit.

Run under the shared lock: ``flock /tmp/slurm-tests.lock .venv/bin/python -m pytest
tests/test_slurm_continue.py``.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from codeswarm.model_server import Reply, last_user_text
from tests.support.daemon import Daemon
from tests.test_slurm import cluster_codex, slurm_config, slurm_config_file  # noqa: F401
from tests.test_slurm_shapes import shaped_config, status

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_a_conversation_goes_on_in_the_continuation_job_past_the_time_limit(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
    minicluster,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    # Slurm signals when the end is signal_seconds away (checked every 30 s): not before the
    # test shortens the limit to 6 minutes, then at once.
    shaped_config(
        config_file, time="00:30:00", signal_seconds=300, **{"continue": {"turn_grace_seconds": 2}}
    )
    model_server.add_rule("take your time", Reply(text="never finishes", hang=True))
    env = {**os.environ, "SLURM_CONF": f"{minicluster['MINICLUSTER_DIR']}/etc/slurm.conf"}
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 1, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        swarm_id, first_job = swarm["swarm_id"], swarm["job_id"]

        def inject(injection_id: str, content: str) -> None:
            d.send(
                {
                    "command": "inject",
                    "swarm_id": swarm_id,
                    "nodes": 0,
                    "content": content,
                    "injection_id": injection_id,
                }
            )

        inject("before", "remember the word zebra")
        d.wait_event("usage", injection_id="before", timeout=120)
        inject("running", "take your time")
        d.wait_event("turn_started", injection_id="running", timeout=60)
        inject("queued", "what was the word?")
        d.wait_event("inject_delivered", injection_id="queued", timeout=60)

        update = ["scontrol", "update", f"JobId={first_job}", "TimeLimit=6"]
        subprocess.run(update, check=True, env=env)
        exited = d.wait_event("node_exited", timeout=120)
        assert exited["reason"] == "continuing" and exited["swarm_id"] == swarm_id
        d.wait_event("usage", injection_id="queued", timeout=240)
        d.wait_event("usage", injection_id="running", timeout=60)

        started = [e for e in d.events if e["type"] == "node_started"]
        assert len(started) == 2 and {e["swarm_id"] for e in started} == {swarm_id}
        assert not [e for e in d.events if e["type"] == "inject_failed"], d.events
        seqs = [e["seq"] for e in d.events if "seq" in e]
        assert seqs == sorted(set(seqs)), "seq must continue in the continuation job"
        # The resumed thread carries the turns before the limit to the model.
        texts = [last_user_text(body) for body in model_server.requests]
        assert texts == [
            "remember the word zebra",
            "take your time",
            "take your time",  # interrupted at the limit, run again after it
            "what was the word?",
        ]
        history = json.dumps(model_server.requests[-1]["input"])
        assert "remember the word zebra" in history and "echo: remember the word zebra" in history

        now = status(d, swarm_id, "S")
        assert now["swarm_id"] == swarm_id and now["job_id"] == first_job
        assert len(now["jobs"]) == 2 and now["jobs"][0] == first_job
        assert now["nodes"][0]["slurm_job"] == now["jobs"][1]
        assert now["nodes"][0]["state"] == "running"
        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T", timeout=60)
        gone = d.wait_for(lambda evs: sum(e["type"] == "node_exited" for e in evs) == 2, timeout=60)
        assert [e["reason"] for e in gone if e["type"] == "node_exited"][-1] == "sigterm"
    finally:
        d.close()


@pytest.mark.timeout(420)
def test_an_array_task_continues_alone_while_the_other_runs_on(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
    minicluster,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    shaped_config(
        config_file,
        layout="array",
        time="00:30:00",
        signal_seconds=300,
        **{"continue": {"turn_grace_seconds": 2}},
    )
    env = {**os.environ, "SLURM_CONF": f"{minicluster['MINICLUSTER_DIR']}/etc/slurm.conf"}
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 2, "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        swarm_id, array = swarm["swarm_id"], swarm["job_id"]
        for node, content in ((0, "node zero, remember ant"), (1, "node one, remember bee")):
            d.send(
                {
                    "command": "inject",
                    "swarm_id": swarm_id,
                    "nodes": node,
                    "content": content,
                    "injection_id": f"first-{node}",
                }
            )
        d.wait_event("usage", injection_id="first-0", timeout=120)
        d.wait_event("usage", injection_id="first-1", timeout=120)

        update = ["scontrol", "update", f"JobId={array}_1", "TimeLimit=6"]
        subprocess.run(update, check=True, env=env)
        exited = d.wait_event("node_exited", timeout=120)
        assert (exited["node_id"], exited["reason"]) == (1, "continuing")
        d.wait_for(lambda evs: sum(e["type"] == "node_started" for e in evs) == 3, timeout=180)
        d.send(
            {
                "command": "inject",
                "swarm_id": swarm_id,
                "nodes": "all",
                "content": "which animal?",
                "injection_id": "again",
            }
        )
        d.wait_for(
            lambda evs: sum(e["type"] == "usage" for e in evs) == 4,
            timeout=120,
        )
        assert [e["node_id"] for e in d.events if e["type"] == "node_exited"] == [1]
        assert not [e for e in d.events if e["type"] == "inject_failed"], d.events
        # Each agent's thread carries its own first turn; node 1's was resumed in the new job.
        asked = [
            json.dumps(b["input"])
            for b in model_server.requests
            if last_user_text(b) == "which animal?"
        ]
        seen = sorted(("remember ant" in h, "remember bee" in h) for h in asked)
        assert seen == [(False, True), (True, False)]

        now = status(d, swarm_id, "S")
        assert now["jobs"][0] == array and len(now["jobs"]) == 2
        assert now["nodes"][0]["slurm_job"] == f"{array}_0"
        assert now["nodes"][1]["slurm_job"] == f"{now['jobs'][1]}_1"
        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T", timeout=60)
    finally:
        d.close()
