"""launch --wait: its progress line and loop, then real waits on the local backend and Slurm."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys

import click
import pytest

from codeswarm.backends.ssh import SSHConnection
from codeswarm.cli.launch import elapsed, progress, started, wait_until_started
from codeswarm.config import load_config
from tests.support.cli import run_cli as cli
from tests.support.cluster import hold_every_node
from tests.test_slurm import cluster_codex, slurm_config, slurm_config_file  # noqa: F401


def swarm(state: str, nodes: list[str], **extra) -> dict:
    nodes_ = [{"node_id": n, "state": s} for n, s in enumerate(nodes)]
    return {
        "swarm_id": "sw-1",
        "job_id": "42",
        "state": state,
        "nodes": nodes_,
        "created": 100.0,
        **extra,
    }


def test_progress_says_why_the_job_waits_and_for_how_long():
    assert elapsed(42.9) == "0:42" and elapsed(3725) == "1:02:05" and elapsed(-1) == "0:00"
    pending = swarm("pending", ["pending", "pending"], pending_reason="Priority")
    assert progress(pending, 142.0) == "job 42 pending (Priority), 0:42"
    assert progress(swarm("pending", ["pending"]), 100.0) == "job 42 pending, 0:00"
    partly = swarm("running", ["running", "pending"])
    assert progress(partly, 161.0) == "job 42 1/2 nodes running, 1:01"
    assert not started(partly) and started(swarm("running", ["running", "running"]))


def test_wait_returns_once_every_node_runs_and_shows_each_state_before():
    answers = iter(
        [
            swarm("pending", ["pending", "pending"], pending_reason="Resources"),
            swarm("running", ["running", "pending"]),
            swarm("running", ["running", "running"]),
        ]
    )
    shown: list[str] = []
    done = wait_until_started(lambda: next(answers), lambda s: shown.append(progress(s, 100)), 0)
    assert started(done)
    assert shown == ["job 42 pending (Resources), 0:00", "job 42 1/2 nodes running, 0:00"]


def test_wait_gives_up_after_its_timeout_and_says_how_to_go_on():
    pending = swarm("pending", ["pending"], pending_reason="Priority")
    with pytest.raises(click.ClickException, match="not started within 0s") as failure:
        wait_until_started(lambda: pending, lambda s: None, 0, timeout=0)
    assert "pending (Priority)" in failure.value.message
    assert "codeswarm terminate sw-1" in failure.value.message


def test_wait_timeout_needs_wait():
    from click.testing import CliRunner

    from codeswarm.cli import main

    done = CliRunner().invoke(main, ["launch", "--nodes", "1", "--timeout", "5"])
    assert done.exit_code == 2 and "goes with --wait" in done.output


def test_wait_fails_when_the_job_ends_first():
    answers = iter([swarm("pending", ["pending"]), swarm("failed", ["exited"])])
    with pytest.raises(click.ClickException, match="ended \\(failed\\) before every node"):
        wait_until_started(lambda: next(answers), lambda s: None, 0)


def test_wait_fails_as_soon_as_one_node_exits_while_another_runs():
    half = swarm("running", ["running", "exited"], backend="local")
    answers = iter([half, AssertionError("polled again after node 1 exited")])

    def status() -> dict:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(click.ClickException, match="node 1 exited") as failure:
        wait_until_started(status, lambda s: None, 0)
    assert "logs/42_1.worker.log" in failure.value.message
    on_slurm = swarm("running", ["exited", "running"], backend="slurm")
    with pytest.raises(click.ClickException, match="node 0 exited") as failure:
        wait_until_started(lambda: on_slurm, lambda s: None, 0)
    assert "logs/slurm-42.out" in failure.value.message


@pytest.mark.integration
def test_local_launch_wait_returns_with_every_node_running(config_file):
    done = cli(config_file, "launch", "--nodes", "2", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    first, launched = (json.loads(line) for line in done.stdout.splitlines())
    try:
        assert first["swarm_id"] == launched["swarm_id"]  # printed before the wait
        assert [n["state"] for n in launched["nodes"]] == ["running", "running"]
        assert "\r" not in done.stderr  # no progress line when stderr is not a terminal
    finally:
        ended = cli(config_file, "terminate", launched["swarm_id"], "--json")
        assert ended.returncode == 0, ended.stderr
    assert json.loads(ended.stdout) == {
        "type": "swarm_terminated",
        "swarm_id": launched["swarm_id"],
    }


class QueuedSwarms:
    """A job the scheduler holds: launch answers, every status says pending (Priority)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def launch(self, nodes, prompt, time_limit, partition, agents_per_node=None):
        return swarm("pending", ["pending"] * nodes, backend="slurm")

    def status(self, swarm_id):
        return swarm("pending", ["pending"], pending_reason="Priority", backend="slurm")


def test_launch_wait_json_prints_the_swarm_before_the_wait_and_the_last_state_when_it_fails(
    monkeypatch,
):
    from click.testing import CliRunner

    import codeswarm.cli
    from codeswarm.cli import main

    monkeypatch.setattr(codeswarm.cli, "swarms_for", lambda *args: QueuedSwarms())
    done = CliRunner().invoke(
        main, ["launch", "--nodes", "1", "--wait", "--timeout", "0", "--json"]
    )
    assert done.exit_code == 1, done.output
    launched, last = (json.loads(line) for line in done.stdout.splitlines())
    assert launched["swarm_id"] == last["swarm_id"] == "sw-1"
    assert last["pending_reason"] == "Priority"
    assert "stays queued" in done.stderr


@pytest.mark.integration
def test_slurm_launch_wait_blocks_while_the_job_is_pending_and_says_why(
    slurm_config,  # noqa: F811
    cluster_codex,  # noqa: F811
    model_server,
    minicluster,
    tmp_path,
):
    config_file = slurm_config_file(slurm_config, cluster_codex, model_server, tmp_path)
    config = load_config(config_file)
    connection = SSHConnection(config.ssh)
    blocker = hold_every_node(connection, minicluster)
    screen, terminal = os.openpty()
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codeswarm",
            "launch",
            "--nodes",
            "1",
            "--wait",
            "--config",
            str(config_file),
        ],
        stdout=subprocess.PIPE,
        stderr=terminal,  # a terminal: the progress line shows
        text=True,
    )
    os.close(terminal)
    swarm_id = None
    try:
        swarm_id = waiting.stdout.readline().strip()  # printed before the wait
        assert swarm_id.startswith("sw-"), read_terminal(screen) if waiting.poll() else swarm_id
        reason = None
        for _ in range(60):  # the first polls may come before Slurm has named a reason
            status = json.loads(cli(config_file, "status", swarm_id, "--json").stdout)
            assert status["state"] == "pending" and waiting.poll() is None
            reason = status.get("pending_reason")
            if reason:
                break
        assert reason in ("Resources", "Priority"), status
        shown = ""
        while f"pending ({reason})" not in shown:
            more = read_terminal(screen)
            assert more, shown
            shown += more
        assert re.search(rf"\r\x1b\[Kjob \d+ pending \({reason}\), \d+:\d\d", shown), shown
        connection.run(["scancel", blocker])
        out, _ = waiting.communicate(timeout=180)
        assert out == ""  # the id came first, alone
        rest = iter(lambda: read_terminal(screen), "")
        shown += "".join(rest)
        assert waiting.returncode == 0, shown
        assert shown.endswith("\r\x1b[Kjob " + status["job_id"] + " on slurm, 1 nodes, running\r\n")
        status = json.loads(cli(config_file, "status", swarm_id, "--json").stdout)
        assert [n["state"] for n in status["nodes"]] == ["running"]
        assert "pending_reason" not in status
    finally:
        connection.run(["scancel", blocker])
        if waiting.poll() is None:
            waiting.kill()
        if swarm_id:
            cli(config_file, "terminate", swarm_id)
        connection.close()
        os.close(screen)


def read_terminal(fd: int) -> str:
    """What the program wrote to its terminal since the last read; "" once it has closed it."""
    ready, _, _ = select.select([fd], [], [], 120)
    if not ready:
        return ""
    try:
        return os.read(fd, 65536).decode()
    except OSError:  # EIO: the program closed its end
        return ""


def test_status_and_list_lines_show_why_a_swarm_waits(capsys):
    from codeswarm.cli.render import print_swarm

    print_swarm(swarm("pending", ["pending"], pending_reason="Priority", backend="slurm"), True)
    print_swarm(swarm("running", ["running"], backend="slurm"), True)
    waiting, running = capsys.readouterr().out.splitlines()
    assert "1 nodes (1 pending) (Priority)  slurm" in waiting
    assert "(Priority)" not in running and "1 nodes (1 running)  slurm" in running


def array(state: str, nodes: list[str], job: str = "42", **extra) -> dict:
    """Agents one a task of job array ``job``."""
    swarmed = swarm(state, nodes, layout="array", **extra)
    for node in swarmed["nodes"]:
        node["slurm_job"] = f"{job}_{node['node_id']}"
    return swarmed


def test_an_array_throttled_below_its_tasks_has_started_once_the_throttle_runs():
    answers = iter(
        [
            array("pending", ["pending", "pending", "pending"]),
            array("running", ["running", "pending", "pending"]),
            array("running", ["running", "running", "pending"]),
        ]
    )
    done = wait_until_started(lambda: next(answers), lambda s: None, 0, throttle=2)
    assert [n["state"] for n in done["nodes"]] == ["running", "running", "pending"]


def test_an_array_whose_task_ran_and_ended_while_others_run_has_started():
    answers = iter(
        [
            array("running", ["running", "pending"]),
            array("running", ["exited", "running"]),
        ]
    )
    done = wait_until_started(lambda: next(answers), lambda s: None, 0)
    assert [n["state"] for n in done["nodes"]] == ["exited", "running"]


def test_an_array_fails_fast_when_a_task_ends_before_it_ever_ran():
    answers = iter(
        [
            array("pending", ["pending", "pending"]),
            array("running", ["running", "exited"]),
            array("running", ["running", "pending"]),
        ]
    )
    with pytest.raises(click.ClickException, match="agent 1 of sw-1 exited before it ever ran"):
        wait_until_started(lambda: next(answers), lambda s: None, 0)
    # the task's own log: one per array task
    with pytest.raises(click.ClickException, match=r"logs/slurm-42_1\.out"):
        wait_until_started(lambda: array("running", ["running", "exited"]), lambda s: None, 0)
