"""NodeCorrelation, and the NodeShard that drives many: one node's rules, without threads."""

import json

from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.messages import (
    AddNode,
    Emit,
    ForNodes,
    Inject,
    Injection,
    InterruptNode,
    Progress,
    WorkerLines,
)
from codeswarm.actors.node import NodeShard
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.protocol import encode_event, encode_events, event_errors
from codeswarm.protocol.codec import EncodedEvent


def node(state="running"):
    return NodeCorrelation("sw-1", "77", 0, state)


def line(kind, seq, **fields):
    return records.encode_line(records.outbox_event(kind, "77", 0, seq, **fields)).encode()


def injection(name="i1", request_id="r1"):
    return Injection(name, "hello", request_id)


def test_running_node_hands_injection_back_to_be_written_then_acks():
    n = node()
    events, to_write = n.inject(injection())
    assert events == [] and to_write == [injection()]
    (ack,) = n.written(injection())
    assert ack["type"] == "inject_ack" and ack["held"] is False and ack["request_id"] == "r1"
    assert event_errors(ack) == {}


def test_pending_node_is_written_through_and_its_clock_starts_on_start():
    n = node("pending")
    events, to_write = n.inject(injection())
    assert events == [] and to_write == [injection()]
    (ack,) = n.written(injection())
    assert ack["held"] is True
    assert n.started() == ["i1"]
    assert n.started() == []


def test_clocks_start_only_for_undelivered_injections():
    n = node("pending")
    n.written(injection("a"))
    n.written(injection("b"))
    n.worker_line(line("inject_delivered", 1, injection_id="a"))
    assert n.started() == ["b"]


def test_duplicate_injection_id_is_acked_not_rewritten():
    n = node()
    n.written(injection())
    (ack,), to_write = n.inject(injection())
    assert ack["duplicate"] is True and to_write == []


def test_exited_node_fails_new_injections():
    n = node("exited")
    (failed,), _ = n.inject(injection())
    assert failed["type"] == "inject_failed" and failed["error"] == "node_gone"
    assert event_errors(failed) == {}


def test_worker_events_carry_swarm_and_request_ids_and_drop_duplicates():
    n = node()
    n.written(injection())
    raw = line("inject_delivered", 1, injection_id="i1")
    (event,) = n.worker_line(raw)
    assert event["swarm_id"] == "sw-1" and event["request_id"] == "r1"
    assert event_errors(event) == {}
    assert n.worker_line(raw) == []
    assert n.worker_line(line("turn_started", 0, injection_id="i1", turn_id="t")) == []


def test_usage_finishes_the_injection_but_late_events_keep_their_request_id():
    n = node()
    n.written(injection())
    fields = dict(
        injection_id="i1",
        input_tokens=1,
        cached_input_tokens=0,
        output_tokens=1,
        reasoning_output_tokens=0,
        total_tokens=2,
    )
    n.worker_line(line("usage", 1, **fields))
    assert "i1" not in n.open
    (late,) = n.worker_line(line("error", 2, error="agent_error", message="x"))
    assert late["swarm_id"] == "sw-1"


def test_timeout_fails_only_undelivered_injections():
    n = node()
    n.written(injection("a"))
    n.written(injection("b"))
    n.worker_line(line("inject_delivered", 1, injection_id="b"))
    (failed,) = n.timed_out("a", 5)
    assert failed["error"] == "timeout" and "5 s" in failed["message"]
    assert n.timed_out("b", 5) == []
    assert n.timed_out("a", 5) == []


def test_node_exited_fails_open_and_held_injections_with_node_gone():
    n = node()
    n.written(injection("open"))
    exited, *failed = n.worker_line(line("node_exited", 1, reason="sigterm"))
    assert exited["type"] == "node_exited"
    assert [(e["injection_id"], e["error"]) for e in failed] == [("open", "node_gone")]
    assert n.state == "exited"


def test_gone_fails_injections_written_to_a_node_that_never_started():
    n = node("pending")
    n.written(injection("held"))
    (failed,) = n.gone("cancelled")
    assert failed["injection_id"] == "held" and failed["error"] == "node_gone"


def test_garbage_outbox_lines_become_error_events():
    n = node()
    (bad_json,) = n.worker_line(b"{nope")
    (bad_event,) = n.worker_line(json.dumps({"type": "assistant", "seq": 1}).encode())
    for event in (bad_json, bad_event):
        assert event["type"] == "error" and event["error"] == "worker_error"
        assert event_errors(event) == {}


def test_a_requeued_node_runs_again_after_it_exited():
    n = node()
    n.worker_line(line("node_exited", 1, reason="sigterm"))
    assert n.state == "exited"
    (started,) = n.worker_line(line("node_started", 2, pid=1, host="n2"))
    assert started["type"] == "node_started"
    assert n.started() == []  # what the NodeShard does on node_started
    assert n.state == "running"
    assert n.inject(injection("again")) == ([], [injection("again")])


def test_a_routed_worker_event_is_sent_as_its_outbox_line_with_the_ids_added():
    n = node()
    n.written(injection())
    # The follower hands lines over without their newline.
    raw = line("assistant_delta", 1, injection_id="i1", delta='é \u2028 "x"').rstrip(b"\n")
    (event,) = n.worker_line(raw)
    assert isinstance(event, EncodedEvent)  # passed on, not encoded again
    data, problems = encode_events([event])
    assert data == raw[:-1] + b',"swarm_id":"sw-1","request_id":"r1"}\n' and problems == []
    assert data == encode_event(dict(event))


class Recorder:
    """Stands for the sink and the supervisor: what they were told, in one order."""

    def __init__(self, told: list) -> None:
        self.told = told

    def tell(self, message) -> None:
        self.told.append(message)


def test_a_batch_is_emitted_in_order_before_the_cursor_may_pass_it():
    n = node()
    n.written(injection())
    told: list = []
    actor = NodeShard(None, Recorder(told), None, 5.0, Recorder(told))
    actor.on_receive(AddNode(n))
    batch = [
        line("turn_started", 1, injection_id="i1", turn_id="t"),
        line("assistant_delta", 2, injection_id="i1", delta="a"),
        b"{not json",
        line("assistant_delta", 2, injection_id="i1", delta="a"),  # a repeat: dropped
        line("assistant_delta", 3, injection_id="i1", delta="b"),
    ]
    offsets = [100 * (k + 1) for k in range(len(batch))]
    lines = WorkerLines([("77_0", "77_0:9", o, raw) for o, raw in zip(offsets, batch, strict=True)])
    actor.on_receive(ForNodes([("77_0", lines)]))
    emit, progress = told
    assert isinstance(emit, Emit) and isinstance(progress, Progress)
    assert [(e["type"], e.get("seq")) for e in emit.events] == [
        ("turn_started", 1),
        ("assistant_delta", 2),
        ("error", None),
        ("assistant_delta", 3),
    ]
    assert json.loads(encode_events(emit.events)[0].splitlines()[3])["delta"] == "b"
    assert progress == Progress([("77_0", {"77_0:9": offsets[-1]}, 3)])


class Inboxes:
    """Stands for the transport: each batched write it was asked for; node 1's inbox fails."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int, list[bytes]]]] = []

    def append_inboxes(self, appends):
        self.batches.append(appends)
        return [BackendError("disk full") if node == 1 else None for _, node, _ in appends]

    def append_inbox(self, job_id, node_id, lines):
        self.append_inboxes([(job_id, node_id, lines)])


class Clock:
    def call_later(self, delay, ref, message):
        return Recorder([])


def shard_of(nodes: int) -> tuple[NodeShard, Inboxes, list]:
    told: list = []
    inboxes = Inboxes()
    shard = NodeShard(inboxes, Recorder(told), Clock(), 5.0, Recorder(told))
    for node_id in range(nodes):
        shard.on_receive(AddNode(NodeCorrelation("sw-1", "77", node_id, "pending")))
    return shard, inboxes, told


def test_an_inject_to_many_nodes_is_one_batched_write_each_acked_or_failed_alone():
    shard, inboxes, told = shard_of(3)
    shard.on_receive(ForNodes([(f"77_{n}", Inject(injection(f"i-{n}", "r"))) for n in range(3)]))
    assert [[(job, node) for job, node, _ in batch] for batch in inboxes.batches] == [
        [("77", 0), ("77", 1), ("77", 2)]
    ]
    (emit,) = told
    outcome = {e["node_id"]: (e["type"], e.get("error")) for e in emit.events}
    assert outcome == {
        0: ("inject_ack", None),
        1: ("inject_failed", "backend"),
        2: ("inject_ack", None),
    }


def test_a_node_told_twice_in_one_batch_is_written_in_order():
    shard, inboxes, told = shard_of(1)
    shard.on_receive(
        ForNodes(
            [
                ("77_0", Inject(injection("a"))),
                ("77_0", Inject(injection("a"))),  # the same id again: a duplicate, not written
                ("77_0", Inject(injection("b"))),
                ("77_0", InterruptNode("r-int")),
            ]
        )
    )
    written = [json.loads(lines[0])["injection_id"] for b in inboxes.batches for _, _, lines in b]
    assert written == ["a", "b"]
    (emit,) = told
    assert [(e["type"], e.get("injection_id"), e.get("duplicate")) for e in emit.events] == [
        ("inject_ack", "a", None),
        ("inject_ack", "a", True),
        ("inject_ack", "b", None),
        ("error", None, None),  # a pending node runs no turn to interrupt
    ]
