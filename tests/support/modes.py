"""What the privacy rule (directories 0700, files 0600) finds loose under a directory."""

from __future__ import annotations

import stat
from pathlib import Path


def loose_modes(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every directory under ``root`` (itself too) not 0700, every file not 0600."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink() or path.name in skip:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found.append(f"{oct(mode)} {path}")
    return found
