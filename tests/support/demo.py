"""What a finished run of the demo (``python -m codeswarm.demo PROMPT``) printed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from codeswarm.protocol import event_errors


def check_demo_answered(done: subprocess.CompletedProcess[str], prompt: str) -> None:
    """Both nodes answered with the echo model and finished; then remove the kept run."""
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(event_errors(e) == {} for e in events)
    usage = [e for e in events if e["type"] == "usage"]
    assert sorted(e["node_id"] for e in usage) == [0, 1]
    answers = [e["content"] for e in events if e["type"] == "assistant"]
    assert answers == [f"echo: {prompt}"] * 2
    kept = done.stderr.strip().rsplit(" ", 1)[-1]
    assert Path(kept).is_dir()
    shutil.rmtree(kept)
