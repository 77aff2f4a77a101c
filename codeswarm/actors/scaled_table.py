"""The SwarmTable's part of ``scale``: jobs added to a swarm and agents removed from it.

Scaling only ever grows a record's ``nodes``, ``allocations`` and ``removed``, so what one
router did is never undone by another's write, and a router following the swarm adopts it.
A removed agent keeps its real state while it drains (its swarm is not ``exited`` while it
still runs); the poll tells its node only that its job has ended (that it is gone), never
that it runs. Removal shows through ``removed``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from codeswarm.actors.messages import NodeGone, NodeRemoved
from codeswarm.hpc import records
from codeswarm.registry import Allocation, SwarmRecord, job_number


def with_scale(base: SwarmRecord, other: SwarmRecord) -> SwarmRecord:
    """``base`` with ``other``'s added jobs and removed agents too: scaling only grows these,
    so a write from an older view never undoes another process's ``scale``."""
    removed = sorted({*base.removed, *other.removed})
    released = {n for n in removed if str(n) in base.last_seqs or str(n) in other.last_seqs}
    known = {a.job_id for a in base.allocations}
    allocations = [*base.allocations, *(a for a in other.allocations if a.job_id not in known)]
    return replace(
        base,
        nodes=max(base.nodes, other.nodes),
        # the latest job covering an agent runs it: both views must agree on the order
        allocations=sorted(allocations, key=lambda a: job_number(a.job_id)),
        removed=removed,
        node_states={**base.node_states, **{str(n): "exited" for n in released}},
    )


class ScaledTable:
    """SwarmTable's scale methods (a mixin: the table's dicts are its own)."""

    records: dict[str, SwarmRecord]
    gone_grace: float
    gone_since: dict[str, float]
    reported: dict[str, str]
    dirty: set[str]
    _update: Any
    touched: Any

    def __init__(self) -> None:
        self.grown: set[str] = set()  # followed jobs another process added agents to

    def _adopt_scale(
        self, mine: SwarmRecord, stored: SwarmRecord, now: float
    ) -> list[tuple[str, Any]]:
        """Agents another process added (to be followed: ``grown``) or removed (told so, the
        removal record already written)."""
        removed = [n for n in stored.removed if n not in mine.removed]
        known = {a.job_id for a in mine.allocations}
        if (
            stored.nodes <= mine.nodes
            and not removed
            and all(a.job_id in known for a in stored.allocations)
        ):
            return []
        record = with_scale(mine, stored)
        added = {str(n): stored.node_state(n) for n in range(mine.nodes, stored.nodes)}
        self.records[mine.job_id] = record
        self._update(record, {**record.node_states, **added}, now)
        if added:
            self.grown.add(mine.job_id)
        return [(records.node_key(mine.job_id, n), NodeRemoved(write=False)) for n in removed]

    def add_allocation(self, job_id: str, allocation: Allocation, now: float) -> SwarmRecord:
        """A job submitted with more agents: they wait for it, pending."""
        record = self.records[job_id]
        record = replace(
            record,
            nodes=max(record.nodes, allocation.first + allocation.count),
            allocations=[*record.allocations, allocation],
        )
        self.records[job_id] = record
        added = {str(n): "pending" for n in range(allocation.first, record.nodes)}
        self._update(record, {**record.node_states, **added}, now)
        self.dirty.add(job_id)
        return self.records[job_id]

    def remove_nodes(self, job_id: str, nodes: tuple[int, ...], now: float) -> SwarmRecord:
        """Agents taken out: they keep their state until they are gone (a removed agent still
        finishing its turn keeps its swarm live, polled and cancelled by ``terminate``)."""
        record = self.records[job_id]
        record = replace(record, removed=sorted({*record.removed, *nodes}))
        self.records[job_id] = record
        self.touched(job_id, now)
        self.dirty.add(job_id)
        return self.records[job_id]

    def release_nodes(self, job_id: str, last_seqs: dict[str, int]) -> None:
        """Removed agents that are gone: no longer followed, their last seqs kept."""
        record = self.records.get(job_id)
        if record is None:
            return
        for node in last_seqs:
            key = records.node_key(job_id, int(node))
            self.gone_since.pop(key, None)
            self.reported.pop(key, None)
        self.records[job_id] = replace(record, last_seqs={**record.last_seqs, **last_seqs})
        self.dirty.add(job_id)

    def _removed_polled(
        self, key: str, state: str, now: float, told: list[tuple[str, Any]]
    ) -> str | None:
        """A removed agent's state for its swarm, or None to keep it: the scheduler's while it
        runs or waits (untold: it takes no more work), ``exited`` once its job has ended (or
        never ran), after the grace, when its node is told it is gone."""
        if state != "exited":
            self.gone_since.pop(key, None)
            return state
        if self.reported.get(key) == "exited":
            return None
        since = self.gone_since.setdefault(key, now)
        if now - since < self.gone_grace:
            return None
        self.reported[key] = "exited"
        told.append((key, NodeGone("its job ended after it was removed")))
        return "exited"
