"""Nodes working in git worktrees of one repository (agent.repo), with real codex agents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeswarm.config import load_config
from codeswarm.embed import Codeswarm
from codeswarm.model_server import Reply
from tests.support.worker import WorkerRun, agent_settings
from tests.test_workdir import git, make_repo

pytestmark = pytest.mark.integration


def test_two_nodes_edit_the_same_file_each_on_its_own_branch(config_file, model_server, tmp_path):
    repo = make_repo(tmp_path / "repo")
    data = json.loads(config_file.read_text())
    data["agent"].update(repo=str(repo), workdir=str(tmp_path / "wt" / "{swarm_id}" / "{node_id}"))
    config_file.write_text(json.dumps(data))
    for node in (0, 1):
        edit = f"echo \"print('node {node}')\" > app.py && echo 'notes {node}' > notes.txt"
        model_server.add_rule(f"edit as node {node}", Reply(tool_call_cmd=edit))
        model_server.add_rule(f"edit as node {node}", Reply(text="edited"))
    with Codeswarm(load_config(config_file)) as swarms:
        swarm_id = swarms.launch(nodes=2)["swarm_id"]
        try:
            for node in (0, 1):
                swarms.inject(swarm_id, f"edit as node {node}", nodes=node)
            done = set()
            for event in swarms.events(timeout=90):
                if event["type"] == "usage":
                    done.add(event["node_id"])
                if done == {0, 1}:
                    break
            assert done == {0, 1}
            nodes = swarms.diff(swarm_id)
            config = str(config_file)
            stat = subprocess.run(
                [sys.executable, "-m", "codeswarm", "diff", swarm_id, "--stat", "--config", config],
                capture_output=True,
                text=True,
                timeout=60,
            )
            only_1 = swarms.diff(swarm_id, nodes=1, stat=True)
        finally:
            swarms.terminate(swarm_id)
    head = git(repo, "rev-parse", "HEAD").strip()
    for node in nodes:
        n = node["node_id"]
        assert node["branch"] == f"codeswarm/{swarm_id}/{n}" and node["base"] == head
        assert node["path"] == str(tmp_path / "wt" / swarm_id / str(n))
        assert f"-print('base')\n+print('node {n}')" in node["diff"]
        assert f"+notes {n}" in node["diff"]
        assert node["files"] == [
            {"path": "app.py", "added": 1, "deleted": 1},
            {"path": "notes.txt", "added": 1, "deleted": 0},
        ]
        assert git(Path(node["path"]), "branch", "--show-current").strip() == node["branch"]
    assert [node["node_id"] for node in nodes] == [0, 1]
    branches = git(repo, "branch", "--list", "codeswarm/*", "--format=%(refname:short)").split()
    assert branches == [f"codeswarm/{swarm_id}/0", f"codeswarm/{swarm_id}/1"]
    assert (repo / "app.py").read_text() == "print('base')\n"  # the repository's own checkout
    assert stat.returncode == 0, stat.stderr
    rows = stat.stdout.splitlines()
    assert rows[0].split() == ["NODE", "BRANCH", "FILES", "+", "-"]
    assert [row.split() for row in rows[1:]] == [
        ["0", f"codeswarm/{swarm_id}/0", "2", "+2", "-1"],
        ["1", f"codeswarm/{swarm_id}/1", "2", "+2", "-1"],
    ]
    assert [n["node_id"] for n in only_1] == [1] and "diff" not in only_1[0]


def test_a_node_whose_worktree_cannot_be_made_exits_saying_why(codex_bin, model_server, tmp_path):
    (tmp_path / "not-a-repo").mkdir()
    settings = agent_settings(codex_bin, model_server.url, repo=str(tmp_path / "not-a-repo"))
    run = WorkerRun(tmp_path, settings).start()
    try:
        events = run.wait_event("node_exited", timeout=30)
        code = run.process.wait(timeout=10)
    finally:
        run.stop()
    exited = events[-1]
    assert exited["reason"].startswith("worktree_failed: git rev-parse --git-common-dir failed")
    assert "not a git repository" in exited["reason"]
    assert [e["type"] for e in events] == ["node_started", "node_exited"]
    assert code == 0
