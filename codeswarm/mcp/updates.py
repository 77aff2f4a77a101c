"""Resource-updated notifications: which swarms got events, told to whoever subscribed.

One thread drains the router's event stream (the only reader of ``Codeswarm.events()`` in the
MCP server; ``wait`` and the calls have their own queues) and tells the event loop which
swarms changed, a batch at a time, so a burst of a thousand events is one notification per
swarm rather than a thousand. Both kinds of MCP client are served: a 2026-07-28 client opens a
``subscriptions/listen`` stream (fed through the server's subscription bus), an older one sends
``resources/subscribe`` (remembered here with its session).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated

from codeswarm.errors import CodeswarmError
from codeswarm.protocol.subscription import EVENT_TYPES

log = logging.getLogger(__name__)

# Deltas change nothing a reader of the resources sees in a way worth a notification each.
WATCHED_TYPES = [kind for kind in EVENT_TYPES if not kind.endswith("_delta")]
QUIET_SECONDS = 0.2  # a batch ends after this long without an event...
BATCH_SECONDS = 0.5  # ...or this long after it began, whichever comes first


def swarm_uris(swarm_id: str) -> tuple[str, str]:
    """The resources of one swarm: its state and its recent events."""
    return f"swarm://{swarm_id}", f"swarm://{swarm_id}/events"


class ResourceUpdates:
    """Publishes ``notifications/resources/updated`` for swarms whose events arrive."""

    def __init__(self, swarms: Any) -> None:
        self.swarms = swarms
        self.bus = InMemorySubscriptionBus()
        self.latest: dict[str, int] = {}  # the highest cursor seen live, per swarm
        self._legacy: dict[str, set[Any]] = {}  # uri -> sessions that sent resources/subscribe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, uri: str, session: Any) -> None:
        self._legacy.setdefault(uri, set()).add(session)

    def unsubscribe(self, uri: str, session: Any) -> None:
        self._legacy.get(uri, set()).discard(session)

    def start(self) -> None:
        """Start reading events; call from the event loop that will send the notifications."""
        token = anyio.lowlevel.current_token()
        self.swarms.subscribe(WATCHED_TYPES)
        self._thread = threading.Thread(
            target=self._pump, args=(token,), name="mcp-resource-updates", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _pump(self, token: Any) -> None:
        while not self._stop.is_set():
            try:
                changed = self._batch()
            except CodeswarmError as exc:
                log.error("the router failed; no more resource updates: %s", exc)
                return
            if not changed:
                continue
            try:
                anyio.from_thread.run(self._notify, changed, token=token)
            except RuntimeError:  # the event loop has ended: the server is shutting down
                return

    def _batch(self) -> set[str]:
        """The swarms that got events in one batch (empty after a quiet spell)."""
        changed: set[str] = set()
        began = time.monotonic()
        for event in self.swarms.events(timeout=QUIET_SECONDS):
            swarm_id = event.get("swarm_id")
            if not isinstance(swarm_id, str):
                continue
            changed.add(swarm_id)
            cursor = event.get("cursor")
            if isinstance(cursor, int) and cursor > self.latest.get(swarm_id, 0):
                self.latest[swarm_id] = cursor
            if time.monotonic() - began >= BATCH_SECONDS or self._stop.is_set():
                break
        return changed

    async def _notify(self, changed: set[str]) -> None:
        for swarm_id in sorted(changed):
            for uri in swarm_uris(swarm_id):
                await self.bus.publish(ResourceUpdated(uri=uri))
                for session in list(self._legacy.get(uri, ())):
                    try:
                        await session.send_resource_updated(uri)
                    except Exception as exc:  # a client gone mid-send: forget it
                        log.info("dropping a subscriber of %s: %s", uri, exc)
                        self.unsubscribe(uri, session)
