"""SupervisorActor: owns the backend and the follower, spawns NodeActors, answers commands."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pykka

from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.follower import FollowerActor
from codeswarm.actors.jobs import JobPollerActor, poll
from codeswarm.actors.messages import (
    CommandReceived,
    Emit,
    FollowerDied,
    FollowerLines,
    Inject,
    Injection,
    InputClosed,
    InterruptNode,
    JobStates,
    NodeGone,
    NodePending,
    NodeRunning,
    Progress,
    SaveCursor,
    Started,
    StartFollower,
    WorkerLines,
)
from codeswarm.actors.node import NodeActor
from codeswarm.backends import Scheduler, Transport
from codeswarm.cursor import CursorStore
from codeswarm.errors import BackendError
from codeswarm.hpc import follower_wire, records
from codeswarm.protocol import commands, errors, make_event
from codeswarm.registry import SwarmRecord, SwarmRegistry
from codeswarm.timer import Timer

log = logging.getLogger(__name__)

FOLLOWER_RESTART_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
CURSOR_SAVE_SECONDS = 0.5
LIVE_STATES = ("pending", "running")


class SupervisorActor(pykka.ThreadingActor):
    def __init__(
        self,
        *,
        transport: Transport,
        scheduler: Scheduler,
        registry: SwarmRegistry,
        cursor: CursorStore,
        sink: Any,
        timer: Timer,
        worker_settings: dict[str, Any],
        inject_timeout: float,
        poll_seconds: float,
        stop_requested: threading.Event,
        follow: str | None = "resume",
        gone_grace: float = 0.0,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.scheduler = scheduler
        self.registry = registry
        self.cursor = cursor
        self.sink = sink
        self.timer = timer
        self.worker_settings = worker_settings
        self.inject_timeout = inject_timeout
        self.poll_seconds = poll_seconds
        self.stop_requested = stop_requested
        self.follow = follow
        self.gone_grace = gone_grace
        self.nodes: dict[str, Any] = {}
        self.swarms: dict[str, SwarmRecord] = {}
        self.gone_since: dict[str, float] = {}
        self.follower: Any = None
        self.poller: Any = None
        self.generation = 0
        self.follower_failures = 0

    # ---- life cycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        for swarm in self.registry.all():
            if not swarm.all_exited():
                self.track(swarm)
        if self.follow is not None:
            self.start_follower()
        self.poller = JobPollerActor.start(
            self.scheduler, self.registry, self.actor_ref, self.timer, self.poll_seconds
        )
        self.timer.call_later(CURSOR_SAVE_SECONDS, self.actor_ref, SaveCursor())

    def on_stop(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        if self.follower is not None:
            self.follower.stop()
        for ref in self.nodes.values():
            ref.stop()
        self.cursor.save()

    def on_failure(self, *exc_info: Any) -> None:
        """A bug reached the top: stop the actors this one owns and let the process end."""
        log.critical("the supervisor failed; stopping the router", exc_info=exc_info)
        self.on_stop()
        self.stop_requested.set()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Started):
            return True
        if isinstance(message, FollowerLines):
            self.route(message)
        elif isinstance(message, Progress):
            self.cursor.advance(message.key, message.offsets, message.last_seq)
        elif isinstance(message, CommandReceived):
            self.command(message.command)
        elif isinstance(message, JobStates):
            self.apply(message)
        elif isinstance(message, SaveCursor):
            self.cursor.save()
            self.timer.call_later(CURSOR_SAVE_SECONDS, self.actor_ref, SaveCursor())
        elif isinstance(message, FollowerDied):
            self.follower_died(message)
        elif isinstance(message, StartFollower):
            self.start_follower()
        elif isinstance(message, InputClosed):
            self.stop_requested.set()

    def emit(self, *events: dict) -> None:
        self.sink.tell(Emit(list(events)))

    # ---- follower ---------------------------------------------------------------------------

    def start_follower(self) -> None:
        self.generation += 1
        jobs = list(self.swarms)
        header = follower_wire.encode_header(self.cursor.offsets, jobs, self.follow == "end")
        self.follower = FollowerActor.start(self.transport, self.actor_ref, self.generation, header)

    def follower_died(self, message: FollowerDied) -> None:
        if message.generation != self.generation:
            return
        self.follower.stop(block=False)
        self.follower = None
        delay = FOLLOWER_RESTART_SECONDS[
            min(self.follower_failures, len(FOLLOWER_RESTART_SECONDS) - 1)
        ]
        self.follower_failures += 1
        log.warning("outbox follower died (%s); restarting in %.1fs", message.reason, delay)
        self.timer.call_later(delay, self.actor_ref, StartFollower())

    def route(self, message: FollowerLines) -> None:
        if message.generation != self.generation:
            return
        self.follower_failures = 0
        batches: dict[str, list[tuple[str, int, bytes]]] = {}
        for key, identity, offset, raw in message.lines:
            batches.setdefault(key, []).append((identity, offset, raw))
        for key, lines in batches.items():
            self.tell_node(key, WorkerLines(lines))

    # ---- swarms and nodes -------------------------------------------------------------------

    def track(self, swarm: SwarmRecord) -> None:
        """Spawn a NodeActor for each node of a swarm (on launch, or on router restart)."""
        self.swarms[swarm.job_id] = swarm
        for node_id in range(swarm.nodes):
            key = records.node_key(swarm.job_id, node_id)
            if key not in self.nodes:
                self.nodes[key] = self.spawn(swarm, node_id)

    def spawn(self, swarm: SwarmRecord, node_id: int) -> Any:
        correlation = NodeCorrelation(
            swarm.swarm_id, swarm.job_id, node_id, swarm.node_state(node_id)
        )
        correlation.last_seq = self.cursor.seqs.get(correlation.key, -1)
        return NodeActor.start(
            correlation,
            self.transport,
            self.sink,
            self.timer,
            self.inject_timeout,
            self.actor_ref,
        )

    def tell_node(self, key: str, message: Any) -> bool:
        """Tell a node's actor; one that died is logged and replaced. False if no such node."""
        ref = self.nodes.get(key)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            job_id, node_id = records.parse_node_key(key)
            log.error("the actor of node %s had died (a bug); starting a new one", key)
            self.nodes[key] = self.spawn(self.swarms[job_id], node_id)
            self.nodes[key].tell(message)
        return True

    def poll_jobs(self) -> None:
        """Poll now, on this thread: status and list answer with fresh states."""
        states = poll(self.scheduler, self.registry)
        if states is not None:
            self.apply(states)

    def apply(self, job_states: JobStates) -> None:
        """Follow the scheduler: nodes that run, that come back (requeue), that are gone."""
        live, states = job_states
        now = time.monotonic()
        for swarm in live:
            nodes = dict(states.get(swarm.job_id, {}))
            for node_id, state in nodes.items():
                key = records.node_key(swarm.job_id, node_id)
                if state != "exited":
                    self.gone_since.pop(key, None)
                    self.tell_node(key, NodeRunning() if state == "running" else NodePending())
                    continue
                since = self.gone_since.setdefault(key, now)
                if now - since < self.gone_grace:
                    nodes[node_id] = swarm.node_state(node_id)
                elif swarm.node_state(node_id) != "exited":
                    self.tell_node(key, NodeGone("the worker process ended"))
            node_states = {str(n): s for n, s in nodes.items()}
            swarm_state = swarm.state
            if swarm.state in LIVE_STATES:
                if nodes and all(s == "exited" for s in nodes.values()):
                    swarm_state = "exited"
                elif any(s == "running" for s in nodes.values()):
                    swarm_state = "running"
            if node_states != swarm.node_states or swarm_state != swarm.state:
                self.registry.update(swarm.swarm_id, node_states=node_states, state=swarm_state)

    # ---- commands ---------------------------------------------------------------------------

    def command(self, command: commands.Command) -> None:
        handler = {
            commands.Inject: self.inject,
            commands.Interrupt: self.interrupt,
            commands.Launch: self.launch,
            commands.ListSwarms: self.list_swarms,
            commands.Status: self.status,
            commands.Terminate: self.terminate,
            commands.Ping: lambda c: self.emit(make_event("pong", request_id=c.request_id)),
            commands.Shutdown: self.shutdown,
        }[type(command)]
        handler(command)

    def error(self, code: str, message: str, request_id: Any, **fields: Any) -> None:
        self.emit(make_event("error", error=code, message=message, request_id=request_id, **fields))

    def backend_error(self, what: str, exc: BackendError, request_id: Any) -> None:
        self.error(errors.BACKEND, f"{what} failed: {exc}", request_id, stderr=exc.stderr or None)

    def known_swarm(self, swarm_id: str, request_id: Any) -> SwarmRecord | None:
        """The registered swarm, or None after telling the client it does not exist."""
        swarm = self.registry.get(swarm_id)
        if swarm is None:
            self.error(errors.UNKNOWN_SWARM, f"no swarm {swarm_id}", request_id, field="swarm_id")
        return swarm

    def resolve(self, command: commands.Inject | commands.Interrupt) -> tuple[Any, list[int]]:
        """The swarm and nodes a targeted command names; an unknown swarm_id is reported."""
        if command.swarm_id is not None:
            swarm = self.known_swarm(command.swarm_id, command.request_id)
        else:
            swarm = self.registry.by_job(command.job_id)
        if command.nodes != "all":
            return swarm, list(command.nodes)
        return swarm, list(range(swarm.nodes)) if swarm else []

    def inject(self, command: commands.Inject) -> None:
        swarm, nodes = self.resolve(command)
        if swarm is None and command.swarm_id is not None:
            return
        if swarm is None and not nodes:
            self.error(
                errors.UNKNOWN_SWARM, f"no job {command.job_id}", command.request_id, field="job_id"
            )
            return
        base = command.injection_id or f"inj-{uuid.uuid4().hex[:12]}"
        longest = base if len(nodes) == 1 else f"{base}-{max(nodes)}"
        problem = records.id_problem(longest)
        if problem:
            self.error(
                errors.INVALID_FIELD,
                f"injection_id {longest!r} {problem}",
                command.request_id,
                field="injection_id",
            )
            return
        job_id = swarm.job_id if swarm else command.job_id
        for node_id in nodes:
            injection_id = base if len(nodes) == 1 else f"{base}-{node_id}"
            key = records.node_key(job_id, node_id)
            injection = Injection(injection_id, command.content, command.request_id)
            if swarm is None or not self.tell_node(key, Inject(injection)):
                self.emit(
                    make_event(
                        "inject_failed",
                        request_id=command.request_id,
                        swarm_id=swarm.swarm_id if swarm else None,
                        job_id=job_id,
                        node_id=node_id,
                        injection_id=injection_id,
                        error=errors.UNKNOWN_TARGET,
                        message=f"no node {key} in any swarm this router knows",
                    )
                )

    def interrupt(self, command: commands.Interrupt) -> None:
        swarm, nodes = self.resolve(command)
        if swarm is None:
            if command.job_id is not None:
                self.error(
                    errors.UNKNOWN_SWARM,
                    f"no job {command.job_id}",
                    command.request_id,
                    field="job_id",
                )
            return
        for node_id in nodes:
            key = records.node_key(swarm.job_id, node_id)
            if not self.tell_node(key, InterruptNode(command.request_id)):
                self.error(
                    errors.INVALID_FIELD,
                    f"no node {node_id} in {swarm.swarm_id}",
                    command.request_id,
                    field="nodes",
                )

    def launch(self, command: commands.Launch) -> None:
        swarm_id = f"sw-{uuid.uuid4().hex[:10]}"
        options = {"time": command.time, "partition": command.partition}
        try:
            submitted = self.scheduler.submit(
                swarm_id, command.nodes, self.worker_settings, **options
            )
        except BackendError as exc:
            self.backend_error("launch", exc, command.request_id)
            return
        swarm = SwarmRecord(
            swarm_id=swarm_id,
            job_id=submitted.job_id,
            backend=self.scheduler.name,
            mailbox=self.registry.mailbox,
            nodes=command.nodes,
            created=round(time.time(), 3),
            state="pending",
            pids=submitted.pids,
        )
        self.registry.put(swarm)
        self.track(swarm)
        self.emit(
            make_event("swarm_launched", request_id=command.request_id, swarm=swarm.to_event())
        )
        if command.prompt:
            self.inject(
                commands.Inject(
                    content=command.prompt,
                    nodes="all",
                    swarm_id=swarm_id,
                    request_id=command.request_id,
                )
            )

    def list_swarms(self, command: commands.ListSwarms) -> None:
        self.poll_jobs()
        swarms = [swarm.to_event() for swarm in self.registry.all()]
        self.emit(make_event("swarm_list", request_id=command.request_id, swarms=swarms))

    def status(self, command: commands.Status) -> None:
        self.poll_jobs()
        swarm = self.known_swarm(command.swarm_id, command.request_id)
        if swarm is None:
            return
        self.emit(make_event("swarm_status", request_id=command.request_id, swarm=swarm.to_event()))

    def terminate(self, command: commands.Terminate) -> None:
        swarm = self.known_swarm(command.swarm_id, command.request_id)
        if swarm is None:
            return
        try:
            self.scheduler.cancel(swarm)
        except BackendError as exc:
            self.backend_error("terminate", exc, command.request_id)
            return
        self.registry.update(swarm.swarm_id, state="terminated")
        self.emit(
            make_event("swarm_terminated", request_id=command.request_id, swarm_id=swarm.swarm_id)
        )

    def shutdown(self, command: commands.Shutdown) -> None:
        self.emit(make_event("shutting_down", request_id=command.request_id))
        self.stop_requested.set()
