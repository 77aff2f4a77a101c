"""The node shard's side of ``scale --remove`` and the answer that waits for it, without
threads: removal records written (or their failure told back with the answer's token), the
``Passed`` after them, and drained nodes named to the supervisor."""

from __future__ import annotations

import itertools
import json

from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.messages import (
    AddNode,
    AgentsAdded,
    Cancelled,
    ForNodes,
    NodeGone,
    NodeRemoved,
    NodesDrained,
    Passed,
    Withdraw,
    WorkerLines,
)
from codeswarm.actors.node import NodeShard
from codeswarm.actors.scaling import Scaling
from codeswarm.actors.supervisor import SupervisorActor
from codeswarm.actors.swarms import SwarmTable, written_over
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.registry import Allocation, SwarmRecord


class Told:
    def __init__(self) -> None:
        self.messages: list = []

    def tell(self, message) -> None:
        self.messages.append(message)


class Inboxes:
    """Stands for the transport: node 1's inbox cannot be written."""

    def __init__(self) -> None:
        self.written: list[tuple[int, bytes]] = []

    def append_inbox(self, job_id, node_id, lines):
        if node_id == 1:
            raise BackendError("disk full")
        self.written += [(node_id, line) for line in lines]


def shard_of(nodes: int) -> tuple[NodeShard, Inboxes, Told]:
    told, inboxes = Told(), Inboxes()
    shard = NodeShard(inboxes, told, None, 5.0, told)
    for node_id in range(nodes):
        shard.on_receive(AddNode(NodeCorrelation("sw-1", "77", node_id, "running")))
    return shard, inboxes, told


def test_a_removal_is_written_before_the_shard_passes_and_a_failed_write_is_told_back():
    shard, inboxes, told = shard_of(3)
    shard.on_receive(ForNodes([("77_0", NodeRemoved(token=4)), ("77_1", NodeRemoved(token=4))]))
    shard.on_receive(ForNodes([("77_2", NodeRemoved(write=False, token=4))]))
    assert [node for node, _ in inboxes.written] == [0]  # another router wrote node 2's
    assert json.loads(inboxes.written[0][1])["removed"] is True
    assert all(shard.nodes[f"77_{n}"].correlation.removed for n in range(3))
    assert told.messages == []  # no error event without the scale's request id
    shard.on_receive(Passed(4))
    (passed,) = told.messages
    assert passed.token == 4 and len(passed.failures) == 1
    assert "cannot tell node 1 it was removed: disk full" in passed.failures[0]
    shard.on_receive(Passed(5))  # the failures went with their token
    assert told.messages[-1] == Passed(5)


def test_a_removed_node_is_drained_by_its_exit_or_its_end_and_others_are_not():
    shard, _, told = shard_of(3)
    shard.on_receive(ForNodes([("77_0", NodeRemoved()), ("77_1", NodeRemoved())]))
    told.messages.clear()
    exited = records.encode_line(
        records.outbox_event("node_exited", "77", 0, 1, reason="removed")
    ).encode()
    shard.on_receive(ForNodes([("77_0", WorkerLines([("77_0", "77_0:1", 10, exited)]))]))
    # with the seq of this batch (its Progress follows, after the release)
    assert [m for m in told.messages if isinstance(m, NodesDrained)] == [
        NodesDrained([("77_0", 1)])
    ]
    told.messages.clear()
    shard.on_receive(ForNodes([("77_1", NodeGone("its job ended")), ("77_2", NodeGone("x"))]))
    assert [m for m in told.messages if isinstance(m, NodesDrained)] == [
        NodesDrained([("77_1", -1)])
    ]


def test_with_an_event_log_a_drained_node_is_released_only_after_its_last_events_are_logged():
    told = Told()
    shard = NodeShard(Inboxes(), told, None, 5.0, told, logged=True)
    shard.on_receive(AddNode(NodeCorrelation("sw-1", "77", 0, "running")))
    shard.on_receive(ForNodes([("77_0", NodeRemoved())]))
    told.messages.clear()
    exited = records.encode_line(
        records.outbox_event("node_exited", "77", 0, 1, reason="removed")
    ).encode()
    shard.on_receive(ForNodes([("77_0", WorkerLines([("77_0", "77_0:1", 10, exited)]))]))
    kinds = [type(m).__name__ for m in told.messages]
    assert kinds == ["Emit", "AfterLog", "AfterLog"], kinds  # events, then drained, progress
    assert told.messages[1].message == NodesDrained([("77_0", 1)])


class Router(Scaling):
    """The supervisor's side of the answer."""

    def __init__(self) -> None:
        self.after_shards = {}
        self.answer_tokens = itertools.count(1)
        self.events: list[dict] = []

    def emit(self, *events: dict) -> None:
        self.events += events

    def error(self, code: str, message: str, request_id, **fields) -> None:
        self.events.append(
            {"type": "error", "error": code, "message": message, "request_id": request_id}
        )


def test_the_scale_is_answered_after_every_shard_passed_or_with_the_failed_write():
    router = Router()
    answer = {"type": "swarm_status", "request_id": "g2"}
    router.after_shards[1] = (2, answer, [])
    router.shard_passed(1)
    assert router.events == []  # one shard still writing
    router.shard_passed(1)
    assert router.events == [answer]
    router.after_shards[2] = (2, answer, [])
    router.shard_passed(2, failures=("cannot tell node 1 it was removed: disk full",))
    router.shard_passed(2)
    (error,) = router.events[1:]
    assert (error["type"], error["error"], error["request_id"]) == ("error", "backend", "g2")
    assert "node 1" in error["message"] and "terminate" in error["message"]
    assert 2 not in router.after_shards


# ---- the supervisor's side of an add's answer ------------------------------------------------


def swarm_record(**fields) -> SwarmRecord:
    given = {"nodes": 2, "state": "running", "node_states": {"0": "running", "1": "running"}}
    return SwarmRecord(
        swarm_id="sw-7",
        job_id="7",
        backend="slurm",
        mailbox="/mb",
        created=7.0,
        **{**given, **fields},
    )


class Supervisor(Router):
    """Scaling and the supervisor's ``cancelled`` over a real SwarmTable; the registry write
    is what another process left there (``stored``), merged as the real write does."""

    cancelled = SupervisorActor.cancelled
    write_registry_first = SupervisorActor.write_registry_first

    def __init__(self, stored: SwarmRecord | None = None) -> None:
        super().__init__()
        self.table = SwarmTable(gone_grace=0.0, drain_seconds=0.0)
        self.table.follow(swarm_record(), 0.0)
        self.jobs = Told()
        self.stored = stored
        self.unclaimed: list[str] = []
        self.started: list[int] = []
        self.registry_due = 99.0  # the tick's next registry write, deferred

    def backend_error(self, what: str, exc: Exception, request_id) -> None:
        self.error("backend", f"{what} failed: {exc}", request_id)

    def unclaim(self, swarm_id: str) -> None:
        self.unclaimed.append(swarm_id)

    def start_nodes(self, record: SwarmRecord) -> None:
        self.started.append(record.nodes)

    def tell_live_swarms(self) -> None:
        pass

    def write_registry(self) -> None:
        for job_id in list(self.table.dirty):
            mine = self.table.get(job_id)
            stored = written_over(self.stored or mine, mine)
            self.stored = stored
            self.table.stored(stored, job_id, 1.0)


ADDED = Allocation("9", 2, 1)


def test_an_add_answers_with_the_grown_swarm_and_lets_the_next_add_claim():
    router = Supervisor()
    router.agents_added(AgentsAdded(swarm_record(), ADDED, "g1", None))
    (answer,) = router.events
    assert answer["type"] == "swarm_status" and len(answer["swarm"]["nodes"]) == 3
    assert router.unclaimed == ["sw-7"] and router.jobs.messages == []


def test_a_failed_submit_is_a_backend_error_and_gives_the_claim_back():
    router = Supervisor()
    router.agents_added(AgentsAdded(swarm_record(), None, "g1", BackendError("sbatch: denied")))
    (error,) = router.events
    assert (error["error"], error["request_id"]) == ("backend", "g1")
    assert router.unclaimed == ["sw-7"] and router.table.get("7").nodes == 2


def test_an_add_answered_after_the_swarm_ended_here_cancels_its_job():
    router = Supervisor()
    router.table.set_state("7", "terminated")
    router.agents_added(AgentsAdded(swarm_record(), ADDED, "g1", None))
    (withdraw,) = router.jobs.messages
    assert isinstance(withdraw, Withdraw) and withdraw.swarm.jobs() == ["9"]
    assert "has terminated while agents were added: cancelled 9" in router.events[0]["message"]


def test_an_add_racing_another_routers_terminate_cancels_its_job():
    router = Supervisor(stored=swarm_record(state="terminated"))
    router.agents_added(AgentsAdded(swarm_record(), ADDED, "g1", None))
    (withdraw,) = router.jobs.messages
    assert withdraw.swarm.jobs() == ["9"]
    assert router.events[0]["error"] == "backend" and router.unclaimed == ["sw-7"]


def test_a_terminate_cancels_the_jobs_another_router_added_while_it_ran():
    # The other router's add reached the registry; this router's table never saw it.
    router = Supervisor(stored=swarm_record(nodes=3, allocations=[ADDED]))
    router.cancelled(Cancelled(swarm_record(), "t1", None))
    (withdraw,) = router.jobs.messages
    assert withdraw.swarm.jobs() == ["9"]
    assert router.table.get("7").state == "terminated"
    assert router.events[-1]["type"] == "swarm_terminated"


class Cursor:
    def __init__(self, seqs: dict[str, int]) -> None:
        self.seqs = seqs

    def forget_node(self, key: str) -> int:
        return self.seqs.pop(key, -1)


def test_a_drained_node_is_released_with_the_last_seq_of_its_final_batch():
    router = Supervisor()
    shard = Told()
    router.nodes = {"7_0": shard, "7_1": shard}
    router.cursor = Cursor({"7_1": 3})  # the final batch's Progress has not come yet
    router.release_nodes([("7_1", 5)])
    assert router.table.get("7").last_seqs == {"1": 5}
    assert router.registry_due == 0.0  # written before the cursor that forgot it is saved
    assert list(router.nodes) == ["7_0"] and shard.messages[0].keys == ["7_1"]
