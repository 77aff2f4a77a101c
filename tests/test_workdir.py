"""The workdir template and the git worktree helpers, on real git repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeswarm.backends.local import LocalTransport
from codeswarm.hpc import diff, git_worktree, workdir
from codeswarm.hpc import prune as hpc_prune
from codeswarm.hpc.git_worktree import WorktreeError, branch_name
from codeswarm.registry import SwarmRecord
from tests.support.worker import ROOT


def admin(repo: Path, path: Path) -> str:
    return git_worktree.node_dir(str(repo), str(path))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout


def make_repo(path: Path) -> Path:
    """A repository with one commit of ``app.py``."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("print('base')\n")
    git(path, "add", "app.py")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("/w/{swarm_id}/{job_id}_{node_id}", None),
        ("/w/{node}", "has {node}; the fields are"),
        ("/w/{node_id!r}", "with a format"),
        ("/w/{node_id:03d}", "with a format"),
        ("/w/{0}", "has {0}"),
        ("/w/{", "is not a valid template"),
        ("w/{node_id}", "must be an absolute path"),
    ],
)
def test_template_problems(template, problem):
    found = workdir.template_problem(template)
    assert (found is None) if problem is None else (problem in found)


def test_template_expands_every_field():
    path = workdir.expand("/w/{swarm_id}/../x/{job_id}-{node_id}", "sw-1", "77", 3)
    assert path == "/w/x/77-3"


def test_worktrees_are_made_on_their_branches_and_reused(repo, tmp_path):
    paths = [str(tmp_path / "wt" / str(n)) for n in range(3)]
    bases = {
        n: git_worktree.ensure(str(repo), p, branch_name("sw-a", n)) for n, p in enumerate(paths)
    }
    head = git(repo, "rev-parse", "HEAD").strip()
    assert set(bases.values()) == {head}
    listed = git_worktree.worktrees(str(repo))
    for node, path in enumerate(paths):
        assert listed[str(Path(path).resolve())] == f"refs/heads/codeswarm/sw-a/{node}"
    (Path(paths[0]) / "app.py").write_text("print('changed')\n")
    assert git_worktree.ensure(str(repo), paths[0], branch_name("sw-a", 0)) == head
    assert (Path(paths[0]) / "app.py").read_text() == "print('changed')\n"


def test_processes_adding_worktrees_at_once_do_not_race(repo, tmp_path):
    """The lock holds across processes (lockf), as nodes on different hosts are."""
    code = (
        "import sys; from codeswarm.hpc import git_worktree as g; "
        "g.ensure(sys.argv[1], sys.argv[2], sys.argv[3])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(repo), str(tmp_path / f"p{n}"), f"b/{n}"],
            stderr=subprocess.PIPE,
        )
        for n in range(12)
    ]
    assert [(p.wait(), p.stderr.read()) for p in procs] == [(0, b"")] * 12
    assert len(git_worktree.worktrees(str(repo))) == 13


def test_a_path_on_another_branch_or_a_non_empty_directory_is_refused(repo, tmp_path):
    path = str(tmp_path / "wt")
    git_worktree.ensure(str(repo), path, "codeswarm/sw-a/0")
    with pytest.raises(WorktreeError, match="not on refs/heads/codeswarm/sw-b/0"):
        git_worktree.ensure(str(repo), path, "codeswarm/sw-b/0")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(WorktreeError, match="exists and is not empty"):
        git_worktree.ensure(str(repo), str(busy), "codeswarm/sw-c/0")
    with pytest.raises(WorktreeError, match="not a git repository"):
        git_worktree.ensure(str(tmp_path), str(tmp_path / "none"), "b")


def test_changes_cover_edits_and_new_files_and_leave_the_index_alone(repo, tmp_path):
    path = tmp_path / "wt"
    base = git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    (path / "app.py").write_text("print('two')\nprint('three')\n")
    (path / "new.txt").write_text("fresh\n")
    found = git_worktree.changes(admin(repo, path), str(path), base, 1 << 20, stat_only=False)
    assert found["files"] == [
        {"path": "app.py", "added": 2, "deleted": 1},
        {"path": "new.txt", "added": 1, "deleted": 0},
    ]
    assert "+print('three')" in found["diff"] and "+fresh" in found["diff"]
    assert found["truncated"] is False
    assert git(path, "status", "--porcelain") == " M app.py\n?? new.txt\n"
    stat = git_worktree.changes(admin(repo, path), str(path), base, 1 << 20, stat_only=True)
    assert "diff" not in stat and stat["files"] == found["files"]


def test_a_huge_diff_is_cut_with_a_marker(repo, tmp_path):
    path = tmp_path / "wt"
    base = git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    (path / "big.txt").write_text("line of text\n" * 100_000)
    found = git_worktree.changes(admin(repo, path), str(path), base, 1000, stat_only=False)
    assert found["truncated"] is True
    text, marker = found["diff"].split("\n[codeswarm: diff truncated: ")
    assert len(text.encode()) <= 1000
    assert marker.startswith("1000 of ") and int(marker.split()[2]) > 1_300_000


def test_retire_commits_uncommitted_work_keeps_the_branch_and_removes_the_worktree(repo, tmp_path):
    path = tmp_path / "wt"
    git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    (path / "app.py").write_text("print('kept')\n")
    assert git_worktree.retire(str(repo), str(path), "codeswarm/sw-a/0") is True
    assert not path.exists()
    assert git(repo, "show", "codeswarm/sw-a/0:app.py") == "print('kept')\n"
    assert git_worktree.retire(str(repo), str(path), "codeswarm/sw-a/0") is False
    # the node comes back (or a new run of it): its branch is checked out again, work and all
    git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    assert (path / "app.py").read_text() == "print('kept')\n"


def test_read_diffs_reports_each_node_and_keeps_the_first_base(repo, tmp_path):
    mailbox = tmp_path / "mailbox"
    (mailbox / "state").mkdir(parents=True)
    path = str(tmp_path / "wt0")
    first = workdir.prepare_worktree(str(mailbox), "9", 0, str(repo), path, "codeswarm/s/0")
    (repo / "later.txt").write_text("x\n")
    git(repo, "add", "later.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "moves HEAD")
    assert workdir.prepare_worktree(str(mailbox), "9", 0, str(repo), path, "codeswarm/s/0") == (
        first
    )
    Path(path, "app.py").write_text("print('node 0')\n")
    answers = diff.read_diffs(str(mailbox), "9", [0, 1], stat_only=False)
    assert answers[0]["branch"] == "codeswarm/s/0" and answers[0]["base"] == first["base"]
    assert "+print('node 0')" in answers[0]["diff"]
    assert answers[1] == {
        "node_id": 1,
        "error": "node 1 has no git worktree (set agent.repo in the config)",
    }


PY38 = Path.home() / ".pyenv" / "versions" / "3.8.18" / "bin" / "python3.8"
PYTHONS = [sys.executable] + ([str(PY38)] if PY38.exists() else [])


def hpc(python: str, *argv: str, stdin: str = "") -> str:
    done = subprocess.run(
        [python, *argv], input=stdin, capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: "py38" if p == str(PY38) else "py")
def test_diff_then_prune_on_the_cluster_side_keeps_each_nodes_work_on_its_branch(
    repo, tmp_path, python
):
    cluster = tmp_path / "cluster"
    mailbox = cluster / "mailbox"
    (mailbox / "state").mkdir(parents=True)
    trees = [cluster / "workspaces" / f"12_{node}" for node in (0, 1)]
    for node, tree in enumerate(trees):
        code = (
            "import sys; from hpc import workdir as w; a = sys.argv; "
            "w.prepare_worktree(a[1], a[2], int(a[3]), *a[4:])"
        )
        hpc(
            python,
            "-c",
            code,
            str(mailbox),
            "12",
            str(node),
            str(repo),
            str(tree),
            f"codeswarm/sw-12/{node}",
        )
    (trees[0] / "app.py").write_text("print('unfinished')\n")
    (trees[0] / "new.txt").write_text("new\n")
    asked = json.dumps({"job_id": "12", "nodes": [0, 1], "stat": False})
    (zero, one) = json.loads(hpc(python, "-m", "hpc.diff", "--mailbox", str(mailbox), stdin=asked))[
        "nodes"
    ]
    assert "+print('unfinished')" in zero["diff"] and "+new" in zero["diff"]
    assert one["files"] == [] and one["diff"] == ""
    listed = json.dumps([{"swarm_id": "sw-12", "job_id": "12", "nodes": 2}])
    removed = json.loads(
        hpc(python, "-m", "hpc.prune", "--cluster-dir", str(cluster), stdin=listed)
    )["removed"]
    assert removed[:2] == [str(tree) for tree in trees]
    assert str(mailbox / "state" / "12_0.worktree.json") in removed
    assert not any(tree.exists() for tree in trees)
    assert list(git_worktree.worktrees(str(repo))) == [str(repo.resolve())]
    assert git(repo, "show", "codeswarm/sw-12/0:app.py") == "print('unfinished')\n"
    assert git(repo, "show", "codeswarm/sw-12/0:new.txt") == "new\n"
    assert git(repo, "log", "-1", "--format=%an %s", "codeswarm/sw-12/0").startswith(
        "codeswarm codeswarm: work left uncommitted"
    )
    assert git(repo, "rev-parse", "codeswarm/sw-12/1") == git(repo, "rev-parse", "main")


def test_prune_goes_on_when_a_nodes_repository_is_gone(repo, tmp_path):
    cluster = tmp_path / "cluster"
    (cluster / "mailbox" / "state").mkdir(parents=True)
    tree = cluster / "workspaces" / "12_0"
    workdir.prepare_worktree(str(cluster / "mailbox"), "12", 0, str(repo), str(tree), "b/0")
    shutil.rmtree(repo)
    removed = hpc_prune.prune_swarm(str(cluster), "sw-12", "12", 1)
    assert str(tree) in removed and not tree.exists()


def test_a_worktree_removed_by_hand_is_made_again_on_its_branch(repo, tmp_path):
    path = tmp_path / "wt"
    git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    (path / "app.py").write_text("print('committed')\n")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "work")
    shutil.rmtree(path)
    path.mkdir()  # as the worker makes it before asking for the worktree
    git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    assert (path / "app.py").read_text() == "print('committed')\n"


def test_many_files_are_counted_past_the_limit_and_a_cut_never_splits_a_character(
    repo, tmp_path, monkeypatch
):
    path = tmp_path / "wt"
    base = git_worktree.ensure(str(repo), str(path), "codeswarm/sw-a/0")
    for n in range(5):
        (path / f"n{n}.txt").write_text("é" * 400 + "\n")
    monkeypatch.setattr(git_worktree, "MAX_FILES", 3)
    full = git_worktree.changes(admin(repo, path), str(path), base, 1 << 20, stat_only=False)
    assert len(full["files"]) == 3 and full["files_omitted"] == 2
    for limit in range(300, 320):
        cut = git_worktree.changes(admin(repo, path), str(path), base, limit, stat_only=False)
        shown = cut["diff"].split("\n[codeswarm: diff truncated")[0]
        assert "\ufffd" not in shown and full["diff"].startswith(shown)


def node_worktree(repo: Path, tmp_path: Path, job: str = "12", node: int = 0) -> tuple[Path, Path]:
    """The cluster's mailbox and the worktree of node ``node`` of job ``job`` (swarm sw-<job>)."""
    mailbox = tmp_path / "cluster" / "mailbox"
    (mailbox / "state").mkdir(parents=True, exist_ok=True)
    tree = tmp_path / "cluster" / "workspaces" / f"{job}_{node}"
    branch = f"codeswarm/sw-{job}/{node}"
    workdir.prepare_worktree(str(mailbox), job, node, str(repo), str(tree), branch)
    return mailbox, tree


def test_a_same_size_edit_right_after_the_worktree_was_made_is_in_the_diff(repo, tmp_path):
    """git trusts a file's stat unless its index is as new as the file ("racy git"): the diff's
    copy of the index must keep the index's mtime, or such an edit reads as unchanged."""
    mailbox, tree = node_worktree(repo, tmp_path)
    (tree / "app.py").write_text("print('edit')\n")  # the size of print('base'), same second
    time.sleep(1.1)  # a copy of the index made now would look newer than the edit
    (zero,) = diff.read_diffs(str(mailbox), "12", [0], stat_only=False)
    assert "+print('edit')" in zero["diff"], zero


def test_diff_and_prune_never_run_what_a_rewritten_git_file_points_at(repo, tmp_path):
    mailbox, tree = node_worktree(repo, tmp_path)
    (tree / "app.py").write_text("print('work')\n")
    ran = tmp_path / "ran"
    evil = tree / ".evil"
    git(tmp_path, "init", "-q", "--bare", str(evil))
    git(evil, "config", "core.bare", "false")
    git(evil, "config", "core.fsmonitor", f"touch {ran}")
    git(evil, "config", "core.hooksPath", str(tmp_path / "hooks"))
    git(evil, "config", "diff.external", f"touch {ran}")
    (tree / ".git").write_text("gitdir: .evil\n")
    (zero,) = diff.read_diffs(str(mailbox), "12", [0], stat_only=False)
    assert not ran.exists()
    assert "+print('work')" in zero["diff"], zero
    hpc_prune.prune_swarm(str(tmp_path / "cluster"), "sw-12", "12", 1)
    assert not ran.exists()
    assert git(repo, "show", "codeswarm/sw-12/0:app.py") == "print('work')\n"


def test_a_worker_start_leaves_other_worktrees_registered(repo, tmp_path):
    mine = tmp_path / "mine"
    git(repo, "worktree", "add", "-q", "-b", "mine", str(mine))
    mine.rename(tmp_path / "elsewhere")  # not mounted on this node
    node_worktree(repo, tmp_path, node=0)
    (tmp_path / "cluster" / "workspaces" / "12_0").rename(tmp_path / "node-local")
    node_worktree(repo, tmp_path, node=1)
    listed = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {mine}\n" in listed
    assert f"worktree {tmp_path / 'cluster' / 'workspaces' / '12_0'}\n" in listed


@pytest.mark.parametrize("move", [["checkout", "-q", "--detach"], ["checkout", "-q", "-b", "x"]])
def test_a_requeued_node_takes_its_worktree_back_whatever_its_head(repo, tmp_path, move):
    mailbox, tree = node_worktree(repo, tmp_path)
    first = workdir.read_record(str(mailbox), "12", 0)
    git(tree, *move)
    assert node_worktree(repo, tmp_path) == (mailbox, tree)
    assert workdir.read_record(str(mailbox), "12", 0) == first
    with pytest.raises(WorktreeError, match="not on refs/heads/codeswarm/sw-13/0"):
        workdir.prepare_worktree(str(mailbox), "13", 0, str(repo), str(tree), "codeswarm/sw-13/0")


def commit(tree: Path, message: str) -> None:
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message)


def test_prune_keeps_the_work_of_a_detached_head(repo, tmp_path):
    _, ahead = node_worktree(repo, tmp_path, node=0)
    git(ahead, "checkout", "-q", "--detach")
    (ahead / "app.py").write_text("print('ahead')\n")
    _, aside = node_worktree(repo, tmp_path, node=1)
    (aside / "app.py").write_text("print('on the branch')\n")
    commit(aside, "on the branch")
    git(aside, "checkout", "-q", "--detach", "HEAD~1")
    (aside / "app.py").write_text("print('aside')\n")
    hpc_prune.prune_swarm(str(tmp_path / "cluster"), "sw-12", "12", 2)
    assert git(repo, "show", "codeswarm/sw-12/0:app.py") == "print('ahead')\n"
    assert git(repo, "show", "codeswarm/sw-12/1:app.py") == "print('on the branch')\n"
    assert git(repo, "show", "codeswarm/sw-12/1-detached-1:app.py") == "print('aside')\n"


def test_prune_goes_on_past_a_removed_worktree_and_a_failing_one(repo, tmp_path):
    mailbox, gone = node_worktree(repo, tmp_path, job="12")
    _, broken = node_worktree(repo, tmp_path, job="13")
    _, fine = node_worktree(repo, tmp_path, job="14")
    shutil.rmtree(gone)
    (repo / ".git" / "worktrees" / "13_0" / "index").write_text("junk")
    listed = [{"swarm_id": f"sw-{job}", "job_id": job, "nodes": 1} for job in ("12", "13", "14")]
    done = subprocess.run(
        [sys.executable, "-m", "hpc.prune", "--cluster-dir", str(tmp_path / "cluster")],
        input=json.dumps(listed),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    twelve, thirteen, fourteen = (json.loads(line) for line in done.stdout.splitlines())
    assert str(mailbox / "state" / "12_0.worktree.json") in twelve["removed"]
    assert "index" in thirteen["error"] and broken.exists()
    assert (mailbox / "state" / "13_0.worktree.json").exists()
    assert fourteen["removed"][0] == str(fine) and not fine.exists()
    listed_trees = git(repo, "worktree", "list", "--porcelain")
    assert str(gone) not in listed_trees and str(broken) in listed_trees


def test_prune_commits_unsigned_whatever_the_users_config(repo, tmp_path):
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", "false")
    _, tree = node_worktree(repo, tmp_path)
    (tree / "app.py").write_text("print('work')\n")
    hpc_prune.prune_swarm(str(tmp_path / "cluster"), "sw-12", "12", 1)
    assert git(repo, "show", "codeswarm/sw-12/0:app.py") == "print('work')\n"


def test_diff_hashes_only_the_files_changed_since_the_worktrees_index(repo, tmp_path):
    for n in range(20):
        (repo / f"f{n}.txt").write_text(f"{n}\n")
    (repo / ".gitattributes").write_text("*.txt filter=count\n")
    git(repo, "add", ".")
    commit(repo, "files")
    hashed = tmp_path / "hashed"
    git(repo, "config", "filter.count.clean", f"sh -c 'echo \"$1\" >> {hashed}; cat' - %f")
    mailbox, tree = node_worktree(repo, tmp_path)
    past = time.time() - 100
    for path in tree.glob("*.txt"):
        os.utime(path, (past, past))
    git(tree, "update-index", "-q", "--refresh")
    hashed.unlink(missing_ok=True)
    (tree / "f3.txt").write_text("changed\n")
    (zero,) = diff.read_diffs(str(mailbox), "12", [0], stat_only=True)
    assert zero["files"] == [{"path": "f3.txt", "added": 1, "deleted": 1}]
    assert hashed.read_text().split() == ["f3.txt"]


def test_the_local_backend_keeps_a_swarm_whose_worktree_cannot_be_retired(repo, tmp_path):
    mailbox, broken = node_worktree(repo, tmp_path, job="13")
    _, fine = node_worktree(repo, tmp_path, job="14")
    (repo / ".git" / "worktrees" / "13_0" / "index").write_text("junk")
    swarms = [
        SwarmRecord(f"sw-{job}", job, "local", str(mailbox), 1, 0.0, "exited")
        for job in ("13", "14")
    ]
    done = LocalTransport(str(tmp_path / "cluster"), 1.0, 1.0).remove_swarm_files(swarms)
    assert "index" in done["sw-13"].error and done["sw-13"].removed == [] and broken.exists()
    assert done["sw-14"].error is None and done["sw-14"].removed[0] == str(fine)
