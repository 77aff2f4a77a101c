"""NodeActor: one per (job_id, node_id), owning that node's injection queue and correlation."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pykka

from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.messages import (
    AfterLog,
    Emit,
    Inject,
    Injection,
    InjectTimeout,
    InterruptNode,
    NodeCommand,
    NodeGone,
    NodePending,
    NodeRunning,
    NodeStarted,
    Progress,
    WorkerLines,
)
from codeswarm.backends import Transport
from codeswarm.errors import BackendError
from codeswarm.hpc import records
from codeswarm.protocol import errors
from codeswarm.timer import Timer, TimerHandle

log = logging.getLogger(__name__)


class NodeActor(pykka.ThreadingActor):
    """Writes this node's inbox, correlates its outbox events, and times out silent workers."""

    def __init__(
        self,
        correlation: NodeCorrelation,
        transport: Transport,
        sink: Any,
        timer: Timer,
        inject_timeout: float,
        supervisor: Any,
        logged: bool = False,
    ) -> None:
        super().__init__()
        self.node = correlation
        self.key = correlation.key
        self.supervisor = supervisor
        self.transport = transport
        self.sink = sink
        self.timer = timer
        self.inject_timeout = inject_timeout
        self.timers: dict[str, TimerHandle] = {}
        self.logged = logged  # the sink is the event log: progress counts once it has written

    def on_receive(self, message: Any) -> None:
        if isinstance(message, WorkerLines):
            self.worker_lines(message.lines)
        elif isinstance(message, Inject):
            events, to_write = self.node.inject(message.injection)
            self.emit(events)
            self.write(to_write)
        elif isinstance(message, InjectTimeout):
            self.timers.pop(message.injection_id, None)
            self.emit(self.node.timed_out(message.injection_id, self.inject_timeout))
        elif isinstance(message, NodeRunning):
            self.start_clocks(self.node.started())
        elif isinstance(message, NodePending):
            self.node.requeued()
        elif isinstance(message, NodeGone):
            if self.node.state != "exited":
                self.emit(self.node.gone(message.reason))
        elif isinstance(message, InterruptNode):
            self.deliver(records.inbox_interrupt(), message.request_id, "interrupt_ack", {})
        elif isinstance(message, NodeCommand):
            ack = f"{message.command}_ack"  # approve_ack, steer_ack
            self.deliver(message.record, message.request_id, ack, message.ack)

    def on_stop(self) -> None:
        for handle in self.timers.values():
            handle.cancel()

    def emit(self, events: list[dict]) -> None:
        if events:
            self.sink.tell(Emit(events))

    def worker_lines(self, lines: list[tuple[str, int, bytes]]) -> None:
        events: list[dict] = []
        offsets: dict[str, int] = {}
        for identity, offset, raw in lines:
            offsets[identity] = offset
            for event in self.node.worker_line(raw):
                events.append(event)
                kind = event["type"]
                if kind == "node_started":
                    self.start_clocks(self.node.started())
                    with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
                        self.supervisor.tell(
                            NodeStarted(self.key, event.get("host"), event.get("slurm_node"))
                        )
                elif kind in ("inject_delivered", "inject_failed"):
                    handle = self.timers.pop(event["injection_id"], None)
                    if handle is not None:
                        handle.cancel()
        self.emit(events)
        progress = Progress(self.key, offsets, self.node.last_seq)
        with contextlib.suppress(pykka.ActorDeadError):  # the router is stopping
            if self.logged:
                self.sink.tell(AfterLog(self.supervisor, progress))
            else:
                self.supervisor.tell(progress)

    def start_clocks(self, injection_ids: list[str]) -> None:
        """The worker must read each of these within inject_timeout seconds from now."""
        for injection_id in injection_ids:
            self.timers[injection_id] = self.timer.call_later(
                self.inject_timeout, self.actor_ref, InjectTimeout(injection_id)
            )

    def write(self, injections: list[Injection]) -> None:
        """Append injections to the inbox in one write; ack or fail each.

        The timeout clock starts now if the node runs, else when it starts.
        """
        if not injections:
            return
        lines = [
            records.encode_line(records.inbox_injection(i.kind, i.injection_id, i.content)).encode()
            for i in injections
        ]
        try:
            self.transport.append_inbox(self.node.job_id, self.node.node_id, lines)
        except BackendError as exc:
            self.emit(
                [self.node.write_failed(i, exc.code, str(exc), exc.stderr) for i in injections]
            )
            return
        events = []
        for injection in injections:
            events += self.node.written(injection)
        self.emit(events)
        if self.node.state == "running":
            self.start_clocks([i.injection_id for i in injections])

    def deliver(self, record: dict, request_id: Any, ack: str, fields: dict[str, Any]) -> None:
        """Write a record for the running worker (interrupt, approve, steer), then ack it.

        A node that is not running has no turn to act on: the record is not written, and the
        error names the node (``node_gone`` once it has exited).
        """
        if self.node.state != "running":
            code = errors.NODE_GONE if self.node.state == "exited" else errors.INVALID_FIELD
            message = f"node {self.node.node_id} is {self.node.state}: it runs no turn"
            self.emit([self.node.event("error", request_id, error=code, message=message, **fields)])
            return
        line = records.encode_line(record).encode()
        try:
            self.transport.append_inbox(self.node.job_id, self.node.node_id, [line])
        except BackendError as exc:
            self.emit(
                [
                    self.node.event(
                        "error", request_id, error=errors.BACKEND, message=str(exc), **fields
                    )
                ]
            )
            return
        self.emit([self.node.event(ack, request_id, **fields)])
