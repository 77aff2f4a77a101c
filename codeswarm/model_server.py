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
import signal
import socketserver
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from codeswarm.model_script import Call, Script
from codeswarm.model_stream import (
    Reply,
    ResponseStream,
    Usage,
    default_text,
    default_usage,
    last_user_text,
    split_text,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelServer",
    "Reply",
    "Rule",
    "Usage",
    "default_text",
    "default_usage",
    "last_user_text",
    "main",
    "split_text",
]

log = logging.getLogger("codeswarm.model_server")

JSON = dict[str, Any]
DEFAULT_MODEL = "mock-model"


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
                self.send_json(200, {"object": "list", "data": [item]})
            elif method == "GET" and path == "/_control/requests":
                bodies = owner.requests
                self.send_json(200, {"count": len(bodies), "requests": bodies})
            elif method == "GET" and path == "/_control/rules":
                self.send_json(200, owner.rules)
            elif method == "POST" and path.endswith("/responses"):
                body = self._read_json()
                reply = owner._record_and_match(body)
                ResponseStream(self, owner._stopping, next(owner._ids), body, reply).run()
            elif method == "POST" and path == "/_control/rules":
                for rule in [Rule.from_json(r) for r in _as_list(self._read_json())]:
                    owner.add_rule(rule.match, rule.reply, rule.times)
                self.send_json(200, {"rules": len(owner.rules)})
            elif method == "POST" and path == "/_control/scripts":
                for script in [Script.from_json(s) for s in _as_list(self._read_json())]:
                    owner.add_script(script)
                self.send_json(200, {"scripts": len(owner.scripts)})
            elif method == "POST" and path == "/_control/reset":
                owner.reset()
                self.send_json(200, {"rules": 0, "count": 0})
            else:
                self.send_json(404, {"error": {"message": f"no route {method} {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s %s", method, path)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # bad JSON or fields
            self.send_json(400, {"error": {"message": f"bad request: {exc}"}})

    do_POST = do_GET

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def send_json(self, status: int, payload: Any) -> None:
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
