"""SupervisorActor: routes follower lines to node shards and answers commands, never waiting.

Everything that can block on the cluster runs elsewhere and comes back as a message: the
scheduler's submit and cancel (SchedulerActor), its poll (JobPollerActor), inbox writes
(NodeShards), the follower's stream (FollowerActor). Here are only decisions (SwarmTable,
NodeCorrelation) and the local state directory (registry, cursor).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pykka

from codeswarm import eventlog
from codeswarm.actors.continuation import Continuations, ContinuingSwarms
from codeswarm.actors.correlation import NodeCorrelation
from codeswarm.actors.diffs import DiffReaderActor
from codeswarm.actors.follower import FollowerActor
from codeswarm.actors.jobs import JobPollerActor, SchedulerActor
from codeswarm.actors.messages import (
    AddNode,
    AgentsAdded,
    AnswerDue,
    Cancel,
    Cancelled,
    CloseLog,
    CommandReceived,
    Continued,
    Emit,
    FollowerDied,
    FollowerLines,
    ForNodes,
    InputClosed,
    Launched,
    LaunchFailed,
    LiveSwarms,
    NodesContinuing,
    NodesDrained,
    NodeStarted,
    Passed,
    Polled,
    PollJobs,
    Progress,
    ReadDiffs,
    RemoveNodes,
    Resubmit,
    Resubmitted,
    Started,
    StartFollower,
    Submit,
    Tick,
    Withdraw,
    WorkerLines,
)
from codeswarm.actors.node import NodeShard
from codeswarm.actors.scaling import Scaling, only_jobs
from codeswarm.actors.steering import ApprovalsActor
from codeswarm.actors.swarms import (
    SwarmTable,
    job_of,
    only_resubmitted,
    restart_tasks,
    written_over,
)
from codeswarm.actors.targeting import NodeTargeting
from codeswarm.backends import Scheduler, Transport
from codeswarm.cursor import CursorStore
from codeswarm.errors import BackendError, RegistryError
from codeswarm.hpc import follower_wire, records
from codeswarm.hpc.follower_wire import LineRecord
from codeswarm.protocol import commands, errors, make_event
from codeswarm.registry import SwarmRecord, SwarmRegistry
from codeswarm.timer import Timer

log = logging.getLogger(__name__)

FOLLOWER_RESTART_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
TICK_SECONDS = 0.5
STOP_SECONDS = 10.0
LOG_CLOCK_MARGIN = 30.0  # seconds before the cursor's save that the log is read back to
FRESH_STATE_SECONDS = 2.0  # status and list wait this long at most for a fresh poll
REGISTRY_SHARE = 0.1  # of the supervisor's time, at most, for the registry writes of its tick
NODE_SHARDS = 4  # actors (threads) sharing every node; more buys nothing on a few cores


class SupervisorActor(NodeTargeting, Scaling, ContinuingSwarms, pykka.ThreadingActor):
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
        log_dir: str | None = None,
        continue_jobs: bool = False,
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
        self.log_dir = log_dir  # where the event log is, when this router writes it
        self.continue_jobs = continue_jobs  # slurm.continue: a job's end may be a continuation
        self.submits_continuations = continue_jobs and cursor.persist
        self.continuations = Continuations()
        # A swarm whose nodes have all exited is released once its outbox was quiet this long.
        self.table = SwarmTable(gone_grace, drain_seconds=gone_grace + TICK_SECONDS)
        self.shards: list[Any] = []
        self.nodes: dict[str, Any] = {}  # node key -> the shard that owns it
        self.next_shard = 0
        self.registry_version: Any = None
        self.registry_problem = ""
        self.registry_due = 0.0  # the monotonic time before which the tick writes no registry
        self.answers: dict[int, commands.Command] = {}
        self.answer_tokens = iter(range(1, 1 << 62))
        self.after_shards: dict[int, tuple[int, dict[str, Any], list[str]]] = {}
        self.follower: Any = None
        self.poller: Any = None
        self.jobs: Any = None
        self.diffs: Any = None
        self.approvals: Any = None
        self.generation = 0
        self.follower_failures = 0

    # ---- life cycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        self.shards = [self.start_shard() for _ in range(NODE_SHARDS)]
        self.refresh_registry()
        if self.follow is not None:
            self.start_follower()
        self.poller = JobPollerActor.start(
            self.scheduler, self.actor_ref, self.timer, self.poll_seconds
        )
        self.tell_live_swarms()
        self.jobs = SchedulerActor.start(self.scheduler, self.actor_ref, self.timer)
        self.diffs = DiffReaderActor.start(self.transport, self.sink)
        self.approvals = ApprovalsActor.start(self.transport, self.sink)
        self.timer.call_later(TICK_SECONDS, self.actor_ref, Tick())

    def on_stop(self) -> None:
        # The scheduler's actors and the readers may be inside a hung call (sbatch waiting on
        # a stopped controller): closing the transport ends that call, then they stop.
        stopping = [
            ref.stop(block=False)
            for ref in (self.jobs, self.poller, self.diffs, self.approvals)
            if ref is not None
        ]
        for ref in (self.follower, *self.shards):
            if ref is not None:
                ref.stop()
        self.nodes.clear()  # the last registry write tells no node anything
        if self.log_dir is not None:
            # The log is written to the end before the cursor is saved and its lock released:
            # the next router must find every event this one sent.
            self.sink.stop()
        self.write_registry()
        try:
            self.cursor.save()
        finally:
            self.cursor.close()
        self.transport.close()
        for future in stopping:
            try:
                future.get(timeout=STOP_SECONDS)
            except pykka.Timeout:
                log.error("a scheduler call did not end within %.0fs of shutdown", STOP_SECONDS)

    def on_failure(self, *exc_info: Any) -> None:
        """A bug reached the top: tell every client, stop what this owns, end the process."""
        log.critical("the supervisor failed; stopping the router", exc_info=exc_info)
        self.emit(
            make_event(
                "error",
                error=errors.INTERNAL,
                message=f"the router failed and is stopping: {exc_info[1]!r} (a bug; see its log)",
            )
        )
        try:
            self.on_stop()
        except Exception:
            log.exception("stopping after the failure failed too")
        finally:
            self.stop_requested.set()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Started):
            return True
        if isinstance(message, FollowerLines):
            self.route(message)
        elif isinstance(message, Progress):
            for key, offsets, last_seq in message.nodes:
                if key in self.nodes:
                    self.cursor.advance(key, offsets, last_seq)
                elif job_of(key) in self.table.followed:  # a removed agent's last batch
                    self.cursor.advance_offsets(offsets)
        elif isinstance(message, NodeStarted):
            by_job: dict[str, dict[int, tuple[str | None, str | None]]] = {}
            for key, host, slurm_node in message.nodes:
                job_id, node_id = records.parse_node_key(key)
                by_job.setdefault(job_id, {})[node_id] = (host, slurm_node)
            for job_id, started in by_job.items():
                self.table.node_started(job_id, started, time.monotonic())
        elif isinstance(message, CommandReceived):
            self.command(message.command)
        elif isinstance(message, Polled):
            self.polled(message)
        elif isinstance(message, Launched):
            self.launched(message)
        elif isinstance(message, LaunchFailed):
            self.backend_error("launch", message.error, message.command.request_id)
        elif isinstance(message, Cancelled):
            self.cancelled(message)
        elif isinstance(message, Resubmitted):
            self.resubmitted(message)
        elif isinstance(message, NodesContinuing):
            self.nodes_continuing(message.keys)
        elif isinstance(message, Continued):
            self.continued(message)
        elif isinstance(message, AgentsAdded):
            self.agents_added(message)
        elif isinstance(message, NodesDrained):
            self.release_nodes(message.nodes)
        elif isinstance(message, Passed):
            self.shard_passed(message.token, failures=message.failures)
        elif isinstance(message, AnswerDue):
            self.answer(message.token)
        elif isinstance(message, Tick):
            self.tick()
        elif isinstance(message, FollowerDied):
            self.follower_died(message)
        elif isinstance(message, StartFollower):
            self.start_follower()
        elif isinstance(message, InputClosed):
            self.stop_requested.set()

    def emit(self, *events: dict) -> None:
        self.sink.tell(Emit(list(events)))

    def tick(self) -> None:
        """Pick up other processes' swarms, release finished ones, and save what changed."""
        now = time.monotonic()
        self.refresh_registry()
        for job_id in self.table.releasable(now):
            self.release(job_id)
        for job_id in self.table.expire_held(now):
            log.warning("dropped the held lines of job %s: no registry has shown it", job_id)
        if now >= self.registry_due:
            # A 10,000-agent swarm's record costs a write a good part of a second, and its
            # agents start over many ticks: the tick's writes take at most REGISTRY_SHARE of
            # this actor's time, so routing goes on. Answers that wait for a write do their own.
            started = time.monotonic()
            self.write_registry()
            self.registry_due = started + (time.monotonic() - started) / REGISTRY_SHARE
        try:
            self.cursor.save()
        except OSError as exc:  # a full or vanished state dir: keep routing, save later
            self.registry_trouble(RegistryError(f"cannot save the cursor: {exc}"))
        self.tell_live_swarms()
        self.timer.call_later(TICK_SECONDS, self.actor_ref, Tick())

    def write_registry_first(self) -> None:
        """The next tick writes the registry before it saves the cursor: last seqs just
        moved from the cursor to a record, and a kill between the two saves must not lose
        them (the next router would send those nodes' events again)."""
        self.registry_due = 0.0

    def tell_live_swarms(self) -> None:
        live = [self.table.records[job] for job in sorted(self.table.followed)]
        self.poller.tell(LiveSwarms([record for record in live if not record.all_exited()]))

    # ---- registry ---------------------------------------------------------------------------

    def refresh_registry(self, force: bool = False) -> None:
        """Take in swarms other processes launched, terminated or pruned, if the file changed."""
        version = self.registry.version()
        if version == self.registry_version and not force:
            return
        try:
            stored = self.registry.all()
        except (RegistryError, OSError) as exc:
            self.registry_trouble(exc)
            return
        self.registry_version = version
        new, _, told = self.table.merge(stored, time.monotonic())
        for record in new:
            self.start_nodes(record)
        for key, message in told:  # array tasks another process restarted, agents removed
            self.tell_node(key, message)
        self.spawn_grown()  # agents another process added
        if told:
            self.tell_live_swarms()  # the next poll asks about their new jobs
        for job_id in list(self.table.held):  # lines of a swarm that ended before we saw it
            record = self.table.get(job_id)
            if record is not None:
                self.start_nodes(record)

    def write_registry(self) -> None:
        """Write every record changed here in one locked read-modify-write."""
        mine = {job_id: self.table.get(job_id) for job_id in self.table.dirty}
        changes = {
            record.swarm_id: (lambda old, m=record: written_over(old, m))
            for record in mine.values()
            if record is not None
        }
        if not changes:
            self.table.dirty.clear()
            return
        try:
            stored, (before, after) = self.registry.update_all(changes)
        except (RegistryError, OSError) as exc:
            self.registry_trouble(exc)
            return
        told = []
        for job_id, record in mine.items():
            answer = stored.get(record.swarm_id) if record else None
            told += self.table.stored(answer, job_id, time.monotonic())
        for key, message in told:  # array tasks another process restarted meanwhile
            self.tell_node(key, message)
        self.spawn_grown()
        if before == self.registry_version:  # nobody else wrote since we read: skip our write
            self.registry_version = after
        self.registry_problem = ""

    def registry_trouble(self, exc: Exception) -> None:
        if str(exc) != self.registry_problem:
            self.registry_problem = str(exc)
            log.error("%s", exc)

    # ---- follower ---------------------------------------------------------------------------

    def start_follower(self) -> None:
        self.generation += 1
        header = follower_wire.encode_header(
            self.cursor.offsets, sorted(self.table.followed), self.follow == "end"
        )
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
        now = time.monotonic()
        batches: dict[str, list[LineRecord]] = {}
        for line in message.lines:  # each as it came: a copy a line costs 10,000 agents
            batches.setdefault(line[0], []).append(line)
        unknown = False
        told: list[tuple[str, Any]] = []
        for key, lines in batches.items():
            job_id = job_of(key)
            if key not in self.nodes and job_id not in self.table.followed:
                record = self.table.get(job_id)
                if record is None:
                    unknown = True
                    if not self.table.hold(key, lines, now):
                        log.warning("dropped lines of %s: too many held for unknown jobs", key)
                    continue
                self.start_nodes(record)  # late lines of a released swarm
            self.table.touched(job_id, now)
            node_id = records.parse_node_key(key)[1]
            if key in self.nodes:
                told.append((key, WorkerLines(lines)))
            elif node_id >= self.table.records[job_id].nodes:
                # an agent another process added, its workers quicker than its registry write
                unknown = True
                if not self.table.hold(key, lines, now):
                    log.warning("dropped lines of %s: too many held for unknown agents", key)
            elif node_id in self.table.records[job_id].removed:
                # late lines of a removed agent already released: read past, not routed
                self.cursor.advance_offsets({ident: offset for _, ident, offset, _ in lines})
            else:
                log.warning("dropped lines of %s: swarm %s has no such node", key, job_id)
        self.tell_nodes_at_once(told)
        if unknown:
            self.refresh_registry(force=True)

    # ---- swarms and nodes -------------------------------------------------------------------

    def start_nodes(self, record: SwarmRecord) -> None:
        """Follow a swarm: its nodes to the shards, then any lines held until it was known."""
        self.table.follow(record, time.monotonic())
        # A removed agent already released (its last seq kept) is not followed again.
        released = {n for n in record.removed if str(n) in record.last_seqs}
        keys = [
            records.node_key(record.job_id, node_id)
            for node_id in range(record.nodes)
            if node_id not in released
        ]
        last_seqs = {key: self.saved_seq(record, key) for key in keys if key not in self.nodes}
        if last_seqs and self.log_dir is not None:
            # What a killed router logged after its last cursor save: not to be sent again.
            logged = eventlog.last_seqs(
                eventlog.swarm_log_dir(self.log_dir, record.swarm_id),
                last_seqs,
                self.cursor.saved_at - LOG_CLOCK_MARGIN,
            )
            for key, seq in logged.items():
                if key in last_seqs:  # the log may name nodes already followed, or none
                    last_seqs[key] = max(seq, last_seqs[key])
        for key, last_seq in last_seqs.items():
            self.nodes[key] = self.spawn(record, records.parse_node_key(key)[1], last_seq)
        for key, lines in self.table.take_held(record.job_id):
            if not self.tell_node(key, WorkerLines(lines)):
                log.warning("dropped held lines of %s: no such node", key)

    def saved_seq(self, record: SwarmRecord, key: str) -> int:
        """The last seq the saved cursor (or a released swarm's record) says was emitted."""
        node_id = records.parse_node_key(key)[1]
        return self.cursor.seqs.get(key, record.last_seqs.get(str(node_id), -1))

    def start_shard(self) -> Any:
        return NodeShard.start(
            self.transport,
            self.sink,
            self.timer,
            self.inject_timeout,
            self.actor_ref,
            logged=self.log_dir is not None,
        )

    def spawn(self, record: SwarmRecord, node_id: int, last_seq: int | None = None) -> Any:
        """Give the node to the next shard in turn; that shard."""
        correlation = NodeCorrelation(
            record.swarm_id, record.job_id, node_id, record.node_state(node_id)
        )
        key = records.node_key(record.job_id, node_id)
        correlation.last_seq = self.saved_seq(record, key) if last_seq is None else last_seq
        correlation.removed = node_id in record.removed  # still draining: a restarted router
        shard = self.shards[self.next_shard % len(self.shards)]
        self.next_shard += 1
        shard.tell(AddNode(correlation))
        return shard

    def release(self, job_id: str) -> None:
        """A finished swarm's actors, timers and cursor entries go; its record stays, final."""
        record = self.table.get(job_id)
        assert record is not None
        leaving: dict[Any, list[str]] = {}
        for node_id in range(record.nodes):
            key = records.node_key(job_id, node_id)
            shard = self.nodes.pop(key, None)
            if shard is not None:
                leaving.setdefault(shard, []).append(key)
        for shard, keys in leaving.items():
            shard.tell(RemoveNodes(keys))
        self.table.release(job_id, self.cursor.forget(job_id))
        self.write_registry_first()
        if self.log_dir is not None:
            self.sink.tell(CloseLog(record.swarm_id))
        log.info("released swarm %s (job %s): every node exited", record.swarm_id, job_id)

    def tell_node(self, key: str, message: Any) -> bool:
        """Tell a node's shard a message for it. False if there is no such node."""
        if key not in self.nodes:
            return False
        self.tell_nodes_at_once([(key, message)])
        return True

    def tell_nodes_at_once(self, items: list[tuple[str, Any]]) -> None:
        """Tell known nodes these (key, message) pairs: one ``ForNodes`` a shard, in order.

        A shard that died (a bug) is logged and replaced, its nodes started afresh.
        """
        by_shard: dict[Any, list[tuple[str, Any]]] = {}
        for item in items:
            by_shard.setdefault(self.nodes[item[0]], []).append(item)
        for shard, told in by_shard.items():
            try:
                shard.tell(ForNodes(told))
            except pykka.ActorDeadError:
                self.replace_shard(shard).tell(ForNodes(told))

    def replace_shard(self, dead: Any) -> Any:
        log.error("a node shard had died (a bug); starting a new one for its nodes")
        shard = self.start_shard()
        self.shards[self.shards.index(dead)] = shard
        for key, owner in list(self.nodes.items()):
            if owner is dead:
                job_id, node_id = records.parse_node_key(key)
                record = self.table.get(job_id)
                assert record is not None
                correlation = NodeCorrelation(
                    record.swarm_id, job_id, node_id, record.node_state(node_id)
                )
                correlation.last_seq = self.saved_seq(record, key)
                correlation.removed = node_id in record.removed
                shard.tell(AddNode(correlation))
                self.nodes[key] = shard
        return shard

    def polled(self, message: Polled) -> None:
        if message.states is not None:
            states = self.hold_continuing(message.states)
            changes = self.table.apply(states, time.monotonic())
            self.tell_nodes_at_once([(key, told) for key, told in changes if key in self.nodes])
        for token in list(self.answers):
            self.answer(token)

    # ---- commands ---------------------------------------------------------------------------

    def command(self, command: commands.Command) -> None:
        handler = {
            commands.Inject: self.inject,
            commands.Interrupt: self.interrupt,
            commands.Approve: self.node_command,
            commands.Steer: self.node_command,
            commands.ListApprovals: self.list_approvals,
            commands.Launch: self.launch,
            commands.ListSwarms: self.wait_for_poll,
            commands.Status: self.wait_for_poll,
            commands.Terminate: self.terminate,
            commands.Restart: self.wait_for_poll,
            commands.Scale: self.scale,
            commands.Ping: lambda c: self.emit(make_event("pong", request_id=c.request_id)),
            commands.Shutdown: self.shutdown,
            commands.Diff: self.diff,
        }.get(type(command))
        if handler is None:
            # A command the protocol knows but no door routes here (subscribe is the
            # ProtocolActor's): a clear error for that client, never a dead router.
            name = type(command).__name__
            self.error(
                errors.UNKNOWN_COMMAND,
                f"the router does not handle {name} commands",
                getattr(command, "request_id", None),
            )
            return
        handler(command)

    def error(self, code: str, message: str, request_id: Any, **fields: Any) -> None:
        self.emit(make_event("error", error=code, message=message, request_id=request_id, **fields))

    def backend_error(self, what: str, exc: Exception, request_id: Any) -> None:
        stderr = exc.stderr if isinstance(exc, BackendError) else ""
        self.error(errors.BACKEND, f"{what} failed: {exc}", request_id, stderr=stderr or None)

    def find_swarm(self, swarm_id: str) -> SwarmRecord | None:
        """The swarm, looking in the registry again if another process just launched it."""
        record = self.table.by_swarm(swarm_id)
        if record is None:
            self.refresh_registry(force=True)
            record = self.table.by_swarm(swarm_id)
        return record

    def known_swarm(self, swarm_id: str, request_id: Any) -> SwarmRecord | None:
        """The swarm, or None after telling the client it does not exist."""
        record = self.find_swarm(swarm_id)
        if record is None:
            self.error(errors.UNKNOWN_SWARM, f"no swarm {swarm_id}", request_id, field="swarm_id")
        return record

    def launch(self, command: commands.Launch) -> None:
        swarm_id = f"sw-{uuid.uuid4().hex[:10]}"
        self.jobs.tell(Submit(command, swarm_id, self.worker_settings))

    def launched(self, message: Launched) -> None:
        command, submitted = message.command, message.submitted
        record = SwarmRecord(
            swarm_id=message.swarm_id,
            job_id=submitted.job_id,
            backend=self.scheduler.name,
            mailbox=self.registry.mailbox,
            nodes=command.nodes * submitted.agents_per_node,
            created=round(time.time(), 3),
            state="pending",
            pids=submitted.pids,
            agents_per_node=submitted.agents_per_node,
            layout=submitted.layout,
            task_agents=submitted.task_agents,
        )
        try:
            self.registry.put(record)
        except RegistryError as exc:
            self.error(errors.BACKEND, f"launched job {record.job_id} but {exc}", None)
        self.start_nodes(record)
        self.emit(
            make_event("swarm_launched", request_id=command.request_id, swarm=record.to_event())
        )
        if command.prompt:
            self.inject(
                commands.Inject(
                    content=command.prompt,
                    nodes="all",
                    swarm_id=record.swarm_id,
                    request_id=command.request_id,
                )
            )

    def wait_for_poll(
        self, command: commands.ListSwarms | commands.Status | commands.Restart
    ) -> None:
        """Answer status, list and restart after a fresh scheduler poll, or sooner if it is
        slow: restart decides which tasks have exited on what the scheduler says now."""
        token = next(self.answer_tokens)
        self.answers[token] = command
        self.tell_live_swarms()
        self.poller.tell(PollJobs(urgent=True))
        self.timer.call_later(FRESH_STATE_SECONDS, self.actor_ref, AnswerDue(token))

    def answer(self, token: int) -> None:
        command = self.answers.pop(token, None)
        if command is None:
            return
        self.refresh_registry()
        if isinstance(command, commands.Restart):
            self.restart(command)
            return
        if isinstance(command, commands.ListSwarms):
            swarms = [self.swarm_event(record) for record in self.table.all()]
            self.emit(make_event("swarm_list", request_id=command.request_id, swarms=swarms))
            return
        record = self.known_swarm(command.swarm_id, command.request_id)
        if record is not None:
            swarm = self.swarm_event(record)
            self.emit(make_event("swarm_status", request_id=command.request_id, swarm=swarm))

    def swarm_event(self, record: SwarmRecord) -> dict[str, Any]:
        """The swarm as status and list show it: with why it waits while it is pending."""
        swarm = record.to_event()
        reason = self.scheduler.pending_reason(record.job_id) if record.state == "pending" else None
        if reason:
            swarm["pending_reason"] = reason
        return swarm

    def terminate(self, command: commands.Terminate) -> None:
        record = self.known_swarm(command.swarm_id, command.request_id)
        if record is None:
            return
        if record.all_exited():  # nothing left to stop (scancel would fail on a gone job)
            self.emit(
                make_event(
                    "swarm_terminated", request_id=command.request_id, swarm_id=record.swarm_id
                )
            )
            return
        self.jobs.tell(Cancel(record, command.request_id))

    def cancelled(self, message: Cancelled) -> None:
        swarm_id = message.swarm.swarm_id
        if message.error is not None:
            self.backend_error("terminate", message.error, message.request_id)
            return
        record = self.table.by_swarm(swarm_id)
        if record is not None:
            self.table.set_state(record.job_id, "terminated")
            self.write_registry()  # before the answer: a CLI exits on it
            # Jobs submitted while the cancel waited its turn, here or by another process
            # (the write merged those into the terminated record): tasks a restart or a
            # continuation resubmitted, jobs of agents added.
            record = self.table.get(record.job_id) or record
            later = {
                int(task): job
                for task, job in record.tasks.items()
                if message.swarm.tasks.get(task) != job
            }
            if later:
                self.jobs.tell(Withdraw(only_resubmitted(record, later)))
            added = [a for a in record.allocations if a not in message.swarm.allocations]
            if added:
                self.jobs.tell(Withdraw(only_jobs(record, added)))
        self.emit(make_event("swarm_terminated", request_id=message.request_id, swarm_id=swarm_id))

    def restart(self, command: commands.Restart) -> None:
        record = self.known_swarm(command.swarm_id, command.request_id)
        if record is None:
            return
        try:
            tasks = restart_tasks(self.table.polled(record.job_id) or record, command.nodes)
        except ValueError as exc:
            self.error(errors.INVALID_FIELD, str(exc), command.request_id, field="nodes")
            return
        self.jobs.tell(Resubmit(record, tasks, command.request_id))

    def resubmitted(self, message: Resubmitted) -> None:
        if message.error is not None:
            self.backend_error("restart", message.error, message.request_id)
            return
        record = self.table.by_swarm(message.swarm.swarm_id)
        if record is None or record.is_final():
            # Terminated, released or pruned while sbatch ran: nobody would follow or stop
            # the new jobs, so they are cancelled.
            self.jobs.tell(Withdraw(only_resubmitted(message.swarm, message.tasks)))
            ended = f"has {record.state}" if record else "was removed"
            jobs = ", ".join(message.tasks.values())
            self.error(
                errors.BACKEND,
                f"swarm {message.swarm.swarm_id} {ended} while its tasks were resubmitted: "
                f"cancelled {jobs}",
                message.request_id,
            )
            return
        for key, told in self.table.resubmitted(record.job_id, message.tasks, time.monotonic()):
            self.tell_node(key, told)
        self.tell_live_swarms()  # the next poll asks about the new jobs
        self.write_registry()
        swarm = self.table.get(record.job_id) or record
        self.emit(make_event("swarm_status", request_id=message.request_id, swarm=swarm.to_event()))

    def diff(self, command: commands.Diff) -> None:
        record = self.known_swarm(command.swarm_id, command.request_id)
        if record is not None:
            self.diffs.tell(ReadDiffs(record, command))

    def shutdown(self, command: commands.Shutdown) -> None:
        self.emit(make_event("shutting_down", request_id=command.request_id))
        self.stop_requested.set()
