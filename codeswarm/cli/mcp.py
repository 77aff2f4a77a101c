"""``codeswarm mcp``: serve the Model Context Protocol on stdin/stdout."""

from __future__ import annotations

import click

from codeswarm.cli import config_option, swarms_for


@click.command(name="mcp")
@config_option
def mcp_command(config_path: str | None, debug: bool) -> None:
    """Serve codeswarm as an MCP server on stdio (for agents and MCP clients).

    Tools: launch, inject, wait, status, list, events, interrupt, terminate,
    approvals, approve, steer; resources swarm://SWARM_ID and swarm://SWARM_ID/events.
    stdout carries the MCP stream only; logs go to stderr. Swarms keep running after
    the server exits. Needs the mcp extra: pip install 'codeswarm[mcp]'. See docs/mcp.md.

    \b
    Example, in an MCP client's configuration:
      {"mcpServers": {"codeswarm": {"command": "codeswarm",
          "args": ["mcp", "--config", "/path/to/configs/hpcfund.json"]}}}
    \b
    Try it by hand:
      codeswarm mcp --config configs/local.json
    """
    try:
        from codeswarm.mcp import build_server
    except ImportError as exc:
        raise click.ClickException(
            f"the MCP server needs the mcp SDK ({exc}); install it: pip install 'codeswarm[mcp]'"
        ) from None
    # A long-lived router like the daemon's: it follows the workers' events and resumes
    # where the last one stopped.
    with swarms_for(config_path, debug, follow="resume") as swarms:
        build_server(swarms).run("stdio")
