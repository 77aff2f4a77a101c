"""How the CLI shows swarms and events to a person (``--json`` shows them to programs)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import click

from codeswarm.cli import activity
from codeswarm.cli.activity import clean

NODE_COLOURS = ("cyan", "magenta", "blue", "yellow", "green", "bright_cyan", "bright_blue")
STDERR_TAIL_LINES = 5
_PIECES = re.compile(r"[^\n]*\n|[^\n]+")


def print_swarm(swarm: dict[str, Any], brief: bool) -> None:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(swarm["created"]))
    states: dict[str, int] = {}
    for node in swarm["nodes"]:
        states[node["state"]] = states.get(node["state"], 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    waits = f" ({swarm['pending_reason']})" if swarm.get("pending_reason") else ""
    click.echo(
        f"{swarm['swarm_id']}  {swarm['state']:<10}  job {swarm['job_id']}  "
        f"{len(swarm['nodes'])} nodes ({summary}){waits}  {swarm['backend']}  {created}"
    )
    if not brief:
        for node in swarm["nodes"]:
            removed = " (removed)" if node.get("removed") else ""
            click.echo(f"  node {node['node_id']}: {node['state']}{removed}{node_place(node)}")


def node_place(node: dict[str, Any]) -> str:
    """Where an agent runs, as far as known: `` on HOST (Slurm node n1, job 40_1)``."""
    slurm = [
        f"{label} {clean(node[key])}"
        for label, key in (("Slurm node", "slurm_node"), ("job", "slurm_job"))
        if node.get(key)
    ]
    place = f" on {clean(node['host'])}" if node.get("host") else ""
    return place + (f" ({', '.join(slurm)})" if slurm else "")


def _plain(text: str, **style: Any) -> str:
    return text


class EventRenderer:
    """Events in, text out: one prefixed line or a few per event, streamed text as it comes.

    Pure (the caller writes what ``render`` returns), so a test sees exactly what a person
    would. Streams (assistant text, reasoning, command output) are written as they arrive;
    a line left open by one node is ended before another node writes, so every line carries
    its node's prefix.
    """

    def __init__(self, color: bool, show_swarm: bool = False) -> None:
        self.paint: activity.Paint = click.style if color else _plain
        self.show_swarm = show_swarm
        self.open: tuple[Any, ...] | None = None  # the stream whose line is not yet ended
        self.streamed: set[tuple[Any, Any]] = set()  # nodes whose assistant text came as deltas
        self.handlers: dict[str, Callable[[dict[str, Any]], list[str] | str]] = {
            "assistant": self.assistant,
            "turn_started": lambda e: self.faint("turn started"),
            "turn_complete": self.turn_complete,
            "usage": self.usage,
            "inject_ack": self.inject_ack,
            "inject_delivered": lambda e: self.faint(f"prompt {clean(e['injection_id'])} read"),
            "inject_failed": self.inject_failed,
            "interrupt_ack": lambda e: self.paint("interrupt sent", fg="yellow"),
            "approve_ack": lambda e: self.faint(f"answer to {clean(e.get('approval_id'))} sent"),
            "steer_ack": lambda e: self.faint(f"steer {clean(e.get('steer_id'))} sent"),
            "node_started": lambda e: self.paint(
                f"node started on {clean(e.get('host'))} (pid {clean(e.get('pid'))})", fg="green"
            ),
            "node_exited": lambda e: self.paint(
                f"node exited ({clean(e.get('reason'))})", fg="yellow"
            ),
            "error": self.error,
            "ready": lambda e: self.faint(f"router ready ({clean(e.get('backend'))})"),
            "pong": lambda e: self.faint("pong"),
            "shutting_down": lambda e: self.faint("router shutting down"),
            "subscribed": lambda e: self.faint(
                "subscribed: " + (", ".join(map(clean, e.get("events") or [])) or "answers only")
            ),
            "swarm_launched": lambda e: self.swarm_line(e.get("swarm") or {}),
            "swarm_status": lambda e: self.swarm_line(e.get("swarm") or {}),
            "swarm_list": lambda e: [self.swarm_line(s) for s in e.get("swarms") or []],
            "swarm_terminated": lambda e: f"swarm {clean(e.get('swarm_id'))} terminated",
            "swarm_diff": lambda e: (
                "diff read, node "
                + ", ".join(clean(n.get("node_id")) for n in e.get("nodes") or [])
            ),
            "item_started": lambda e: activity.item_lines(e, self.paint),
            "item_completed": lambda e: activity.item_lines(e, self.paint),
            "turn_diff": lambda e: activity.turn_diff_line(e, self.paint),
            "plan_updated": lambda e: activity.plan_lines(e, self.paint),
            "rate_limits": lambda e: activity.rate_limits_line(e, self.paint),
            "model_rerouted": lambda e: self.paint(
                f"model rerouted: {clean(e.get('from_model'))} -> {clean(e.get('to_model'))} "
                f"({clean(e.get('reason'))})",
                fg="yellow",
            ),
            "approval_request": lambda e: activity.approval_lines(e, self.paint),
            "approval_resolved": lambda e: activity.approval_resolved_line(e, self.paint),
            "approval_list": self.approval_list,
            "steer_applied": lambda e: self.faint(f"steer {clean(e.get('steer_id'))} applied"),
            "steer_failed": lambda e: self.paint(
                f"steer {clean(e.get('steer_id'))} failed ({clean(e.get('error'))}): "
                f"{clean(e.get('message'))}",
                fg="red",
            ),
        }

    # ---- the frame: prefixes, open lines ----------------------------------------------------

    def render(self, event: dict[str, Any]) -> str:
        """The text to write for ``event``; it may end mid-line while a stream runs."""
        kind = event.get("type")
        if kind == "assistant_delta":
            self.streamed.add(self.node(event))
            return self.stream(event, "assistant", event.get("delta"), {})
        if kind == "assistant" and self.node(event) in self.streamed:
            # Its text is on screen already, streamed: only its line is left to end.
            node = self.node(event)
            self.streamed.discard(node)
            return self.end_line() if self.open == (*node, "assistant") else ""
        if kind == "reasoning_delta":
            return self.stream(event, "reasoning", event.get("delta"), {"dim": True})
        if kind == "command_output_delta":
            text = self.stream(event, event.get("item_id"), event.get("delta"), {"dim": True})
            if event.get("truncated"):
                path = clean(event.get("output_path"))
                text += self.lines(event, self.faint(f"output truncated; all of it in {path}"))
            return text
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        body = handler(event) if handler else self.faint(f"{clean(kind)} {activity.compact(event)}")
        return self.lines(event, body)

    def finish(self) -> str:
        """A newline if a stream left its line open: for the end of the output."""
        return self.end_line()

    def node(self, event: dict[str, Any]) -> tuple[Any, Any]:
        return event.get("swarm_id") or event.get("job_id"), event.get("node_id")

    def prefix(self, event: dict[str, Any]) -> str:
        swarm, node_id = self.node(event)
        if node_id is None:
            label = clean(swarm) if swarm else "codeswarm"
            return self.paint(f"[{label}]", bold=True)
        label = f"{clean(swarm)} n{clean(node_id)}" if self.show_swarm else f"n{clean(node_id)}"
        colour = NODE_COLOURS[node_id % len(NODE_COLOURS)] if isinstance(node_id, int) else None
        return self.paint(f"[{label}]", fg=colour, bold=True)

    def end_line(self) -> str:
        ended, self.open = self.open is not None, None
        return "\n" if ended else ""

    def lines(self, event: dict[str, Any], body: list[str] | str) -> str:
        body = [body] if isinstance(body, str) else body
        if not body:
            return ""
        prefix = self.prefix(event)
        text = "".join(f"{prefix} {line}\n" for part in body for line in part.split("\n"))
        return self.end_line() + text

    def stream(self, event: dict[str, Any], name: Any, delta: Any, style: dict[str, Any]) -> str:
        key = (*self.node(event), name)
        out = []
        for piece in _PIECES.findall(clean(delta) if delta else ""):
            if self.open != key:
                out.append(self.end_line() + self.prefix(event) + " ")
                self.open = key
            text = piece.rstrip("\n")
            out.append(self.paint(text, **style) if text else "")
            if piece.endswith("\n"):
                out.append("\n")
                self.open = None
        return "".join(out)

    def faint(self, text: str) -> str:
        return self.paint(text, dim=True)

    # ---- the router's own events ------------------------------------------------------------

    def assistant(self, event: dict[str, Any]) -> str:
        return clean(str(event.get("content") or "").rstrip("\n"))

    def turn_complete(self, event: dict[str, Any]) -> str:
        status = clean(event.get("status"))
        if status == "completed":
            return self.faint("turn completed")
        if status == "interrupted":
            return self.paint("turn interrupted", fg="yellow")
        code = f" [{clean(event['error_code'])}]" if event.get("error_code") else ""
        error = f": {clean(event['error'])}" if event.get("error") else ""
        return self.paint(f"turn {status}{code}{error}", fg="red", bold=True)

    def usage(self, event: dict[str, Any]) -> str:
        return self.faint(
            f"tokens: {event.get('total_tokens')} (input {event.get('input_tokens')}, "
            f"cached {event.get('cached_input_tokens')}, output {event.get('output_tokens')}, "
            f"reasoning {event.get('reasoning_output_tokens')})"
        )

    def inject_ack(self, event: dict[str, Any]) -> str:
        note = " (node not started yet)" if event.get("held") else ""
        note += " (duplicate)" if event.get("duplicate") else ""
        return self.faint(f"prompt {clean(event.get('injection_id'))} queued{note}")

    def inject_failed(self, event: dict[str, Any]) -> list[str]:
        line = (
            f"prompt {clean(event.get('injection_id'))} failed ({clean(event.get('error'))}): "
            f"{clean(event.get('message'))}"
        )
        return [self.paint(line, fg="red", bold=True), *self.stderr_tail(event)]

    def error(self, event: dict[str, Any]) -> list[str]:
        line = f"error {clean(event.get('error'))}: {clean(event.get('message'))}"
        return [self.paint(line, fg="red", bold=True), *self.stderr_tail(event)]

    def stderr_tail(self, event: dict[str, Any]) -> list[str]:
        stderr = str(event.get("stderr") or "").rstrip("\n").splitlines()
        return [self.faint(f"  | {clean(line)}") for line in stderr[-STDERR_TAIL_LINES:]]

    def swarm_line(self, swarm: dict[str, Any]) -> str:
        count = len(swarm.get("nodes") or [])
        jobs = swarm.get("jobs") or []
        # continuations and restarted tasks: every job the swarm has run as
        ran = f", ran as {clean(' '.join(map(str, jobs)))}" if len(jobs) > 1 else ""
        return (
            f"swarm {clean(swarm.get('swarm_id'))} {clean(swarm.get('state'))} "
            f"(job {clean(swarm.get('job_id'))}, {count} node{'s' if count != 1 else ''}{ran})"
        )

    def approval_list(self, event: dict[str, Any]) -> list[str]:
        pending = event.get("approvals") or []
        lines = [f"{len(pending)} pending approval{'s' if len(pending) != 1 else ''}"]
        for approval in pending:
            lines.extend(f"  {line}" for line in activity.approval_lines(approval, self.paint))
        return lines
