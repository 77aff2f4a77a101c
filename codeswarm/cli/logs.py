"""``codeswarm logs``: print what a swarm's event log holds, then exit."""

from __future__ import annotations

import json
import os
import sys
import time

import click

# codeswarm.cli imports this module once its helpers are defined (see _add_commands).
from codeswarm.cli import check_swarm, config_option, history, load, swarms_for
from codeswarm.cli.render import EventRenderer


@click.command()
@click.argument("swarm_id")
@click.option(
    "--since",
    "since_text",
    default="start",
    show_default=True,
    metavar="WHEN",
    help=history.SINCE_HELP,
)
@click.option(
    "--node",
    "nodes",
    type=click.IntRange(min=0),
    multiple=True,
    help="Only this node's events (repeat for several).",
)
@click.option(
    "--events",
    "patterns",
    metavar="PATTERN,...",
    help="Only these event types or globs, e.g. 'assistant,turn_complete' or '*'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print every event as a JSON line.")
@config_option
def logs(
    swarm_id: str,
    since_text: str,
    nodes: tuple[int, ...],
    patterns: str | None,
    as_json: bool,
    config_path: str | None,
    debug: bool,
) -> None:
    """Print a swarm's past events, then exit: answers that went by, failures, commands.

    Each event with --json carries its `cursor`; `attach --since CURSOR` goes on from there.
    With no daemon running, this call reads what the agents wrote since a router last ran
    (up to 10 s of it); with one, it prints what the daemon has logged.

    \b
    Examples:
      codeswarm logs sw-1a2b3c4d5e
      codeswarm logs sw-1a2b3c4d5e --node 3 --since 2h
      codeswarm logs sw-1a2b3c4d5e --events assistant,inject_failed --json
    """
    since = history.since_option(since_text)
    types = history.event_patterns(patterns)
    config = load(config_path)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    renderer = EventRenderer(color=color)
    with history.own_router(lambda follow: swarms_for(config_path, debug, follow)) as swarms:
        check_swarm(swarms, config_path, debug, swarm_id)
        idle = history.CATCH_UP_SECONDS if swarms is not None else 0.0
        events = history.swarm_events(swarms, config, swarm_id, since, idle, types)
        stop_at = time.monotonic() + history.CATCH_UP_LIMIT
        for event in events:
            if time.monotonic() > stop_at:
                break
            if nodes and event.get("node_id") not in nodes:
                continue
            if as_json:
                click.echo(json.dumps(event))
            else:
                click.echo(renderer.render(event), nl=False, color=color)
    click.echo(renderer.finish(), nl=False)
