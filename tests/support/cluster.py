"""Start the test Slurm cluster (tests/cluster/minicluster) and read the settings it prints."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "minicluster"


class ClusterError(RuntimeError):
    pass


def minicluster_up() -> dict[str, str]:
    """``minicluster up`` (idempotent, needs root): its ``export NAME=value`` lines as a dict."""
    done = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise ClusterError(f"minicluster up failed:\n{done.stderr[-3000:]}")
    env = {}
    for line in done.stdout.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value
    return env


def hold_every_node(connection: Any, minicluster: dict[str, str]) -> str:
    """Submit a job that takes every test-cluster node for 5 minutes; returns its job id."""
    argv = [
        "sbatch",
        "--parsable",
        f"--partition={minicluster['MINICLUSTER_PARTITION']}",
        f"--nodes={minicluster['MINICLUSTER_NODES']}",
        "--time=5",
        "--exclusive",
        "--output=/dev/null",
        "--wrap",
        "sleep 600",
    ]
    return connection.run(argv).decode().strip()
