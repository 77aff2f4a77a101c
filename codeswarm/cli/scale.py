"""``codeswarm scale``: more agents in a running swarm, or fewer."""

from __future__ import annotations

import json

import click

from codeswarm.cli import config_option, swarms_for
from codeswarm.cli.render import print_swarm


def parse_node_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter("give node indexes like 3 or 3,4") from None


@click.command()
@click.argument("swarm_id")
@click.option(
    "--add", type=click.IntRange(min=1), metavar="N", help="Add N nodes of agents, as launch."
)
@click.option("--remove", metavar="N[,N...]", help="Drain and stop these agents (node ids).")
@click.option("--json", "as_json", is_flag=True, help="Print the swarm as JSON.")
@config_option
def scale(
    swarm_id: str,
    add: int | None,
    remove: str | None,
    as_json: bool,
    config_path: str | None,
    debug: bool,
) -> None:
    """Grow a running swarm, or drain and stop some of its agents.

    --add N submits N more nodes (each with the swarm's agents per node) in a job of their
    own: the new agents take the next node ids, in the same swarm. --remove lets each agent
    finish its running turn; its queued prompts fail with node_removed, as does anything
    sent to it later. Prints the swarm as status does.

    \b
    Examples:
      codeswarm scale sw-1a2b3c4d5e --add 2          # 2 more nodes' agents
      codeswarm scale sw-1a2b3c4d5e --remove 3,4     # drain and stop agents 3 and 4
      codeswarm scale sw-1a2b3c4d5e --add 1 --json | jq '.nodes[-1].slurm_job'
    """
    if (add is None) == (remove is None):
        raise click.UsageError("give --add N or --remove N[,N...]")
    nodes = None if remove is None else parse_node_list(remove)
    with swarms_for(config_path, debug) as swarms:
        swarm = swarms.scale(swarm_id, add=add, remove=nodes)
    if as_json:
        click.echo(json.dumps(swarm))
    else:
        print_swarm(swarm, brief=False)
