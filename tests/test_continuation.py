"""slurm.continue on the router: the rules of a continuation, without threads or Slurm."""

from __future__ import annotations

from dataclasses import replace

import pytest

from codeswarm.actors.continuation import Continuations, ContinuingSwarms, continued_record
from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.messages import (
    AddNode,
    Continued,
    ContinueJob,
    ForNodes,
    Inject,
    Injection,
    NodePending,
    NodeRunning,
    NodesContinuing,
    NodesDrained,
    Withdraw,
    WorkerLines,
)
from codeswarm.actors.node import NodeShard
from codeswarm.actors.swarms import SwarmTable, written_over
from codeswarm.backends.slurm import SlurmScheduler
from codeswarm.config import parse_config
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.registry import Allocation, SwarmRecord


def record(nodes: int = 2, **fields) -> SwarmRecord:
    return SwarmRecord(
        swarm_id="sw-7",
        job_id="7",
        backend="slurm",
        mailbox="/mb",
        nodes=nodes,
        created=1.0,
        **fields,
    )


def line(kind, seq, **fields):
    return records.encode_line(records.outbox_event(kind, "7", 0, seq, **fields)).encode()


def test_a_continuing_worker_leaves_its_prompts_open_and_held():
    node = NodeCorrelation("sw-7", "7", 0, "running")
    node.written(Injection("a", "hello", "r1"))
    node.worker_line(line("inject_delivered", 0, injection_id="a"))
    events = node.worker_line(line("node_exited", 1, reason="continuing"))
    assert [e["type"] for e in events] == ["node_exited"]
    assert node.state == "pending" and "a" in node.open
    (ack,) = node.written(Injection("b", "later", "r2"))
    assert ack["held"] is True
    # No continuation comes (the router was told the node is gone): they fail then.
    failed = node.gone("the worker process ended")
    assert [(e["injection_id"], e["error"]) for e in failed] == [
        ("a", "node_gone"),
        ("b", "node_gone"),
    ]


def test_any_other_exit_still_fails_what_the_node_owed():
    node = NodeCorrelation("sw-7", "7", 0, "running")
    node.written(Injection("a", "hello", "r1"))
    events = node.worker_line(line("node_exited", 0, reason="sigterm"))
    assert [e["type"] for e in events] == ["node_exited", "inject_failed"]


def test_a_job_is_due_once_every_agent_is_gone_and_one_continues():
    swarm = record(nodes=3, node_states={"0": "running", "1": "running", "2": "running"})
    cont = Continuations()
    cont.note(swarm, 0)
    assert cont.due(swarm, {0: "exited", 1: "running", 2: "exited"}) == []
    held = cont.hold({"7": {0: "exited", 1: "running", 2: "exited"}})
    assert held == {"7": {0: "pending", 1: "running", 2: "exited"}}
    assert cont.due(swarm, {0: "exited", 1: "exited", 2: "exited"}) == [("7", [0, 1, 2])]
    # Asked once: the next poll finds it being submitted.
    assert cont.due(swarm, {0: "exited", 1: "exited", 2: "exited"}) == []
    cont.done("7", "7", [0, 1, 2])
    assert cont.waiting == {} and cont.submitting == set()
    assert cont.hold({"7": {0: "exited"}}) == {"7": {0: "exited"}}


def test_array_tasks_continue_alone():
    swarm = record(nodes=4, layout="array", task_agents=2)
    cont = Continuations()
    cont.note(swarm, 2)
    polled = {0: "running", 1: "running", 2: "exited", 3: "exited"}
    assert cont.due(swarm, polled) == [("7_1", [2, 3])]


def test_nothing_is_due_for_a_swarm_whose_workers_never_said_continuing():
    cont = Continuations()
    cont.note(replace(record(), job_id="8"), 0)
    assert cont.due(record(), {0: "exited", 1: "exited"}) == []


def test_the_continuation_is_where_the_agents_run_next_and_status_lists_every_job():
    swarm = record(nodes=2)
    job = continued_record(swarm, Continued(swarm, "7", [0, 1], None, "12", None))
    assert job.allocations == [Allocation("12", 0, 2, continues=True)]
    assert [job.slurm_job(n) for n in (0, 1)] == ["12", "12"]
    again = continued_record(job, Continued(job, "12", [0, 1], None, "15", None))
    assert again.slurm_job(1) == "15" and again.to_event()["jobs"] == ["7", "12", "15"]

    # Agent 0 removed, agents 4-5 added by scale: the launch's job reruns agents 0-3.
    scaled = replace(swarm, nodes=6, removed=[0], allocations=[Allocation("9", 4, 2)])
    job = continued_record(scaled, Continued(scaled, "7", [1, 2], None, "12", None))
    assert job.allocations[-1] == Allocation("12", 0, 4, continues=True)
    assert [job.slurm_job(n) for n in range(6)] == ["12"] * 4 + ["9", "9"]

    array = record(nodes=4, layout="array", task_agents=2)
    task = continued_record(array, Continued(array, "7_1", [2, 3], 1, "20_1", None))
    assert task.tasks == {"1": "20_1"} and task.slurm_job(3) == "20_1"
    assert task.slurm_job(0) == "7_0" and task.to_event()["jobs"] == ["7", "20"]


def test_the_table_makes_continued_agents_wait_and_the_registry_keeps_every_job():
    table = SwarmTable(gone_grace=0.0, drain_seconds=0.0)
    swarm = record(nodes=2, node_states={"0": "running", "1": "running"}, state="running")
    table.follow(swarm, 0.0)
    moved = continued_record(swarm, Continued(swarm, "7", [0, 1], None, "12", None))
    keys = table.continued("7", moved, [0, 1], 1.0)
    assert keys == ["7_0", "7_1"]
    now = table.get("7")
    assert now.node_states == {"0": "pending", "1": "pending"} and now.state == "pending"
    assert now.slurm_job(0) == "12" and "7" in table.dirty
    # The poll of the new job tells no change: the agents were told pending already.
    assert table.apply({"7": {0: "pending", 1: "pending"}}, 2.0) == []
    assert table.apply({"7": {0: "running", 1: "pending"}}, 3.0)[0][0] == "7_0"
    assert not isinstance(table.apply({"7": {0: "running", 1: "running"}}, 4.0)[0][1], NodePending)
    # Another router wrote the swarm meanwhile: neither loses the other's jobs.
    theirs = replace(swarm, allocations=[Allocation("9", 0, 2)])
    stored = written_over(theirs, table.get("7"))
    assert [a.job_id for a in stored.allocations] == ["9", "12"]


class Told:
    def __init__(self) -> None:
        self.messages: list = []
        self.cancelled = 0

    def tell(self, message) -> None:
        self.messages.append(message)

    def call_later(self, delay, ref, message):
        return self

    def cancel(self) -> None:
        self.cancelled += 1


class Inboxes:
    def append_inboxes(self, appends):
        return [None for _ in appends]


def test_a_shard_stops_the_clocks_of_unread_prompts_and_names_the_node_to_the_supervisor():
    told = Told()
    shard = NodeShard(Inboxes(), told, told, 5.0, told)
    shard.on_receive(AddNode(NodeCorrelation("sw-7", "7", 0, "running")))
    shard.on_receive(ForNodes([("7_0", Inject(Injection("unread", "hello", "r")))]))
    assert list(shard.nodes["7_0"].timers) == ["unread"]
    exited = WorkerLines([("7_0", "7_0:1", 10, line("node_exited", 0, reason="continuing"))])
    shard.on_receive(ForNodes([("7_0", exited)]))
    assert shard.nodes["7_0"].timers == {} and told.cancelled == 1
    assert NodesContinuing(["7_0"]) in told.messages
    # When the continuation job runs, the prompt's clock starts again.
    shard.on_receive(ForNodes([("7_0", NodeRunning())]))
    assert list(shard.nodes["7_0"].timers) == ["unread"]


class Router(ContinuingSwarms):
    """The supervisor's side of continuations, its actors and registry as recorders."""

    def __init__(self, swarm: SwarmRecord) -> None:
        self.table = SwarmTable(gone_grace=0.0, drain_seconds=0.0)
        self.table.follow(swarm, 0.0)
        self.continuations = Continuations()
        self.continue_jobs = True
        self.submits_continuations = True
        self.jobs = Told()
        self.events: list[dict] = []
        self.nodes_told: list[tuple[str, object]] = []
        self.registry_writes = 0
        self.elsewhere: list[SwarmRecord] = []  # what other processes wrote to the registry

    def refresh_registry(self, force: bool = False) -> None:
        self.table.merge(self.elsewhere or self.table.all(), 1.0)

    def emit(self, *events: dict) -> None:
        self.events += events

    def tell_node(self, key: str, message: object) -> bool:
        self.nodes_told.append((key, message))
        return True

    def tell_live_swarms(self) -> None:
        pass

    def write_registry(self) -> None:
        self.registry_writes += 1
        for record in self.elsewhere:
            self.table.stored(written_over(record, self.table.get(record.job_id)), "7", 2.0)


def running(nodes: int = 2) -> SwarmRecord:
    states = {str(n): "running" for n in range(nodes)}
    return record(nodes=nodes, node_states=states, state="running")


def test_the_router_submits_once_the_job_ends_and_moves_the_agents_to_the_new_job():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    held = router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    assert held == {"7": {0: "pending", 1: "exited"}}
    (submit,) = router.jobs.messages
    assert isinstance(submit, ContinueJob) and (submit.slurm_job, submit.nodes) == ("7", [0, 1])
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "12", None))
    assert router.table.get("7").slurm_job(1) == "12"
    assert [key for key, _ in router.nodes_told] == ["7_0", "7_1"]
    assert router.registry_writes == 1 and router.continuations.waiting == {}


def test_a_continuation_that_cannot_be_submitted_is_reported_and_its_agents_end():
    router = Router(running())
    router.nodes_continuing(["7_0", "7_1"])
    router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    (submit,) = router.jobs.messages
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "", OSError("sbatch: down")))
    (error,) = router.events
    assert error["error"] == "backend" and "sbatch: down" in error["message"]
    # Nothing holds them now: the poll's exit stands, and the table tells them they are gone.
    assert router.hold_continuing({"7": {0: "exited", 1: "exited"}}) == {
        "7": {0: "exited", 1: "exited"}
    }


def test_a_swarm_terminated_while_its_continuation_was_submitted_has_that_job_cancelled():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    (submit,) = router.jobs.messages
    router.table.set_state("7", "terminated")
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "12", None))
    withdraw = router.jobs.messages[-1]
    assert isinstance(withdraw, Withdraw) and withdraw.swarm.jobs() == ["12"]


def test_without_slurm_continue_a_continuing_worker_is_not_waited_for():
    router = Router(running())
    router.continue_jobs = False
    router.nodes_continuing(["7_0"])
    assert router.hold_continuing({"7": {0: "exited", 1: "exited"}}) == {
        "7": {0: "exited", 1: "exited"}
    }
    assert router.jobs.messages == []


def test_a_terminated_or_dropped_swarm_holds_none_of_its_continuing_agents():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    router.table.set_state("7", "terminated")
    polled = {"7": {0: "exited", 1: "exited"}}
    assert router.hold_continuing(polled) == polled
    assert router.jobs.messages == [] and router.continuations.waiting == {}

    router = Router(running())
    router.nodes_continuing(["7_0"])
    del router.table.records["7"]
    assert router.hold_continuing(polled) == polled
    assert router.continuations.waiting == {}


def test_a_router_without_the_cursor_lock_holds_the_agents_but_never_submits():
    """attach, inject --wait, MCP beside the daemon: the daemon alone submits; the others let
    the agents go once the registry names the job the daemon submitted."""
    router = Router(running())
    router.submits_continuations = False
    router.nodes_continuing(["7_0"])
    polled = {"7": {0: "exited", 1: "exited"}}
    assert router.hold_continuing(polled) == {"7": {0: "pending", 1: "exited"}}
    assert router.jobs.messages == []
    swarm = router.table.get("7")
    moved = continued_record(swarm, Continued(swarm, "7", [0, 1], None, "12", None))
    router.table.records["7"] = moved
    assert router.hold_continuing(polled) == polled and router.continuations.waiting == {}


def test_after_agent_0_is_removed_the_launch_job_still_continues_and_added_ones_do_not():
    swarm = replace(running(3), removed=[0], allocations=[Allocation("9", 2, 1)])
    router = Router(swarm)
    router.nodes_continuing(["7_1", "7_2"])
    router.hold_continuing({"7": {1: "exited", 2: "exited"}})
    (submit,) = router.jobs.messages
    assert (submit.slurm_job, submit.nodes) == ("7", [1])
    assert router.continuations.waiting == {"7": {1: "7"}}  # job 9 scale added: let go
    router.continued(Continued(submit.swarm, "7", [1], None, "12", None))
    # The continuation continues in turn.
    router.table.records["7"] = replace(router.table.get("7"), node_states={"1": "running"})
    router.nodes_continuing(["7_1"])
    router.hold_continuing({"7": {1: "exited", 2: "exited"}})
    assert (router.jobs.messages[-1].slurm_job, router.jobs.messages[-1].nodes) == ("12", [1])


def test_a_late_continuing_note_for_a_job_already_continued_is_ignored():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    (submit,) = router.jobs.messages
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "12", None))
    router.nodes_continuing(["7_1"])  # its worker's line read only now
    assert router.continuations.waiting == {}
    assert router.hold_continuing({"7": {0: "exited", 1: "exited"}}) == {
        "7": {0: "exited", 1: "exited"}
    }


class LostAnswer:
    """A cluster whose sbatch queues the job, then loses its answer (a dropped connection)."""

    cluster_dir = "/c"

    def __init__(self, queued: bytes) -> None:
        self.connection = self
        self.queued = queued
        self.tag = ""
        self.scripts: list[bytes] = []

    def run(self, argv, stdin=None, timeout=None) -> bytes:
        if argv[0] == "cat":
            return b"#!/bin/bash\nexec srun worker\n"
        if argv[0] == "squeue":
            return self.queued.replace(b"TAG", self.tag.encode())
        self.tag = next(a for a in argv if a.startswith("--comment=")).partition("=")[2]
        self.scripts.append(stdin)
        raise BackendError("sbatch: the connection dropped")


def scheduler(queued: bytes) -> SlurmScheduler:
    config = parse_config({"ssh": {"login_alias": "hpc"}, "cluster": {"workspace_root": "/w"}})
    return SlurmScheduler(LostAnswer(queued), config.slurm, "python3")  # type: ignore[arg-type]


def test_a_continuation_whose_sbatch_answer_was_lost_is_found_by_name_not_left_orphaned():
    swarm = replace(running(), allocations=[Allocation("9", 2, 1)])
    found = scheduler(b"7 (null)\n9 codeswarm-add-2-0123456789ab\n12 TAG\n")
    assert found.continue_job(swarm) == "12"
    # Its workers run the prompts the job before requeued; a restart's would fail them.
    (script,) = found.transport.scripts  # type: ignore[attr-defined]
    assert b"export CODESWARM_CONTINUATION=1\nexec srun worker" in script
    with pytest.raises(BackendError, match="dropped"):
        scheduler(b"7 (null)\n9 codeswarm-add-2-0123456789ab\n").continue_job(swarm)


def test_a_swarm_terminated_by_another_process_while_submitting_has_the_new_job_cancelled():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    (submit,) = router.jobs.messages
    router.elsewhere = [router.table.get("7").with_state("terminated")]
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "12", None))
    withdraw = router.jobs.messages[-1]
    assert isinstance(withdraw, Withdraw) and withdraw.swarm.jobs() == ["12"]
    assert router.registry_writes == 0


def test_a_terminate_written_as_the_continuation_is_recorded_cancels_the_new_job():
    router = Router(running())
    router.nodes_continuing(["7_0"])
    router.hold_continuing({"7": {0: "exited", 1: "exited"}})
    (submit,) = router.jobs.messages
    terminated = router.table.get("7").with_state("terminated")
    router.refresh_registry = lambda force=False: None  # the terminate lands after the read
    router.elsewhere = [terminated]
    router.continued(Continued(submit.swarm, "7", [0, 1], None, "12", None))
    assert router.registry_writes == 1
    withdraw = router.jobs.messages[-1]
    assert isinstance(withdraw, Withdraw) and withdraw.swarm.jobs() == ["12"]


def test_a_removed_node_exiting_to_continue_is_drained_and_its_prompts_fail_removed():
    told = Told()
    shard = NodeShard(Inboxes(), told, told, 5.0, told)
    node = NodeCorrelation("sw-7", "7", 0, "running")
    shard.on_receive(AddNode(node))
    node.removed = True
    node.written(Injection("queued", "hello", "r"))
    exited = WorkerLines([("7_0", "7_0:1", 10, line("node_exited", 0, reason="continuing"))])
    shard.on_receive(ForNodes([("7_0", exited)]))
    assert NodesDrained([("7_0", 0)]) in told.messages
    assert not [m for m in told.messages if isinstance(m, NodesContinuing)]
    assert "queued" not in node.open


def test_the_turn_a_continuation_runs_again_is_not_reported_out_of_order(caplog):
    node = NodeCorrelation("sw-7", "7", 0, "running")
    node.written(Injection("a", "hello", "r1"))
    node.worker_line(line("inject_delivered", 0, injection_id="a"))
    node.worker_line(line("turn_started", 1, injection_id="a", turn_id="t1"))
    node.worker_line(line("assistant_delta", 2, injection_id="a", delta="par"))
    node.worker_line(line("node_exited", 3, reason="continuing"))
    node.worker_line(line("node_started", 4, pid=9, host="n1"))
    node.worker_line(line("turn_started", 5, injection_id="a", turn_id="t2"))
    assert "after stage" not in caplog.text
