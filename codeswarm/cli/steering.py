"""CLI verbs that act on running agents: approvals, approve, steer, interrupt, review, compact.

Each is a short-lived router, as every verb but ``daemon`` and ``attach`` is: it writes to
the nodes' inboxes and prints one answer per node; what the agents do next shows in
``codeswarm attach``. ``approvals`` reads the pending requests from the workers' state files.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from codeswarm.cli import activity
from codeswarm.cli.render import EventRenderer
from codeswarm.hpc import records


def _shared(command: Any) -> Any:
    """The options every verb here takes: --nodes, --json and the config options."""
    from codeswarm.cli import config_option

    command = click.option("--json", "as_json", is_flag=True, help="Print answers as JSON.")(
        command
    )
    command = click.option("--nodes", default="all", show_default=True, help='"all", 0, or 0,2,3.')(
        command
    )
    return config_option(command)


def _run(method: str, swarm_id: str, options: dict[str, Any], **fields: Any) -> None:
    """Call the embedding API's ``method`` and print each node's answer; exit 1 if one failed."""
    from codeswarm.cli import parse_nodes, swarms_for

    nodes = parse_nodes(options["nodes"])
    with swarms_for(options["config_path"], options["debug"]) as swarms:
        answers = getattr(swarms, method)(swarm_id, nodes=nodes, **fields)
    failed = False
    for answer in answers:
        ok = answer["type"] not in ("error", "inject_failed")
        failed = failed or not ok
        if options["as_json"]:
            click.echo(json.dumps(answer))
        elif ok:
            what = answer.get("injection_id") or answer.get("steer_id") or "sent"
            click.echo(f"node {answer['node_id']}: {what}")
        else:
            click.echo(f"node {answer['node_id']}: failed: {answer['message']}", err=True)
    if failed:
        sys.exit(1)


@click.command()
@click.argument("swarm_id")
@_shared
def approvals(swarm_id: str, **options: Any) -> None:
    """List the approval requests a swarm's agents wait on.

    Agents ask with agent.approval_policy "on-request" or "untrusted"; each request waits
    for `codeswarm approve` until agent.approval_timeout_seconds, then
    agent.approval_decision answers.

    \b
    Example:
      codeswarm approvals sw-1a2b3c4d5e
    """
    from codeswarm.cli import parse_nodes, swarms_for

    with swarms_for(options["config_path"], options["debug"]) as swarms:
        pending = swarms.approvals(swarm_id, nodes=parse_nodes(options["nodes"]))
    for approval in pending:
        if options["as_json"]:
            click.echo(json.dumps(approval))
            continue
        lines = activity.approval_lines(
            dict(approval, swarm_id=swarm_id), EventRenderer(color=False).paint
        )
        click.echo(f"node {approval['node_id']}: " + "\n  ".join(lines))
    if not pending and not options["as_json"]:
        click.echo(f"no pending approvals in {swarm_id}", err=True)


@click.command()
@click.argument("swarm_id")
@click.argument("approval_id")
@click.option(
    "--decision",
    required=True,
    type=click.Choice(records.APPROVAL_DECISIONS),
    help="accept (this once), accept_for_session (the like without asking again), decline.",
)
@_shared
def approve(swarm_id: str, approval_id: str, decision: str, **options: Any) -> None:
    """Answer an approval request on the given nodes (all by default).

    An approval id (ap-<n>-<digest>) names the node's n-th request and what it asks, so one
    command answers the same request on every node that asks it, and never a different
    command; a node without it answers unknown_approval (see `codeswarm attach`).

    \b
    Examples:
      codeswarm approve sw-1a2b3c4d5e ap-1-3f9c2a71 --decision accept --nodes 0
      codeswarm approve sw-1a2b3c4d5e ap-1-3f9c2a71 --decision accept_for_session
    """
    _run("approve", swarm_id, options, approval_id=approval_id, decision=decision)


@click.command()
@click.argument("swarm_id")
@click.option("--prompt", required=True, help="The input to add; '-' reads it from stdin.")
@click.option("--steer-id", help="Your id for it; steer_applied and steer_failed carry it.")
@_shared
def steer(swarm_id: str, prompt: str, steer_id: str | None, **options: Any) -> None:
    """Add input to the running turn of each node (no running turn: steer_failed).

    \b
    Example:
      codeswarm steer sw-1a2b3c4d5e --prompt "Use the blocked layout instead." --nodes 1
    """
    content = sys.stdin.read() if prompt == "-" else prompt
    if not content:
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    _run("steer", swarm_id, options, content=content, steer_id=steer_id)


@click.command()
@click.argument("swarm_id")
@_shared
def interrupt(swarm_id: str, **options: Any) -> None:
    """Stop the running turn of each node; queued prompts stay queued.

    \b
    Example:
      codeswarm interrupt sw-1a2b3c4d5e --nodes 0,2
    """
    _run("interrupt", swarm_id, options)


@click.command()
@click.argument("swarm_id")
@click.option("--instructions", help="What to review for (default: the uncommitted changes).")
@_shared
def review(swarm_id: str, instructions: str | None, **options: Any) -> None:
    """Queue a code review of each node's working tree; findings come in its review item.

    \b
    Example:
      codeswarm review sw-1a2b3c4d5e --nodes 0
      codeswarm attach sw-1a2b3c4d5e
    """
    _run("review", swarm_id, options, instructions=instructions)


@click.command()
@click.argument("swarm_id")
@_shared
def compact(swarm_id: str, **options: Any) -> None:
    """Queue a compaction of each node's conversation, to free its context window.

    \b
    Example:
      codeswarm compact sw-1a2b3c4d5e
    """
    _run("compact", swarm_id, options)


COMMANDS = (approvals, approve, steer, interrupt, review, compact)
