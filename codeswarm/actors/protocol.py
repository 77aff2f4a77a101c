"""ProtocolActor: JSON lines in from a stream it is given, events out, one flushed line each.

It holds the connection's subscription: ``subscribe`` is answered here, and every event on its
way out passes the filter, the default one from the first line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import threading
from typing import Any, BinaryIO

import pykka

from codeswarm import eventlog
from codeswarm.actors.messages import Attach, CommandReceived, Emit, InputClosed
from codeswarm.eventlog import LogTail
from codeswarm.protocol import (
    Subscribe,
    Subscription,
    decode_line,
    encode_events,
    error_event,
    errors,
    make_event,
)
from codeswarm.protocol.codec import MAX_LINE_BYTES

log = logging.getLogger(__name__)
READ_SIZE = 1 << 16
REPLAY_BATCH = 1000  # events of a replay read and written at a time


class LineReader:
    """Complete lines from a file descriptor, with a bound on line length and a stop flag."""

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self.fd = fd
        self.stop = stop
        self.buffer = b""
        self.discarding = False
        self.selector: selectors.BaseSelector | None = selectors.DefaultSelector()
        try:
            self.selector.register(fd, selectors.EVENT_READ)
        except PermissionError:
            # A regular file or /dev/null (`codeswarm daemon < commands.jsonl`): reads never
            # block there, so plain reads will do.
            self.selector = None

    def lines(self):
        """Yield each line (bytes, no newline); an over-long line is yielded once as ``None``."""
        while not self.stop.is_set():
            if self.selector is not None and not self.selector.select(timeout=0.2):
                continue
            chunk = os.read(self.fd, READ_SIZE)
            if not chunk:
                if self.buffer and not self.discarding:
                    yield self.buffer
                return
            if self.discarding:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk = chunk[cut + 1 :]
                self.discarding = False
            self.buffer += chunk
            while True:
                cut = self.buffer.find(b"\n")
                if cut < 0:
                    break
                line, self.buffer = self.buffer[:cut], self.buffer[cut + 1 :]
                yield line
            if len(self.buffer) > MAX_LINE_BYTES:
                yield None
                self.buffer = b""
                self.discarding = True


class ProtocolActor(pykka.ThreadingActor):
    """Bridges the client's streams and the supervisor; writes are serialised here."""

    def __init__(self, input_stream: BinaryIO, output_stream: BinaryIO) -> None:
        super().__init__()
        self.input = input_stream
        self.output = output_stream
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.subscription = Subscription()
        self.log_dir: str | None = None
        # swarm id -> the last cursor replayed: live events up to it were sent by the replay.
        self.replayed: dict[str, int] = {}
        # swarm id -> [first, last] cursor this connection has sent live: a replay skips them.
        self.sent: dict[str, list[int]] = {}

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Emit):
            events = self.past_replay(message.events) if self.replayed else message.events
            selected = self.subscription.select(events)
            self.note_sent(selected)
            self.write(selected)
        elif isinstance(message, Subscribe):
            self.subscribe(message)
        elif isinstance(message, Attach):
            self.log_dir = message.log_dir
            self.thread = threading.Thread(
                target=self.read, args=(message.supervisor,), name="protocol-reader", daemon=True
            )
            self.thread.start()

    def subscribe(self, message: Subscribe) -> None:
        """Replay the log if asked, then answer ``subscribed`` at the seam.

        Live events wait in this actor's mailbox meanwhile; those the replay already sent are
        dropped when they come (``past_replay``), and the replay leaves out what this
        connection sent live before it asked: nothing reaches the client twice.
        """
        if message.events is not None:
            self.subscription = Subscription(message.events)
        fields: dict[str, Any] = {}
        if message.since is not None:
            if self.log_dir is None:
                problem = "this router keeps no event log (another router holds the mailbox)"
                error = error_event(
                    errors.INVALID_FIELD, problem, field="since", request_id=message.request_id
                )
                self.write([error])
                return
            directory = eventlog.swarm_log_dir(self.log_dir, message.swarm_id)
            try:
                eventlog.check_since(directory, message.since)
            except ValueError as exc:
                error = error_event(
                    errors.INVALID_FIELD, str(exc), field="since", request_id=message.request_id
                )
                self.write([error])
                return
            tail = LogTail(directory, message.since)
            sent = self.sent.get(message.swarm_id, [0, -1])
            replayed = 0
            events = tail.poll()
            while batch := list(itertools.islice(events, REPLAY_BATCH)):
                fresh = [e for e in batch if not sent[0] <= e["cursor"] <= sent[1]]
                selected = self.subscription.select(fresh)
                replayed += len(selected)
                self.write(selected)
            until = max(tail.seen, message.since.cursor)
            self.replayed[message.swarm_id] = until
            fields = {"swarm_id": message.swarm_id, "replayed": replayed, "replay_until": until}
        answer = make_event(
            "subscribed",
            patterns=list(self.subscription.patterns),
            events=self.subscription.resolved(),
            request_id=message.request_id,
            **fields,
        )
        self.write([answer])

    def note_sent(self, events: list[dict]) -> None:
        """Keep the span of cursors sent live per swarm (they come in order, one by one)."""
        for event in events:
            cursor = event.get("cursor")
            if cursor is not None:
                swarm_id = eventlog.event_swarm(event)
                span = self.sent.get(swarm_id)
                if span is None:
                    self.sent[swarm_id] = [cursor, cursor]
                else:
                    span[1] = cursor

    def past_replay(self, events: list[dict]) -> list[dict]:
        """Leave out what a replay has sent already; a swarm is forgotten once past its seam."""
        kept = []
        for event in events:
            cursor = event.get("cursor")
            if cursor is not None:
                swarm_id = eventlog.event_swarm(event)
                until = self.replayed.get(swarm_id)
                if until is not None:
                    if cursor <= until:
                        continue
                    del self.replayed[swarm_id]
            kept.append(event)
        return kept

    def write(self, events: list[dict]) -> None:
        data, problems = encode_events(events)
        for problem in problems:
            log.error("cannot encode an event for the client, sent an error instead: %s", problem)
        try:
            self.output.write(data)
            self.output.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            log.error("cannot write events to the client: %s", exc)

    def on_stop(self) -> None:
        self.stopping.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def read(self, supervisor: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the router stopped: stop reading
            self.forward(supervisor)

    def forward(self, supervisor: Any) -> None:
        reader = LineReader(self.input.fileno(), self.stopping)
        for line in reader.lines():
            if line is None:
                event = error_event(
                    errors.LINE_TOO_LONG, f"line is longer than {MAX_LINE_BYTES} bytes"
                )
                self.actor_ref.tell(Emit([event]))
                continue
            if not line.strip():
                continue
            result = decode_line(line)
            if isinstance(result, dict):
                self.actor_ref.tell(Emit([result]))
            elif isinstance(result, Subscribe):
                self.actor_ref.tell(result)
            else:
                supervisor.tell(CommandReceived(result))
        if not self.stopping.is_set():
            supervisor.tell(InputClosed())
