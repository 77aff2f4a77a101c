"""The swarm registry: which swarms exist, on disk, shared by the daemon and the CLI.

One JSON file per state directory, read and replaced under an ``flock`` so that two processes
(a daemon and a CLI call) never lose each other's updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from codeswarm.errors import RegistryError


@dataclass(frozen=True)
class SwarmRecord:
    """One swarm: a scheduler job of ``nodes`` workers and where its mailbox lives."""

    swarm_id: str
    job_id: str
    backend: str
    mailbox: str
    nodes: int
    created: float
    state: str = "pending"
    node_states: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def node_state(self, node_id: int) -> str:
        return self.node_states.get(str(node_id), "pending")

    def all_exited(self) -> bool:
        return all(self.node_state(n) == "exited" for n in range(self.nodes))

    def to_event(self) -> dict[str, Any]:
        """The ``swarm`` object of swarm events (see the protocol's SwarmSchema)."""
        return {
            "swarm_id": self.swarm_id,
            "job_id": self.job_id,
            "backend": self.backend,
            "nodes": [{"node_id": n, "state": self.node_state(n)} for n in range(self.nodes)],
            "state": self.state,
            "created": self.created,
        }


class SwarmRegistry:
    """Swarm records in ``<state_dir>/swarms.json`` for one mailbox (one cluster)."""

    def __init__(self, state_dir: str | os.PathLike[str], mailbox: str) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "swarms.json"
        self.mailbox = mailbox

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        with open(self.dir / "swarms.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
                    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            for value in data.values():
                SwarmRecord(**value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise RegistryError(
                f"{self.path} is damaged ({exc}); move it aside to start with no swarms"
            ) from None
        return data

    def all(self) -> list[SwarmRecord]:
        with self._locked() as data:
            records = [SwarmRecord(**value) for value in data.values()]
        mine = [r for r in records if r.mailbox == self.mailbox]
        return sorted(mine, key=lambda r: r.created)

    def get(self, swarm_id: str) -> SwarmRecord | None:
        with self._locked() as data:
            value = data.get(swarm_id)
        return SwarmRecord(**value) if value and value["mailbox"] == self.mailbox else None

    def by_job(self, job_id: str) -> SwarmRecord | None:
        return next((r for r in self.all() if r.job_id == job_id), None)

    def put(self, record: SwarmRecord) -> None:
        with self._locked() as data:
            data[record.swarm_id] = asdict(record)

    def update(self, swarm_id: str, **changes: Any) -> SwarmRecord | None:
        with self._locked() as data:
            if swarm_id not in data:
                return None
            record = replace(SwarmRecord(**data[swarm_id]), **changes)
            data[swarm_id] = asdict(record)
        return record
