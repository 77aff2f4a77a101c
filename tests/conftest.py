"""Fixtures for real parts: the local model server and the pinned codex binary."""

import json
import os
import shutil
import subprocess
import uuid
from types import SimpleNamespace

import pytest

from codeswarm.codex_binary import find_codex
from codeswarm.errors import CodexNotFoundError
from codeswarm.model_server import ModelServer
from tests.support.cluster import ClusterError, minicluster_up
from tests.support.sshd import Sshd, keygen
from tests.support.worker import CODEX_HOMES, WorkerRun, agent_settings


@pytest.fixture(scope="session")
def codex_bin() -> str:
    try:
        return find_codex()
    except CodexNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the pinned codex binary: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def model_server():
    with ModelServer() as server:
        yield server


@pytest.fixture
def worker(tmp_path, codex_bin, model_server):
    """make(**agent) -> a WorkerRun of the real codex on the model server (not yet started)."""
    runs: list[WorkerRun] = []

    def make(**agent) -> WorkerRun:
        run = WorkerRun(tmp_path, agent_settings(codex_bin, model_server.url, **agent))
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()


@pytest.fixture
def config_file(tmp_path, codex_bin, model_server):
    # codex keeps its home under the workspace: keep that off /tmp, as codex asks.
    workspace = CODEX_HOMES / uuid.uuid4().hex
    agent = agent_settings(codex_bin, model_server.url)["agent"]
    config = {
        "backend": "local",
        "cluster": {"workspace_root": str(workspace)},
        "router": {"state_dir": str(tmp_path / "state"), "inject_timeout_seconds": 30},
        "agent": {k: agent[k] for k in ("codex_path", "model", "sandbox", "config")},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    yield path
    shutil.rmtree(workspace, ignore_errors=True)


@pytest.fixture(scope="session")
def minicluster() -> dict[str, str]:
    """A real Slurm cluster and login sshd on this machine (tests/cluster/minicluster up)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the minicluster needs root")
        pytest.skip("the minicluster needs root (it installs packages and starts daemons)")
    try:
        return minicluster_up()
    except ClusterError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent of this test's own: (socket path, environment naming it)."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    try:
        subprocess.run(
            # The socket exists a moment before the agent accepts on it; `ssh-add -l` exits 2
            # until it can talk to the agent (1: no keys yet).
            ["sh", "-c", "until ssh-add -l >/dev/null 2>&1; [ $? -ne 2 ]; do sleep 0.05; done"],
            env=env,
            check=True,
            timeout=10,
        )
        yield sock, env
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def root_sshd(tmp_path_factory):
    """An sshd of this module's own that lets root in with a fresh key, and a known_hosts."""
    if os.geteuid() != 0:
        pytest.skip("the test sshd runs as root and logs in as root")
    files = tmp_path_factory.mktemp("sshd")
    files.chmod(0o755)
    key = files / "key"
    sshd = Sshd("root", keygen(key)).start()
    known = files / "known_hosts"
    known.write_text(sshd.known_line() + "\n")
    yield SimpleNamespace(sshd=sshd, key=key, known=known, files=files)
    sshd.stop()
