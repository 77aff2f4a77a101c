"""How the CLI shows swarms and events to a person (``--json`` shows them to programs)."""

from __future__ import annotations

import time
from typing import Any

import click


def print_swarm(swarm: dict[str, Any], brief: bool) -> None:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(swarm["created"]))
    states: dict[str, int] = {}
    for node in swarm["nodes"]:
        states[node["state"]] = states.get(node["state"], 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    click.echo(
        f"{swarm['swarm_id']}  {swarm['state']:<10}  job {swarm['job_id']}  "
        f"{len(swarm['nodes'])} nodes ({summary})  {swarm['backend']}  {created}"
    )
    if not brief:
        for node in swarm["nodes"]:
            click.echo(f"  node {node['node_id']}: {node['state']}")


def print_event(event: dict[str, Any]) -> None:
    """One readable line for the events a person cares about; deltas are left to --json."""
    node = f"[node {event.get('node_id')}]"
    kind = event["type"]
    if kind == "assistant":
        click.echo(f"{node} {event['content']}")
    elif kind == "usage":
        click.echo(f"{node} turn done: {event['total_tokens']} tokens", err=True)
    elif kind == "turn_complete" and event["status"] != "completed":
        click.echo(f"{node} turn {event['status']}: {event.get('error') or ''}", err=True)
    elif kind == "inject_failed":
        click.echo(f"{node} prompt {event['injection_id']} failed: {event['message']}", err=True)
    elif kind in ("node_started", "node_exited"):
        detail = event.get("reason") or event.get("host")
        click.echo(f"{node} {kind.replace('_', ' ')} ({detail})", err=True)
    elif kind == "error":
        click.echo(f"{node} error: {event['message']}", err=True)
