"""One ``codex app-server`` child process, spoken to in JSON lines over stdio.

Two threads per process: one reads stdout and hands every message to ``on_message``; one drains
stderr into the node's log file and keeps its tail for failure reports (a pipe nobody reads
fills up and hangs codex). When stdout ends, ``on_exit`` is called once with the exit code.
"""

import collections
import contextlib
import errno
import json
import os
import shutil
import subprocess
import threading

STDERR_TAIL_LINES = 40
# Slurm sends its signal before the time limit (SIGUSR2, slurm.continue) to every process of the
# step, codex too: codex has no handler and would die at once, its turn with it, the grace unused.
# Ignored, SIGUSR2 stays ignored across exec (and in the agent's commands); a shell sets that up
# because preexec_fn is unsafe in a process with threads.
IGNORE_CONTINUE_SIGNAL = ["/bin/sh", "-c", 'trap "" USR2; exec "$@"', "codex"]


class AppServer:
    """A running app-server. Methods are called from the worker's single main thread."""

    def __init__(self, argv, env, cwd, log_path, on_message, on_exit):
        self._on_message = on_message
        self._on_exit = on_exit
        self._next_id = 0
        self._stderr_tail = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._tail_lock = threading.Lock()
        if shutil.which(argv[0], path=env.get("PATH")) is None:  # the shell would only exit 127
            raise FileNotFoundError(errno.ENOENT, "no such executable", argv[0])
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            IGNORE_CONTINUE_SIGNAL + list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, name="codex-stderr", daemon=True
        )
        self._stdout_thread = threading.Thread(
            target=self._read_stdout, name="codex-stdout", daemon=True
        )
        self._stderr_thread.start()
        self._stdout_thread.start()

    @property
    def pid(self):
        return self.process.pid

    def _read_stdout(self):
        for raw in self.process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                self._note(b"codeswarm: unparseable stdout line: " + raw[:500])
                continue
            if isinstance(message, dict):
                self._on_message(message)
        self._stderr_thread.join(timeout=5)
        self._on_exit(self.process.wait())

    def _drain_stderr(self):
        for raw in self.process.stderr:
            self._note(raw)

    def _note(self, raw):
        self._log.write(raw if raw.endswith(b"\n") else raw + b"\n")
        self._log.flush()
        with self._tail_lock:
            self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def stderr_tail(self):
        with self._tail_lock:
            return "\n".join(self._stderr_tail)

    def _send(self, message):
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def request(self, method, params):
        """Send a request; return its id (the response arrives through ``on_message``)."""
        request_id = self._next_id
        self._next_id += 1
        self._send({"id": request_id, "method": method, "params": params})
        return request_id

    def notify(self, method, params=None):
        message = {"method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def respond(self, request_id, result):
        self._send({"id": request_id, "result": result})

    def respond_error(self, request_id, code, message):
        self._send({"id": request_id, "error": {"code": code, "message": message}})

    def stop(self, timeout=3.0):
        """Close stdin (codex exits in ~20 ms), then escalate to SIGKILL if it lingers."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait(timeout=timeout)
        self._stdout_thread.join(timeout=timeout)
        self._log.close()

    def kill(self):
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, 9)
