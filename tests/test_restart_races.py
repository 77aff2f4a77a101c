"""``restart`` of array tasks in a real router, against a scheduler double whose job states
the test sets: it decides on a fresh poll, and a restart racing a terminate leaves no job
running that nobody follows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from codeswarm.actors.messages import CommandReceived
from codeswarm.backends import Submitted
from codeswarm.backends.slurm import node_states
from codeswarm.config import parse_config
from codeswarm.embed import Codeswarm, _command
from codeswarm.errors import CommandError
from codeswarm.registry import SwarmRecord, SwarmRegistry


class ArrayScheduler:
    """Job arrays of one agent a task whose task states are the test's ``states``."""

    name = "slurm"

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.next_job = 100
        self.cancelled: list[SwarmRecord] = []
        self.resubmitting = threading.Event()
        self.resubmit_may_answer = threading.Event()
        self.resubmit_may_answer.set()

    def submit(self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any):
        job_id = str(self.next_job)
        self.next_job += 1
        self.states.update({f"{job_id}_{task}": "running" for task in range(nodes)})
        return Submitted(job_id, [], 1, "array", 1)

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        return {swarm.job_id: node_states(swarm, dict(self.states)) for swarm in swarms}

    def resubmit(self, swarm: SwarmRecord, tasks: list[int]) -> dict[int, str]:
        job_id = str(self.next_job)
        self.next_job += 1
        self.resubmitting.set()
        self.resubmit_may_answer.wait(30)
        self.states.update({f"{job_id}_{task}": "pending" for task in tasks})
        return {task: f"{job_id}_{task}" for task in tasks}

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        return None

    def pending_reason(self, job_id: str) -> str | None:
        return None

    def cancel(self, swarm: SwarmRecord) -> None:
        self.cancelled.append(swarm)
        jobs = {swarm.job_id, *(job.partition("_")[0] for job in swarm.tasks.values())}
        for key in list(self.states):
            if key.partition("_")[0] in jobs:
                del self.states[key]


@pytest.fixture
def config(tmp_path):
    return parse_config(
        {
            "backend": "local",
            "cluster": {"workspace_root": str(tmp_path / "ws")},
            "router": {"state_dir": str(tmp_path / "state")},
        }
    )


def running(swarms: Codeswarm, swarm_id: str) -> dict:
    for _ in range(50):
        swarm = swarms.status(swarm_id)
        if all(node["state"] == "running" for node in swarm["nodes"]):
            return swarm
    raise AssertionError(f"never running: {swarm}")


def test_restart_decides_on_a_fresh_poll_not_on_the_last_one(config):
    scheduler = ArrayScheduler()
    with Codeswarm(config, scheduler=scheduler) as swarms:
        swarm_id = swarms.launch(nodes=2)["swarm_id"]
        job_id = running(swarms, swarm_id)["job_id"]
        del scheduler.states[f"{job_id}_1"]  # task 1 ended since the last poll
        swarm = swarms.restart(swarm_id, nodes=1)
        assert [n["slurm_job"] for n in swarm["nodes"]] == [f"{job_id}_0", "101_1"]
        assert swarm["nodes"][1]["state"] == "pending"
        swarms.terminate(swarm_id)
    assert {job.partition("_")[0] for job in scheduler.cancelled[-1].tasks.values()} == {"101"}


def test_a_restart_racing_a_terminate_elsewhere_cancels_its_new_job_and_says_so(config):
    scheduler = ArrayScheduler()
    with Codeswarm(config, scheduler=scheduler) as swarms:
        swarm_id = swarms.launch(nodes=2)["swarm_id"]
        job_id = running(swarms, swarm_id)["job_id"]
        del scheduler.states[f"{job_id}_1"]
        scheduler.resubmit_may_answer.clear()
        with ThreadPoolExecutor(1) as pool:
            restart = pool.submit(swarms.restart, swarm_id, 1)
            assert scheduler.resubmitting.wait(30)
            # the CLI terminates the swarm while sbatch runs for the restart
            registry = SwarmRegistry(config.router.state_dir, swarms.router.registry.mailbox)
            registry.update(swarm_id, lambda old: replace(old, state="terminated"))
            assert swarms.status(swarm_id)["state"] == "terminated"
            scheduler.resubmit_may_answer.set()
            with pytest.raises(CommandError, match="has terminated while its tasks were"):
                restart.result(30)
        withdrawn = swarms.status(swarm_id)
    assert [(s.job_id, s.tasks) for s in scheduler.cancelled] == [("101", {"1": "101_1"})]
    assert withdrawn["state"] == "terminated"
    assert "101_1" not in scheduler.states


def test_a_restart_answered_while_a_terminate_waits_is_cancelled_with_it(config):
    scheduler = ArrayScheduler()
    with Codeswarm(config, scheduler=scheduler) as swarms:
        swarm_id = swarms.launch(nodes=2)["swarm_id"]
        job_id = running(swarms, swarm_id)["job_id"]
        del scheduler.states[f"{job_id}_1"]
        scheduler.resubmit_may_answer.clear()
        with ThreadPoolExecutor(1) as pool:
            restart = pool.submit(swarms.restart, swarm_id, 1)
            assert scheduler.resubmitting.wait(30)
            terminate = _command("terminate", swarm_id=swarm_id)
            terminated = swarms.sink.expect(terminate.request_id)
            swarms.router.tell(CommandReceived(terminate))
            swarms.status(swarm_id)  # answered after the terminate's cancel was queued
            scheduler.resubmit_may_answer.set()  # behind the sbatch
            assert restart.result(30)["nodes"][1]["slurm_job"] == "101_1"
            assert terminated.get(timeout=30)["type"] == "swarm_terminated"
        swarms.status(swarm_id)
    # the terminate's record was taken before the restart: the new job is withdrawn after it
    assert [(s.job_id, s.tasks) for s in scheduler.cancelled] == [
        (job_id, {}),
        ("101", {"1": "101_1"}),
    ]
    assert scheduler.states == {}


def test_a_prompt_sent_right_after_another_process_restarted_the_task_reaches_it(config):
    scheduler = ArrayScheduler()
    with Codeswarm(config, scheduler=scheduler) as daemon:
        swarm_id = daemon.launch(nodes=2)["swarm_id"]
        job_id = running(daemon, swarm_id)["job_id"]
        del scheduler.states[f"{job_id}_1"]
        for _ in range(50):  # the daemon sees the task gone, after its grace
            if daemon.status(swarm_id)["nodes"][1]["state"] == "exited":
                break
        with Codeswarm(config, scheduler=scheduler, follow=None) as cli:
            assert cli.restart(swarm_id, nodes=1)["nodes"][1]["slurm_job"] == "101_1"
        scheduler.states["101_1"] = "running"
        [answer] = daemon.inject_and_wait(swarm_id, "back again", nodes=1, timeout=30)
        assert answer["type"] == "inject_ack", answer
        assert daemon.status(swarm_id)["nodes"][1]["slurm_job"] == "101_1"
        daemon.terminate(swarm_id)
    assert {job.partition("_")[0] for job in scheduler.cancelled[-1].tasks.values()} == {"101"}
