"""The node shard's side of ``scale --remove`` and the answer that waits for it, without
threads: removal records written (or their failure told back with the answer's token), the
``Passed`` after them, and drained nodes named to the supervisor."""

from __future__ import annotations

import itertools
import json

from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.messages import (
    AddNode,
    ForNodes,
    NodeGone,
    NodeRemoved,
    NodesDrained,
    Passed,
    WorkerLines,
)
from codeswarm.actors.node import NodeShard
from codeswarm.actors.scaling import Scaling
from codeswarm.errors import BackendError
from codeswarm.hpc import records


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
    shard.on_receive(ForNodes([("77_0", WorkerLines([("77_0:1", 10, exited)]))]))
    assert [m for m in told.messages if isinstance(m, NodesDrained)] == [NodesDrained(["77_0"])]
    told.messages.clear()
    shard.on_receive(ForNodes([("77_1", NodeGone("its job ended")), ("77_2", NodeGone("x"))]))
    assert [m for m in told.messages if isinstance(m, NodesDrained)] == [NodesDrained(["77_1"])]


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
