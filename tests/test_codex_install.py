"""hpc.codex_install with a stand-in npm: once under a lock, whole or not at all, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.worker import ROOT

FAKE_NPM = """#!/bin/sh
# npm install ... PACKAGE, in the project directory: lays out what @openai/codex installs, slowly
echo "$@" >> "$NPM_CALLS"
[ -n "$NPM_FAIL" ] && { echo "npm ERR! 404 No match for version" >&2; exit 1; }
bin="node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin"
mkdir -p "$bin" && sleep 0.5
printf '#!/bin/sh\\necho codex-cli 0.0.1\\n' > "$bin/codex" && chmod +x "$bin/codex"
"""


def fake_npm(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    calls = tmp_path / "npm-calls"
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "NPM_CALLS": str(calls)}


def install(root: Path, env: dict[str, str], version: str = "0.0.1") -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "hpc.codex_install", "--dir", str(root), "--version", version]
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_installs_run_npm_once_and_agree(tmp_path):
    env = fake_npm(tmp_path)
    root = tmp_path / "codex"
    runs = [install(root, env) for _ in range(3)]
    outputs = [run.communicate(timeout=30) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    (path,) = paths
    assert path.startswith(f"{root}/0.0.1/") and os.access(path, os.X_OK)
    assert len(Path(env["NPM_CALLS"]).read_text().splitlines()) == 1
    assert sorted(p.name for p in root.iterdir()) == [".lock", "0.0.1"]
    assert oct(root.stat().st_mode & 0o777) == "0o700"


def test_without_npm_the_error_says_what_to_do(tmp_path):
    env = {"PATH": str(tmp_path), "NPM_CALLS": str(tmp_path / "calls")}
    out, err = install(tmp_path / "codex", env).communicate(timeout=30)
    assert out == ""
    assert "npm is not on PATH on the login node" in err and "agent.codex_path" in err


def test_a_failed_install_leaves_nothing_behind(tmp_path):
    env = {**fake_npm(tmp_path), "NPM_FAIL": "1"}
    root = tmp_path / "codex"
    run = install(root, env, version="9.9.9")
    _, err = run.communicate(timeout=30)
    assert run.returncode == 2
    assert "npm install @openai/codex@9.9.9 failed: exit 1" in err and "No match" in err
    assert [p.name for p in root.iterdir()] == [".lock"]
