"""The follower cursor: how far the router has read each outbox file, kept across restarts.

Saved at most twice a second and on shutdown. A restart may replay the lines read since the
last save; NodeActors drop them by ``seq``, so nothing is emitted twice and nothing is lost.
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
        self.dirty = False
        if persist and self.path.exists():
            self.offsets = json.loads(self.path.read_text()).get("cursor", {})

    def advance(self, identity: str, offset: int) -> None:
        if offset > self.offsets.get(identity, -1):
            self.offsets[identity] = offset
            self.dirty = True

    def save(self) -> None:
        if not self.dirty or not self.persist:
            return
        tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps({"cursor": self.offsets}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.dirty = False
