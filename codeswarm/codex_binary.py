"""Locate the Codex CLI binary that codeswarm runs.

The repository pins the CLI in package.json (`npm ci` installs it under node_modules/). The
native musl binary is preferred over the `node_modules/.bin/codex` Node wrapper: it starts
faster and leaves no resident Node process per agent. An installed wheel carries no codex:
there it comes from $CODESWARM_CODEX, the current directory's node_modules/, or PATH.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from codeswarm.errors import CodexNotFoundError

ENV_VAR = "CODESWARM_CODEX"
_ARCHES = {
    "x86_64": ("x64", "x86_64-unknown-linux-musl"),
    "amd64": ("x64", "x86_64-unknown-linux-musl"),
    "aarch64": ("arm64", "aarch64-unknown-linux-musl"),
    "arm64": ("arm64", "aarch64-unknown-linux-musl"),
}


def _source_checkout() -> Path | None:
    """The repository codeswarm runs from (an editable install), or None for an installed wheel.

    Only a checkout has the pin: package.json beside the package. A wheel's parent directory is
    site-packages, whose node_modules/ would be nobody's.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / "package.json").is_file() else None


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

    Order: `explicit`, $CODESWARM_CODEX, the native binary under the source checkout's or the
    current directory's node_modules/, node_modules/.bin/codex, then `codex` on PATH.
    """
    for given, origin in ((explicit, "explicit path"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if given:
            if not _executable(Path(given)):
                raise CodexNotFoundError(f"codex binary from {origin} is not executable: {given}")
            return given
    checkout = _source_checkout()
    roots = list(dict.fromkeys(root for root in (checkout, Path.cwd().resolve()) if root))
    candidates = [_native(root) for root in roots] + [r / "node_modules/.bin/codex" for r in roots]
    for path in candidates:
        if path is not None and _executable(path):
            return str(path)
    on_path = shutil.which("codex")
    if on_path:
        return on_path
    if checkout:
        hint = (
            f"run `npm ci` in the codeswarm repository ({checkout}) to install the pinned "
            "@openai/codex, put `codex` on PATH,"
        )
    else:
        hint = "install the Codex CLI so that `codex` is on PATH (`npm install -g @openai/codex`),"
    raise CodexNotFoundError(f"codex binary not found: {hint} or set {ENV_VAR}=/path/to/codex")
