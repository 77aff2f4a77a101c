"""The MCP tools: the embedding API's calls, described for a model that reads them.

Each tool runs its blocking ``Codeswarm`` call on a worker thread, so the server keeps
answering (and ``wait`` keeps sending progress) while a call waits on the router. A
``CodeswarmError`` becomes an MCP tool error carrying its message; the server goes on.
Argument names are the daemon protocol's (docs/protocol.md).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from codeswarm.errors import CodeswarmError, CommandError

SwarmId = Annotated[
    str, Field(description="The swarm's id, e.g. sw-1a2b3c4d5e (from launch or list).")
]
Nodes = Annotated[
    int | list[int] | Literal["all"],
    Field(description='Which nodes: "all", one index (0), or a list of indexes ([0, 2]).'),
]
PAGE_LIMIT = 500


def explain(exc: CodeswarmError) -> str:
    """The error's message, with the next step for a model where one helps."""
    if not isinstance(exc, CommandError):
        return str(exc)
    event = exc.event
    hint = " (call the list tool to see the swarms)" if event["error"] == "unknown_swarm" else ""
    return f"{event['error']}: {event['message']}{hint}"


async def blocking(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking embed call on a thread; its CodeswarmError becomes a tool error.

    A daemon thread of its own, not anyio's worker pool: those are joined at exit, so a
    ``wait`` for an hour would keep the process alive that long after its client has gone.
    """
    token = anyio.lowlevel.current_token()
    finished = anyio.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task, which raises it
            outcome["error"] = exc
        with contextlib.suppress(RuntimeError):  # the event loop has ended: nobody awaits
            anyio.from_thread.run_sync(finished.set, token=token)

    threading.Thread(target=run, name=f"mcp-{call.__name__}", daemon=True).start()
    await finished.wait()
    error = outcome.get("error")
    if isinstance(error, CodeswarmError):
        raise ToolError(explain(error)) from None
    if error is not None:
        raise error
    return outcome["value"]


def clean(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the request id the MCP server made up for its own call."""
    return {key: value for key, value in event.items() if key != "request_id"}


class SwarmTools:
    """The tools, bound to one in-process router."""

    def __init__(self, swarms: Any) -> None:
        self.swarms = swarms

    def register(self, server: MCPServer) -> None:
        tools = {
            "launch": self.launch,
            "inject": self.inject,
            "wait": self.wait,
            "status": self.status,
            "list": self.list_swarms,
            "events": self.events,
            "interrupt": self.interrupt,
            "terminate": self.terminate,
            "approvals": self.approvals,
            "approve": self.approve,
            "steer": self.steer,
        }
        for name, tool in tools.items():
            server.add_tool(tool, name=name, description=inspect.cleandoc(tool.__doc__ or ""))

    async def launch(
        self,
        nodes: Annotated[int, Field(ge=1, le=4096, description="How many (Slurm) nodes.")],
        prompt: Annotated[
            str | None, Field(description="A first prompt sent to every agent (optional).")
        ] = None,
        time: Annotated[
            str | None, Field(description="Slurm time limit, e.g. 02:00:00 (clusters only).")
        ] = None,
        partition: Annotated[
            str | None, Field(description="Slurm partition (clusters only).")
        ] = None,
        agents_per_node: Annotated[
            int | None,
            Field(ge=1, le=256, description="Agents on each node (default: the config's, 1)."),
        ] = None,
    ) -> dict[str, Any]:
        """Start a new swarm of Codex agents, agents_per_node on each node (one by default).

        Use this once, before anything else, when no suitable swarm exists (call list to
        check). Returns the swarm: its swarm_id (pass it to every other tool), job_id,
        backend, state and nodes. The agents start in the background: a swarm is "pending"
        until its nodes run. With a prompt, it also returns that prompt's injection_ids, as
        inject does. Next: inject a task (or, with a prompt, wait for its answers).
        """
        swarm = clean(
            await blocking(
                self.swarms.launch, nodes, None, time, partition, agents_per_node=agents_per_node
            )
        )
        if prompt:
            swarm.update(await self._inject(swarm["swarm_id"], prompt, "all", None))
        return swarm

    async def inject(
        self,
        swarm_id: SwarmId,
        content: Annotated[str, Field(min_length=1, description="The prompt for the agents.")],
        nodes: Nodes = "all",
        injection_id: Annotated[
            str | None,
            Field(description="Your own id for this prompt; sending it again is harmless."),
        ] = None,
    ) -> dict[str, Any]:
        """Send a prompt to agents of a swarm, and return at once (it does not wait).

        Each node gets its own injection; the prompt is durably queued in each node's inbox
        when this returns, even if the node has not started yet (held: true). Returns
        injection_ids, one per node that accepted it, and failures for nodes that did not.
        Next: call wait with swarm_id and these injection_ids to get each agent's answer.
        """
        return {"swarm_id": swarm_id, **await self._inject(swarm_id, content, nodes, injection_id)}

    async def _inject(
        self, swarm_id: str, content: str, nodes: Any, injection_id: str | None
    ) -> dict[str, Any]:
        acks = await blocking(self.swarms.inject_and_wait, swarm_id, content, nodes, injection_id)
        accepted = [ack for ack in acks if ack["type"] == "inject_ack"]
        return {
            "injection_ids": [ack["injection_id"] for ack in accepted],
            "injected": [
                {
                    "node_id": ack["node_id"],
                    "injection_id": ack["injection_id"],
                    "held": bool(ack.get("held")),
                }
                for ack in accepted
            ],
            "failures": [clean(ack) for ack in acks if ack["type"] != "inject_ack"],
        }

    async def wait(
        self,
        swarm_id: SwarmId,
        injection_ids: Annotated[
            list[str], Field(min_length=1, description="The injection_ids that inject returned.")
        ],
        ctx: Context,
        timeout: Annotated[
            float, Field(gt=0, le=3600, description="Seconds to wait at most.")
        ] = 300.0,
    ) -> dict[str, Any]:
        """Wait until the agents have answered the given injections, or the timeout passes.

        Blocks; sends a progress notification as each node finishes. Returns answers, one
        per injection: node_id, status (completed, failed, interrupted, or pending when the
        timeout came first), message (the agent's final message), and error and detail when
        it failed. all_done says whether none is pending. If some are pending, call wait
        again with those ids; read events to see what the agents are doing meanwhile. If
        your tool calls time out sooner, pass a shorter timeout and call wait repeatedly.
        """
        token = anyio.lowlevel.current_token()
        total = len(injection_ids)
        finished = 0

        def on_answer(answer: dict[str, Any]) -> None:
            nonlocal finished
            finished += 1
            note = f"node {answer['node_id']}: {answer['status']}"
            with contextlib.suppress(RuntimeError):  # the event loop has ended (client gone)
                anyio.from_thread.run(ctx.report_progress, finished, total, note, token=token)

        cancel = threading.Event()
        try:
            answers = await blocking(
                self.swarms.wait, swarm_id, injection_ids, timeout, on_answer, cancel=cancel
            )
        finally:
            cancel.set()  # a call the client cancelled or gave up on ends its thread too
        return {
            "swarm_id": swarm_id,
            "answers": answers,
            "all_done": all(answer["status"] != "pending" for answer in answers),
        }

    async def status(self, swarm_id: SwarmId) -> dict[str, Any]:
        """Show one swarm's state (pending, running, exited, terminated) and each node's.

        Use it to check that a swarm's nodes are running, or why they stopped. The same is
        readable as the resource swarm://<swarm_id>.
        """
        return clean(await blocking(self.swarms.status, swarm_id))

    async def list_swarms(self) -> dict[str, Any]:
        """List every swarm this codeswarm knows, oldest first, with its state.

        Use it to find a swarm_id, or to see whether a swarm is already running before
        launching a new one.
        """
        return {"swarms": [clean(swarm) for swarm in await blocking(self.swarms.list)]}

    async def events(
        self,
        swarm_id: SwarmId,
        since: Annotated[
            int | float | str | None,
            Field(
                description="Read after this point: a cursor (an integer from a previous page's "
                'next_since), "start" for the beginning, or a time in ISO-8601 '
                "(2026-12-02T13:00:00Z). Default: the beginning."
            ),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=PAGE_LIMIT, description="Events in this page at most.")
        ] = 50,
        nodes: Annotated[
            list[int] | None, Field(description="Only these nodes' events (default: all).")
        ] = None,
    ) -> dict[str, Any]:
        """Read a swarm's recorded events, one page at a time, oldest first.

        Everything the agents did is kept: prompts delivered, messages (assistant), commands
        run and their output (item_completed), file changes, turn_complete, failures. Each
        event has a cursor. Returns events, next_since (pass it as since to read the next
        page) and more (whether another page is ready now). Use it to catch up on what
        happened, or to poll for new events with the last next_since.
        """
        page = await blocking(self.swarms.history, swarm_id, since, nodes=nodes, limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        next_since = page[-1]["cursor"] if page else since
        return {
            "swarm_id": swarm_id,
            "events": [clean(event) for event in page],
            "next_since": next_since,
            "more": more,
        }

    async def interrupt(self, swarm_id: SwarmId, nodes: Nodes = "all") -> dict[str, Any]:
        """Stop the running turn of agents; their queued prompts stay queued.

        Use it when an agent works on the wrong thing or takes too long. Returns each node's
        interrupt_ack (or error). The interrupted injections then finish with status
        interrupted in wait.
        """
        answers = await blocking(self.swarms.interrupt, swarm_id, nodes)
        return {"swarm_id": swarm_id, "nodes": [clean(answer) for answer in answers]}

    async def terminate(self, swarm_id: SwarmId) -> dict[str, Any]:
        """Stop every agent of a swarm for good (their running turns are interrupted).

        Use it when the work is done. The swarm stays in list as terminated; it cannot take
        prompts any more (launch a new one for new work).
        """
        await blocking(self.swarms.terminate, swarm_id)
        return {"swarm_id": swarm_id, "terminated": True}

    async def approvals(self, swarm_id: SwarmId, nodes: Nodes = "all") -> dict[str, Any]:
        """List the approval requests agents wait on (commands or file changes to allow).

        An agent configured to ask (approval_policy on-request or untrusted) pauses its turn
        until someone answers. Each request has an approval_id, its node_id, what it wants
        (command or changes) and why. Next: answer it with approve.
        """
        found = await blocking(self.swarms.approvals, swarm_id, nodes)
        return {"swarm_id": swarm_id, "approvals": [clean(item) for item in found]}

    async def approve(
        self,
        swarm_id: SwarmId,
        approval_id: Annotated[str, Field(description="The approval_id from approvals.")],
        decision: Annotated[
            Literal["accept", "accept_for_session", "decline"],
            Field(description="accept once, accept_for_session (no more asking), or decline."),
        ],
        nodes: Nodes = "all",
    ) -> dict[str, Any]:
        """Answer an agent's approval request; its turn then goes on.

        Nodes that ran the same prompt ask the same approval_id for the same command, so
        nodes "all" answers it everywhere it is pending. Returns each node's approve_ack, or
        an error (unknown_approval) from a node that has no such request.
        """
        answers = await blocking(self.swarms.approve, swarm_id, approval_id, decision, nodes)
        return {"swarm_id": swarm_id, "nodes": [clean(answer) for answer in answers]}

    async def steer(
        self,
        swarm_id: SwarmId,
        content: Annotated[str, Field(min_length=1, description="What to add to the turn.")],
        nodes: Nodes = "all",
    ) -> dict[str, Any]:
        """Add input to the agents' running turn, without starting a new one.

        Use it to correct course mid-task ("use the blocked layout"). It fails on a node with
        no running turn (then send a prompt with inject instead). Returns each node's
        steer_ack or error; steer_applied or steer_failed follows in events.
        """
        answers = await blocking(self.swarms.steer, swarm_id, content, nodes)
        return {"swarm_id": swarm_id, "nodes": [clean(answer) for answer in answers]}
