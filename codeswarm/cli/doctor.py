"""``codeswarm doctor``: the report of ``codeswarm.doctor``'s checks, for a person or a program."""

from __future__ import annotations

import json
import sys

import click

from codeswarm.doctor import FAIL, PASS, Check, run_checks

MARKS = {PASS: "ok  ", FAIL: "FAIL", "skip": "skip"}


def line(check: Check) -> str:
    """``ok   name: detail``, and on failure the fix on the next line."""
    text = f"{MARKS[check.status]} {check.name}: {check.detail}"
    return f"{text}\n     fix: {check.fix}" if check.fix else text


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: every check.")
@click.option(
    "--srun-timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Slurm backend: how long the compute-node probe may wait in the queue and run.",
)
def doctor(as_json: bool, srun_timeout: float, config_path: str | None, debug: bool) -> None:
    """Check that this config can launch a swarm, and say what to fix.

    \b
    Slurm backend: the ssh alias resolves, its host key is known, login works,
    sbatch and squeue answer, cluster.python is 3.8+, the workspace is writable,
    agent.codex_version installs, and one short srun shows that a compute node
    sees a file the login node wrote, runs codex and reaches the model endpoint
    (through agent.env's proxy, if any).
    Local backend: the state dir, the workspace, Python, codex, the model endpoint.
    Exits 1 if any check fails.

    \b
    Examples:
      codeswarm doctor --config configs/hpcfund.json
      codeswarm doctor --json
    """
    from codeswarm.cli import load, setup_logging

    setup_logging(debug)
    config = load(config_path)
    checks = []
    for check in run_checks(config, srun_timeout):
        checks.append(check)
        if not as_json:
            click.echo(line(check))
    ok = all(check.status != FAIL for check in checks)
    if as_json:
        report = {"ok": ok, "backend": config.backend, "checks": [c.to_json() for c in checks]}
        click.echo(json.dumps(report))
    elif not ok:
        click.echo("some checks failed: fix them, then run `codeswarm doctor` again", err=True)
    if not ok:
        sys.exit(1)
