"""The worker's codex app-server: start, handshake, thread, requests in flight, answers.

Each start is a new generation; messages from an older process are ignored, so a restart
never mixes two processes' replies. Everything runs on the worker's main thread: the
app-server's reader thread only puts ``(kind, generation, payload)`` on the worker's queue.
"""

import logging
import os

from . import codex_protocol
from .app_server import AppServer
from .codex_home import codex_environment, prepare_codex_home

log = logging.getLogger("codeswarm.worker")
WORKER_VERSION = "0.1"


class CodexSession:
    def __init__(
        self, agent, codex_home, workspace, log_path, events, report, on_thread, on_request
    ):
        self.agent = agent
        self.codex_home = codex_home
        self.workspace = workspace
        self.log_path = log_path
        self.events = events
        self.report = report  # report(message, stderr=None): an agent_error event
        self.on_thread = on_thread  # on_thread(thread_id): the thread is open
        self.on_request = on_request  # on_request(message): True if the worker answers it later
        self.generation = 0
        self.process = None
        self.ready = False
        self.pending = {}
        self.thread_id = None

    def start(self, thread_id):
        """Start codex and open ``thread_id`` (resume) or a new thread; answers come later."""
        self.generation += 1
        generation = self.generation
        self.ready = False
        self.pending = {}
        self.thread_id = thread_id
        argv = [self.agent["codex_path"], "app-server"]
        try:
            prepare_codex_home(self.codex_home, self.agent)
            env = codex_environment(self.agent, os.environ)
            env["CODEX_HOME"] = self.codex_home
            self.process = AppServer(
                argv,
                env,
                self.workspace,
                self.log_path,
                on_message=lambda m: self.events.put(("message", generation, m)),
                on_exit=lambda code: self.events.put(("exit", generation, code)),
            )
        except OSError as exc:
            self.process = None
            self.report("cannot start %s: %s" % (" ".join(argv), exc))
            self.events.put(("exit", generation, None))
            return
        log.info("codex app-server started, pid %d", self.process.pid)
        self.call("initialize", codex_protocol.initialize_params(WORKER_VERSION), self._initialized)

    def handle(self, item):
        """Route one queued item: returns ("exit", code), ("notification", (method, params)),
        or None when it was this session's own business (a reply, a request answered)."""
        kind, generation, payload = item
        if generation != self.generation:
            return None
        if kind == "exit":
            return "exit", payload
        if "method" in payload and "id" in payload:
            self._answer(payload)
            return None
        if "method" in payload:
            return "notification", (payload["method"], payload.get("params") or {})
        callback = self.pending.pop(payload.get("id"), None)
        if callback is not None:
            callback(payload.get("result"), payload.get("error"))
        return None

    def call(self, method, params, callback):
        self.pending[self.process.request(method, params)] = callback

    def respond(self, request_id, result):
        """Answer a request codex sent (one the worker took through ``on_request``)."""
        if self.process is not None:
            self.process.respond(request_id, result)

    def exited(self):
        """Clean up after the process ended; returns the tail of its stderr."""
        tail = self.process.stderr_tail() if self.process is not None else ""
        if self.process is not None:
            self.process.stop(timeout=1.0)
        self.process = None
        self.ready = False
        self.pending = {}
        return tail

    def stop(self):
        """Stop codex for good; its exit is not reported."""
        self.generation += 1
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.ready = False

    def _thread_params(self):
        return {
            "cwd": os.path.abspath(self.workspace),
            "approvalPolicy": self.agent["approval_policy"],
            "sandbox": self.agent["sandbox"],
        }

    def _initialized(self, result, error):
        if error:
            self._fatal("initialize failed: %s" % error.get("message"))
            return
        self.process.notify("initialized")
        if self.thread_id:
            params = dict(self._thread_params(), threadId=self.thread_id)
            self.call("thread/resume", params, self._opened)
        else:
            self.call("thread/start", self._thread_params(), self._opened)

    def _opened(self, result, error):
        if error:
            if self.thread_id:
                self.report(
                    "could not resume thread %s (%s); starting a new one"
                    % (self.thread_id, error.get("message"))
                )
                self.thread_id = None
                self.call("thread/start", self._thread_params(), self._opened)
            else:
                self._fatal("thread/start failed: %s" % error.get("message"))
            return
        self.thread_id = result["thread"]["id"]
        self.ready = True
        log.info("thread %s ready", self.thread_id)
        self.on_thread(self.thread_id)

    def _fatal(self, message):
        """codex answered the handshake with an error: report it and let the restart logic run."""
        self.report(message)
        if self.process is not None:
            self.process.kill()

    def _answer(self, message):
        if self.on_request(message):
            return
        result = codex_protocol.answer_for(message["method"], self.agent["approval_decision"])
        if result is None:
            self.process.respond_error(
                message["id"],
                codex_protocol.METHOD_NOT_FOUND,
                "codeswarm worker does not handle %s" % message["method"],
            )
            return
        log.info("answered %s with %s", message["method"], result)
        self.process.respond(message["id"], result)
