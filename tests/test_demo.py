"""The README's main job and the embedding example: scripts/demo.py, run as a user would."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codeswarm.protocol import event_errors

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_demo_runs_a_two_node_swarm_end_to_end(codex_bin):
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "Say hello"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(event_errors(e) == {} for e in events)
    usage = [e for e in events if e["type"] == "usage"]
    assert sorted(e["node_id"] for e in usage) == [0, 1]
    answers = [e["content"] for e in events if e["type"] == "assistant"]
    assert answers == ["echo: Say hello", "echo: Say hello"]
    kept = done.stderr.strip().rsplit(" ", 1)[-1]
    assert Path(kept).is_dir()
    shutil.rmtree(kept)
