"""Locate the Codex CLI binary that codeswarm runs.

The repository pins the CLI in package.json (`npm ci` installs it under node_modules/). The
native musl binary is preferred over the `node_modules/.bin/codex` Node wrapper: it starts
faster and leaves no resident Node process per agent.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from codeswarm.errors import CodexNotFoundError

ENV_VAR = "CODESWARM_CODEX"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_ARCHES = {
    "x86_64": ("x64", "x86_64-unknown-linux-musl"),
    "amd64": ("x64", "x86_64-unknown-linux-musl"),
    "aarch64": ("arm64", "aarch64-unknown-linux-musl"),
    "arm64": ("arm64", "aarch64-unknown-linux-musl"),
}


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _native(root: Path) -> Path | None:
    arch = _ARCHES.get(platform.machine().lower())
    if arch is None:
        return None
    pkg, triple = arch
    return root / f"node_modules/@openai/codex-linux-{pkg}/vendor/{triple}/bin/codex"


def find_codex(explicit: str | None = None) -> str:
    """Return the path of the codex binary to run.

    Order: `explicit`, $CODESWARM_CODEX, the native binary under the repository's or the current
    directory's node_modules/, node_modules/.bin/codex, then `codex` on PATH.
    """
    for given, origin in ((explicit, "explicit path"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if given:
            if not _executable(Path(given)):
                raise CodexNotFoundError(f"codex binary from {origin} is not executable: {given}")
            return given
    roots = list(dict.fromkeys([_REPO_ROOT, Path.cwd().resolve()]))
    candidates = [_native(root) for root in roots] + [r / "node_modules/.bin/codex" for r in roots]
    for path in candidates:
        if path is not None and _executable(path):
            return str(path)
    on_path = shutil.which("codex")
    if on_path:
        return on_path
    raise CodexNotFoundError(
        "codex binary not found: run `npm ci` in the codeswarm repository "
        f"({_REPO_ROOT}) to install the pinned @openai/codex, put `codex` on PATH, "
        f"or set {ENV_VAR}=/path/to/codex"
    )
