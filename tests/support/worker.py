"""Drive a real ``hpc.codex_worker`` process on a temporary mailbox, as a cluster would."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeswarm.hpc import activity, records, slurm_env

ROOT = Path(__file__).resolve().parents[2]
# codex refuses a CODEX_HOME under /tmp; tests keep theirs here and remove them afterwards.
CODEX_HOMES = Path.home() / ".cache" / "codeswarm-tests"


def agent_settings(codex: str, model_url: str, **agent: Any) -> dict[str, Any]:
    """Worker settings pointing the real codex binary at the local model server."""
    config = {
        "model_provider": "local",
        "model_providers": {
            "local": {
                "name": "codeswarm test model",
                "base_url": model_url,
                "wire_api": "responses",
                "request_max_retries": 0,
                "stream_max_retries": 0,
            }
        },
    }
    settings = {
        "codex_path": codex,
        "model": "mock-model",
        "approval_policy": "never",
        "sandbox": "danger-full-access",
        "config": config,
    }
    settings.update(agent)
    return {
        "agent": settings,
        "worker": {"codex_restart_backoff_seconds": 0.2, "poll_idle_seconds": 0.05},
    }


class WorkerRun:
    """One worker process and its mailbox files."""

    def __init__(
        self, base: Path, settings: dict[str, Any], job_id: str = "4242", node_id: int = 0
    ):
        self.mailbox = base / "mailbox"
        self.job_id = job_id
        self.node_id = node_id
        self.key = records.node_key(job_id, node_id)
        self.settings_path = base / "worker.json"
        self.settings_path.write_text(json.dumps(settings))
        self.codex_home = CODEX_HOMES / uuid.uuid4().hex
        self.stderr_path = base / f"worker-{self.key}.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        for name in records.MAILBOX_DIRS:
            (self.mailbox / name).mkdir(parents=True, exist_ok=True)

    @property
    def inbox(self) -> Path:
        return self.mailbox / "inbox" / f"{self.key}.jsonl"

    @property
    def outbox(self) -> Path:
        return self.mailbox / "outbox" / f"{self.key}.jsonl"

    @property
    def archive(self) -> Path:
        return self.mailbox / "archive" / f"{self.key}.jsonl"

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.mailbox / "state" / f"{self.key}.json").read_text())

    def start(self, python: str = sys.executable, continuation: bool = False) -> WorkerRun:
        """Start the worker; ``continuation``: as in a continuation job (slurm.continue)."""
        argv = [
            python,
            "-m",
            "hpc.codex_worker",
            "--mailbox",
            str(self.mailbox),
            "--job-id",
            self.job_id,
            "--node-id",
            str(self.node_id),
            "--settings",
            str(self.settings_path),
            "--codex-home",
            str(self.codex_home),
            "--swarm-id",
            "sw-test",
        ]
        env = dict(os.environ)
        env.pop(slurm_env.CONTINUATION, None)
        if continuation:
            env[slurm_env.CONTINUATION] = "1"
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stderr=stderr, stdin=subprocess.DEVNULL
            )
        return self

    def write(self, *records_: dict[str, Any] | bytes) -> None:
        with open(self.inbox, "ab") as f:
            for record in records_:
                data = record if isinstance(record, bytes) else records.encode_line(record).encode()
                f.write(data)

    def inject(self, injection_id: str, content: str) -> None:
        self.write(records.inbox_user(injection_id, content))

    def events(self) -> list[dict[str, Any]]:
        found = []
        for path in [*sorted(self.mailbox.glob(f"archive/{self.key}*.jsonl")), self.outbox]:
            if path.exists():
                found += [json.loads(line) for line in path.read_text().splitlines()]
        return found

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; last events: {events[-5:]}\n"
                    f"worker stderr:\n{self.stderr()[-3000:]}"
                )
            if (
                self.process is not None
                and self.process.poll() is not None
                and not predicate(events)
            ):
                raise AssertionError(
                    f"worker exited {self.process.returncode}; last events {events[-5:]}\n"
                    f"stderr:\n{self.stderr()[-3000:]}"
                )
            time.sleep(0.02)

    def wait_event(self, kind: str, injection_id: str | None = None, timeout: float = 30.0):
        def seen(events):
            return any(
                e["type"] == kind
                and (injection_id is None or e.get("injection_id") == injection_id)
                for e in events
            )

        return self.wait_for(seen, timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def codex_pid(self) -> int:
        """The app-server child of the worker (found through /proc)."""
        assert self.process is not None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.process.pid:
                    return int(entry.name)
        raise AssertionError("no codex child process")

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(AssertionError):
                kill_quietly(self.codex_pid())
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.codex_home, ignore_errors=True)


def python38() -> str | None:
    """A Python 3.8 interpreter for the worker (compute nodes may have no newer), or None."""
    found = shutil.which("python3.8") and os.popen("python3.8 -c 'print(1)' 2>/dev/null").read()
    if found:
        return shutil.which("python3.8")
    candidates = glob.glob(str(Path.home() / ".pyenv/versions/3.8.*/bin/python3.8"))
    return candidates[0] if candidates else None


def turn_events(events: list[dict[str, Any]], injection_id: str) -> list[str]:
    return [e["type"] for e in events if e.get("injection_id") == injection_id]


def lifecycle_ok(types: list[str]) -> bool:
    """inject_delivered, turn_started, assistant_delta*, assistant, turn_complete, usage;
    activity events (commands, diffs, plans...) may come anywhere between."""
    types = [t for t in types if t not in activity.EVENT_TYPES]
    if types[:2] != ["inject_delivered", "turn_started"] or types[-3:] != [
        "assistant",
        "turn_complete",
        "usage",
    ]:
        return False
    return all(t == "assistant_delta" for t in types[2:-3])


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
