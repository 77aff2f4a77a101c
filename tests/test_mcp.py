"""``codeswarm mcp`` driven by the MCP SDK's own client over stdio, with real codex agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from click.testing import CliRunner
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ResourceUpdatedNotification, TextContent

from codeswarm.cli import main
from codeswarm.mcp.updates import ResourceUpdates, swarm_uris

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {
    "launch",
    "inject",
    "wait",
    "status",
    "list",
    "events",
    "interrupt",
    "terminate",
    "approvals",
    "approve",
    "steer",
}


def server(config: Path, errlog: TextIO) -> Any:
    """``codeswarm mcp`` as a subprocess, its stderr (the log) in ``errlog``."""
    command = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codeswarm", "mcp", "--config", str(config)],
        env=dict(os.environ),
        cwd=ROOT,
    )
    return stdio_client(command, errlog=errlog)


def result(call: Any) -> dict[str, Any]:
    """A tool call's JSON answer; fails the test on a tool error."""
    text = "".join(part.text for part in call.content if isinstance(part, TextContent))
    assert not call.is_error, text
    return json.loads(text)


def error_text(call: Any) -> str:
    assert call.is_error, call
    return "".join(part.text for part in call.content if isinstance(part, TextContent))


async def all_pages(client: Client, swarm_id: str, limit: int) -> list[list[dict[str, Any]]]:
    pages, since = [], None
    while True:
        page = result(
            await client.call_tool("events", {"swarm_id": swarm_id, "since": since, "limit": limit})
        )
        pages.append(page["events"])
        if page["events"]:
            assert page["next_since"] == page["events"][-1]["cursor"]
        since = page["next_since"]
        if not page["more"]:
            return pages


@asynccontextmanager
async def updates_of(
    client: Client, uri: str, legacy: MemoryObjectReceiveStream[str] | None
) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Subscribe to ``uri``; yields a function that waits for its next update's uri.

    A 2026-07-28 client listens on a subscriptions/listen stream; an older one
    (``legacy``: the uris its message handler saw) sends resources/subscribe.
    """
    if legacy is not None:
        with warnings.catch_warnings():  # deprecated at 2026-07-28, the way 2025 clients work
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        yield legacy.receive
        return
    async with client.listen(resource_subscriptions=[uri]) as stream:

        async def next_uri() -> str:
            return (await stream.__anext__()).uri

        yield next_uri


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_swarm_through_mcp(config_file, tmp_path, mode):
    """Over the newest protocol (auto) and the initialize handshake of 2025 clients."""
    send, receive = anyio.create_memory_object_stream[str](1000)

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            send.send_nowait(message.params.uri)

    async def scenario() -> None:
        with open(tmp_path / "mcp.stderr", "w") as errlog:
            transport = server(config_file, errlog)
            async with Client(transport, mode=mode, message_handler=on_message) as client:
                assert (client.protocol_version == "2026-07-28") == (mode == "auto")
                await drive(client)

    async def drive(client: Client) -> None:
        tools = (await client.list_tools()).tools
        assert {tool.name for tool in tools} == TOOLS
        for tool in tools:
            assert tool.description and len(tool.description) > 80, tool.name
            assert tool.input_schema["type"] == "object"

        swarm = result(await client.call_tool("launch", {"nodes": 2, "prompt": "first words"}))
        swarm_id = swarm["swarm_id"]
        assert [node["state"] for node in swarm["nodes"]] == ["pending", "pending"]
        try:
            first = {"swarm_id": swarm_id, "injection_ids": swarm["injection_ids"]}
            answers = result(await client.call_tool("wait", first))["answers"]
            assert [a["message"] for a in answers] == ["echo: first words"] * 2, answers
            await converse(client, swarm_id)
        finally:
            result(await client.call_tool("terminate", {"swarm_id": swarm_id}))
        listed = result(await client.call_tool("list", {}))["swarms"]
        assert [s["state"] for s in listed if s["swarm_id"] == swarm_id] == ["terminated"]

    async def converse(client: Client, swarm_id: str) -> None:
        uri = f"swarm://{swarm_id}/events"
        async with updates_of(client, uri, receive if mode == "legacy" else None) as updated:
            injected = result(
                await client.call_tool(
                    "inject", {"swarm_id": swarm_id, "content": "hello over mcp", "nodes": "all"}
                )
            )
            ids = injected["injection_ids"]
            assert len(ids) == 2 and injected["failures"] == []
            assert sorted(node["node_id"] for node in injected["injected"]) == [0, 1]

            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total, message))

            waited = result(
                await client.call_tool(
                    "wait",
                    {"swarm_id": swarm_id, "injection_ids": ids, "timeout": 90},
                    progress_callback=on_progress,
                )
            )
            with anyio.fail_after(30):
                assert await updated() == uri
        assert waited["all_done"]
        assert [a["injection_id"] for a in waited["answers"]] == ids
        for answer in waited["answers"]:
            assert answer["status"] == "completed", json.dumps(waited)
            assert answer["message"] == "echo: hello over mcp"
        assert sorted(done for done, _, _ in progress) == [1, 2]
        assert all(total == 2 for _, total, _ in progress)
        assert {message for _, _, message in progress} == {"node 0: completed", "node 1: completed"}

        pages = await all_pages(client, swarm_id, limit=3)
        events = [event for page in pages for event in page]
        assert len(pages) > 2 and all(len(page) <= 3 for page in pages)
        cursors = [event["cursor"] for event in events]
        assert cursors == sorted(set(cursors))
        for injection_id in ids:
            mine = [e["type"] for e in events if e.get("injection_id") == injection_id]
            assert "assistant" in mine and "turn_complete" in mine, mine
        later = result(
            await client.call_tool(
                "events", {"swarm_id": swarm_id, "since": cursors[-1], "limit": 10}
            )
        )
        assert later["events"] == [] and later["next_since"] == cursors[-1]

        state = await client.read_resource(f"swarm://{swarm_id}")
        described = json.loads(state.contents[0].text)
        assert described["swarm_id"] == swarm_id and len(described["nodes"]) == 2
        recent = json.loads((await client.read_resource(uri)).contents[0].text)
        assert [e["cursor"] for e in recent] == cursors[-len(recent) :]

        on_both = {"swarm_id": swarm_id, "nodes": [0, 1]}
        assert result(await client.call_tool("approvals", on_both))["approvals"] == []
        interrupted = result(await client.call_tool("interrupt", on_both))["nodes"]
        assert [(a["type"], a["node_id"]) for a in interrupted] == [
            ("interrupt_ack", 0),
            ("interrupt_ack", 1),
        ]
        steered = {"swarm_id": swarm_id, "content": "faster", "nodes": 5}
        assert "unknown_target" in json.dumps(result(await client.call_tool("steer", steered)))

    anyio.run(scenario)


@pytest.mark.integration
def test_bad_input_is_a_tool_error_and_the_server_goes_on(config_file, tmp_path):
    async def scenario() -> None:
        with open(tmp_path / "mcp.stderr", "w") as errlog:
            async with Client(server(config_file, errlog)) as client:
                await misuse(client)

    async def misuse(client: Client) -> None:
        unknown = error_text(await client.call_tool("status", {"swarm_id": "sw-0000000000"}))
        assert "unknown_swarm" in unknown and "list tool" in unknown
        injected = error_text(
            await client.call_tool("inject", {"swarm_id": "sw-0000000000", "content": "hi"})
        )
        assert "sw-0000000000" in injected
        invalid = error_text(await client.call_tool("launch", {"nodes": 0}))
        assert "nodes" in invalid
        assert result(await client.call_tool("list", {})) == {"swarms": []}

        # A blocking wait (ids no node acknowledged stay pending until its timeout) leaves
        # the server free: list answers while it waits.
        order: list[str] = []

        async def wait_for_nothing() -> None:
            arguments = {"swarm_id": "sw-0000000000", "injection_ids": ["inj-x"], "timeout": 15}
            waited = result(await client.call_tool("wait", arguments))
            assert waited["answers"][0]["status"] == "pending" and not waited["all_done"]
            order.append("wait")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_for_nothing)
            await anyio.sleep(0.5)
            result(await client.call_tool("list", {}))
            order.append("list")
        assert order == ["list", "wait"]

    anyio.run(scenario)


@pytest.mark.integration
def test_the_server_exits_when_its_client_goes_even_during_a_wait(config_file, tmp_path):
    """EOF on stdin ends it (exit 0) while a wait with an hour to go blocks; stdout held
    JSON-RPC alone."""
    with open(tmp_path / "mcp.stderr", "w") as errlog:
        process = subprocess.Popen(
            [sys.executable, "-m", "codeswarm", "mcp", "--config", str(config_file)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
    assert process.stdin is not None and process.stdout is not None
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}
    wait = {"swarm_id": "sw-0000000000", "injection_ids": ["inj-x"], "timeout": 3600}
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "wait", "arguments": wait},
        },
    ):
        process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()
    answered = [json.loads(process.stdout.readline()) for _ in range(2)]
    assert [a["id"] for a in answered] == [1, 2]
    assert {tool["name"] for tool in answered[1]["result"]["tools"]} == TOOLS
    process.stdin.close()
    try:
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    rest = process.stdout.read().splitlines()
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in rest)


def test_without_the_sdk_it_says_how_to_install_it(monkeypatch):
    for name in [name for name in sys.modules if name == "mcp" or name.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: imports fail
    for name in [name for name in sys.modules if name.startswith("codeswarm.mcp")]:
        monkeypatch.delitem(sys.modules, name)
    done = CliRunner().invoke(main, ["mcp"])
    assert done.exit_code == 1
    assert "pip install 'codeswarm[mcp]'" in done.output


class RecordedEvents:
    """What ``ResourceUpdates`` reads from a Codeswarm: a subscription and an event stream."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.pending = events

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        while self.pending:
            yield self.pending.pop(0)


def test_a_batch_names_each_swarm_that_got_events_once_and_keeps_its_last_cursor():
    stream = RecordedEvents(
        [
            {"type": "assistant", "swarm_id": "sw-a", "cursor": 7},
            {"type": "swarm_list", "swarms": []},
            {"type": "usage", "swarm_id": "sw-b", "cursor": 3},
            {"type": "turn_complete", "swarm_id": "sw-a", "cursor": 9},
            {"type": "swarm_status", "swarm": {"swarm_id": "sw-c"}},  # an answer, no news
        ]
    )
    updates = ResourceUpdates(stream)
    assert updates._batch() == {"sw-a", "sw-b"}
    assert updates.latest == {"sw-a": 9, "sw-b": 3}
    assert updates._batch() == set()
    assert swarm_uris("sw-a") == ("swarm://sw-a", "swarm://sw-a/events")
