"""The follower cursor: how far the router has emitted each outbox file, kept across restarts.

It advances only once a NodeShard has emitted a line's events, so a crash loses nothing. It
also keeps each node's last emitted ``seq``, which seeds a restarted router's duplicate filter.
Saved at most twice a second and on shutdown: after a crash the follower reads up to half a
second of lines again, and the event log (``codeswarm.eventlog.last_seqs``) tells the new
router which of them it had already emitted. A released swarm's
entries are forgotten, so the cursor (and the follower header built from it) holds only the
swarms still being followed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from codeswarm.errors import MailboxBusyError, RegistryError
from codeswarm.hpc import follower_wire
from codeswarm.hpc.private import private_file


class CursorStore:
    """Offsets by file identity (``<JOB>_<NODE>:<inode>``) for one mailbox.

    A store that persists holds a lock beside its file while it is open: two routers saving
    one cursor would each skip the events the other had emitted.
    """

    def __init__(
        self, state_dir: str | os.PathLike[str], mailbox: str, persist: bool = True
    ) -> None:
        digest = hashlib.sha256(mailbox.encode()).hexdigest()[:16]
        self.path = Path(state_dir) / f"cursor-{digest}.json"
        self.persist = persist
        self.offsets: dict[str, int] = {}
        self.seqs: dict[str, int] = {}
        self.dirty = False
        self.saved_at = 0.0  # when the cursor read at start was saved (0: never)
        self._lock: int | None = None
        if persist:
            self._lock = self._take_lock(Path(state_dir) / f"cursor-{digest}.lock")
            if self.path.exists():
                try:
                    self.saved_at = self.path.stat().st_mtime
                    self.offsets, self.seqs = self._load()
                except RegistryError:
                    self.close()
                    raise

    def _take_lock(self, path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MailboxBusyError(
                f"another router (pid {holder}) follows this mailbox with state in "
                f"{path.parent}; stop it (one daemon per cluster), or give this one its own "
                "router.state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def close(self) -> None:
        """Release the lock; the store saves nothing more."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self.persist = False

    def _load(self) -> tuple[dict[str, int], dict[str, int]]:
        try:
            saved = json.loads(self.path.read_text())
            offsets, seqs = saved.get("cursor", {}), saved.get("seqs", {})
            for name, table in (("cursor", offsets), ("seqs", seqs)):
                if not isinstance(table, dict) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in table.values()
                ):
                    raise ValueError(f"{name} is not an object of integers")
            # what the follower will be sent must be what it accepts
            follower_wire.parse_header(follower_wire.encode_header(offsets, [], False))
        except (ValueError, AttributeError) as exc:
            raise RegistryError(
                f"{self.path} is damaged ({exc}); move it aside to replay every swarm's "
                "events from the start (clients drop repeats by job_id, node_id and seq)"
            ) from None
        return offsets, seqs

    def advance(self, key: str, offsets: dict[str, int], last_seq: int) -> None:
        self.advance_offsets(offsets)
        self.seqs[key] = max(last_seq, self.seqs.get(key, -1))

    def advance_offsets(self, offsets: dict[str, int]) -> None:
        """Read past these outbox lines (a released agent's: not routed, not read again)."""
        for identity, offset in offsets.items():
            if offset > self.offsets.get(identity, -1):
                self.offsets[identity] = offset
        self.dirty = True

    def forget(self, job_id: str) -> dict[str, int]:
        """Drop a job's entries; returns its nodes' last seqs (node id as text -> seq)."""
        last_seqs = {}
        for key in list(self.seqs):
            job, _, node = key.rpartition("_")
            if job == job_id:
                last_seqs[node] = self.seqs.pop(key)
        for identity in list(self.offsets):
            if identity.rpartition(":")[0].rpartition("_")[0] == job_id:
                del self.offsets[identity]
        self.dirty = True
        return last_seqs

    def forget_node(self, key: str) -> int:
        """Drop one node's seq (a removed agent); returns it (-1: none). Its outbox offsets
        stay until ``forget`` drops its swarm's: without them the follower would read its
        whole outbox again on every restart."""
        self.dirty = True
        return self.seqs.pop(key, -1)

    def save(self) -> None:
        if not self.dirty or not self.persist:
            return
        tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
        with open(tmp, "w", opener=private_file) as out:
            out.write(json.dumps({"cursor": self.offsets, "seqs": self.seqs}))
        os.replace(tmp, self.path)
        self.dirty = False
