"""The worker's settings file, and the one definition of the worker's defaults.

The router writes the file at launch (the config's ``agent`` and ``worker`` sections) and every
worker of the swarm reads it. ``codeswarm.config`` takes the defaults of those two sections from
here, so a key the file leaves out means the same on both sides.
"""

from __future__ import annotations

import json
from typing import Any

AGENT_DEFAULTS = {
    "codex_path": "codex",
    "model": None,
    "approval_policy": "never",
    "sandbox": "workspace-write",
    "approval_decision": "decline",
    "approval_timeout_seconds": 600.0,
    "config": {},
    "env": {},
    "workdir": None,
    "repo": None,
}
WORKER_DEFAULTS = {
    "poll_active_seconds": 0.005,
    "poll_idle_seconds": 0.5,
    "active_window_seconds": 2.0,
    "codex_restart_backoff_seconds": 1.0,
    "codex_restart_max": 5,
    "max_event_bytes": 65536,
}

# slurm.continue: how long a worker signalled before the time limit lets its running turn go
# on before it interrupts the turn and keeps the prompt for the continuation job.
CONTINUE_DEFAULTS = {"turn_grace_seconds": 30.0}


def turn_grace_seconds(worker: dict[str, Any]) -> float:
    """The grace of a continuing worker's turn: the worker section's ``continue`` block
    (the router copies ``slurm.continue`` there), else the default."""
    block = dict(CONTINUE_DEFAULTS, **(worker.get("continue") or {}))
    return float(block["turn_grace_seconds"])


def encode_settings(agent: dict[str, Any], worker: dict[str, Any]) -> bytes:
    """The file's contents: one JSON object with the ``agent`` and ``worker`` sections."""
    return json.dumps({"agent": agent, "worker": worker}).encode("utf-8")


def parse_settings(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent, worker) settings from the file's contents, defaults filled in."""
    settings = json.loads(data.decode("utf-8"))
    agent = dict(AGENT_DEFAULTS, **(settings.get("agent") or {}))
    worker = dict(WORKER_DEFAULTS, **(settings.get("worker") or {}))
    return agent, worker


def load_settings(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent, worker) settings from the file at ``path``; the defaults alone without one."""
    if not path:
        return parse_settings(b"{}")
    with open(path, "rb") as f:
        return parse_settings(f.read())
