"""FollowerActor: owns one outbox follower process and the thread that reads its stream."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import pykka

from codeswarm.actors.messages import FollowerDied, FollowerLines
from codeswarm.backends import FollowerStream, Transport
from codeswarm.hpc.follower_wire import RecordReader

log = logging.getLogger(__name__)
READ_SIZE = 1 << 16


class FollowerActor(pykka.ThreadingActor):
    """Starts the follower with the router's cursor and forwards its lines in batches."""

    def __init__(
        self, transport: Transport, supervisor: Any, generation: int, header: bytes
    ) -> None:
        super().__init__()
        self.transport = transport
        self.supervisor = supervisor
        self.generation = generation
        self.header = header
        self.stream: FollowerStream | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def on_start(self) -> None:
        try:
            self.stream = self.transport.start_follower(self.header)
        except Exception as exc:  # any failure here must lead to a restart
            self.supervisor.tell(FollowerDied(self.generation, f"cannot start: {exc}"))
            return
        self.thread = threading.Thread(
            target=self.read, name=f"follower-reader-{self.generation}", daemon=True
        )
        self.thread.start()

    def on_stop(self) -> None:
        self.stopping.set()
        if self.stream is not None:
            self.stream.close()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def read(self) -> None:
        assert self.stream is not None
        reader = RecordReader()
        reason = "the follower's stream ended"
        try:
            while True:
                chunk = self.stream.read(READ_SIZE)
                if not chunk:
                    break
                lines, problems = reader.feed(chunk)
                if lines:
                    self.supervisor.tell(FollowerLines(self.generation, lines))
                for problem in problems:
                    log.warning("follower: %s", problem)
        except OSError as exc:
            reason = f"reading the follower failed: {exc}"
        except pykka.ActorDeadError:
            return  # the router is shutting down; nobody wants these lines any more
        if not self.stopping.is_set():
            with contextlib.suppress(pykka.ActorDeadError):
                self.supervisor.tell(FollowerDied(self.generation, reason))
