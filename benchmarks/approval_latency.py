"""How long an answer takes to reach codex: ``approve`` through the inbox, against a prompt's read.

For each of N prompts, sent one at a time, the model asks to run a command outside the sandbox;
the worker reports ``approval_request``; this script appends an ``approve`` to the inbox at
once and measures inbox write -> ``approval_resolved`` (the worker answered codex). Beside it,
in the same run and the same worker, inbox write -> ``inject_delivered`` of the prompt: the
same inbox path, the figure an answer should match.

Run: .venv/bin/python benchmarks/approval_latency.py [--prompts 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.worker_latency import summary  # noqa: E402
from codeswarm.codex_binary import find_codex  # noqa: E402
from codeswarm.hpc import records, worker_settings  # noqa: E402
from codeswarm.model_server import ModelServer, Reply  # noqa: E402
from tests.support.worker import WorkerRun, agent_settings  # noqa: E402

ESCALATE = {"sandbox_permissions": "require_escalated", "justification": "benchmark"}


def measure(base: Path, codex: str, model: ModelServer, prompts: int) -> tuple[list, list]:
    agent = {"approval_policy": "on-request", "sandbox": "workspace-write"}
    run = WorkerRun(base, agent_settings(codex, model.url, **agent)).start()
    delivered, answered = [], []
    try:
        for n in range(prompts):
            injection_id = f"b{n}"
            model.add_rule(f"ASK {n}", Reply(tool_call_cmd="true", tool_call_args=ESCALATE))
            sent = time.time()
            run.inject(injection_id, f"ASK {n}")
            events = run.wait_event("approval_request", injection_id, timeout=60)
            mine = [e for e in events if e.get("injection_id") == injection_id]
            delivered.append(next(e["ts"] for e in mine if e["type"] == "inject_delivered") - sent)
            request = next(e for e in mine if e["type"] == "approval_request")
            written = time.time()
            run.write(records.inbox_approve(request["approval_id"], "accept"))
            events = run.wait_event("usage", injection_id, timeout=60)
            resolved = [e for e in events if e["type"] == "approval_resolved"]
            answered.append(resolved[-1]["ts"] - written)
    finally:
        run.terminate()
        run.stop()
    return delivered, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30)
    args = parser.parse_args()
    poll = worker_settings.WORKER_DEFAULTS["poll_active_seconds"]
    with ModelServer() as model, tempfile.TemporaryDirectory() as tmp:
        delivered, answered = measure(Path(tmp), find_codex(), model, args.prompts)
    print(
        f"approval latency, {args.prompts} requests one at a time, active poll {poll * 1000:g} ms"
    )
    print(summary("inbox write -> inject_delivered (baseline)", delivered))
    print(summary("inbox write of approve -> approval_resolved", answered))


if __name__ == "__main__":
    main()
