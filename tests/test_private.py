"""Directories 0700 and files 0600 under any umask: the mailbox holds prompts and answers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from codeswarm.hpc.private import private_dir
from tests.support.daemon import Daemon
from tests.support.modes import loose_modes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_private_dir_creates_and_tightens(tmp_path, umask_022):
    made = private_dir(str(tmp_path / "new"))
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_dir(str(loose))
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


@pytest.mark.integration
def test_a_local_swarm_leaves_only_private_files(config_file, tmp_path, umask_022):
    config = json.loads(config_file.read_text())
    cluster_dir = Path(config["cluster"]["workspace_root"]) / "codeswarm"
    state_dir = Path(config["router"]["state_dir"])
    for loose in (cluster_dir / "mailbox" / "inbox", state_dir):
        loose.mkdir(parents=True, mode=0o755)
    cluster_dir.chmod(0o755)
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=30)
        d.send({"command": "launch", "nodes": 1, "prompt": "hello", "request_id": "L"})
        swarm_id = d.wait_event("swarm_launched", request_id="L")["swarm"]["swarm_id"]
        d.wait_event("usage", timeout=60)
        d.send({"command": "terminate", "swarm_id": swarm_id})
        d.wait_event("node_exited", timeout=30)
    finally:
        d.close()
    assert (cluster_dir / "mailbox" / "archive").exists()
    # codex itself makes its anonymous installation_id 0644, inside the 0700 CODEX_HOME
    assert loose_modes(cluster_dir, skip=("installation_id",)) == []
    assert loose_modes(state_dir) == []
