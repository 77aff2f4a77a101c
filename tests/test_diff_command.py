"""The router's ``diff`` command: its answers and errors, and that it never holds up routing."""

from __future__ import annotations

import threading

import pytest

from codeswarm.actors.messages import CommandReceived
from codeswarm.backends.local import LocalTransport
from codeswarm.cli.diff import full_diff, stat_table
from codeswarm.embed import Codeswarm, _command
from codeswarm.errors import CommandError
from codeswarm.protocol import decode_object
from tests.support.simulated_workers import SimulatedScheduler, local_config


@pytest.fixture
def swarms(tmp_path):
    config = local_config(tmp_path)
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    try:
        with Codeswarm(config, scheduler=scheduler) as embedded:
            yield embedded
    finally:
        scheduler.close()


def test_nodes_without_a_worktree_say_so_and_bad_targets_are_errors(swarms):
    swarm = swarms.launch(nodes=2)
    nodes = swarms.diff(swarm["swarm_id"], stat=True)
    assert nodes == [
        {"node_id": n, "error": f"node {n} has no git worktree (set agent.repo in the config)"}
        for n in (0, 1)
    ]
    with pytest.raises(CommandError) as unknown:
        swarms.diff("sw-nope")
    assert unknown.value.event["error"] == "unknown_swarm"
    with pytest.raises(CommandError) as past:
        swarms.diff(swarm["swarm_id"], nodes=[1, 2])
    assert past.value.event["error"] == "invalid_field"
    assert past.value.event["field"] == "nodes"
    assert "has no node 2 (it has 2)" in past.value.event["message"]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"command": "diff"}, "swarm_id"),
        ({"command": "diff", "swarm_id": "sw-1", "stat": "yes"}, "stat"),
        ({"command": "diff", "swarm_id": "sw-1", "nodes": "some"}, "nodes"),
    ],
)
def test_bad_diff_commands_name_the_field(line, field):
    error = decode_object(line)
    assert isinstance(error, dict) and error["field"] == field, error


def test_a_slow_diff_holds_up_nothing_else(swarms, monkeypatch):
    """git on a big worktree (or a slow SSH command) takes time: events and answers go on."""
    release = threading.Event()
    reading = threading.Event()

    def slow(self, job_id, nodes, stat_only):
        reading.set()
        release.wait(30)
        return [{"node_id": n, "error": "slow"} for n in nodes]

    monkeypatch.setattr(LocalTransport, "read_diffs", slow)
    swarm = swarms.launch(nodes=1)
    command = _command("diff", swarm_id=swarm["swarm_id"])
    waiter = swarms.sink.expect(command.request_id)
    swarms.router.tell(CommandReceived(command))
    assert reading.wait(30)
    acks = swarms.inject_and_wait(swarm["swarm_id"], "while the diff runs", nodes=0)
    assert [ack["type"] for ack in acks] == ["inject_ack"]
    assert swarms.status(swarm["swarm_id"])["swarm_id"] == swarm["swarm_id"]
    assert waiter.empty()
    release.set()
    answer = waiter.get(timeout=30)
    assert answer["type"] == "swarm_diff" and answer["nodes"] == [{"node_id": 0, "error": "slow"}]


def test_the_cli_prints_a_table_and_diffs_under_node_headers():
    nodes = [
        {
            "node_id": 0,
            "branch": "codeswarm/sw-1/0",
            "base": "0123456789abcdef",
            "files": [
                {"path": "a.py", "added": 3, "deleted": 1},
                {"path": "b.bin", "added": None, "deleted": None},
            ],
            "files_omitted": 4,
            "diff": "diff --git a/a.py b/a.py\n",
        },
        {
            "node_id": 1,
            "branch": "codeswarm/sw-1/1",
            "base": "0123456789abcdef",
            "files": [],
            "diff": "",
        },
        {"node_id": 2, "error": "node 2 has no git worktree"},
    ]
    assert stat_table(nodes).splitlines() == [
        "NODE  BRANCH                        FILES  +   -",
        "0     codeswarm/sw-1/0              6      +3  -1",
        "1     codeswarm/sw-1/1              0      +0  -0",
        "2     (node 2 has no git worktree)",
    ]
    assert full_diff(nodes) == (
        "# node 0: codeswarm/sw-1/0 against 0123456789ab\ndiff --git a/a.py b/a.py\n"
        "# node 1: codeswarm/sw-1/1 against 0123456789ab\n(no changes)\n"
        "# node 2: node 2 has no git worktree\n"
    )


def test_a_reader_that_fails_answers_that_request_and_the_router_goes_on(swarms, monkeypatch):
    """A damaged worktree record (or any bug in reading one) fails that diff, nothing else."""

    def broken(self, job_id, nodes, stat_only):
        raise KeyError("branch")

    swarm = swarms.launch(nodes=1)
    monkeypatch.setattr(LocalTransport, "read_diffs", broken)
    for _ in range(2):  # the reader is still there for the next request
        with pytest.raises(CommandError) as failed:
            swarms.diff(swarm["swarm_id"], timeout=30)
        assert failed.value.event["error"] == "backend"
        assert "KeyError('branch')" in failed.value.event["message"]
    acks = swarms.inject_and_wait(swarm["swarm_id"], "after the failed diffs", nodes=0)
    assert [ack["type"] for ack in acks] == ["inject_ack"]


def test_approvals_of_a_node_the_swarm_does_not_have_is_an_error(swarms):
    swarm = swarms.launch(nodes=2)
    assert swarms.approvals(swarm["swarm_id"]) == []
    with pytest.raises(CommandError) as past:
        swarms.approvals(swarm["swarm_id"], nodes=[0, 5])
    assert (past.value.event["error"], past.value.event["field"]) == ("invalid_field", "nodes")
    assert "has no node 5 (it has 2)" in past.value.event["message"]
