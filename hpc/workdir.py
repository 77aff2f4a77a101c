"""A node's working directory: the ``agent.workdir`` template, and the node's worktree record.

The router checks a template with ``template_problem`` at config load; the worker expands it.
A node given a git worktree (``agent.repo``) records it in ``state/<JOB>_<NODE>.worktree.json``
so that ``hpc.diff`` and ``hpc.prune`` find it from the job and node ids alone. Standard
library only, Python >= 3.8.
"""

import json
import os
import string

from . import git_worktree, records
from .private import FILE_MODE

FIELDS = ("swarm_id", "job_id", "node_id")
RECORD_SUFFIX = ".worktree.json"


def template_problem(template):
    """Say what is wrong with a workdir template, or None."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return "is not a valid template: %s" % exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS:
            return "has {%s}; the fields are {swarm_id}, {job_id} and {node_id}" % name
        if spec or conversion:
            return "has {%s} with a format; write the plain field" % name
    if not template.startswith("/"):
        return "must be an absolute path"
    return None


def expand(template, swarm_id, job_id, node_id):
    """The node's directory from a template that passed ``template_problem``."""
    return os.path.normpath(template.format(swarm_id=swarm_id, job_id=job_id, node_id=node_id))


def record_path(mailbox, job_id, node_id):
    return os.path.join(
        mailbox, records.STATE_DIR, records.node_key(job_id, node_id) + RECORD_SUFFIX
    )


def read_record(mailbox, job_id, node_id):
    """The node's worktree record (repo, path, branch, base, gitdir), or None if it has none.

    Records written before ``gitdir`` was kept lack it."""
    try:
        with open(record_path(mailbox, job_id, node_id), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def prepare_worktree(mailbox, job_id, node_id, repo, path, branch):
    """Give the node its worktree (made once, reused after a requeue or restart), recorded.

    The record holds the worktree's git directory in the repository (``gitdir``): after a
    requeue the worktree recorded at the same path with it is the node's own, whatever
    branch its agent left it on. The base (the commit the branch started from) is kept
    from the first record: the repository's HEAD may have moved on since. Raises
    ``git_worktree.WorktreeError``.
    """
    old = read_record(mailbox, job_id, node_id)
    same = old is not None and (old["repo"], old["path"], old["branch"]) == (repo, path, branch)
    base = git_worktree.ensure(repo, path, branch, old.get("gitdir") if same else None)
    gitdir = git_worktree.node_dir(repo, path)
    record = {
        "repo": repo,
        "path": path,
        "branch": branch,
        "base": old["base"] if same else base,
        "gitdir": gitdir,
    }
    if record != old:
        target = record_path(mailbox, job_id, node_id)
        tmp = "%s.tmp.%d" % (target, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, target)
    return record
