"""Run the ``codeswarm`` CLI as a user would: a subprocess with a config file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``codeswarm ARGS --config CONFIG``, its output as text; colours off."""
    return subprocess.run(
        [sys.executable, "-m", "codeswarm", *args, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )
