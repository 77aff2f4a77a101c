"""``codeswarm launch``: submit a swarm, and with ``--wait`` stay until every node has started.

While it waits, a terminal's stderr shows one line that is rewritten in place: the job's
state, why Slurm holds it (``swarm.pending_reason``), and the time since submission. Nothing
of it reaches stdout, which carries the swarm id (or the swarm as JSON) alone, printed
before the wait so that a wait cut short still leaves the id behind.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from codeswarm.registry import FINAL_STATES

POLL_SECONDS = 2.0  # each status asks the scheduler once: one squeue on a cluster


def elapsed(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` past an hour: how long the job has waited."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def started(swarm: dict[str, Any]) -> bool:
    """Every node of the swarm runs."""
    return all(node["state"] == "running" for node in swarm["nodes"])


def node_log(swarm: dict[str, Any], node_id: int) -> str:
    """Where a node's output went, relative to the cluster directory."""
    if swarm.get("backend") == "slurm":
        return f"logs/slurm-{swarm['job_id']}.out"
    return f"logs/{swarm['job_id']}_{node_id}.worker.log"


def exited_nodes(swarm: dict[str, Any]) -> list[int]:
    """The nodes whose worker has already ended: they will never run again in this job."""
    return [node["node_id"] for node in swarm["nodes"] if node["state"] == "exited"]


def progress(swarm: dict[str, Any], now: float) -> str:
    """One line for a person waiting: ``job 42 pending (Priority), 0:42``."""
    running = sum(node["state"] == "running" for node in swarm["nodes"])
    if swarm["state"] == "pending":
        reason = swarm.get("pending_reason")
        what = f"pending ({reason})" if reason else "pending"
    else:
        what = f"{running}/{len(swarm['nodes'])} nodes running"
    return f"job {swarm['job_id']} {what}, {elapsed(now - swarm['created'])}"


def task_of(node: dict[str, Any]) -> str:
    """The array task an agent runs in: the ``<task>`` of its ``slurm_job`` ``<job>_<task>``."""
    return str(node.get("slurm_job") or "").rpartition("_")[2]


def array_started(swarm: dict[str, Any], ran: set[int], throttle: int | None) -> bool:
    """A job array has started once every task runs or has ended after running, or, with
    ``throttle``, once as many tasks run as may run at once: the rest wait their turn."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for node in swarm["nodes"]:
        tasks.setdefault(task_of(node), []).append(node)
    up = sum(all(n["state"] == "running" for n in nodes) for nodes in tasks.values())
    done = sum(
        all(n["state"] == "exited" and n["node_id"] in ran for n in nodes)
        for nodes in tasks.values()
    )
    if up + done == len(tasks):
        return True
    return throttle is not None and up >= min(throttle, len(tasks) - done)


def never_ran(swarm: dict[str, Any], ran: set[int]) -> dict[str, Any] | None:
    """The first agent that exited without ever running (its task failed to start)."""
    return next(
        (n for n in swarm["nodes"] if n["state"] == "exited" and n["node_id"] not in ran), None
    )


def wait_until_started(
    status: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    poll_seconds: float = POLL_SECONDS,
    timeout: float | None = None,
    throttle: int | None = None,
) -> dict[str, Any]:
    """Poll ``status`` until every node runs; the swarm then. ClickException if a node or
    the job ended first (the others may run on, but the swarm will never be whole), or if
    ``timeout`` seconds passed (the job stays queued).

    A job array (its tasks start and end apart, ``throttle`` at a time) has started as
    ``array_started`` says, and fails at once when an agent exited before it ever ran.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran: set[int] = set()
    while True:
        swarm = status()
        if started(swarm):
            return swarm
        if swarm.get("layout") == "array":
            nodes = swarm["nodes"]
            ran |= {n["node_id"] for n in nodes if n["state"] == "running" or n.get("host")}
            lost = never_ran(swarm, ran)
            if lost is not None:
                raise click.ClickException(
                    f"agent {lost['node_id']} of {swarm['swarm_id']} exited before it ever "
                    f"ran: see `codeswarm status {swarm['swarm_id']}`, and the array task's "
                    f"output logs/slurm-{lost.get('slurm_job')}.out in the cluster directory"
                )
            if array_started(swarm, ran, throttle):
                return swarm
        elif (gone := exited_nodes(swarm)) and swarm["state"] not in FINAL_STATES:
            logs = ", ".join(f"node {n}: {node_log(swarm, n)}" for n in gone)
            raise click.ClickException(
                f"{swarm['swarm_id']}: node {', '.join(map(str, gone))} exited before every "
                f"node started; its log in the cluster directory ({logs}); "
                f"`codeswarm terminate {swarm['swarm_id']}` ends the nodes still running"
            )
        if swarm["state"] in FINAL_STATES:
            raise click.ClickException(
                f"{swarm['swarm_id']} ended ({swarm['state']}) before every node started: "
                f"see `codeswarm status {swarm['swarm_id']}`, and on Slurm the job's output "
                f"logs/slurm-{swarm['job_id']}.out in the cluster directory"
            )
        if deadline is not None and time.monotonic() >= deadline:
            raise click.ClickException(
                f"{swarm['swarm_id']} has not started within {timeout:g}s "
                f"({progress(swarm, time.time())}); it stays queued: "
                f"`codeswarm status {swarm['swarm_id']}` to look again, "
                f"`codeswarm terminate {swarm['swarm_id']}` to give up"
            )
        show(swarm)
        time.sleep(poll_seconds)


@click.command()
@click.option("--nodes", type=click.IntRange(1, 4096), required=True, help="Slurm nodes.")
@click.option(
    "--agents-per-node",
    type=click.IntRange(1, 256),
    help="Agents on each node (default: the config's slurm.agents_per_node, 1).",
)
@click.option("--prompt", help="A first prompt for every agent.")
@click.option("--time", "time_limit", help="Slurm time limit, e.g. 02:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option(
    "--wait",
    is_flag=True,
    help="Return once every node runs (exit 1 if a node or the job ends first; a job "
    "array: once every task runs or ran, or as many as slurm.array_throttle allows, exit 1 "
    "if an agent exits before it ever ran); on a terminal, show the pending reason and the "
    "time waited meanwhile.",
)
@click.option(
    "--timeout",
    "wait_timeout",
    type=click.FloatRange(min=0),
    help="With --wait: give up waiting after this many seconds (exit 1; the job stays queued).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the swarm as JSON; with --wait, two JSON lines: the swarm as launched "
    "(at once), then as the wait left it (every node running, or the last state seen "
    "when the wait fails).",
)
def launch(
    nodes: int,
    agents_per_node: int | None,
    prompt: str | None,
    time_limit: str | None,
    partition: str | None,
    wait: bool,
    wait_timeout: float | None,
    as_json: bool,
    config_path: str | None,
    debug: bool,
) -> None:
    """Start a swarm on NODES nodes and print its id; its agents are numbered 0..N-1.

    \b
    Examples:
      codeswarm launch --nodes 4 --prompt "You are a distributed agent." \\
          --config configs/hpcfund.json
      codeswarm launch --nodes 2 --wait --timeout 600 --json
      codeswarm launch --nodes 2 --agents-per-node 8   # 16 agents, node ids 0..15
    """
    from codeswarm.cli import load, swarms_for

    if wait_timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    tty = sys.stderr.isatty()

    def show(swarm: dict[str, Any]) -> None:
        if tty:
            click.echo(f"\r\033[K{progress(swarm, time.time())}", nl=False, err=True)

    with swarms_for(config_path, debug) as swarms:
        swarm = swarms.launch(nodes, prompt, time_limit, partition, agents_per_node=agents_per_node)
        # At once: the id to look at or terminate if the wait is cut short. With --wait
        # --json this is the first of two JSON lines, the second the swarm after the wait.
        click.echo(json.dumps(swarm) if as_json else swarm["swarm_id"])
        if wait:
            last = swarm

            def status() -> dict[str, Any]:
                nonlocal last
                last = swarms.status(swarm["swarm_id"])
                return last

            try:
                swarm = wait_until_started(
                    status,
                    show,
                    timeout=wait_timeout,
                    throttle=load(config_path).slurm.array_throttle,
                )
            except (click.ClickException, KeyboardInterrupt):
                if as_json:  # the last state seen: a script learns why without asking again
                    click.echo(json.dumps(last))
                raise
            finally:
                if tty:
                    click.echo("\r\033[K", nl=False, err=True)
            if as_json:
                click.echo(json.dumps(swarm))
    if as_json:
        return
    state = swarm["state"]
    agents = len(swarm["nodes"])
    shape = f"{nodes} nodes" + (f", {agents} agents" if agents != nodes else "")
    click.echo(f"job {swarm['job_id']} on {swarm['backend']}, {shape}, {state}", err=True)
