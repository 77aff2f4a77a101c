"""One scripted reply written as an OpenAI Responses stream (server-sent events).

The model server (model_server.py) picks a `Reply` for each request; `ResponseStream` writes it
the way codex and other Responses clients read it: text in deltas, a reasoning summary, a
function call, a failure, a stream that hangs, or an HTTP error. Standard library only.
"""

from __future__ import annotations

import itertools
import json
import logging
import select
import socket
import threading
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("codeswarm.model_server")

JSON = dict[str, Any]


class Handler(Protocol):
    """What the stream needs of the HTTP request handler."""

    wfile: Any
    connection: socket.socket

    def send_response(self, code: int, message: str | None = None) -> None: ...
    def send_header(self, keyword: str, value: str) -> None: ...
    def end_headers(self) -> None: ...
    def send_json(self, status: int, payload: Any) -> None: ...


@dataclass(frozen=True)
class Usage:
    """Token figures reported in `response.completed` (codex turns them into tokenUsage)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_json(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class Reply:
    """What to answer one request with.

    text=None means the default echo text (no text at all when tool_call_cmd is set).
    hang: stream the deltas, then neither finish nor close until stop() or client disconnect.
    http_status: answer with that status and a JSON error body instead of a stream.
    failed: end the stream with `response.failed` instead of `response.completed`, its error
    code `error_code` (codex types some: `context_length_exceeded` is a full context window).
    tool_call_cmd: a shell tool call; codex runs `apply_patch <<'EOF' ... EOF` as a patch.
    function: call this function instead, with tool_call_args as its arguments (for clients
    whose tools are not codex's).
    reasoning: a reasoning summary streamed before the text, in `deltas` pieces.
    tool_call_args: more arguments of the shell call (`{"sandbox_permissions": "require_escalated"}`
    makes codex ask for approval under `on-request`).
    """

    text: str | None = None
    deltas: int = 3
    delay_seconds: float = 0.0
    hang: bool = False
    http_status: int | None = None
    failed: bool = False
    error_message: str = "scripted failure"
    error_code: str = "server_error"
    tool_call_cmd: str | None = None
    tool_call_args: JSON | None = None
    function: str | None = None
    reasoning: str | None = None
    usage: Usage | None = None

    @classmethod
    def from_json(cls, data: JSON) -> Reply:
        usage = data.get("usage")  # unknown fields raise TypeError
        return cls(**{**data, "usage": Usage(**usage) if usage is not None else None})


def last_user_text(body: JSON) -> str:
    """The text of the latest user message in a Responses request (the prompt of this turn)."""
    for item in reversed(body.get("input") or []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            parts = content if isinstance(content, list) else []
            return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    return ""


def default_text(body: JSON) -> str:
    return f"echo: {last_user_text(body)[:40]}"


def default_usage(body: JSON, deltas: int) -> Usage:
    """Deterministic usage: input = len(json.dumps(body['input'])) // 4 + 1, output = deltas."""
    return Usage(input_tokens=len(json.dumps(body.get("input", []))) // 4 + 1, output_tokens=deltas)


def split_text(text: str, parts: int) -> list[str]:
    """Split text into min(parts, len(text)) non-empty chunks (exactly `parts` when possible)."""
    count = min(max(parts, 0), len(text))
    size, extra = divmod(len(text), count or 1)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


class ResponseStream:
    """Writes one scripted reply as a Responses SSE stream (or as an HTTP error)."""

    def __init__(
        self, handler: Handler, stopping: threading.Event, n: int, body: JSON, reply: Reply
    ) -> None:
        self.handler, self.stopping, self.n = handler, stopping, n
        self.body, self.reply = body, reply

    def run(self) -> None:
        reply, handler, call = self.reply, self.handler, self.function_call()
        if reply.http_status is not None:
            kind = "server_error" if reply.http_status >= 500 else "invalid_request_error"
            error = {"message": reply.error_message, "type": kind, "code": None}
            handler.send_json(reply.http_status, {"error": error})
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")  # codex reports completion at end of stream
        handler.end_headers()
        response = {"id": f"resp_{self.n}", "object": "response", "model": self.body.get("model")}
        self.event("response.created", response={**response, "status": "in_progress"})
        output: list[JSON] = []
        text = default_text(self.body) if reply.text is None and call is None else reply.text
        chunks = split_text(text or "", reply.deltas)
        if reply.reasoning is not None:
            output.append(self.reasoning(reply.reasoning, len(output)))
        if text is not None and (text or call is None):
            # codex drops deltas that arrive before output_item.added announces their item.
            added = {**self.message_item(""), "content": [], "status": "in_progress"}
            self.event("response.output_item.added", output_index=len(output), item=added)
            for chunk in chunks:
                if reply.delay_seconds and self.stopping.wait(reply.delay_seconds):
                    return
                ids = {"item_id": f"msg_{self.n}", "output_index": len(output), "content_index": 0}
                self.event("response.output_text.delta", **ids, delta=chunk)
            if not reply.hang:
                output.append(self.message_item(text))
                self.event(
                    "response.output_item.done", output_index=len(output) - 1, item=output[-1]
                )
        if reply.hang:
            self.wait_forever()
            return
        if call is not None:
            item = {
                "type": "function_call",
                "id": f"fc_{self.n}",
                "call_id": f"call_{self.n}",
                "name": call[0],
                "arguments": json.dumps(call[1]),
                "status": "completed",
            }
            self.event("response.output_item.added", output_index=len(output), item=item)
            self.event("response.output_item.done", output_index=len(output), item=item)
            output.append(item)
        if reply.failed:
            error = {"code": reply.error_code, "message": reply.error_message}
            self.event("response.failed", response={**response, "status": "failed", "error": error})
            return
        usage = reply.usage or default_usage(self.body, len(chunks))
        done = {**response, "status": "completed", "output": output, "usage": usage.to_json()}
        self.event("response.completed", response=done)

    def function_call(self) -> tuple[str, JSON] | None:
        """The (name, arguments) of the function call to send, if any."""
        reply = self.reply
        if reply.function is not None:
            return reply.function, dict(reply.tool_call_args or {})
        if reply.tool_call_cmd is not None:
            return "exec_command", {"cmd": reply.tool_call_cmd, **(reply.tool_call_args or {})}
        return None

    def reasoning(self, summary: str, index: int) -> JSON:
        """Stream one reasoning item with a one-part summary; return the finished item."""
        item_id = f"rs_{self.n}"
        started = {"type": "reasoning", "id": item_id, "summary": []}
        self.event("response.output_item.added", output_index=index, item=started)
        part = {"item_id": item_id, "output_index": index, "summary_index": 0}
        self.event(
            "response.reasoning_summary_part.added",
            **part,
            part={"type": "summary_text", "text": ""},
        )
        for chunk in split_text(summary, self.reply.deltas):
            self.event("response.reasoning_summary_text.delta", **part, delta=chunk)
        self.event("response.reasoning_summary_text.done", **part, text=summary)
        done = {**started, "summary": [{"type": "summary_text", "text": summary}]}
        self.event("response.output_item.done", output_index=index, item=done)
        return done

    def message_item(self, text: str) -> JSON:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        return {"type": "message", "role": "assistant", "id": f"msg_{self.n}", "content": content}

    def event(self, kind: str, **data: Any) -> None:
        line = json.dumps({"type": kind, **data})
        self.handler.wfile.write(f"event: {kind}\ndata: {line}\n\n".encode())
        self.handler.wfile.flush()

    def wait_forever(self) -> None:
        """Hold the stream open until stop() or until the client closes its end."""
        conn = self.handler.connection
        while not self.stopping.wait(0.05):
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                    log.info("client closed a hanging stream")
                    return
            except OSError:
                return
