"""The Slurm scheduler: sbatch, one batched squeue poll for every job, scancel, over SSH.

Parsing and the batch script are pure functions, tested on literal Slurm output and a golden
script; the shell-outs are three small methods.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from typing import Any

from codeswarm.backends import Submitted
from codeswarm.backends.ssh import SSHConnection
from codeswarm.backends.ssh_transport import SSHTransport
from codeswarm.config import SlurmConfig
from codeswarm.errors import BackendError
from codeswarm.hpc import worker_settings
from codeswarm.registry import SwarmRecord

log = logging.getLogger(__name__)
SBATCH_TIMEOUT = 120.0  # a busy controller can take long to accept a job
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


def batch_script(
    *,
    swarm_id: str,
    nodes: int,
    slurm: SlurmConfig,
    cluster_dir: str,
    python: str,
    settings_path: str,
    time: str | None = None,
    partition: str | None = None,
) -> str:
    """The sbatch script of a swarm: one worker per node under srun.

    ``--signal=TERM@N`` (without ``B:``) signals the srun step, so every worker gets SIGTERM N
    seconds before the time limit, as it does on scancel. Paths, which may hold spaces, are
    never in ``#SBATCH`` lines (sbatch does not parse shell quoting there): the output file
    goes on sbatch's command line (``sbatch_argv``).
    """
    options = [
        f"--job-name=codeswarm-{swarm_id}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--time={time or slurm.time}",
        f"--signal=TERM@{slurm.signal_seconds}",
    ]
    optional = {
        "partition": partition or slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "gres": slurm.gres,
        "constraint": slurm.constraint,
        "cpus-per-task": slurm.cpus_per_task,
        "mem": slurm.mem,
    }
    options += [f"--{name}={value}" for name, value in optional.items() if value is not None]
    options += list(slurm.extra_args)
    worker = [
        "srun",
        "--kill-on-bad-exit=0",
        python,
        "-m",
        "hpc.codex_worker",
        "--mailbox",
        posixpath.join(cluster_dir, "mailbox"),
        "--settings",
        settings_path,
        "--swarm-id",
        swarm_id,
    ]
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options)]
    lines += ["set -u", *slurm.setup]
    lines += [f"export PYTHONPATH={shlex.quote(cluster_dir)}", f"cd {shlex.quote(cluster_dir)}"]
    lines += [f"exec {shlex.join(worker)}", ""]
    return "\n".join(lines)


def sbatch_argv(cluster_dir: str) -> list[str]:
    """sbatch reading the script on stdin, its output in ``<cluster_dir>/logs``.

    It runs under umask 077: Slurm creates the output file, and runs the job, with the umask
    sbatch had, and the output holds the workers' logs.
    """
    return [
        "sh",
        "-c",
        'umask 077 && exec "$@"',
        "sh",
        "sbatch",
        "--parsable",
        f"--output={posixpath.join(cluster_dir, 'logs', 'slurm-%j.out')}",
    ]


def parse_job_id(sbatch_output: bytes) -> str:
    """The job id from ``sbatch --parsable`` (``1234`` or ``1234;cluster``)."""
    text = sbatch_output.decode("utf-8", "replace").strip()
    job_id = text.splitlines()[-1].split(";")[0] if text else ""
    if not job_id.isdigit():
        raise BackendError(f"sbatch printed no job id: {text!r}")
    return job_id


def parse_squeue(output: bytes) -> dict[str, str]:
    """``squeue -h -o %i|%T[|%r]`` as job id -> pending | running | exited."""
    states = {}
    for line in output.decode("utf-8", "replace").splitlines():
        job_id, _, rest = line.strip().partition("|")
        if not job_id:
            continue
        state = rest.split("|")[0].split()[0] if rest.strip() else ""
        if state in PENDING_STATES:
            states[job_id] = "pending"
        elif state in RUNNING_STATES:
            states[job_id] = "running"
        else:
            states[job_id] = "exited"
    return states


def parse_pending_reasons(output: bytes) -> dict[str, str]:
    """``squeue -h -o %i|%T|%r`` as job id -> why it waits (``Priority``, ``Resources``...),
    for the jobs that are pending."""
    reasons = {}
    for line in output.decode("utf-8", "replace").splitlines():
        job_id, state, reason = [*line.strip().split("|"), "", ""][:3]
        # "None" is what squeue says before the scheduler has looked at the job
        if job_id and state.strip() in PENDING_STATES and reason.strip() not in ("", "None"):
            reasons[job_id] = reason.strip()
    return reasons


class SlurmScheduler:
    """Jobs on the cluster behind ``transport``'s SSH connection."""

    name = "slurm"

    def __init__(self, transport: SSHTransport, slurm: SlurmConfig, python: str) -> None:
        self.transport = transport
        self.connection: SSHConnection = transport.connection
        self.slurm = slurm
        self.python = python
        self.reasons: dict[str, str] = {}  # replaced whole by each poll, read by other threads

    def submit(
        self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any
    ) -> Submitted:
        cluster_dir = self.transport.cluster_dir
        settings_path = posixpath.join(cluster_dir, "swarms", swarm_id, "worker.json")
        data = worker_settings.encode_settings(settings["agent"], settings["worker"])
        self.transport.write_file(settings_path, data)
        script = batch_script(
            swarm_id=swarm_id,
            nodes=nodes,
            slurm=self.slurm,
            cluster_dir=cluster_dir,
            python=self.python,
            settings_path=settings_path,
            time=options.get("time"),
            partition=options.get("partition"),
        )
        self.transport.write_file(
            posixpath.join(cluster_dir, "swarms", swarm_id, "job.sh"), script.encode()
        )
        try:
            out = self.connection.run(
                sbatch_argv(cluster_dir), stdin=script.encode(), timeout=SBATCH_TIMEOUT
            )
            return Submitted(parse_job_id(out), [])
        except BackendError:
            # sbatch may have submitted before the answer was lost: adopt the job, never leave
            # one running that no registry knows.
            job_id = self.find_job(swarm_id)
            if job_id is None:
                raise
            log.warning("sbatch's answer was lost; found the job %s by name", job_id)
            return Submitted(job_id, [])

    def find_job(self, swarm_id: str) -> str | None:
        try:
            out = self.connection.run(
                ["squeue", "--me", "-h", "-n", f"codeswarm-{swarm_id}", "-o", "%i"]
            )
        except BackendError:
            return None
        ids = out.decode("utf-8", "replace").split()
        return ids[0] if ids and ids[0].isdigit() else None

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        out = self.connection.run(
            ["squeue", "--me", "-h", "-n", f"codeswarm-{swarm_id}", "-o", "%i"]
        )
        job_ids = [job for job in out.decode("utf-8", "replace").split() if job.isdigit()]
        if job_ids:
            self.connection.run(["scancel", *job_ids])
        return ",".join(job_ids) or None

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        """One squeue call for all jobs; a job squeue no longer lists has exited."""
        if not swarms:
            return {}
        out = self.connection.run(["squeue", "--me", "-h", "-o", "%i|%T|%r"])
        states = parse_squeue(out)
        self.reasons = parse_pending_reasons(out)
        return {
            swarm.job_id: dict.fromkeys(range(swarm.nodes), states.get(swarm.job_id, "exited"))
            for swarm in swarms
        }

    def pending_reason(self, job_id: str) -> str | None:
        return self.reasons.get(job_id)

    def cancel(self, swarm: SwarmRecord) -> None:
        self.connection.run(["scancel", swarm.job_id])
