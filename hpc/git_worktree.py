"""Per-node git worktrees of one shared repository: made, reused, read as a diff, retired.

Nodes of a swarm start at once and add worktrees to the same repository; git's own lock
files make all but one of them fail. Every change to the repository's worktree list
happens under a POSIX lock on a file in its git directory (``lockf``, which NFS honours).
Standard library only, Python >= 3.8.
"""

import codecs
import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile

LOCK_NAME = "codeswarm-worktrees.lock"
ERROR_TAIL = 2000
MAX_FILES = 1000
COMMITTER = ["-c", "user.name=codeswarm", "-c", "user.email=codeswarm@localhost"]


class WorktreeError(Exception):
    """A git step failed; the message names the command, the directory and git's stderr."""


def branch_name(swarm_id, node_id):
    return "codeswarm/%s/%d" % (swarm_id, node_id)


def git(cwd, *args, env=None, ok=(0,)):
    """git's stdout; WorktreeError when it exits with a status not in ``ok``."""
    try:
        done = subprocess.run(
            ["git", "-C", cwd, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise WorktreeError("cannot run git: %s" % exc) from exc
    if done.returncode not in ok:
        stderr = done.stderr.decode("utf-8", "replace").strip()[-ERROR_TAIL:]
        raise WorktreeError(
            "git %s failed in %s (exit %d): %s" % (" ".join(args), cwd, done.returncode, stderr)
        )
    return done.stdout.decode("utf-8", "replace")


@contextlib.contextmanager
def repo_lock(repo):
    """Hold the repository's worktree lock (one holder at a time, across hosts)."""
    common = git(repo, "rev-parse", "--git-common-dir").strip()
    with open(os.path.join(repo, common, LOCK_NAME), "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def worktrees(repo):
    """The repository's worktrees: real path -> branch ref (None when detached)."""
    found, path = {}, None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = os.path.realpath(line[len("worktree ") :])
            found[path] = None
        elif line.startswith("branch ") and path is not None:
            found[path] = line[len("branch ") :]
    return found


def ensure(repo, path, branch):
    """Make ``path`` a worktree of ``repo`` on ``branch``, or reuse the one there.

    Returns the branch's base: HEAD when the branch is made here, else its merge base
    with HEAD. A branch that exists already (a pruned node's work) is checked out again.
    """
    with repo_lock(repo):
        git(repo, "worktree", "prune")  # a worktree whose directory was removed: forgotten
        listed = worktrees(repo)
        ref = "refs/heads/" + branch
        real = os.path.realpath(path)
        if real in listed and listed[real] != ref:
            raise WorktreeError("%s is a worktree on %s, not on %s" % (path, listed[real], ref))
        exists = git(repo, "rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).strip()
        if real not in listed:
            if os.path.isdir(path) and os.listdir(path):
                raise WorktreeError(
                    "%s exists and is not empty: cannot make a worktree there" % path
                )
            if exists:
                git(repo, "worktree", "add", path, branch)
            else:
                git(repo, "worktree", "add", "-b", branch, path, "HEAD")
                return git(repo, "rev-parse", ref).strip()
        return git(repo, "merge-base", "HEAD", ref).strip()


def changes(path, base, limit, stat_only):
    """The worktree's changes against ``base``, untracked files included, its index untouched.

    Returns ``{"files": [{"path", "added", "deleted"}], "diff": text, "truncated": bool}``;
    the diff (left out when ``stat_only``) holds at most ``limit`` bytes of git's output
    and a marker saying how much was cut. ``added``/``deleted`` are None for binary files.
    Past ``MAX_FILES`` files, ``files_omitted`` counts the rest.
    """
    scratch = tempfile.mkdtemp(prefix="codeswarm-diff-")
    try:
        env = dict(os.environ, GIT_INDEX_FILE=os.path.join(scratch, "index"))
        git(path, "add", "--all", env=env)
        files = []
        numstat = git(path, "diff", "--cached", "--no-renames", "--numstat", "-z", base, env=env)
        for entry in numstat.split("\0"):
            if entry:
                added, deleted, name = entry.split("\t", 2)
                files.append(
                    {
                        "path": name,
                        "added": None if added == "-" else int(added),
                        "deleted": None if deleted == "-" else int(deleted),
                    }
                )
        result = {"files": files[:MAX_FILES], "truncated": False}
        if len(files) > MAX_FILES:
            result["files_omitted"] = len(files) - MAX_FILES
        if not stat_only:
            argv = ["diff", "--cached", "--no-renames", "--no-color", "--no-ext-diff", base]
            text, total = _bounded(path, argv, env, limit)
            if total > limit:
                text += "\n[codeswarm: diff truncated: %d of %d bytes shown]\n" % (limit, total)
                result["truncated"] = True
            result["diff"] = text
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bounded(cwd, args, env, limit):
    """The first ``limit`` bytes of git's output (cut at a character), and its whole size."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            ["git", "-C", cwd, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        kept = process.stdout.read(limit)
        total = len(kept)
        for chunk in iter(lambda: process.stdout.read(65536), b""):
            total += len(chunk)
        process.stdout.close()
        if process.wait():
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace").strip()[-ERROR_TAIL:]
            raise WorktreeError("git %s failed in %s: %s" % (" ".join(args), cwd, stderr))
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(kept, final=total <= limit), total  # a cut character is left out


def retire(repo, path, branch):
    """Commit what the worktree holds uncommitted to its branch, then remove the worktree.

    The branch stays: it is the node's work. True if there was a worktree to remove.
    """
    with repo_lock(repo):
        if os.path.realpath(path) not in worktrees(repo):
            git(repo, "worktree", "prune")
            return False
        git(path, "add", "--all")
        if git(path, "diff", "--cached", "--name-only").strip():
            message = "codeswarm: work left uncommitted in %s when it was pruned" % branch
            git(path, *COMMITTER, "commit", "--quiet", "--no-verify", "-m", message)
        git(repo, "worktree", "remove", "--force", path)
        return True
