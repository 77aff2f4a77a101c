"""The README's shell quick start, run as written: real codex, the stand-in model server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(after: str) -> str:
    """The first fenced block in the README after the line containing ``after``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    match = re.search(r"```\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_readme_shell_quick_start_shows_each_nodes_answer(codex_bin, tmp_path):
    script = readme_block("The same from the shell")
    assert "inject" in script and "--wait" in script
    home = tmp_path / "home"  # the config's ~/.codeswarm paths land here, not in the real home
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1", "CODESWARM_CODEX": codex_bin}
    done = subprocess.run(
        ["bash", "-ec", script + "kill %1\n"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    answers = sorted(line for line in lines if line.startswith("node "))
    assert answers == [
        "node 0: echo: Say hello to the swarm.",
        "node 1: echo: Say hello to the swarm.",
    ]
    assert any(line.startswith("[n1] turn completed") for line in lines)  # from `logs`
