"""``codeswarm diff``: what each node changed in its git worktree, as a diff or a table."""

from __future__ import annotations

import json
from typing import Any

import click

from codeswarm.cli import config_option, parse_nodes, swarms_for

NO_CHANGES = "(no changes)\n"


def stat_table(nodes: list[dict[str, Any]]) -> str:
    """One row a node: its branch, files changed, lines added and deleted (binary: 0)."""
    rows = [("NODE", "BRANCH", "FILES", "+", "-")]
    for node in nodes:
        if "error" in node:
            rows.append((str(node["node_id"]), f"({node['error']})", "", "", ""))
            continue
        files = node["files"]
        added = sum(f["added"] or 0 for f in files)
        deleted = sum(f["deleted"] or 0 for f in files)
        count = str(len(files) + node.get("files_omitted", 0))
        rows.append((str(node["node_id"]), node["branch"], count, f"+{added}", f"-{deleted}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def full_diff(nodes: list[dict[str, Any]]) -> str:
    """Each node's diff under a header naming its node, branch and base."""
    parts = []
    for node in nodes:
        if "error" in node:
            parts.append(f"# node {node['node_id']}: {node['error']}\n")
            continue
        header = f"# node {node['node_id']}: {node['branch']} against {node['base'][:12]}"
        parts.append(f"{header}\n{node['diff'] or NO_CHANGES}")
    return "".join(parts)


@click.command()
@click.argument("swarm_id")
@click.option("--node", "node_ids", metavar="N[,N...]", help="Only these nodes (default: all).")
@click.option("--stat", is_flag=True, help="A table of files and lines changed per node.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a node.")
@config_option
def diff(
    swarm_id: str,
    node_ids: str | None,
    stat: bool,
    as_json: bool,
    config_path: str | None,
    debug: bool,
) -> None:
    """Show what each node changed in its git worktree (agent.repo) against the commit its
    branch codeswarm/SWARM_ID/N started from, uncommitted and new files included.

    Read from git in the worktree, on the cluster over the SSH connection. A diff larger
    than 1 MiB a node (8 MiB in all) is cut, ending in a line that says so.

    \b
    Examples:
      codeswarm diff sw-1a2b3c4d5e --stat
      codeswarm diff sw-1a2b3c4d5e --node 2 --config configs/hpcfund.json
      codeswarm diff sw-1a2b3c4d5e --json | jq -r .branch
    """
    nodes = "all" if node_ids is None else parse_nodes(node_ids)
    with swarms_for(config_path, debug) as swarms:
        found = swarms.diff(swarm_id, nodes, stat)
    if as_json:
        for node in found:
            click.echo(json.dumps(node))
    else:
        click.echo(stat_table(found) if stat else full_diff(found), nl=False)
