"""The MCP server: tools, ``swarm://`` resources and their update notifications, over stdio.

It wraps one in-process router (``codeswarm.embed.Codeswarm``), as ``codeswarm daemon`` does
for JSON lines; both share the config's registry of swarms.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from codeswarm import __version__
from codeswarm.mcp.tools import SwarmTools, blocking, clean
from codeswarm.mcp.updates import ResourceUpdates

RECENT_EVENTS = 100  # what swarm://<id>/events holds; the events tool pages through the rest
RECENT_SECONDS = 3600.0  # how far back it looks for a swarm this server has not seen live

INSTRUCTIONS = """\
codeswarm runs swarms of Codex agents, one per node (Slurm compute nodes, or local processes).
Workflow: launch (or list to find a running swarm) -> inject a prompt -> wait with the
injection_ids it returned -> read each agent's answer. events pages through everything the
agents did; status shows the nodes; terminate when done. Swarms outlive this server."""


def build_server(swarms: Any) -> MCPServer:
    """An MCP server over ``swarms`` (a started ``Codeswarm``); run it with ``run("stdio")``."""
    updates = ResourceUpdates(swarms)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        updates.start()
        try:
            yield {}
        finally:
            updates.stop()

    server = MCPServer(
        "codeswarm",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        subscriptions=updates.bus,
    )
    SwarmTools(swarms).register(server)

    @server.resource(
        "swarm://{swarm_id}",
        name="swarm",
        description="A swarm's state and each node's, as JSON (what the status tool returns).",
        mime_type="application/json",
    )
    async def swarm_state(swarm_id: str) -> str:
        try:
            return json.dumps(clean(await blocking(swarms.status, swarm_id)))
        except ToolError as exc:  # the router's error, e.g. unknown_swarm
            raise ResourceError(str(exc)) from None

    @server.resource(
        "swarm://{swarm_id}/events",
        name="swarm-events",
        description=f"A swarm's {RECENT_EVENTS} most recent events, oldest first, as JSON "
        "(page through all of them with the events tool).",
        mime_type="application/json",
    )
    async def swarm_events(swarm_id: str) -> str:
        latest = updates.latest.get(swarm_id)
        since = max(0, latest - RECENT_EVENTS) if latest else time.time() - RECENT_SECONDS
        events = await blocking(swarms.history, swarm_id, since)
        return json.dumps([clean(event) for event in events[-RECENT_EVENTS:]])

    _serve_legacy_subscriptions(server, updates)
    return server


def _serve_legacy_subscriptions(server: MCPServer, updates: ResourceUpdates) -> None:
    """``resources/subscribe`` for clients before 2026-07-28 (MCPServer serves only
    ``subscriptions/listen``, the newer way); the low-level server is where methods live."""

    async def subscribe(
        ctx: ServerRequestContext[Any], params: mcp_types.SubscribeRequestParams
    ) -> mcp_types.EmptyResult:
        updates.subscribe(str(params.uri), ctx.session)
        return mcp_types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: mcp_types.UnsubscribeRequestParams
    ) -> mcp_types.EmptyResult:
        updates.unsubscribe(str(params.uri), ctx.session)
        return mcp_types.EmptyResult()

    lowlevel = server._lowlevel_server  # no public way to add a spec method to MCPServer
    lowlevel.add_request_handler("resources/subscribe", mcp_types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", mcp_types.UnsubscribeRequestParams, unsubscribe
    )
