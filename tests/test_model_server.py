"""Tests of the local Responses server: over plain HTTP, then against the real codex binary."""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeswarm.codex_binary import find_codex
from codeswarm.errors import CodexNotFoundError
from codeswarm.model_server import (
    ModelServer,
    Reply,
    Usage,
    default_usage,
    last_user_text,
    split_text,
)

JSON = dict[str, Any]


def user_body(text: str) -> JSON:
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"model": "mock-model", "stream": True, "input": [message]}


def call(url: str, payload: Any = None, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """One request; returns (status, content type, body) for success and error statuses alike."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def parse_sse(raw: bytes) -> list[JSON]:
    """Parse SSE frames, checking each `event:` name against the data's type."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


def ask(server: ModelServer, text: str) -> list[JSON]:
    status, ctype, raw = call(f"{server.url}/responses", user_body(text))
    assert (status, ctype) == (200, "text/event-stream")
    return parse_sse(raw)


def deltas(events: list[JSON]) -> list[str]:
    return [e["delta"] for e in events if e["type"] == "response.output_text.delta"]


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as srv:
        yield srv


# ---------------------------------------------------------------- plain HTTP


def test_default_reply_is_a_well_formed_stream(server: ModelServer) -> None:
    events = ask(server, "hello there")
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        *["response.output_text.delta"] * 3,
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(deltas(events)) == "echo: hello there"
    done = events[-2]["item"]
    assert done["type"] == "message" and done["role"] == "assistant"
    assert done["content"] == [
        {"type": "output_text", "text": "echo: hello there", "annotations": []}
    ]
    assert events[1]["item"]["id"] == done["id"] == events[2]["item_id"]
    completed = events[-1]["response"]
    assert completed["id"] == events[0]["response"]["id"]
    body = server.requests[0]
    assert completed["usage"] == default_usage(body, 3).to_json()
    assert completed["usage"]["input_tokens"] == len(json.dumps(body["input"])) // 4 + 1
    assert completed["usage"]["total_tokens"] == completed["usage"]["input_tokens"] + 3


def test_scripted_text_deltas_and_usage(server: ModelServer) -> None:
    server.add_rule("story", Reply(text="abcdefghij", deltas=4, usage=Usage(10, 20, 3, 4)))
    events = ask(server, "tell a story")
    assert deltas(events) == ["abc", "def", "gh", "ij"]
    assert events[-1]["response"]["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 30,
    }


def test_rules_match_in_order_and_count_down(server: ModelServer) -> None:
    server.add_rule("alpha", Reply(text="A"), times=2)
    server.add_rule(None, Reply(text="ANY"))
    server.add_rule("forever", Reply(text="F"), times=None)
    said = [
        "".join(deltas(ask(server, t)))
        for t in ["beta", "beta", "alpha 1", "alpha 2", "alpha 3", "forever", "forever"]
    ]
    assert said == ["ANY", "echo: beta", "A", "A", "echo: alpha 3", "F", "F"]
    assert [last_user_text(b) for b in server.requests][:2] == ["beta", "beta"]
    assert server.rules == [{"match": "forever", "times": None, "reply": server.rules[0]["reply"]}]


@pytest.mark.parametrize("status", [500, 400])
def test_http_error_reply(server: ModelServer, status: int) -> None:
    server.add_rule(None, Reply(http_status=status, error_message="boom"))
    code, ctype, raw = call(f"{server.url}/responses", user_body("x"))
    assert (code, ctype) == (status, "application/json")
    assert json.loads(raw)["error"]["message"] == "boom"
    assert len(server.requests) == 1


def test_response_failed(server: ModelServer) -> None:
    server.add_rule(None, Reply(text="partial", failed=True))
    events = ask(server, "x")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == "scripted failure"
    assert "response.completed" not in [e["type"] for e in events]


def test_tool_call_item(server: ModelServer) -> None:
    server.add_rule(None, Reply(tool_call_cmd="ls -l"))
    events = ask(server, "x")
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[2]["item"]
    assert (item["type"], item["name"]) == ("function_call", "exec_command")
    assert json.loads(item["arguments"]) == {"cmd": "ls -l"}
    assert events[-1]["response"]["output"] == [item]
    assert events[-1]["response"]["usage"]["output_tokens"] == 0


def test_slow_stream(server: ModelServer) -> None:
    server.add_rule(None, Reply(text="slowly", deltas=3, delay_seconds=0.1))
    started = time.monotonic()
    assert "".join(deltas(ask(server, "x"))) == "slowly"
    assert time.monotonic() - started >= 0.28


def open_stream(srv: ModelServer, text: str) -> http.client.HTTPResponse:
    host, port = srv.url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/v1/responses", json.dumps(user_body(text)))
    return conn.getresponse()


def test_hang_ends_on_stop() -> None:
    baseline = handler_threads()
    srv = ModelServer().start()
    srv.add_rule(None, Reply(text="part", deltas=2, hang=True))
    response = open_stream(srv, "x")
    head = b""
    while head.count(b"event: response.output_text.delta") < 2:  # then the server hangs
        head += response.read1(4096)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2
    events = parse_sse(head + response.read())  # the server closed the stream
    assert deltas(events) == ["pa", "rt"]
    assert events[-1]["type"] == "response.output_text.delta"
    assert handler_threads() == baseline


def test_hang_ends_when_client_disconnects(server: ModelServer) -> None:
    baseline = handler_threads()
    server.add_rule(None, Reply(hang=True))
    response = open_stream(server, "x")
    assert b"response.created" in response.read1(4096)
    assert handler_threads() == baseline + 1
    response.close()
    assert wait_until(lambda: handler_threads() == baseline)


def test_control_endpoint(server: ModelServer) -> None:
    base = server.url.removesuffix("/v1")
    rules = [
        {"match": "one", "reply": {"text": "uno", "deltas": 1}},
        {"match": None, "times": 2, "reply": {"usage": {"input_tokens": 5, "output_tokens": 6}}},
    ]
    assert call(f"{base}/_control/rules", rules)[0] == 200
    assert deltas(ask(server, "number one")) == ["uno"]
    assert ask(server, "two")[-1]["response"]["usage"]["total_tokens"] == 11
    status, _, raw = call(f"{base}/_control/requests")
    listing = json.loads(raw)
    assert status == 200 and listing["count"] == 2
    assert [last_user_text(b) for b in listing["requests"]] == ["number one", "two"]
    assert json.loads(call(f"{base}/_control/rules")[2])[0]["times"] == 1
    assert call(f"{base}/_control/rules", [{"reply": {"nope": 1}}])[0] == 400
    assert call(f"{base}/_control/reset", {})[0] == 200
    assert server.requests == [] and server.rules == []


def test_models_and_unknown_paths(server: ModelServer) -> None:
    status, _, raw = call(f"{server.url}/models")
    assert status == 200 and json.loads(raw)["data"][0]["id"] == "mock-model"
    assert call(f"{server.url}/nothing")[0] == 404


def test_split_text_gives_the_asked_number_of_chunks() -> None:
    for length in range(12):
        for parts in range(6):
            chunks = split_text("x" * length, parts)
            assert len(chunks) == min(length, parts)
            assert "".join(chunks) == ("x" * length if parts else "")  # 0: text only in done


def test_cli_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": None, "reply": {"text": "from file", "deltas": 2}}]))
    cmd = [sys.executable, "-m", "codeswarm.model_server", "--rules", str(rules)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        status, _, raw = call(f"{url}/responses", user_body("hi"))
        assert status == 200 and deltas(parse_sse(raw)) == ["from ", "file"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.communicate(timeout=10)


# ---------------------------------------------------------------- real codex


CONFIG = """\
model = "mock-model"
model_provider = "local"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
[analytics]
enabled = false
[features]
plugins = false
apps = false
shell_snapshot = false
[model_providers.local]
name = "Local Responses server"
base_url = "{url}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


class AppServer:
    """Minimal `codex app-server` driver: JSON lines over stdio, every read with a deadline."""

    def __init__(self, binary: str, codex_home: Path) -> None:
        env = {**os.environ, "CODEX_HOME": str(codex_home)}
        self.proc = subprocess.Popen(
            [binary, "app-server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.notes: list[JSON] = []
        self.ids = iter(range(1, 1_000_000))
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True
        ).start()

    @staticmethod
    def _pump(stream: Any, sink: Any) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def send(self, message: JSON) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next_message(self, deadline: float) -> JSON:
        """The next message from codex; answers server requests (none expected) with an error."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"codex said nothing in time; stderr: {self.stderr[-5:]}"
                ) from None
            if line is None:
                raise EOFError(f"codex exited; stderr: {self.stderr[-5:]}")
            message = json.loads(line)
            if "method" in message and "id" in message:
                self.send(
                    {"id": message["id"], "error": {"code": -32601, "message": "unsupported"}}
                )
            return message

    def request(self, method: str, params: JSON, timeout: float = 20.0) -> JSON:
        request_id = next(self.ids)
        self.send({"id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(deadline)
            if message.get("id") == request_id and "method" not in message:
                assert "error" not in message, message
                return message["result"]
            if "method" in message:
                self.notes.append(message)

    def run_turn(self, thread_id: str, text: str, timeout: float = 30.0) -> list[JSON]:
        """Start a turn and return its notifications up to and including turn/completed."""
        first = len(self.notes)
        self.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]}
        )
        deadline = time.monotonic() + timeout
        while not self.notes[first:] or self.notes[-1]["method"] != "turn/completed":
            message = self.next_message(deadline)
            if "method" in message:
                self.notes.append(message)
        return self.notes[first:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Codex:
    """A started app-server with one thread, talking to `server`."""

    def __init__(self, app: AppServer, thread_id: str, workspace: Path) -> None:
        self.app, self.thread_id, self.workspace = app, thread_id, workspace

    def turn(self, text: str) -> list[JSON]:
        return self.app.run_turn(self.thread_id, text)


@pytest.fixture
def codex_binary() -> str:
    try:
        return find_codex()
    except CodexNotFoundError as error:
        pytest.skip(f"real codex binary not installed ({error})")


@pytest.fixture
def codex(codex_binary: str, server: ModelServer) -> Iterator[Codex]:
    # docs/codex-app-server.md: CODEX_HOME should not be under /tmp, so use a dir in ~/.cache.
    home = Path.home() / ".cache" / "codeswarm-tests" / uuid.uuid4().hex
    workspace = home / "workspace"
    workspace.mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG.format(url=server.url))
    app = AppServer(codex_binary, home)
    try:
        capabilities = {
            "experimentalApi": False,
            "optOutNotificationMethods": ["account/rateLimits/updated", "thread/status/changed"],
        }
        client = {"name": "codeswarm_tests", "title": None, "version": "0.1"}
        app.request("initialize", {"clientInfo": client, "capabilities": capabilities})
        app.send({"method": "initialized"})
        params = {"cwd": str(workspace), "approvalPolicy": "never", "sandbox": "danger-full-access"}
        thread = app.request("thread/start", params)["thread"]
        yield Codex(app, thread["id"], workspace)
    finally:
        app.close()
        shutil.rmtree(home, ignore_errors=True)


def by_method(notes: list[JSON], method: str) -> list[JSON]:
    return [n["params"] for n in notes if n["method"] == method]


def turn_status(notes: list[JSON]) -> str:
    return by_method(notes, "turn/completed")[-1]["turn"]["status"]


@pytest.mark.integration
def test_codex_streams_scripted_deltas(codex: Codex, server: ModelServer) -> None:
    text = "Hello from the scripted model!"
    server.add_rule("greet", Reply(text=text, deltas=5))
    notes = codex.turn("please greet me")
    streamed = [d["delta"] for d in by_method(notes, "item/agentMessage/delta")]
    assert len(streamed) == 5 and "".join(streamed) == text
    messages = [i["item"] for i in by_method(notes, "item/completed")]
    assert [m["text"] for m in messages if m["type"] == "agentMessage"] == [text]
    assert turn_status(notes) == "completed"
    (body,) = server.requests
    assert body["stream"] is True and body["model"] == "mock-model"
    assert last_user_text(body) == "please greet me"


@pytest.mark.integration
def test_codex_reports_scripted_and_default_usage(codex: Codex, server: ModelServer) -> None:
    server.add_rule("count", Reply(text="ok", usage=Usage(1234, 56, 78, 9)))
    (usage,) = by_method(codex.turn("count me"), "thread/tokenUsage/updated")
    last = usage["tokenUsage"]["last"]
    assert (last["inputTokens"], last["outputTokens"], last["totalTokens"]) == (1234, 56, 1290)
    assert (last["cachedInputTokens"], last["reasoningOutputTokens"]) == (78, 9)
    # Unscripted turn: the default usage is predictable from the request codex sent.
    (usage,) = by_method(codex.turn("and again"), "thread/tokenUsage/updated")
    expected = default_usage(server.requests[-1], 3)
    last = usage["tokenUsage"]["last"]
    assert (last["inputTokens"], last["outputTokens"]) == (expected.input_tokens, 3)
    assert usage["tokenUsage"]["total"]["totalTokens"] == 1290 + expected.input_tokens + 3


@pytest.mark.integration
def test_codex_runs_scripted_tool_call(codex: Codex, server: ModelServer) -> None:
    server.add_rule("build", Reply(tool_call_cmd="echo tool-ran > marker.txt && echo done"))
    notes = codex.turn("build it")
    assert (codex.workspace / "marker.txt").read_text().strip() == "tool-ran"
    commands = [i["item"] for i in by_method(notes, "item/completed")]
    commands = [c for c in commands if c["type"] == "commandExecution"]
    assert len(commands) == 1 and commands[0]["status"] == "completed"
    assert turn_status(notes) == "completed"
    _, second = server.requests
    outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1 and "done" in outputs[0]["output"]
    calls = [i for i in second["input"] if i.get("type") == "function_call"]
    assert calls[0]["call_id"] == outputs[0]["call_id"]
    assert len(by_method(notes, "thread/tokenUsage/updated")) == 2


@pytest.mark.integration
@pytest.mark.parametrize(
    "reply",
    [Reply(http_status=500), Reply(http_status=400), Reply(text="half", failed=True)],
    ids=["http500", "http400", "response.failed"],
)
def test_codex_fails_the_turn(codex: Codex, server: ModelServer, reply: Reply) -> None:
    server.add_rule(None, reply)
    notes = codex.turn("this will fail")
    (completed,) = by_method(notes, "turn/completed")
    assert completed["turn"]["status"] == "failed"
    assert completed["turn"]["error"]["message"]
    assert len(server.requests) == 1  # no retries with the offline config
    # The thread stays usable: the next turn gets the default reply.
    assert turn_status(codex.turn("recover")) == "completed"


@pytest.mark.integration
def test_codex_interrupt_ends_a_hanging_stream(codex: Codex, server: ModelServer) -> None:
    baseline = handler_threads()
    server.add_rule(None, Reply(text="never ends", deltas=2, hang=True))
    turn = codex.app.request(
        "turn/start", {"threadId": codex.thread_id, "input": [{"type": "text", "text": "hang"}]}
    )["turn"]
    deadline = time.monotonic() + 20
    while len(by_method(codex.app.notes, "item/agentMessage/delta")) < 2:
        message = codex.app.next_message(deadline)
        if "method" in message:
            codex.app.notes.append(message)
    codex.app.request("turn/interrupt", {"threadId": codex.thread_id, "turnId": turn["id"]})
    while not by_method(codex.app.notes, "turn/completed"):
        message = codex.app.next_message(deadline)
        if "method" in message:
            codex.app.notes.append(message)
    assert turn_status(codex.app.notes) == "interrupted"
    assert wait_until(lambda: handler_threads() == baseline)
