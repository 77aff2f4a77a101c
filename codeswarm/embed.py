"""Embedding codeswarm in a Python service: the router in-process, no JSON lines.

Example::

    from codeswarm.embed import Codeswarm

    with Codeswarm() as swarms:                  # the built-in local config
        swarm = swarms.launch(nodes=2)
        swarms.inject(swarm["swarm_id"], "Optimize GEMM tiling.", nodes="all")
        for event in swarms.events(timeout=60):
            if event["type"] == "usage":
                ...

Events are the protocol's events as dicts (see docs/protocol.schema.json). The errors it
raises for problems it foresees are ``codeswarm.errors.CodeswarmError`` (see that module).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from codeswarm import eventlog
from codeswarm.actors.messages import CommandReceived, Emit
from codeswarm.answers import AnswerBook
from codeswarm.config import Config, default_local_config
from codeswarm.errors import CommandError, NoAnswerError
from codeswarm.hpc import records
from codeswarm.protocol import Subscription, commands, decode_object, errors
from codeswarm.protocol.codec import error_event
from codeswarm.protocol.since import parse_since
from codeswarm.router import Router

Nodes = int | list[int] | str
# The events that answer a command on one node; an ``error`` naming a node answers it too.
CANCEL_POLL_SECONDS = 0.5  # how soon a cancelled wait notices
MAX_ACKED = 1 << 16  # injections whose ack cursor is remembered for wait
NODE_ANSWERS = ("inject_ack", "inject_failed", "interrupt_ack", "approve_ack", "steer_ack")


class EventQueue:
    """A sink for the router's events: one queue for the caller, plus per-request waiters.

    The caller's queue keeps only the events its subscription wants (so unread deltas it did
    not ask for cost no memory); waiters get every answer. When the router fails, its
    ``internal`` error reaches every waiter at once, and every later call, instead of leaving
    callers blocked until their timeouts.
    """

    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.subscription = Subscription()
        self._waiters: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self._watchers: list[tuple[queue.Queue[dict[str, Any]], str]] = []
        self._lock = threading.Lock()
        self.failure: dict[str, Any] | None = None
        # injection id -> the cursor of its inject_ack: where a wait for it starts reading.
        self.acked: OrderedDict[str, int] = OrderedDict()

    def tell(self, message: Emit) -> None:
        for event in message.events:
            if event["type"] == "inject_ack" and "cursor" in event:
                self.acked[event["injection_id"]] = event["cursor"]
                if len(self.acked) > MAX_ACKED:
                    self.acked.popitem(last=False)
            internal = event["type"] == "error" and event.get("error") == errors.INTERNAL
            with self._lock:
                if internal:
                    self.failure = event  # before any waiter or watcher wakes to look for it
                    waiters = list(self._waiters.values())
                else:
                    waiter = self._waiters.get(event.get("request_id"))
                    waiters = [] if waiter is None else [waiter]
                swarm_id = event.get("swarm_id")
                watchers = [q for q, swarm in self._watchers if internal or swarm == swarm_id]
            for watcher in watchers:
                watcher.put(event)
            for waiter in waiters:
                waiter.put(event)
            if internal or self.subscription.wants(event):
                self.events.put(event)

    def watch(self, swarm_id: str) -> queue.Queue[dict[str, Any]]:
        """A queue of every event of ``swarm_id`` (and a router failure) from now on."""
        watcher: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._watchers.append((watcher, swarm_id))
            if self.failure is not None:
                watcher.put(self.failure)
        return watcher

    def unwatch(self, watcher: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._watchers = [(q, swarm) for q, swarm in self._watchers if q is not watcher]

    def expect(self, request_id: Any) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            waiter = self._waiters.setdefault(request_id, queue.Queue())
            if self.failure is not None:
                waiter.put(self.failure)
            return waiter

    def done(self, request_id: Any) -> None:
        with self._lock:
            self._waiters.pop(request_id, None)


class Codeswarm:
    """The router as a Python object: ``launch``, ``inject``, ``events``, ``close``."""

    def __init__(self, config: Config | None = None, **router: Any) -> None:
        self.sink = EventQueue()
        self.router = Router(config or default_local_config(), self.sink, **router)

    def call(self, command: commands.Command, answer: str, timeout: float = 60.0) -> dict:
        """Send a command and wait for its ``answer`` event.

        Raises CommandError on its ``error`` event, NoAnswerError after ``timeout`` seconds
        without an event.
        """
        waiter = self.sink.expect(command.request_id)
        try:
            self.router.tell(CommandReceived(command))
            return self._await(waiter, answer, timeout)
        finally:
            self.sink.done(command.request_id)

    @staticmethod
    def _await(waiter: queue.Queue[dict[str, Any]], answer: str, timeout: float) -> dict:
        while True:
            event = _next(waiter, timeout)
            if event["type"] == answer:
                return event

    def launch(
        self,
        nodes: int,
        prompt: str | None = None,
        time: str | None = None,
        partition: str | None = None,
        timeout: float = 60.0,
        agents_per_node: int | None = None,
    ) -> dict:
        """Start a swarm; returns its ``swarm`` description (``swarm_id``, ``job_id``, ...).

        It has ``nodes x agents_per_node`` agents (default: the config's
        ``slurm.agents_per_node``), node ids 0..N-1. With a ``prompt``, it returns once the
        prompt is in every agent's inbox. ``time`` and ``partition`` override the config's
        Slurm settings for this swarm.
        """
        command = _command(
            "launch",
            nodes=nodes,
            prompt=prompt,
            time=time,
            partition=partition,
            agents_per_node=agents_per_node,
        )
        waiter = self.sink.expect(command.request_id)
        try:
            self.router.tell(CommandReceived(command))
            swarm = self._await(waiter, "swarm_launched", timeout)["swarm"]
            if prompt:
                self._answers(waiter, len(swarm["nodes"]), timeout)
            return swarm
        finally:
            self.sink.done(command.request_id)

    def inject(
        self,
        swarm_id: str,
        content: str,
        nodes: Nodes = "all",
        injection_id: str | None = None,
    ) -> str:
        """Send a prompt; returns the request_id that every resulting event carries."""
        command = self._inject_command(swarm_id, content, nodes, injection_id)
        self.router.tell(CommandReceived(command))
        return command.request_id

    def inject_and_wait(
        self,
        swarm_id: str,
        content: str,
        nodes: Nodes = "all",
        injection_id: str | None = None,
        timeout: float = 60.0,
    ) -> list[dict]:
        """Send a prompt and return each node's ``inject_ack`` or ``inject_failed``."""
        command = self._inject_command(swarm_id, content, nodes, injection_id)
        return self._per_node(command, swarm_id, nodes, timeout)

    def approvals(self, swarm_id: str, nodes: Nodes = "all", timeout: float = 30.0) -> list[dict]:
        """The pending approval requests of a swarm's nodes (each with its ``node_id``)."""
        command = _command("approvals", swarm_id=swarm_id, nodes=nodes)
        return self.call(command, "approval_list", timeout)["approvals"]

    def approve(
        self,
        swarm_id: str,
        approval_id: str,
        decision: str,
        nodes: Nodes = "all",
        timeout: float = 60.0,
    ) -> list[dict]:
        """Answer ``approval_id`` (accept, accept_for_session or decline) on each node.

        Returns each node's ``approve_ack`` or ``error``; ``approval_resolved`` follows in
        ``events()`` (or an ``unknown_approval`` error from a node that has no such request).
        """
        command = _command(
            "approve", swarm_id=swarm_id, approval_id=approval_id, decision=decision, nodes=nodes
        )
        return self._per_node(command, swarm_id, nodes, timeout)

    def steer(
        self,
        swarm_id: str,
        content: str,
        nodes: Nodes = "all",
        steer_id: str | None = None,
        timeout: float = 60.0,
    ) -> list[dict]:
        """Add input to each node's running turn; returns each node's ``steer_ack`` or
        ``error``. ``steer_applied`` or ``steer_failed`` (no running turn) follow in events."""
        command = _command(
            "steer", swarm_id=swarm_id, content=content, nodes=nodes, steer_id=steer_id
        )
        return self._per_node(command, swarm_id, nodes, timeout)

    def interrupt(self, swarm_id: str, nodes: Nodes = "all", timeout: float = 60.0) -> list[dict]:
        """Stop each node's running turn; returns each node's ``interrupt_ack`` or ``error``."""
        command = _command("interrupt", swarm_id=swarm_id, nodes=nodes)
        return self._per_node(command, swarm_id, nodes, timeout)

    def review(
        self,
        swarm_id: str,
        nodes: Nodes = "all",
        instructions: str | None = None,
        injection_id: str | None = None,
        timeout: float = 60.0,
    ) -> list[dict]:
        """Queue a review of each node's working tree (its findings come in an
        ``item_completed`` of kind ``review``); returns each node's ``inject_ack`` or
        ``inject_failed``."""
        command = _command(
            "review",
            swarm_id=swarm_id,
            nodes=nodes,
            instructions=instructions,
            injection_id=injection_id,
        )
        return self._per_node(command, swarm_id, nodes, timeout)

    def compact(self, swarm_id: str, nodes: Nodes = "all", timeout: float = 60.0) -> list[dict]:
        """Queue a compaction of each node's thread; returns each node's ``inject_ack`` or
        ``inject_failed``."""
        command = _command("compact", swarm_id=swarm_id, nodes=nodes)
        return self._per_node(command, swarm_id, nodes, timeout)

    def _per_node(
        self, command: commands.Command, swarm_id: str, nodes: Nodes, timeout: float
    ) -> list[dict]:
        """Send a command aimed at nodes and return one answer per node, by node."""
        if nodes == "all":
            count = len(self.status(swarm_id, timeout)["nodes"])
        else:
            count = 1 if isinstance(nodes, int) else len(nodes)
        waiter = self.sink.expect(command.request_id)
        try:
            self.router.tell(CommandReceived(command))
            return self._answers(waiter, count, timeout)
        finally:
            self.sink.done(command.request_id)

    @staticmethod
    def _inject_command(
        swarm_id: str, content: str, nodes: Nodes, injection_id: str | None
    ) -> commands.Inject:
        return _command(
            "inject", swarm_id=swarm_id, content=content, nodes=nodes, injection_id=injection_id
        )

    @staticmethod
    def _answers(waiter: queue.Queue[dict[str, Any]], count: int, timeout: float) -> list[dict]:
        """The first answer of each node (an ``error`` naming a node is its answer)."""
        answers: dict[int, dict] = {}
        while len(answers) < count:
            event = _next(waiter, timeout, per_node=True)
            if event["type"] in NODE_ANSWERS or event["type"] == "error":
                answers.setdefault(event["node_id"], event)
        return [answers[node_id] for node_id in sorted(answers)]

    def list(self, timeout: float = 30.0) -> list[dict]:
        command = _command("list")
        return self.call(command, "swarm_list", timeout)["swarms"]

    def status(self, swarm_id: str, timeout: float = 30.0) -> dict:
        command = _command("status", swarm_id=swarm_id)
        return self.call(command, "swarm_status", timeout)["swarm"]

    def restart(self, swarm_id: str, nodes: Nodes, timeout: float = 150.0) -> dict:
        """Resubmit, alone, the job-array tasks of these agents (they must have exited).

        Returns the swarm as ``status`` does, each restarted agent ``pending`` in its new
        ``slurm_job``; prompts sent to them meanwhile are held until they start.
        """
        command = _command("restart", swarm_id=swarm_id, nodes=nodes)
        return self.call(command, "swarm_status", timeout)["swarm"]

    def scale(
        self,
        swarm_id: str,
        add: int | None = None,
        remove: Iterable[int] | None = None,
        timeout: float = 150.0,
    ) -> dict:
        """Grow the swarm by ``add`` nodes of agents, or drain and stop the agents ``remove``
        (give one of the two).

        Added agents take the next node ids, in a job of their own (``slurm_job``), pending
        until it starts; prompts to them are held meanwhile. A removed agent finishes its
        running turn; what it had queued fails with ``node_removed``, as does anything sent
        to it later. Returns the swarm as ``status`` does.
        """
        fields: dict[str, Any] = {"add": add} if add is not None else {}
        if remove is not None:
            fields["remove"] = list(remove)
        command = _command("scale", swarm_id=swarm_id, **fields)
        return self.call(command, "swarm_status", timeout)["swarm"]

    def terminate(self, swarm_id: str, timeout: float = 30.0) -> None:
        command = _command("terminate", swarm_id=swarm_id)
        self.call(command, "swarm_terminated", timeout)

    def diff(
        self,
        swarm_id: str,
        nodes: int | list[int] | str = "all",
        stat: bool = False,
        timeout: float = 120.0,
    ) -> list[dict]:
        """Each node's changes in its git worktree (``agent.repo``) against the commit its
        branch started from: the ``nodes`` of a ``swarm_diff`` event. With ``stat`` only the
        changed files and their line counts. A node without a worktree has an ``error``."""
        command = _command("diff", swarm_id=swarm_id, nodes=nodes, stat=stat)
        return self.call(command, "swarm_diff", timeout)["nodes"]

    def subscribe(self, types: Iterable[str]) -> list[str]:
        """Receive from ``events()`` only these event types or globs; returns the known types
        they select. Answers to commands come whatever the subscription (see
        ``codeswarm.protocol.subscription``); the default leaves out command and reasoning
        deltas.

        Raises CommandError (``invalid_field``) for a pattern that matches no event type.
        """
        command = _command("subscribe", events=[types] if isinstance(types, str) else list(types))
        self.sink.subscription = Subscription(command.events)
        return self.sink.subscription.resolved()

    def events(
        self,
        timeout: float | None = None,
        types: Iterable[str] | None = None,
        swarm_id: str | None = None,
        since: int | float | str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every subscribed event, in order; ends when ``timeout`` seconds pass without one.

        ``types`` subscribes at once (see ``subscribe``). ``swarm_id`` keeps that swarm's
        events only; with ``since`` (a cursor, ``"start"``, an ISO-8601 time or a float of
        epoch seconds) they begin with what its event log holds after that point, then go on
        live with no gap and no repeat. Iterating raises CommandError once the router has
        failed (after the events before it).
        """
        if types is not None:
            self.subscribe(types)
        if since is None:
            return self._stream(timeout, swarm_id, None)
        if swarm_id is None:
            raise CommandError(_invalid("since", "since needs the swarm_id whose log to read"))
        return self._stream(timeout, swarm_id, self._tail(swarm_id, since))

    def history(
        self,
        swarm_id: str,
        since: int | float | str | None = None,
        nodes: Iterable[int] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """A swarm's logged events after ``since`` (default: all), oldest first, at most
        ``limit``; only ``nodes``' if given. Each carries its ``cursor``: pass the last one
        as ``since`` to read the next page."""
        tail = self._tail(swarm_id, "start" if since is None else since)
        wanted = None if nodes is None else set(nodes)
        found = (e for e in tail.poll() if wanted is None or e.get("node_id") in wanted)
        return list(itertools.islice(found, limit))

    def wait(
        self,
        swarm_id: str,
        injection_ids: Iterable[str],
        timeout: float,
        on_answer: Callable[[dict[str, Any]], None] | None = None,
        since: int | float | str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[dict[str, Any]]:
        """Block until each injection (one node each) has finished, or ``timeout`` seconds.

        Returns one answer per id, in order: ``injection_id``, ``node_id``, ``status``
        (``completed``, ``interrupted``, ``failed``, or ``pending`` at the timeout),
        ``message`` (the node's final assistant message), ``error`` (a code) and ``detail``.
        ``on_answer`` is called with each answer as it completes, ``on_event`` with each event
        of these injections. Injections that finished before the call are found in the event
        log, read from ``since``: by default from their acks when this object saw them, else
        from the log's start. Setting ``cancel`` ends the wait early.
        """
        book = AnswerBook(injection_ids)
        if since is None:
            acks = [self.sink.acked.get(i) for i in book.answers]
            known = [cursor for cursor in acks if cursor is not None]
            since = min(known) - 1 if known and len(known) == len(acks) else "start"

        watcher = self.sink.watch(swarm_id)  # before reading the log: later events come here
        try:
            until = 0
            if self.router.log_dir is not None:
                tail = self._tail(swarm_id, since)
                for event in tail.poll():
                    book.take(event, on_answer, on_event)
                until = tail.seen
            deadline = time.monotonic() + timeout
            while not book.done() and not (cancel is not None and cancel.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    event = watcher.get(timeout=min(left, CANCEL_POLL_SECONDS))
                except queue.Empty:
                    continue
                if event is self.sink.failure:
                    raise CommandError(event)
                if event.get("cursor", until + 1) > until:
                    book.take(event, on_answer, on_event)
        finally:
            self.sink.unwatch(watcher)
        return book.results()

    def _tail(self, swarm_id: str, since: int | float | str) -> eventlog.LogTail:
        if self.router.log_dir is None:
            problem = "this router keeps no event log: another router holds the mailbox"
            raise CommandError(_invalid("since", problem))
        try:
            start = parse_since(since)
        except ValueError as exc:
            raise CommandError(_invalid("since", str(exc))) from None
        if records.id_problem(swarm_id) is not None:
            raise CommandError(_invalid("swarm_id", f"{swarm_id!r} is not a swarm id"))
        directory = eventlog.swarm_log_dir(self.router.log_dir, swarm_id)
        try:
            eventlog.check_since(directory, start)
        except ValueError as exc:
            raise CommandError(_invalid("since", str(exc))) from None
        return eventlog.LogTail(directory, start)

    def _stream(
        self, timeout: float | None, swarm_id: str | None, replay: eventlog.LogTail | None
    ) -> Iterator[dict[str, Any]]:
        until = 0
        if replay is not None:
            for event in replay.poll():
                if self.sink.subscription.wants(event):
                    yield event
            until = max(replay.seen, replay.since.cursor)
        while True:
            if self.sink.failure is not None and self.sink.events.empty():
                raise CommandError(self.sink.failure)
            try:
                event = self.sink.events.get(timeout=timeout)
            except queue.Empty:
                return
            if event is self.sink.failure:
                raise CommandError(event)
            if swarm_id is not None:
                if eventlog.event_swarm(event) != swarm_id:
                    continue
                if event.get("cursor", until + 1) <= until:
                    continue  # the replay had it
            if self.sink.subscription.wants(event):  # queued before a narrower subscribe
                yield event

    def close(self) -> None:
        self.router.stop()

    def __enter__(self) -> Codeswarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _invalid(field: str, message: str) -> dict[str, Any]:
    return error_event(errors.INVALID_FIELD, message, field=field)


def _next(
    waiter: queue.Queue[dict[str, Any]], timeout: float, per_node: bool = False
) -> dict[str, Any]:
    """The next event answering a command; CommandError if it is an ``error`` (``per_node``:
    one that names no node)."""
    try:
        event = waiter.get(timeout=timeout)
    except queue.Empty:
        message = f"no answer from the router in {timeout:g} s; the command may still take effect"
        raise NoAnswerError(message) from None
    if event["type"] == "error" and not (per_node and "node_id" in event):
        raise CommandError(event)
    return event


def _command(verb: str, **fields: Any) -> Any:
    """A command checked by the protocol's own schemas, exactly as a JSON line would be."""
    data = {"command": verb, "request_id": f"py-{uuid.uuid4().hex[:12]}"}
    data.update((key, value) for key, value in fields.items() if value is not None)
    result = decode_object(data)
    if isinstance(result, dict):
        raise CommandError(result)
    return result
