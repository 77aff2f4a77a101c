"""``inject --wait``, ``logs`` and ``attach --since`` as a person runs them: as their own
router when no daemon runs, and reading the daemon's log when one does (simulated workers)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from codeswarm.config import parse_config
from codeswarm.embed import Codeswarm
from tests.support.cli import run_cli as cli
from tests.support.daemon import Daemon
from tests.support.simulated_workers import SimulatedScheduler

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def swarm(tmp_path):
    """A simulated 2-node swarm and a config file naming its state; the workers' pid too."""
    data = {
        "backend": "local",
        "cluster": {"workspace_root": str(tmp_path / "ws")},
        "router": {"state_dir": str(tmp_path / "state"), "inject_timeout_seconds": 2},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    config = parse_config(data)
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    with Codeswarm(config, scheduler=scheduler, follow=None) as launcher:
        launched = launcher.launch(nodes=2)
    yield launched["swarm_id"], path, scheduler.children[0].pid
    scheduler.close()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_inject_wait_then_logs_and_attach_since_without_a_daemon(swarm):
    swarm_id, config = swarm[:2]
    done = cli(config, "inject", swarm_id, "--prompt", "burst 3", "--wait")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["node 0: done", "node 1: done"]  # as they come
    assert "node 0: inj-" in done.stderr  # the acks, on stderr

    logged = cli(config, "logs", swarm_id, "--json")
    assert logged.returncode == 0, logged.stderr
    events = json_lines(logged.stdout)
    assert [e["cursor"] for e in events] == list(range(1, len(events) + 1))
    assert [e["content"] for e in events if e["type"] == "assistant"] == ["done", "done"]

    one = cli(config, "logs", swarm_id, "--node", "1", "--events", "assistant*", "--json")
    assert {(e["node_id"], e["type"]) for e in json_lines(one.stdout)} == {
        (1, "assistant_delta"),
        (1, "assistant"),
    }

    middle = events[len(events) // 2]["cursor"]
    attached = cli(config, "attach", swarm_id, "--since", str(middle), "--idle-exit", "2", "--json")
    assert attached.returncode == 0, attached.stderr
    assert [e["cursor"] for e in json_lines(attached.stdout)] == list(
        range(middle + 1, len(events) + 1)
    )
    person = cli(config, "logs", swarm_id)
    assert "[n0] d0 d1 d2" in person.stdout and "[n1] turn completed" in person.stdout


def test_the_same_verbs_read_a_running_daemons_log(swarm, tmp_path):
    swarm_id, config = swarm[:2]
    daemon = Daemon(config, tmp_path / "daemon.stderr")
    try:
        daemon.wait_event("ready")
        done = cli(config, "inject", swarm_id, "--prompt", "burst 5", "--wait", "--json")
        assert done.returncode == 0, done.stderr
        lines = json_lines(done.stdout)
        assert [e["type"] for e in lines[:2]] == ["inject_ack", "inject_ack"]
        answers = [e for e in lines if e["type"] == "answer"]
        assert {(a["node_id"], a["status"], a["message"]) for a in answers} == {
            (0, "completed", "done"),
            (1, "completed", "done"),
        }
        streamed = [e for e in lines[2:] if e["type"] != "answer"]  # every event of the two
        assert sum(e["type"] == "assistant_delta" for e in streamed) == 10
        assert {e["injection_id"] for e in streamed} == {a["injection_id"] for a in answers}
        logged = json_lines(cli(config, "logs", swarm_id, "--json").stdout)
        assert sum(e["type"] == "assistant" for e in logged) == 2
        sent = daemon.wait_for(lambda evs: sum(e["type"] == "usage" for e in evs) == 2)
        assert logged == [e for e in sent if "cursor" in e]  # what the daemon's client got
    finally:
        daemon.close()


def test_a_node_that_fails_makes_inject_wait_exit_1_and_says_why(swarm):
    swarm_id, config, worker = swarm
    os.kill(worker, signal.SIGSTOP)  # alive, but it reads nothing: the injection times out
    try:
        failed = cli(config, "inject", swarm_id, "--prompt", "hello", "--nodes", "0", "--wait")
    finally:
        os.kill(worker, signal.SIGCONT)
    assert failed.returncode == 1
    assert failed.stdout.startswith("node 0: failed (timeout):"), failed.stdout


def test_bad_since_and_unknown_swarms_are_usage_and_plain_errors(swarm):
    swarm_id, config = swarm[:2]
    bad = cli(config, "logs", swarm_id, "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    unknown = cli(config, "logs", "sw-0000000000")
    assert unknown.returncode == 1 and "codeswarm list" in unknown.stderr


def test_inject_wait_gives_up_at_its_timeout_while_a_daemon_runs(swarm, tmp_path):
    swarm_id, config, worker = swarm
    daemon = Daemon(config, tmp_path / "daemon.stderr")
    os.kill(worker, signal.SIGSTOP)  # the node reads nothing: no answer will come
    try:
        daemon.wait_event("ready")
        waited = cli(config, "inject", swarm_id, "--prompt", "hi", "--wait", "--timeout", "2")
    finally:
        os.kill(worker, signal.SIGCONT)
        daemon.close()
    assert waited.returncode == 1
    assert sorted(waited.stdout.splitlines())[0].startswith("node ")
    assert "no answer yet" in waited.stdout
