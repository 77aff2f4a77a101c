"""One scheduler thread for every timeout in the router, instead of a thread per timer."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from typing import Any

import pykka


class TimerHandle:
    """Returned by ``call_later``; ``cancel()`` stops a timer that has not fired yet."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    """Tells an actor a message after a delay, from a single daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Any, Any]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="codeswarm-timer", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, ref: Any, message: Any) -> TimerHandle:
        """After ``delay`` seconds, ``ref.tell(message)`` unless cancelled or the ref is dead."""
        handle = TimerHandle()
        with self._cond:
            heapq.heappush(
                self._heap, (time.monotonic() + delay, next(self._order), handle, ref, message)
            )
            self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, handle, ref, message = heapq.heappop(self._heap)
            if not handle.cancelled:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(message)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)
