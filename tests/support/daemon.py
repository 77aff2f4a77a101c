"""Run ``codeswarm daemon`` as a subprocess and talk to it in JSON lines."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeswarm.protocol import event_errors

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    def __init__(self, config: Path, stderr: Path) -> None:
        self.stderr_path = stderr
        with open(stderr, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "codeswarm", "daemon", "--config", str(config)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() when each event's line was read
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line))
        self.lines.put(None)

    def send(self, *commands: dict[str, Any] | str) -> None:
        assert self.process.stdin is not None
        for command in commands:
            text = command if isinstance(command, str) else json.dumps(command)
            self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            try:
                item = self.lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                item = (0.0, b"")
            if item is None or remaining <= 0:
                raise AssertionError(
                    f"no match; exited={self.process.poll()}; last events {self.events[-5:]}\n"
                    f"stderr:\n{self.stderr()[-3000:]}"
                )
            arrived, line = item
            if line:
                event = json.loads(line)  # stdout carries protocol lines only
                assert event_errors(event) == {}, event
                self.events.append(event)
                self.arrivals.append(arrived)
        return self.events

    def wait_event(self, kind: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return e["type"] == kind and all(e.get(k) == v for k, v in fields.items())

        events = self.wait_for(lambda evs: any(match(e) for e in evs), timeout)
        return next(e for e in events if match(e))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode
