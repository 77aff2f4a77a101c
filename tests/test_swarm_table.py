"""SwarmTable, the registry's update rule and the scheduler poller, without threads."""

from __future__ import annotations

import json
import logging
import time

import pytest

from codeswarm.actors.jobs import BACKOFF_LIMIT_SECONDS, JobPollerActor, backoff
from codeswarm.actors.messages import NodeGone, NodePending, NodeRunning
from codeswarm.actors.swarms import (
    HELD_BYTES,
    HELD_SECONDS,
    SwarmTable,
    restart_tasks,
    written_over,
)
from codeswarm.cursor import CursorStore
from codeswarm.errors import BackendError, RegistryError
from codeswarm.registry import SwarmRecord, SwarmRegistry, merged_state


def record(job_id: str = "7", nodes: int = 2, **fields) -> SwarmRecord:
    return SwarmRecord(
        swarm_id=f"sw-{job_id}",
        job_id=job_id,
        backend="slurm",
        mailbox="/mb",
        nodes=nodes,
        created=float(job_id),
        **fields,
    )


def test_final_states_are_never_downgraded():
    assert merged_state("terminated", "running") == "terminated"
    assert merged_state("terminated", "exited") == "terminated"
    assert merged_state("exited", "terminated") == "terminated"
    assert merged_state("exited", "pending") == "exited"
    assert merged_state("failed", "running") == "failed"
    assert merged_state("running", "pending") == "pending"  # a requeue
    ended = record(state="running").with_state("terminated")
    assert ended.state == "terminated" and ended.ended is not None
    assert ended.with_state("running") is ended


def test_a_poll_read_before_a_terminate_cannot_bring_the_swarm_back():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record(state="running", node_states={"0": "running", "1": "running"}), now=0.0)
    table.set_state("7", "terminated")
    table.apply({"7": {0: "running", 1: "running"}}, now=1.0)  # the snapshot from before
    assert table.get("7").state == "terminated"


def test_registry_writes_are_read_modify_write_under_the_lock(tmp_path):
    registry = SwarmRegistry(tmp_path, "/mb")
    registry.put(record(state="running"))
    other_process = SwarmRegistry(tmp_path, "/mb")
    other_process.update("sw-7", lambda r: r.with_state("terminated"))
    mine = record(state="running", node_states={"0": "running", "1": "running"})
    stored = registry.update("sw-7", lambda old: written_over(old, mine))
    assert stored.state == "terminated"
    assert stored.node_states == {"0": "running", "1": "running"}
    assert registry.get("sw-7").state == "terminated"


def test_nodes_reported_gone_wait_the_grace_then_fail_and_the_swarm_exits():
    table = SwarmTable(gone_grace=2.0, drain_seconds=1.0)
    table.follow(record(node_states={"0": "running", "1": "running"}, state="running"), 0.0)
    told = table.apply({"7": {0: "exited", 1: "running"}}, now=10.0)
    assert [type(m) for _, m in told] == [NodeRunning]
    assert table.get("7").node_state(0) == "running"
    told = table.apply({"7": {0: "exited", 1: "exited"}}, now=12.5)
    assert [(k, type(m)) for k, m in told] == [("7_0", NodeGone)]
    told = table.apply({"7": {0: "exited", 1: "exited"}}, now=15.0)
    assert [(k, type(m)) for k, m in told] == [("7_1", NodeGone)]
    assert table.get("7").state == "exited"
    assert table.releasable(15.5) == []  # the outbox may still be draining
    assert table.releasable(16.0) == ["7"]


def test_pending_after_running_is_a_requeue_not_an_exit():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record(node_states={"0": "running", "1": "running"}, state="running"), 0.0)
    told = table.apply({"7": {0: "pending", 1: "pending"}}, now=1.0)
    assert [type(m) for _, m in told] == [NodePending, NodePending]
    assert table.get("7").state == "pending"
    assert table.releasable(10.0) == []


def test_node_started_marks_the_node_running_before_any_poll():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record(), 0.0)
    table.node_started("7", 1, now=0.1)
    assert table.get("7").node_state(1) == "running"
    assert table.get("7").state == "running"
    assert table.dirty == {"7"}


def test_release_keeps_the_last_seqs_and_late_activity_delays_it():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record(nodes=1), 0.0)
    table.apply({"7": {0: "exited"}}, now=1.0)
    table.touched("7", now=1.8)
    assert table.releasable(2.5) == []
    assert table.releasable(2.9) == ["7"]
    released = table.release("7", {"0": 41})
    assert released.last_seqs == {"0": 41} and released.is_final()
    assert "7" not in table.followed and table.get("7") is released


def test_merge_follows_new_live_swarms_adopts_final_states_and_forgets_removed_ones():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record("1", state="running"), 0.0)
    gone = record("3", state="exited", node_states={"0": "exited", "1": "exited"})
    table.merge([record("1", state="running"), gone], 0.0)
    new, removed = table.merge(
        [record("1", state="terminated"), record("2"), record("4", nodes=1)], 1.0
    )
    assert [r.job_id for r in new] == ["2", "4"]
    assert removed == ["3"]
    assert table.get("1").state == "terminated"
    assert table.followed == {"1", "2", "4"}
    done = record("5", nodes=1, state="exited", node_states={"0": "exited"})
    new, _ = table.merge([record("1"), record("2"), record("4", nodes=1), done], 2.0)
    assert new == [] and "5" not in table.followed


def test_lines_of_unknown_jobs_are_held_in_order_bounded_and_expire():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    assert table.hold("9_0", [("i", 10, b"a" * 10)], now=0.0)
    assert table.hold("9_1", [("i", 10, b"b" * 10)], now=1.0)
    assert not table.hold("8_0", [("i", 1, b"c" * HELD_BYTES)], now=1.0)
    assert [key for key, _ in table.take_held("9")] == ["9_0", "9_1"]
    assert table.held_bytes == 0
    table.hold("8_0", [("i", 1, b"x")], now=5.0)
    assert table.expire_held(5.0 + HELD_SECONDS - 1) == []
    assert table.expire_held(5.0 + HELD_SECONDS) == ["8"]
    assert table.take_held("8") == []


class FailingScheduler:
    name = "slurm"

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    def poll(self, swarms):
        self.calls += 1
        if self.failing:
            raise BackendError("squeue timed out")
        return {s.job_id: dict.fromkeys(range(s.nodes), "running") for s in swarms}


def test_poll_failures_back_off_and_are_reported_once(tmp_path, caplog):
    scheduler = FailingScheduler()
    poller = JobPollerActor(scheduler, supervisor=None, timer=None, poll_seconds=5.0)
    poller.live = [record()]
    with caplog.at_level(logging.WARNING, logger="codeswarm.actors.jobs"):
        assert [poller.poll() for _ in range(6)] == [None] * 6
        scheduler.failing = False
        assert poller.poll() == {"7": {0: "running", 1: "running"}}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "squeue timed out" in warnings[0]
    assert "after 6 failed polls" in warnings[1]
    assert [backoff(5.0, n) for n in range(5)] == [5.0, 10.0, 20.0, 40.0, 60.0]
    assert backoff(5.0, 10_000) == BACKOFF_LIMIT_SECONDS


def test_a_damaged_cursor_is_a_clear_error_like_a_damaged_registry(tmp_path):
    cursor = CursorStore(tmp_path, "/mb")
    cursor.advance("7_0", {"7_0:12": 100}, 4)
    cursor.save()
    cursor.close()
    cursor.path.write_text('{"cursor": {"7_0:12": "x"}')
    with pytest.raises(RegistryError, match=r"damaged.*move it aside"):
        CursorStore(tmp_path, "/mb")
    cursor.path.write_text('{"cursor": {"7_0:12": "x"}}')
    with pytest.raises(RegistryError, match="damaged"):
        CursorStore(tmp_path, "/mb")
    for entry in ({"12_0:5": -1}, {"not a key": 3}):
        cursor.path.write_text(json.dumps({"cursor": entry}))
        with pytest.raises(RegistryError, match="damaged"):
            CursorStore(tmp_path, "/mb")


def test_forgetting_a_job_drops_its_offsets_and_returns_its_seqs(tmp_path):
    cursor = CursorStore(tmp_path, "/mb")
    cursor.advance("7_0", {"7_0:12": 100, "7_0:13": 5}, 4)
    cursor.advance("7_1", {"7_1:14": 9}, 2)
    cursor.advance("17_0", {"17_0:15": 3}, 1)
    assert cursor.forget("7") == {"0": 4, "1": 2}
    assert cursor.offsets == {"17_0:15": 3} and cursor.seqs == {"17_0": 1}


class LostAnswerScheduler:
    """sbatch "fails", yet the controller queues the job and it shows up on the second look."""

    name = "slurm"

    def __init__(self) -> None:
        self.looks = 0
        self.cancelled: list[str] = []

    def submit(self, swarm_id, nodes, settings, **options):
        raise BackendError("sbatch: Socket timed out on send/recv operation")

    def cancel_unregistered(self, swarm_id):
        self.looks += 1
        if self.looks == 1:
            raise BackendError("squeue: slurmctld not responding")
        if self.looks == 2:
            return None
        self.cancelled.append(swarm_id)
        return "4242"


def test_a_job_queued_by_a_launch_reported_failed_is_found_and_cancelled(caplog):
    import queue

    import pykka

    from codeswarm.actors.jobs import SchedulerActor
    from codeswarm.actors.messages import LaunchFailed, Submit
    from codeswarm.protocol import commands
    from codeswarm.timer import Timer

    answers: queue.Queue = queue.Queue()

    class Inbox(pykka.ThreadingActor):
        def on_receive(self, message):
            answers.put(message)

    timer = Timer()
    inbox = Inbox.start()
    scheduler = LostAnswerScheduler()
    jobs = SchedulerActor.start(scheduler, inbox, timer, sweep_seconds=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="codeswarm.actors.jobs"):
            jobs.tell(Submit(commands.Launch(nodes=1), "sw-lost", {}))
            assert isinstance(answers.get(timeout=5), LaunchFailed)
            deadline = time.monotonic() + 5
            while not scheduler.cancelled and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
        assert scheduler.cancelled == ["sw-lost"] and scheduler.looks == 3
        assert "queued it after all as job 4242" in caplog.text
    finally:
        jobs.stop()
        inbox.stop()
        timer.stop()


def test_cancelled_timers_do_not_pile_up_until_they_are_due():
    from codeswarm.timer import COMPACT_AFTER, Timer

    timer = Timer()
    try:
        keep = timer.call_later(3600, ref=None, message="kept")
        handles = [timer.call_later(3600, ref=None, message=n) for n in range(1000)]
        for handle in handles:
            handle.cancel()
        assert len(timer._heap) <= COMPACT_AFTER + 1
        assert any(entry[2] is keep for entry in timer._heap)
    finally:
        timer.stop()


def test_node_started_keeps_where_the_agent_runs_and_a_write_keeps_it():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(record(agents_per_node=2), now=0.0)
    table.node_started("7", 1, now=1.0, where=("vm", "n2"))
    mine = table.get("7")
    assert mine.hosts == {"1": ["vm", "n2"]} and mine.node_state(1) == "running"
    stored = written_over(record(), mine)
    assert stored.hosts == {"1": ["vm", "n2"]}
    nodes = stored.to_event()["nodes"]
    assert nodes[1] == {
        "node_id": 1,
        "state": "running",
        "host": "vm",
        "slurm_node": "n2",
        "slurm_job": "7",
    }
    assert nodes[0]["host"] is None


def array(**fields) -> SwarmRecord:
    """Six agents in three array tasks of two: task 1 (agents 2, 3) cancelled alone."""
    states = {"0": "running", "1": "running", "2": "exited", "3": "exited"}
    states.update({"4": "pending", "5": "pending"})
    given = {"state": "running", "node_states": states, **fields}
    return record(nodes=6, layout="array", task_agents=2, **given)


@pytest.mark.parametrize(("nodes", "tasks"), [((3,), [1]), ((2, 3), [1]), ("all", [1])])
def test_restart_takes_the_exited_tasks_of_the_agents_named(nodes, tasks):
    assert restart_tasks(array(), nodes) == tasks


@pytest.mark.parametrize(
    ("swarm", "nodes", "problem"),
    [
        (array(), (0,), r"array task 0 \(7_0\) still runs or waits"),
        (array(), (3, 4), r"array task 2 \(7_2\) still runs"),
        (array(), (6,), "has nodes 0 to 5"),
        (array(state="terminated"), (3,), "has terminated: launch a new one"),
        (record(state="running"), (0,), "is one Slurm job, not an array"),
        (array(node_states={}), "all", "no task of swarm sw-7 has exited"),
    ],
)
def test_restart_refuses_what_it_cannot_resubmit_and_says_why(swarm, nodes, problem):
    with pytest.raises(ValueError, match=problem):
        restart_tasks(swarm, nodes)


def test_a_resubmitted_task_waits_for_its_new_job_and_is_polled_there():
    table = SwarmTable(gone_grace=0.0, drain_seconds=1.0)
    table.follow(array(), now=0.0)
    told = table.resubmitted("7", {1: "9_1"}, now=1.0)
    assert told == [("7_2", NodePending()), ("7_3", NodePending())]
    mine = table.get("7")
    assert [mine.slurm_job(n) for n in range(6)] == ["7_0", "7_0", "9_1", "9_1", "7_2", "7_2"]
    assert mine.node_state(2) == mine.node_state(3) == "pending"
    assert written_over(array(), mine).tasks == {"1": "9_1"}
