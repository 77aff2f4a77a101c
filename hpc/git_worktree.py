"""Per-node git worktrees of one shared repository: made, reused, read as a diff, retired.

Nodes of a swarm start at once and add worktrees to the same repository; git's own lock
files make all but one of them fail. Every change to the repository's worktree list
happens under a POSIX lock on a file in its git directory (``lockf``, which NFS honours).

A worktree is its agent's to change, ``.git`` file included, and ``diff`` and ``prune`` run
on the login node: git there is always given the worktree's git directory as the repository
records it (``node_git``), with fsmonitor and hooks off. Standard library only, Python >= 3.8.
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
SAFE = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]


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


def common_dir(repo):
    """The repository's git directory shared by its worktrees, as an absolute real path."""
    common = git(repo, "rev-parse", "--git-common-dir").strip()
    return os.path.realpath(os.path.join(repo, common))


@contextlib.contextmanager
def repo_lock(repo):
    """Hold the repository's worktree lock (one holder at a time, across hosts)."""
    with open(os.path.join(common_dir(repo), LOCK_NAME), "a") as f:
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


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def entries(repo):
    """The repository's linked worktrees as git records them in its own directory.

    ``{admin dir: (real path of the worktree, HEAD file's text)}``, read from
    ``<common dir>/worktrees/<name>/{gitdir,HEAD}``: nothing in a worktree is read or run.
    """
    admin_root = os.path.join(common_dir(repo), "worktrees")
    try:
        names = sorted(os.listdir(admin_root))
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        admin = os.path.join(admin_root, name)
        gitdir = _read(os.path.join(admin, "gitdir"))
        if gitdir:
            where = os.path.realpath(os.path.dirname(os.path.join(admin, gitdir)))
            found[admin] = (where, _read(os.path.join(admin, "HEAD")))
    return found


def locate(repo, path):
    """The admin directory (``<common dir>/worktrees/<name>``) of the worktree at ``path``,
    or None when the repository has no worktree there."""
    real = os.path.realpath(path)
    for admin, (where, _) in entries(repo).items():
        if where == real:
            return admin
    return None


def node_dir(repo, path, gitdir=None):
    """The admin directory of the node's worktree at ``path``, checked against the one
    recorded for it (``gitdir``, when the record has one). WorktreeError otherwise."""
    admin = locate(repo, path)
    if admin is None:
        raise WorktreeError("%s is not a worktree of %s" % (path, repo))
    if gitdir is not None and os.path.realpath(gitdir) != admin:
        raise WorktreeError("%s is recorded with %s, but git has it at %s" % (path, gitdir, admin))
    return admin


def node_git(admin, path, *args, env=None, ok=(0,)):
    """git on a node's worktree, never trusting what the agent controls in it.

    The git directory is given (``admin``, found from the repository's side), so the
    worktree's ``.git`` file is never read; fsmonitor and hooks are off.
    """
    return git(path, *SAFE, "--git-dir=" + admin, "--work-tree=" + path, *args, env=env, ok=ok)


def _drop(admin):
    """Forget one worktree whose directory is gone (what ``git worktree prune`` does to it)."""
    shutil.rmtree(admin, ignore_errors=True)


def _gone(path):
    return not os.path.exists(os.path.join(path, ".git"))


def ensure(repo, path, branch, gitdir=None):
    """Make ``path`` a worktree of ``repo`` on ``branch``, or reuse the one there.

    Returns the branch's base: HEAD when the branch is made here, else its merge base
    with HEAD. A branch that exists already (a pruned node's work) is checked out again.
    ``gitdir`` is the admin directory recorded for the node's worktree: when it is the
    one at ``path``, the worktree is the node's own and whatever its HEAD is (another
    branch, detached) is accepted. No other worktree's entry is ever touched: only the
    one at ``path`` is dropped, when its directory was removed (made again here).
    """
    with repo_lock(repo):
        ref = "refs/heads/" + branch
        admin = locate(repo, path)
        if admin is not None and _gone(path):
            _drop(admin)
            admin = None
        if admin is not None and (gitdir is None or os.path.realpath(gitdir) != admin):
            head = _read(os.path.join(admin, "HEAD")) or ""
            if head != "ref: " + ref:
                on = head[len("ref: ") :] if head.startswith("ref: ") else "a detached HEAD"
                raise WorktreeError("%s is a worktree on %s, not on %s" % (path, on, ref))
        exists = git(repo, "rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).strip()
        if admin is None:
            if os.path.isdir(path) and os.listdir(path):
                raise WorktreeError(
                    "%s exists and is not empty: cannot make a worktree there" % path
                )
            if exists:
                git(repo, "worktree", "add", path, branch)
            else:
                git(repo, "worktree", "add", "-b", branch, path, "HEAD")
                return git(repo, "rev-parse", ref).strip()
        if not exists:
            return git(repo, "rev-parse", "HEAD").strip()
        return git(repo, "merge-base", "HEAD", ref).strip()


def changes(admin, path, base, limit, stat_only):
    """The worktree's changes against ``base``, untracked files included, its index untouched.

    ``admin`` is the worktree's git directory (``node_dir``). Git works on a copy of the
    worktree's index, so only files changed since it was last written are hashed.
    Returns ``{"files": [{"path", "added", "deleted"}], "diff": text, "truncated": bool}``;
    the diff (left out when ``stat_only``) holds at most ``limit`` bytes of git's output
    and a marker saying how much was cut. ``added``/``deleted`` are None for binary files.
    Past ``MAX_FILES`` files, ``files_omitted`` counts the rest.
    """
    scratch = tempfile.mkdtemp(prefix="codeswarm-diff-")
    try:
        index = os.path.join(scratch, "index")
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(os.path.join(admin, "index"), index)
        env = dict(os.environ, GIT_INDEX_FILE=index)
        node_git(admin, path, "add", "--all", env=env)
        files = []
        diff = ["diff", "--cached", "--no-renames", "--no-ext-diff", "--no-textconv"]
        numstat = node_git(admin, path, *diff, "--numstat", "-z", base, env=env)
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
            argv = [*SAFE, "--git-dir=" + admin, "--work-tree=" + path, *diff, "--no-color", base]
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


def retire(repo, path, branch, gitdir=None):
    """Commit what the worktree holds uncommitted, then remove the worktree.

    The branch stays: it is the node's work. A detached HEAD's commit is kept on the
    branch when it is ahead of it, else on ``<branch>-detached-<n>``. A worktree whose
    directory is gone is only forgotten. True if there was a worktree to remove.
    """
    with repo_lock(repo):
        if locate(repo, path) is None:
            return False
        admin = node_dir(repo, path, gitdir)
        if not os.path.isdir(path):
            _drop(admin)
            return False
        node_git(admin, path, "add", "--all")
        if node_git(admin, path, "diff", "--cached", "--name-only", "--no-ext-diff").strip():
            message = "codeswarm: work left uncommitted in %s when it was pruned" % branch
            commit = ["-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify"]
            node_git(admin, path, *COMMITTER, *commit, "-m", message)
        if not node_git(admin, path, "symbolic-ref", "--quiet", "HEAD", ok=(0, 1)).strip():
            _keep_detached(admin, path, branch)
        shutil.rmtree(path)
        _drop(admin)
        return True


def _keep_detached(admin, path, branch):
    """Put a detached HEAD's commit on the node's branch, or beside it: never lost."""
    head = node_git(admin, path, "rev-parse", "--verify", "HEAD").strip()
    ref = "refs/heads/" + branch
    tip = node_git(admin, path, "rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).strip()

    def on(commit, newer):  # commit is newer or one of its ancestors
        return node_git(admin, path, "merge-base", commit, newer, ok=(0, 1)).strip() == commit

    if tip and on(head, tip):
        return
    if tip and not on(tip, head):
        n = 1
        while node_git(admin, path, "rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).strip():
            ref = "refs/heads/%s-detached-%d" % (branch, n)
            n += 1
        tip = ""
    node_git(admin, path, "update-ref", ref, head, tip)  # tip "": the ref must be new
