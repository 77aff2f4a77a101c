"""NodeShard: one of a few actors, each owning many nodes' injection queues and correlation.

A thread per node does not scale to 10,000 agents (a pykka ThreadingActor is a thread). A shard
handles the messages for its nodes in the order it is told them, so each node keeps its own
order; and a batch of messages for many of its nodes costs one batched inbox write, one
``Emit`` and one ``Progress``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pykka

from codeswarm.actors.correlation import CONTINUING, NodeCorrelation
from codeswarm.actors.messages import (
    AddNode,
    AfterLog,
    Emit,
    ForNodes,
    Inject,
    Injection,
    InjectTimeout,
    InterruptNode,
    NodeCommand,
    NodeGone,
    NodePending,
    NodeRemoved,
    NodeRunning,
    NodesContinuing,
    NodesDrained,
    NodeStarted,
    Passed,
    Progress,
    RemoveNodes,
    WorkerLines,
)
from codeswarm.backends import Transport
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.hpc.follower_wire import LineRecord
from codeswarm.protocol import errors
from codeswarm.timer import Timer, TimerHandle

log = logging.getLogger(__name__)


def inbox_line(injection: Injection, encoded: dict[str, bytes]) -> bytes:
    """The inbox line of an injection, as ``records.encode_line`` writes it.

    A fan-out writes one prompt to thousands of inboxes: its content is encoded once
    (``encoded`` keeps it), and only the injection id, an id safe in JSON as it is, differs.
    """
    content = encoded.get(injection.content)
    if content is None:
        record = records.inbox_injection(injection.kind, injection.injection_id, injection.content)
        line = records.encode_line(record).encode()
        encoded[injection.content] = line[line.index(b',"content":') :]
        return line
    if injection.kind not in records.INJECTION_TYPES:
        raise records.RecordError(f"not an injection record type: {injection.kind!r}")
    injection_id = records.check_id(injection.injection_id, "injection_id")
    head = f'{{"type":"{injection.kind}","injection_id":"{injection_id}"'
    return head.encode() + content


class Node:
    """One node's correlation and the timeout clocks of its unread injections."""

    __slots__ = ("correlation", "timers")

    def __init__(self, correlation: NodeCorrelation) -> None:
        self.correlation = correlation
        self.timers: dict[str, TimerHandle] = {}

    def cancel_timers(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()


class Batch:
    """What one ``ForNodes`` produces: events in order, nodes started, progress, and the
    writes not yet sent."""

    __slots__ = ("continuing", "drained", "events", "progress", "started", "writes")

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.drained: list[str] = []  # removed nodes whose worker is gone
        self.started: list[tuple[str, str | None, str | None]] = []  # (key, host, Slurm node)
        self.progress: list[tuple[str, dict[str, int], int]] = []
        self.continuing: list[str] = []  # nodes whose worker exited to continue
        self.writes: dict[str, tuple[Node, list[Injection]]] = {}


class NodeShard(pykka.ThreadingActor):
    """Writes its nodes' inboxes, correlates their outbox events, times out silent workers."""

    def __init__(
        self,
        transport: Transport,
        sink: Any,
        timer: Timer,
        inject_timeout: float,
        supervisor: Any,
        logged: bool = False,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.sink = sink
        self.timer = timer
        self.inject_timeout = inject_timeout
        self.supervisor = supervisor
        self.nodes: dict[str, Node] = {}
        self.logged = logged  # the sink is the event log: progress counts once it has written
        self.removal_failures: dict[int, list[str]] = {}  # Passed token -> failed writes

    def on_receive(self, message: Any) -> None:
        if isinstance(message, ForNodes):
            self.handle(message.items)
        elif isinstance(message, AddNode):
            self.nodes[message.correlation.key] = Node(message.correlation)
        elif isinstance(message, Passed):
            failures = tuple(self.removal_failures.pop(message.token, ()))
            self.tell_supervisor(Passed(message.token, failures))
        elif isinstance(message, RemoveNodes):
            for key in message.keys:
                node = self.nodes.pop(key, None)
                if node is not None:
                    node.cancel_timers()

    def on_stop(self) -> None:
        for node in self.nodes.values():
            node.cancel_timers()

    def handle(self, items: list[tuple[str, Any]]) -> None:
        batch = Batch()
        for key, message in items:
            node = self.nodes.get(key)
            if node is None:
                log.warning("dropped a message for node %s: it has been released", key)
                continue
            if key in batch.writes:  # its pending write goes first: a node keeps its order
                self.flush(batch)
            if isinstance(message, Inject):
                events, to_write = node.correlation.inject(message.injection)
                batch.events += events
                if to_write:
                    batch.writes[key] = (node, to_write)
            else:
                self.dispatch(node, message, batch)
        self.flush(batch)
        if batch.started:  # the supervisor knows they run before a client can
            self.tell_supervisor(NodeStarted(batch.started))
        if batch.continuing:
            self.tell_supervisor(NodesContinuing(batch.continuing))
        if batch.events:
            self.sink.tell(Emit(batch.events))
        # After the events: the cursor never passes an unlogged line, and a drained node's
        # last seq is recorded as released only once its last events are logged.
        if batch.drained:
            drained = [(key, self.nodes[key].correlation.last_seq) for key in batch.drained]
            self.after_log(NodesDrained(drained))
        if batch.progress:
            self.after_log(Progress(batch.progress))

    def after_log(self, message: Any) -> None:
        """Tell the supervisor ``message`` once the events sent before it are in the log."""
        if self.logged:
            self.sink.tell(AfterLog(self.supervisor, message))
        else:
            self.tell_supervisor(message)

    def tell_supervisor(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
            self.supervisor.tell(message)

    def dispatch(self, node: Node, message: Any, batch: Batch) -> None:
        correlation = node.correlation
        if isinstance(message, WorkerLines):
            self.worker_lines(node, message.lines, batch)
        elif isinstance(message, InjectTimeout):
            node.timers.pop(message.injection_id, None)
            batch.events += correlation.timed_out(message.injection_id, self.inject_timeout)
        elif isinstance(message, NodeRunning):
            self.start_clocks(node, correlation.started())
        elif isinstance(message, NodePending):
            correlation.requeued()
        elif isinstance(message, NodeGone):
            if correlation.state != "exited":
                batch.events += correlation.gone(message.reason)
            if correlation.removed:
                batch.drained.append(correlation.key)
        elif isinstance(message, NodeRemoved):
            correlation.removed = True
            failure = self.write_removal(correlation) if message.write else None
            if failure is not None:
                self.removal_failures.setdefault(message.token, []).append(failure)
        elif isinstance(message, InterruptNode):
            interrupt = records.inbox_interrupt()
            batch.events.append(
                self.deliver(correlation, interrupt, message.request_id, "interrupt_ack", {})
            )
        elif isinstance(message, NodeCommand):
            ack = f"{message.command}_ack"  # approve_ack, steer_ack
            batch.events.append(
                self.deliver(correlation, message.record, message.request_id, ack, message.ack)
            )

    def worker_lines(self, node: Node, lines: list[LineRecord], batch: Batch) -> None:
        correlation = node.correlation
        offsets: dict[str, int] = {}
        events = batch.events
        for _, identity, offset, raw in lines:
            offsets[identity] = offset
            for event in correlation.worker_line(raw):
                events.append(event)
                kind = event["type"]
                if kind == "node_started":
                    self.start_clocks(node, correlation.started())
                    where = (correlation.key, event.get("host"), event.get("slurm_node"))
                    batch.started.append(where)
                elif kind == "node_exited" and correlation.removed:  # continuing or not
                    batch.drained.append(correlation.key)
                elif kind == "node_exited" and event["reason"] == CONTINUING:
                    # Unread prompts wait for the continuation job: their clocks start again
                    # when it runs.
                    node.cancel_timers()
                    batch.continuing.append(correlation.key)
                elif kind == "inject_delivered" or kind == "inject_failed":
                    handle = node.timers.pop(event["injection_id"], None)
                    if handle is not None:
                        handle.cancel()
        batch.progress.append((correlation.key, offsets, correlation.last_seq))

    def start_clocks(self, node: Node, injection_ids: list[str]) -> None:
        """The worker must read each of these within inject_timeout seconds from now."""
        key = node.correlation.key
        for injection_id in injection_ids:
            node.timers[injection_id] = self.timer.call_later(
                self.inject_timeout, self.actor_ref, ForNodes([(key, InjectTimeout(injection_id))])
            )

    def flush(self, batch: Batch) -> None:
        """Append every pending injection to its inbox in one batched write; ack or fail each.

        The timeout clock starts now if the node runs, else when it starts.
        """
        if not batch.writes:
            return
        pending = list(batch.writes.values())
        batch.writes.clear()
        encoded: dict[str, bytes] = {}
        appends = [
            (
                node.correlation.job_id,
                node.correlation.node_id,
                [inbox_line(i, encoded) for i in injections],
            )
            for node, injections in pending
        ]
        try:
            results = self.transport.append_inboxes(appends)
        except BackendError as exc:  # a transport that fails the whole batch at once
            results = [exc] * len(appends)
        for (node, injections), error in zip(pending, results, strict=True):
            correlation = node.correlation
            if error is not None:
                batch.events += [
                    correlation.write_failed(i, error.code, str(error), error.stderr)
                    for i in injections
                ]
                continue
            for injection in injections:
                batch.events += correlation.written(injection)
            if correlation.state == "running":
                self.start_clocks(node, [i.injection_id for i in injections])

    def write_removal(self, correlation: NodeCorrelation) -> str | None:
        """The worker's cue to end its running turn and fail what is queued; why the inbox
        could not be written (the node then runs on until its job ends), or None."""
        line = records.encode_line(records.inbox_shutdown(removed=True)).encode()
        try:
            self.transport.append_inbox(correlation.job_id, correlation.node_id, [line])
        except BackendError as exc:
            return f"cannot tell node {correlation.node_id} it was removed: {exc}"
        return None

    def deliver(
        self,
        correlation: NodeCorrelation,
        record: dict,
        request_id: Any,
        ack: str,
        fields: dict[str, Any],
    ) -> dict:
        """Write a record for the running worker (interrupt, approve, steer); its ack or error.

        A node that is not running has no turn to act on: the record is not written, and the
        error names the node (``node_gone`` once it has exited).
        """
        if correlation.state != "running":
            code = errors.NODE_GONE if correlation.state == "exited" else errors.INVALID_FIELD
            message = f"node {correlation.node_id} is {correlation.state}: it runs no turn"
            return correlation.event("error", request_id, error=code, message=message, **fields)
        line = records.encode_line(record).encode()
        try:
            self.transport.append_inbox(correlation.job_id, correlation.node_id, [line])
        except BackendError as exc:
            return correlation.event(
                "error", request_id, error=errors.BACKEND, message=str(exc), **fields
            )
        return correlation.event(ack, request_id, **fields)
