"""The README's main job and the embedding example: codeswarm.demo, run as a user would."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.demo import check_demo_answered

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_demo_runs_a_two_node_swarm_end_to_end(codex_bin):
    done = subprocess.run(
        [sys.executable, "-m", "codeswarm.demo", "Say hello"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    check_demo_answered(done, "Say hello")
