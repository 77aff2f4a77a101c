"""Approvals on the test Slurm cluster: the answer travels over SSH through the inbox.

Run under the shared lock: ``flock /tmp/slurm-tests.lock .venv/bin/python -m pytest
tests/test_slurm_approvals.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeswarm.model_server import Reply
from tests.support.daemon import ROOT, Daemon
from tests.test_slurm import cluster_codex, slurm_config, slurm_config_file  # noqa: F401

pytestmark = pytest.mark.integration

ESCALATE = {"sandbox_permissions": "require_escalated", "justification": "write the marker"}


def cli(config_file: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeswarm", *argv, "--config", str(config_file), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_approvals_over_ssh_answered_by_the_cli_or_by_the_timeout(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    tmp_path,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    data = json.loads(config_file.read_text())
    data["agent"].update(
        approval_policy="on-request",
        sandbox="workspace-write",
        approval_timeout_seconds=30,
        approval_decision="decline",
    )
    config_file.write_text(json.dumps(data))
    reply = Reply(tool_call_cmd="touch marker", tool_call_args=ESCALATE)
    model_server.add_rule("TOUCH", reply, times=2)
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=60)
        d.send({"command": "launch", "nodes": 2, "prompt": "TOUCH it", "request_id": "L"})
        swarm = d.wait_event("swarm_launched", request_id="L")["swarm"]
        sid, job = swarm["swarm_id"], swarm["job_id"]
        d.wait_for(lambda evs: sum(e["type"] == "approval_request" for e in evs) == 2, 180)

        listed = cli(config_file, "approvals", sid)
        assert listed.returncode == 0, listed.stderr
        pending = [json.loads(line) for line in listed.stdout.splitlines()]
        asked = pending[0]["approval_id"]
        assert sorted((a["node_id"], a["approval_id"]) for a in pending) == [(0, asked), (1, asked)]
        assert all("touch marker" in a["command"] for a in pending)
        answered = cli(config_file, "approve", sid, asked, "--decision", "accept", "--nodes", "0")
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["type"] == "approve_ack"

        events = d.wait_for(lambda evs: sum(e["type"] == "usage" for e in evs) == 2, 180)
        resolved = {e["node_id"]: e for e in events if e["type"] == "approval_resolved"}
        assert (resolved[0]["decision"], resolved[0]["by"]) == ("accept", "client")
        assert (resolved[1]["decision"], resolved[1]["by"]) == ("decline", "timeout")
        root = Path(data["cluster"]["workspace_root"])
        made = sorted(p.parent.name for p in root.glob(f"**/workspaces/{job}_*/marker"))
        assert made == [f"{job}_0"]
        d.send({"command": "terminate", "swarm_id": sid, "request_id": "T"})
        d.wait_event("swarm_terminated", request_id="T")
    finally:
        d.close()
