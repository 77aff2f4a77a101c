"""Remove finished swarms' files from a cluster directory (run by ``codeswarm prune``).

Run as ``python3 -m hpc.prune --cluster-dir DIR`` with a JSON list on stdin, one object per
swarm: ``{"swarm_id": ..., "job_id": ..., "nodes": N}``. For each it first retires each node's
git worktree (``agent.repo``: uncommitted work is committed to the node's branch, the worktree
removed, the branch kept), then removes the swarm's mailbox files (inbox, outbox, every
archived run, state, logs), each node's workspace and CODEX_HOME, the swarm's settings and
batch script, and its job's output; then prints one JSON line per swarm:
``{"swarm_id": ..., "removed": <paths removed>}``, with ``"error"`` when one of its worktrees
could not be retired (then its files are kept; the other swarms go on). Ids are checked as
every other cluster-side program checks them, so a damaged registry cannot name a path outside
the cluster directory. Standard library only, Python >= 3.8.
"""

import argparse
import json
import os
import re
import shutil
import sys

from . import git_worktree, records, workdir


def swarm_paths(cluster_dir, swarm_id, job_id, nodes):
    """Every path a swarm may have left in ``cluster_dir`` (existing or not)."""
    records.check_id(swarm_id, "swarm_id")
    records.check_id(job_id, "job_id")
    mailbox = os.path.join(cluster_dir, "mailbox")
    paths = [
        os.path.join(cluster_dir, "swarms", swarm_id),
        os.path.join(cluster_dir, "logs", "slurm-%s.out" % job_id),
    ]
    archive = os.path.join(mailbox, records.ARCHIVE_DIR)
    for node_id in range(nodes):
        key = records.node_key(job_id, node_id)
        paths += [
            os.path.join(mailbox, records.INBOX_DIR, records.record_name(job_id, node_id)),
            os.path.join(mailbox, records.OUTBOX_DIR, records.record_name(job_id, node_id)),
            os.path.join(mailbox, records.STATE_DIR, records.state_name(job_id, node_id)),
            workdir.record_path(mailbox, job_id, node_id),
            os.path.join(cluster_dir, "workspaces", key),
            os.path.join(cluster_dir, "codex-home", key),
            os.path.join(mailbox, records.LOG_DIR, key),  # outputs too large for an event
            os.path.join(archive, records.record_name(job_id, node_id)),
        ]
    paths += _node_files(archive, job_id, nodes, r"\.r.*" + re.escape(records.RECORD_SUFFIX))
    for logs in (os.path.join(mailbox, records.LOG_DIR), os.path.join(cluster_dir, "logs")):
        paths += _node_files(logs, job_id, nodes, r"\..*")
    return paths


class PruneError(Exception):
    """Some of a swarm's worktrees could not be retired: its files were kept.

    ``removed`` lists the worktrees that were retired all the same."""

    def __init__(self, message, removed):
        super().__init__(message)
        self.removed = removed


def prune_swarm(cluster_dir, swarm_id, job_id, nodes):
    """Retire the swarm's worktrees, then remove its files; every path removed.

    A node whose worktree cannot be retired does not stop the others'; then the swarm's
    files stay (the node's work and its record with them) and PruneError says why.
    """
    records.check_id(job_id, "job_id")
    mailbox = os.path.join(cluster_dir, "mailbox")
    removed, errors = [], []
    for node_id in range(nodes):
        record = workdir.read_record(mailbox, job_id, node_id)
        if record is None or not os.path.isdir(record["repo"]):
            continue  # no worktree, or its repository is gone: nothing of it to keep
        try:
            if git_worktree.retire(
                record["repo"], record["path"], record["branch"], record.get("gitdir")
            ):
                removed.append(record["path"])
        except (OSError, git_worktree.WorktreeError) as exc:
            errors.append("node %d: %s" % (node_id, exc))
    if errors:
        raise PruneError("; ".join(errors), removed)
    paths = swarm_paths(cluster_dir, swarm_id, job_id, nodes)
    return removed + [path for path in paths if remove(path)]


def _node_files(directory, job_id, nodes, rest):
    """Files in ``directory`` named ``<job_id>_<node><rest>`` for the swarm's nodes, sorted.

    One listing a directory, not a glob a node: glob caches a compiled pattern for each key
    (up to 32,768 of them), and a daemon that prunes for months sees new keys every swarm.
    """
    named = re.compile(re.escape(job_id) + "_(0|[1-9][0-9]*)" + rest, re.DOTALL)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = named.fullmatch(name)
        if match and int(match.group(1)) < nodes:
            found.append(os.path.join(directory, name))
    return found


def remove(path):
    """Remove a file or a whole directory; True if something was there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
        return True
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m hpc.prune", description="Remove finished swarms' files."
    )
    parser.add_argument("--cluster-dir", required=True)
    args = parser.parse_args(argv)
    try:
        swarms = json.loads(sys.stdin.read())
        for swarm in swarms:
            answer = {"swarm_id": swarm["swarm_id"]}
            try:
                answer["removed"] = prune_swarm(
                    args.cluster_dir, swarm["swarm_id"], swarm["job_id"], int(swarm["nodes"])
                )
            except PruneError as exc:
                answer.update(removed=exc.removed, error=str(exc))
            sys.stdout.write(json.dumps(answer) + "\n")
    except (ValueError, KeyError, TypeError, records.RecordError) as exc:
        sys.stderr.write("hpc.prune: bad input: %s\n" % exc)
        return 2
    except (OSError, git_worktree.WorktreeError) as exc:
        sys.stderr.write("hpc.prune: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
