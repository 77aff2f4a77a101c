"""Shell completion of swarm ids, from the registry file, with click's own mechanism.

``eval "$(_CODESWARM_COMPLETE=bash_source codeswarm)"`` (zsh_source, fish_source) makes the
shell ask ``codeswarm`` for completions; a SWARM_ID argument answers with the swarms of the
config given so far on the command line (else the default one), read from the registry
without a lock or a router, so that a TAB never waits on a cluster.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from codeswarm.errors import CodeswarmError


class SwarmId(click.types.StringParamType):
    """A swarm id on the command line: a string that completes from the registry."""

    name = "swarm_id"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from codeswarm.cli import load
        from codeswarm.registry import peek

        try:
            config = load(ctx.params.get("config_path"))
        except CodeswarmError:
            return []
        return [
            CompletionItem(r.swarm_id, help=f"{r.state}, job {r.job_id}, {r.nodes} nodes")
            for r in peek(config.router.state_dir, config.mailbox_root)
            if r.swarm_id.startswith(incomplete)
        ]


SWARM_ID = SwarmId()


def complete_swarm_ids(group: click.Group) -> None:
    """Give every verb's ``swarm_id`` argument the completing type, those added later too."""
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Argument) and param.name == "swarm_id":
                param.type = SWARM_ID
