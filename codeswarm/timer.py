"""One scheduler thread for every timeout in the router, instead of a thread per timer."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from typing import Any

import pykka

COMPACT_AFTER = 64  # cancelled timers tolerated in the heap before it is compacted


class TimerHandle:
    """Returned by ``call_later``; ``cancel()`` stops a timer that has not fired yet."""

    __slots__ = ("cancelled", "timer")

    def __init__(self, timer: Timer) -> None:
        self.cancelled = False
        self.timer = timer

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.timer._cancelled()


class Timer:
    """Tells an actor a message after a delay, from a single daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Any, Any]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._cancelled_count = 0
        self._thread = threading.Thread(target=self._run, name="codeswarm-timer", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, ref: Any, message: Any) -> TimerHandle:
        """After ``delay`` seconds, ``ref.tell(message)`` unless cancelled or the ref is dead."""
        handle = TimerHandle(self)
        entry = (time.monotonic() + delay, next(self._order), handle, ref, message)
        with self._cond:
            heapq.heappush(self._heap, entry)
            # Only a new earliest deadline wakes the thread: a fan-out starts 10,000 clocks
            # of the same length, and each wake-up would cost it the GIL for nothing.
            if self._heap[0] is entry:
                self._cond.notify()
        return handle

    def _cancelled(self) -> None:
        """Drop cancelled timers once they are half the heap.

        Most timers are cancelled long before they are due (an injection's timeout, once the
        worker has read it), and each holds an actor's ref: without this a busy router would
        keep every finished shard message alive until its timeout passed.
        """
        with self._cond:
            self._cancelled_count += 1
            count = self._cancelled_count
            if count > COMPACT_AFTER and 2 * count > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled_count = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, handle, ref, message = heapq.heappop(self._heap)
                if handle.cancelled:
                    self._cancelled_count = max(0, self._cancelled_count - 1)
            if not handle.cancelled:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(message)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)
