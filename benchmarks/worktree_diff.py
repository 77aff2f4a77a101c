"""Worktrees and diffs of many nodes on one repository, beside plain git doing less.

- Making 32 worktrees from 32 processes at once under codeswarm's lock, beside
  ``git worktree add`` run one after another (the floor: git's own work, no waiting).
- Reading every node's diff with ``hpc.diff.read_diffs`` (untracked files included, through
  a scratch index), beside ``git diff HEAD`` in each worktree (tracked files only).

Run: .venv/bin/python benchmarks/worktree_diff.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeswarm.hpc import diff, workdir  # noqa: E402

NODES = 32
FILES = 2000


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def make_repo(path: Path) -> None:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for n in range(FILES):
        (path / f"f{n:04d}.py").write_text(f"value = {n}\n" * 20)
    git(path, "add", ".")
    git(path, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "base")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo = base / "repo"
        make_repo(repo)
        started = time.perf_counter()
        for node in range(NODES):
            git(repo, "worktree", "add", "-q", "-b", f"plain/{node}", str(base / f"plain{node}"))
        sequential = time.perf_counter() - started

        mailbox = base / "mailbox"
        (mailbox / "state").mkdir(parents=True)
        code = (
            "import sys; from codeswarm.hpc import workdir as w; a = sys.argv; "
            "w.prepare_worktree(a[1], '1', int(a[2]), a[3], a[4], a[5])"
        )
        argv = [sys.executable, "-c", code, str(mailbox)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [*argv, str(node), str(repo), str(base / f"wt{node}"), f"codeswarm/sw-b/{node}"],
                cwd=ROOT,
            )
            for node in range(NODES)
        ]
        failed = sum(p.wait() != 0 for p in procs)
        concurrent = time.perf_counter() - started
        print(
            f"{NODES} worktrees of {FILES} files each, made at once under the lock: "
            f"{concurrent:6.2f} s ({failed} failed)"
        )
        print(
            f"{NODES} worktrees made one after another by plain git (baseline): {sequential:6.2f} s"
        )

        for node in range(NODES):
            tree = Path(workdir.read_record(str(mailbox), "1", node)["path"])
            for n in range(0, FILES, 100):
                (tree / f"f{n:04d}.py").write_text("changed\n")
            (tree / "new.py").write_text("new\n" * 50)
            plain = base / f"plain{node}"
            for n in range(0, FILES, 100):
                (plain / f"f{n:04d}.py").write_text("changed\n")
        for stat_only in (True, False):
            started = time.perf_counter()
            answers = diff.read_diffs(str(mailbox), "1", list(range(NODES)), stat_only)
            took = time.perf_counter() - started
            size = sum(len(a.get("diff", "")) for a in answers)
            what = "--stat" if stat_only else "full"
            print(f"hpc.diff ({what}) of {NODES} nodes: {took:6.2f} s, {size} bytes of diff")
        started = time.perf_counter()
        for node in range(NODES):
            git(base / f"plain{node}", "diff", "HEAD")
        took = time.perf_counter() - started
        print(f"git diff HEAD in {NODES} worktrees (baseline, no untracked): {took:6.2f} s")


if __name__ == "__main__":
    main()
