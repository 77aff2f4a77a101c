"""The follower cursor: how far the router has emitted each outbox file, kept across restarts.

It advances only once a NodeActor has emitted a line's events, so a crash loses nothing. It
also keeps each node's last emitted ``seq``, which seeds a restarted router's duplicate filter.
Saved at most twice a second and on shutdown: a crash can replay the events of the last half
second, which a client recognises by (``job_id``, ``node_id``, ``seq``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class CursorStore:
    """Offsets by file identity (``<JOB>_<NODE>:<inode>``) for one mailbox."""

    def __init__(
        self, state_dir: str | os.PathLike[str], mailbox: str, persist: bool = True
    ) -> None:
        digest = hashlib.sha256(mailbox.encode()).hexdigest()[:16]
        self.path = Path(state_dir) / f"cursor-{digest}.json"
        self.persist = persist
        self.offsets: dict[str, int] = {}
        self.seqs: dict[str, int] = {}
        self.dirty = False
        if persist and self.path.exists():
            saved = json.loads(self.path.read_text())
            self.offsets = saved.get("cursor", {})
            self.seqs = saved.get("seqs", {})

    def advance(self, key: str, offsets: dict[str, int], last_seq: int) -> None:
        for identity, offset in offsets.items():
            if offset > self.offsets.get(identity, -1):
                self.offsets[identity] = offset
        self.seqs[key] = max(last_seq, self.seqs.get(key, -1))
        self.dirty = True

    def save(self) -> None:
        if not self.dirty or not self.persist:
            return
        tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps({"cursor": self.offsets, "seqs": self.seqs}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.dirty = False
