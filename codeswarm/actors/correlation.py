"""One node's injection bookkeeping, as a plain object its NodeShard drives.

It decides, it does not act: each method returns the events to emit and, where the node must be
written to, the injections to write. The actor owns the I/O and the timers. That keeps every
rule here testable without threads.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from codeswarm.actors.messages import Injection
from codeswarm.hpc import records
from codeswarm.protocol import errors, make_event
from codeswarm.protocol.codec import routed

log = logging.getLogger(__name__)

# Where each event puts an injection in its lifecycle; deltas and messages may repeat.
STAGES = {
    "inject_ack": 0,
    "inject_delivered": 1,
    "turn_started": 2,
    "assistant_delta": 3,
    "assistant": 3,
    "turn_complete": 4,
    "usage": 5,
}
FINAL = ("usage", "inject_failed")
CONTINUING = records.EXIT_CONTINUING
RECENT_KEPT = 1000
_REQUIRED = records.OUTBOX_REQUIRED
_decode = records.decode_object


class Open:
    """An injection written to the inbox and not yet finished."""

    __slots__ = ("injection", "stage")

    def __init__(self, injection: Injection) -> None:
        self.injection = injection
        self.stage = 0


class NodeCorrelation:
    """Injection queue and event correlation for one (job_id, node_id)."""

    def __init__(self, swarm_id: str | None, job_id: str, node_id: int, state: str) -> None:
        self.swarm_id = swarm_id
        self.job_id = job_id
        self.node_id = node_id
        self.state = state
        self.key = records.node_key(job_id, node_id)
        self.open: dict[str, Open] = {}
        self.recent: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.last_seq = -1
        self.removed = False  # scale --remove: what it still owes fails as node_removed

    def event(self, kind: str, request_id: Any = None, **fields: Any) -> dict[str, Any]:
        return make_event(
            kind,
            swarm_id=self.swarm_id,
            job_id=self.job_id,
            node_id=self.node_id,
            request_id=request_id,
            **fields,
        )

    def failed(self, injection: Injection, code: str, message: str, **extra: Any) -> dict:
        self._finish(injection.injection_id, injection.request_id)
        return self.event(
            "inject_failed",
            injection.request_id,
            injection_id=injection.injection_id,
            error=code,
            message=message,
            **extra,
        )

    def _finish(self, injection_id: str, request_id: Any) -> None:
        self.open.pop(injection_id, None)
        self.recent[injection_id] = request_id
        while len(self.recent) > RECENT_KEPT:
            self.recent.popitem(last=False)

    # ---- commands ---------------------------------------------------------------------------

    def inject(self, injection: Injection) -> tuple[list[dict], list[Injection]]:
        """Accept an injection: answer it now, or hand it back to be written.

        A pending node's inbox is written too: the worker reads it from the start when it
        runs, so nothing waits in this process's memory (a CLI that exits loses nothing).
        """
        injection_id = injection.injection_id
        if injection_id in self.open or injection_id in self.recent:
            ack = self.event(
                "inject_ack",
                injection.request_id,
                injection_id=injection_id,
                held=self.state == "pending",
                duplicate=True,
            )
            return [ack], []
        if self.state == "exited":
            return [self.failed(injection, errors.NODE_GONE, "the node has exited")], []
        return [], [injection]

    def written(self, injection: Injection) -> list[dict]:
        """The injection is durably in the inbox; ``held`` while the node is not running."""
        self.open[injection.injection_id] = Open(injection)
        held = self.state == "pending"
        return [
            self.event(
                "inject_ack", injection.request_id, injection_id=injection.injection_id, held=held
            )
        ]

    def write_failed(self, injection: Injection, code: str, message: str, stderr: str) -> dict:
        extra = {"stderr": stderr} if stderr else {}
        return self.failed(injection, code, message, **extra)

    def started(self) -> list[str]:
        """The node runs: the injections written while it was not running, whose clocks start.

        A node that exited can run again: Slurm requeues a job after a node failure.
        """
        if self.state == "running":
            return []
        self.state = "running"
        return [
            injection_id
            for injection_id, entry in self.open.items()
            if entry.stage < STAGES["inject_delivered"]
        ]

    def requeued(self) -> None:
        """The node's job is queued again (a Slurm requeue): accept injections, held."""
        if self.state == "exited":
            self.state = "pending"

    def timed_out(self, injection_id: str, seconds: float) -> list[dict]:
        entry = self.open.get(injection_id)
        if entry is None or entry.stage >= STAGES["inject_delivered"]:
            return []
        message = f"the worker did not read the prompt within {seconds:g} s"
        return [self.failed(entry.injection, errors.TIMEOUT, message)]

    def gone(self, reason: str) -> list[dict]:
        """The node exited: every injection it still owed fails with ``node_gone`` (with
        ``node_removed`` once ``scale`` removed it).

        A worker that exited ``continuing`` owes them to its continuation job; only if the
        router does not submit one is the node told it is gone.
        """
        self.state = "exited"
        lost = [entry.injection for entry in self.open.values()]
        if self.removed:
            code, message = errors.NODE_REMOVED, "the node was removed before answering"
        else:
            code, message = errors.NODE_GONE, f"the node exited ({reason}) before answering"
        return [self.failed(injection, code, message) for injection in lost]

    # ---- worker events ----------------------------------------------------------------------

    def worker_line(self, raw: bytes) -> list[dict]:
        """One outbox line as the events to emit (none for a duplicate)."""
        try:
            event = self._parse(raw)
        except records.RecordError as exc:
            return [self._bad_line(raw, str(exc))]
        seq = event["seq"]
        if seq <= self.last_seq:
            return []
        self.last_seq = seq
        kind = event["type"]
        request_id = None
        injection_id = event.get("injection_id")
        if injection_id is not None and kind != "node_started" and kind != "node_exited":
            entry = self.open.get(injection_id)
            if entry is None:
                request_id = self.recent.get(injection_id)
            else:
                request_id = entry.injection.request_id
                stage = STAGES.get(kind)
                if stage is not None and stage != entry.stage:
                    self._check_order(entry, kind, stage)
            if kind in FINAL:
                self._finish(injection_id, request_id)
        if "request_id" in event:  # an approve's or steer's own comes first
            request_id = None
        event = routed(raw, event, self.swarm_id, request_id)
        if kind == "node_exited" and event["reason"] == CONTINUING and not self.removed:
            self.state = "pending"  # its prompts wait, held, for the continuation job
            for entry in self.open.values():  # the cut-short turn runs again from its start
                entry.stage = min(entry.stage, STAGES["inject_delivered"])
            return [event]
        if kind == "node_exited":
            return [event, *self.gone(event["reason"])]
        return [event]

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """``records.parse_outbox_line``, with its id checks skipped for this node's own ids:
        every line of a busy node is checked, and the worker writes the same ids on each."""
        try:
            event = _decode(raw.decode("utf-8"))
        except ValueError:
            return records.parse_outbox_line(raw)  # says what is wrong
        kind = event.get("type") if type(event) is dict else None
        required = _REQUIRED.get(kind) if type(kind) is str else None
        if (
            required is not None
            and event.keys() >= required
            and event["job_id"] == self.job_id
            and type(event["node_id"]) is int
            and event["node_id"] == self.node_id
            and type(event["seq"]) is int
            and event["seq"] >= 0
        ):
            return event
        problem = records.outbox_event_problem(event)
        if problem:
            raise records.RecordError(f"outbox event {problem}")
        return event

    def _check_order(self, entry: Open, kind: str, stage: int) -> None:
        if stage < entry.stage:
            log.warning(
                "%s_%s: %s for %s after stage %d",
                self.job_id,
                self.node_id,
                kind,
                entry.injection.injection_id,
                entry.stage,
            )
        else:
            entry.stage = stage

    def _bad_line(self, raw: bytes, message: str) -> dict:
        return self.event(
            "error",
            error=records.ERROR_WORKER,
            message=message,
            line=raw[:200].decode("utf-8", "replace"),
        )
