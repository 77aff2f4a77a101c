"""``codeswarm mcp``: the embedding API as a stdio MCP server, for agents and MCP clients.

Needs the optional ``mcp`` SDK (``pip install 'codeswarm[mcp]'``); nothing else in codeswarm
imports this package. See docs/mcp.md.
"""

from codeswarm.mcp.server import build_server

__all__ = ["build_server"]
