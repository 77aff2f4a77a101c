"""A scriptable local OpenAI Responses server, so the real codex binary runs offline in tests.

codex POSTs `{base_url}/responses` and reads the reply as server-sent events. This server answers
with the events codex needs (see docs/codex-app-server.md) and lets a test script the replies:
text in N deltas, a shell tool call, slow or hanging streams, HTTP errors, `response.failed`
and exact token usage. Rules can be set in process (`add_rule`) or over HTTP (`/_control/...`)
so that a worker in another process can be scripted too. A client agent with tools of its own
(OpenClaw) follows a whole scripted conversation instead (`add_script`, see model_script.py).
Standard library only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import select
import signal
import socket
import socketserver
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from codeswarm.model_script import Call, Script

log = logging.getLogger("codeswarm.model_server")

JSON = dict[str, Any]
DEFAULT_MODEL = "mock-model"


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


@dataclass
class Rule:
    """Use `reply` for requests whose latest user text contains `match` (None: any request).

    `times` is the number of uses left; None means unlimited.
    """

    match: str | None
    reply: Reply
    times: int | None = 1

    @classmethod
    def from_json(cls, data: JSON) -> Rule:
        return cls(data.get("match"), Reply.from_json(data.get("reply", {})), data.get("times", 1))

    def to_json(self) -> JSON:
        return {"match": self.match, "times": self.times, "reply": asdict(self.reply)}


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


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = 10  # socket reads/writes; bounds how long a silent client can hold stop()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        owner, method, path = self.server.owner, self.command, self.path.split("?")[0].rstrip("/")
        try:
            if method == "GET" and path.endswith("/models"):
                item = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "local"}
                self._send_json(200, {"object": "list", "data": [item]})
            elif method == "GET" and path == "/_control/requests":
                bodies = owner.requests
                self._send_json(200, {"count": len(bodies), "requests": bodies})
            elif method == "GET" and path == "/_control/rules":
                self._send_json(200, owner.rules)
            elif method == "POST" and path.endswith("/responses"):
                body = self._read_json()
                _Stream(self, owner, body, owner._record_and_match(body)).run()
            elif method == "POST" and path == "/_control/rules":
                for rule in [Rule.from_json(r) for r in _as_list(self._read_json())]:
                    owner.add_rule(rule.match, rule.reply, rule.times)
                self._send_json(200, {"rules": len(owner.rules)})
            elif method == "POST" and path == "/_control/scripts":
                for script in [Script.from_json(s) for s in _as_list(self._read_json())]:
                    owner.add_script(script)
                self._send_json(200, {"scripts": len(owner.scripts)})
            elif method == "POST" and path == "/_control/reset":
                owner.reset()
                self._send_json(200, {"rules": 0, "count": 0})
            else:
                self._send_json(404, {"error": {"message": f"no route {method} {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s %s", method, path)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # bad JSON or fields
            self._send_json(400, {"error": {"message": f"bad request: {exc}"}})

    do_POST = do_GET

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _reply_for(call: Call) -> Reply:
    if call.tool is None:
        return Reply(text=call.text)
    return Reply(function=call.tool, tool_call_args=call.arguments)


def _as_list(payload: Any) -> list[JSON]:
    return payload if isinstance(payload, list) else [payload]


class _Stream:
    """Writes one scripted reply as a Responses SSE stream (or as an HTTP error)."""

    def __init__(self, handler: _Handler, owner: ModelServer, body: JSON, reply: Reply) -> None:
        self.handler, self.owner, self.body, self.reply = handler, owner, body, reply
        self.n = next(owner._ids)  # atomic in CPython

    def run(self) -> None:
        reply, handler, call = self.reply, self.handler, self.function_call()
        if reply.http_status is not None:
            kind = "server_error" if reply.http_status >= 500 else "invalid_request_error"
            error = {"message": reply.error_message, "type": kind, "code": None}
            handler._send_json(reply.http_status, {"error": error})
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
                if reply.delay_seconds and self.owner._stopping.wait(reply.delay_seconds):
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
        while not self.owner._stopping.wait(0.05):
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                    log.info("client closed a hanging stream")
                    return
            except OSError:
                return


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: none outlive stop()
    block_on_close = True
    owner: ModelServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), slow without DNS: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class ModelServer:
    """The server; `start()` runs it on a background thread. Also a context manager."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._lock = threading.Condition()
        self._rules: list[Rule] = []
        self._scripts: list[Script] = []
        self._requests: list[JSON] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[JSON]:
        """A copy of every JSON body POSTed to /v1/responses, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def rules(self) -> list[JSON]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    @property
    def scripts(self) -> list[JSON]:
        with self._lock:
            return [script.to_json() for script in self._scripts]

    def add_script(self, script: Script) -> None:
        """Play `script` to every request whose user messages contain its marker.

        Scripts come before rules and are never used up: one script drives a whole conversation.
        """
        with self._lock:
            self._scripts.append(script)

    def add_rule(self, match: str | None, reply: Reply, times: int | None = 1) -> None:
        """Answer the next `times` requests whose latest user text contains `match` with reply.

        Rules are tried in the order added; unmatched requests get the default echo reply.
        codex re-sends the prompt after a tool call, so the follow-up request matches too.
        """
        if times is not None and times <= 0:
            return
        with self._lock:
            self._rules.append(Rule(match, reply, times))

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._scripts.clear()
            self._requests.clear()

    def _record_and_match(self, body: JSON) -> Reply:
        text = last_user_text(body)
        with self._lock:
            self._requests.append(body)
            self._lock.notify_all()
            for script in self._scripts:
                if script.matches(body):
                    return _reply_for(script.next_call(body))
            for rule in self._rules:
                if rule.match is None or rule.match in text:
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule.reply
        return Reply()

    def start(self) -> ModelServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        log.info("listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, end hanging and slow streams, and join every thread."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codeswarm.model_server", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--rules", help="JSON file: a list of {match, times, reply} rules")
    parser.add_argument("--scripts", help="JSON file: a list of {match, steps} scripts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    server = ModelServer(port=args.port)
    if args.rules:
        with open(args.rules, encoding="utf-8") as handle:
            for rule in [Rule.from_json(r) for r in _as_list(json.load(handle))]:
                server.add_rule(rule.match, rule.reply, rule.times)
    if args.scripts:
        with open(args.scripts, encoding="utf-8") as handle:
            for script in [Script.from_json(s) for s in _as_list(json.load(handle))]:
                server.add_script(script)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    server.start()
    print(json.dumps({"url": server.url}), flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
