"""Read nodes' changes from their git worktrees (run by the router for ``codeswarm diff``).

Run as ``python3 -m hpc.diff --mailbox DIR`` with a JSON object on stdin:
``{"job_id": ..., "nodes": [0, 1], "stat": false}``; prints one JSON object,
``{"nodes": [...]}``, one entry per node (see ``read_diffs``). The diff text of all nodes
together is bounded (``TOTAL_LIMIT``), so a node that rewrote a huge file cannot flood the
router. Standard library only, Python >= 3.8.
"""

import argparse
import json
import sys

from . import git_worktree, records, workdir

NODE_LIMIT = 1 << 20
TOTAL_LIMIT = 8 << 20


def read_diffs(mailbox, job_id, nodes, stat_only):
    """Each node's ``{"node_id", "branch", "base", "path", "files", "diff", "truncated"}``,
    or ``{"node_id", "error"}`` for a node without a worktree or whose git failed."""
    records.check_id(job_id, "job_id")
    budget = TOTAL_LIMIT
    answers = []
    for node_id in nodes:
        records.check_node_id(node_id)
        record = workdir.read_record(mailbox, job_id, node_id)
        if record is None:
            message = "node %d has no git worktree (set agent.repo in the config)" % node_id
            answers.append({"node_id": node_id, "error": message})
            continue
        try:
            admin = git_worktree.node_dir(record["repo"], record["path"], record.get("gitdir"))
            found = git_worktree.changes(
                admin, record["path"], record["base"], max(0, min(NODE_LIMIT, budget)), stat_only
            )
        except git_worktree.WorktreeError as exc:
            answers.append({"node_id": node_id, "error": str(exc)})
            continue
        budget -= len(found.get("diff", "").encode("utf-8"))
        answer = {"node_id": node_id}
        answer.update((key, record[key]) for key in ("branch", "base", "path"))
        answer.update(found)
        answers.append(answer)
    return answers


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m hpc.diff", description="Print nodes' changes in their git worktrees."
    )
    parser.add_argument("--mailbox", required=True)
    args = parser.parse_args(argv)
    try:
        asked = json.loads(sys.stdin.read())
        nodes = [int(node) for node in asked["nodes"]]
        answers = read_diffs(args.mailbox, asked["job_id"], nodes, bool(asked.get("stat")))
    except (ValueError, KeyError, TypeError, records.RecordError) as exc:
        sys.stderr.write("hpc.diff: bad input: %s\n" % exc)
        return 2
    except OSError as exc:
        sys.stderr.write("hpc.diff: %s\n" % exc)
        return 1
    sys.stdout.write(json.dumps({"nodes": answers}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
