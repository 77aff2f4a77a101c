"""Simulated workers: one process answering many nodes' inboxes with scripted outbox events.

It speaks the real mailbox format through hpc/'s own reader and writer, so the router cannot
tell it from real workers, but it costs one process for a whole job: what the scale tests and
benchmarks need on a 2-core machine. A prompt ``burst N`` answers with N deltas; ``command N
SIZE`` runs a simulated command whose N output lines of SIZE bytes go through the worker's own
activity translation (``hpc/activity.py``, bounded by ``worker.max_event_bytes``).

Run: python -m tests.support.simulated_workers --mailbox DIR --job-id J --nodes N
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from codeswarm.backends import Submitted
from codeswarm.backends.local import pid_state
from codeswarm.config import Config, parse_config
from codeswarm.hpc import mailbox_io, records, worker_settings
from codeswarm.hpc.activity import Activity
from codeswarm.registry import SwarmRecord

ROOT = Path(__file__).resolve().parents[2]


class AnswerOutbox(mailbox_io.OutboxWriter):
    """An outbox whose events wait for ``flush``: a simulated node answers a prompt at once, so
    its whole answer is one write, and a thousand nodes cost the one process a thousand."""

    def __init__(self, path: str, job_id: str, node_id: int) -> None:
        super().__init__(path, job_id, node_id, 0)
        self.pending: list[bytes] = []

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = records.outbox_event(kind, self.job_id, self.node_id, self.next_seq, **fields)
        self.next_seq += 1
        self.pending.append(records.encode_line(event).encode())
        return event

    def flush(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self.flush()
        super().close()


class SimulatedNode:
    def __init__(self, mailbox: str, job_id: str, node_id: int) -> None:
        key = records.node_key(job_id, node_id)
        inbox = os.path.join(mailbox, "inbox", key + ".jsonl")
        mailbox_io.create_inbox(inbox)
        self.inbox = mailbox_io.InboxReader(inbox)
        self.outbox = AnswerOutbox(os.path.join(mailbox, "outbox", key + ".jsonl"), job_id, node_id)
        self.activity = Activity(
            self.outbox.write,
            os.path.join(mailbox, "logs", key),
            worker_settings.WORKER_DEFAULTS["max_event_bytes"],
        )
        self.outbox.write("node_started", pid=os.getpid(), host="simulated")
        self.outbox.flush()

    def answer(self, deltas: int) -> bool:
        lines = self.inbox.poll()
        for _, raw in lines:
            record = records.parse_inbox_line(raw.decode())
            if record["type"] != "user":
                continue
            injection_id = record["injection_id"]
            content = record["content"]
            words = content.split()
            count = int(words[1]) if words[0] in ("burst", "command") else deltas
            write = self.outbox.write
            write("inject_delivered", injection_id=injection_id)
            write("turn_started", injection_id=injection_id, turn_id="t-" + injection_id)
            if words[0] == "command":
                self.command(injection_id, count, int(words[2]))
            else:
                for n in range(count):
                    write("assistant_delta", injection_id=injection_id, delta=f"d{n} ")
            write("assistant", injection_id=injection_id, content="done")
            write("turn_complete", injection_id=injection_id, status="completed")
            write(
                "usage",
                injection_id=injection_id,
                input_tokens=1,
                cached_input_tokens=0,
                output_tokens=count,
                reasoning_output_tokens=0,
                total_tokens=1 + count,
            )
            self.outbox.flush()
        return bool(lines)

    def command(self, injection_id: str, lines: int, size: int) -> None:
        """codex's notifications for one command printing ``lines`` lines of ``size`` bytes."""
        turn = {"threadId": "th", "turnId": "t-" + injection_id}
        item = {"type": "commandExecution", "id": "call_1", "command": "cat", "cwd": "/"}
        handle = self.activity.handle
        handle("item/started", {**turn, "item": {**item, "status": "inProgress"}}, injection_id)
        line = "x" * (size - 1) + "\n"
        delta = {**turn, "itemId": "call_1", "delta": line}
        for _ in range(lines):
            handle("item/commandExecution/outputDelta", delta, injection_id)
        done = {**item, "status": "completed", "exitCode": 0, "durationMs": 1}
        handle("item/completed", {**turn, "item": {**done, "aggregatedOutput": line}}, injection_id)
        self.activity.turn_ended()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--deltas", type=int, default=3)
    parser.add_argument("--poll-seconds", type=float, default=0.005)
    args = parser.parse_args(argv)
    stopping: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append("sigterm"))
    nodes = [SimulatedNode(args.mailbox, args.job_id, n) for n in range(args.nodes)]
    while not stopping:
        busy = False
        for node in nodes:
            busy = node.answer(args.deltas) or busy
        if not busy:
            time.sleep(args.poll_seconds)
    for node_id, node in enumerate(nodes):
        node.outbox.write("node_exited", reason=stopping[0])
        node.outbox.close()
        mailbox_io.archive_outbox(args.mailbox, args.job_id, node_id)
    return 0


def local_config(tmp_path: Path, **router: Any) -> Config:
    """A local-backend config whose cluster and state live under ``tmp_path``."""
    return parse_config(
        {
            "backend": "local",
            "cluster": {"workspace_root": str(tmp_path / "ws")},
            "router": {"state_dir": str(tmp_path / "state"), **router},
        }
    )


class SimulatedScheduler:
    """A scheduler whose jobs are one simulated-workers process each."""

    name = "local"

    def __init__(self, cluster_dir: str, deltas: int = 3) -> None:
        self.cluster_dir = Path(cluster_dir)
        self.deltas = deltas
        self.children: list[subprocess.Popen[bytes]] = []

    def submit(self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any):
        job_id = f"sim-{uuid.uuid4().hex[:8]}"
        argv = [
            sys.executable,
            "-m",
            "tests.support.simulated_workers",
            "--mailbox",
            str(self.cluster_dir / "mailbox"),
            "--job-id",
            job_id,
            "--nodes",
            str(nodes),
            "--deltas",
            str(self.deltas),
        ]
        child = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.children.append(child)
        return Submitted(job_id, [child.pid] * nodes)

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        for child in self.children:
            child.poll()
        states = {}
        for swarm in swarms:
            state = pid_state(swarm.pids[0], swarm.job_id) if swarm.pids else "exited"
            states[swarm.job_id] = dict.fromkeys(range(swarm.nodes), state)
        return states

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        return None

    def pending_reason(self, job_id: str) -> str | None:
        return None  # processes start at once: nothing waits

    def cancel(self, swarm: SwarmRecord) -> None:
        for pid in set(swarm.pids):
            if pid_state(pid, swarm.job_id) == "running":
                os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
            child.wait(10)


if __name__ == "__main__":
    sys.exit(main())
