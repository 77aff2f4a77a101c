"""What the worker adds on top of codex: 100 prompts against the local model server.

For each prompt, sent one at a time, it measures inbox write -> ``inject_delivered`` and inbox
write -> first ``assistant_delta`` through the worker, and beside it, in the same run, codex's
own ``turn/start`` -> first delta when driven directly over stdio with no worker in between.
Target: the worker adds at most 10 ms median at the default active poll interval.

Run: .venv/bin/python benchmarks/worker_latency.py [--prompts 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeswarm.codex_binary import find_codex  # noqa: E402
from codeswarm.hpc import codex_home, worker_settings  # noqa: E402
from codeswarm.model_server import ModelServer  # noqa: E402
from tests.support.worker import CODEX_HOMES, WorkerRun, agent_settings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:<44} median {statistics.median(ms):7.2f} ms   p99 {pct(ms, 0.99):7.2f} ms"


def through_worker(base: Path, codex: str, url: str, prompts: int) -> tuple[list, list]:
    run = WorkerRun(base, agent_settings(codex, url)).start()
    delivered, first_delta = [], []
    try:
        run.inject("warmup", "warm up")
        run.wait_event("usage", "warmup", timeout=60)
        for n in range(prompts):
            injection_id = f"b{n}"
            sent = time.time()
            run.inject(injection_id, f"benchmark prompt {n}")
            events = run.wait_event("usage", injection_id, timeout=60)
            mine = [e for e in events if e.get("injection_id") == injection_id]
            delivered.append(next(e["ts"] for e in mine if e["type"] == "inject_delivered") - sent)
            first_delta.append(next(e["ts"] for e in mine if e["type"] == "assistant_delta") - sent)
    finally:
        run.terminate()
        run.stop()
    return delivered, first_delta


def direct(codex: str, url: str, prompts: int) -> list[float]:
    """codex's own turn/start -> first delta, with this process as a minimal client."""
    home = CODEX_HOMES / uuid.uuid4().hex
    agent = dict(worker_settings.AGENT_DEFAULTS, **agent_settings(codex, url)["agent"])
    codex_home.prepare_codex_home(str(home), agent)
    workspace = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [codex, "app-server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, CODEX_HOME=str(home)),
        cwd=workspace,
    )

    def send(message: dict) -> None:
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()

    def until(predicate) -> dict:
        while True:
            message = json.loads(proc.stdout.readline())
            if predicate(message):
                return message

    try:
        send(
            {
                "id": 0,
                "method": "initialize",
                "params": {"clientInfo": {"name": "bench", "title": None, "version": "0"}},
            }
        )
        until(lambda m: m.get("id") == 0)
        send({"method": "initialized"})
        send(
            {
                "id": 1,
                "method": "thread/start",
                "params": {
                    "cwd": workspace,
                    "approvalPolicy": "never",
                    "sandbox": "danger-full-access",
                },
            }
        )
        thread = until(lambda m: m.get("id") == 1)["result"]["thread"]["id"]
        times = []
        for n in range(prompts + 1):
            sent = time.time()
            send(
                {
                    "id": 2 + n,
                    "method": "turn/start",
                    "params": {
                        "threadId": thread,
                        "input": [{"type": "text", "text": f"direct prompt {n}"}],
                    },
                }
            )
            until(lambda m: m.get("method") == "item/agentMessage/delta")
            if n:
                times.append(time.time() - sent)
            until(lambda m: m.get("method") == "turn/completed")
        return times
    finally:
        proc.stdin.close()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100)
    args = parser.parse_args()
    codex = find_codex()
    poll = worker_settings.WORKER_DEFAULTS["poll_active_seconds"]
    with ModelServer() as model, tempfile.TemporaryDirectory() as tmp:
        baseline = direct(codex, model.url, args.prompts)
        delivered, first_delta = through_worker(Path(tmp), codex, model.url, args.prompts)
    added = statistics.median(first_delta) - statistics.median(baseline)
    print(f"worker latency, {args.prompts} prompts one at a time, active poll {poll * 1000:g} ms")
    print(summary("inbox write -> inject_delivered (worker)", delivered))
    print(summary("inbox write -> first assistant_delta (worker)", first_delta))
    print(summary("turn/start -> first delta (codex direct)", baseline))
    print(f"{'worker adds (median first delta)':<44} {added * 1000:7.2f} ms   target <= 10 ms")


if __name__ == "__main__":
    main()
