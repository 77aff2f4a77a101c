"""The Slurm scheduler: sbatch, one batched squeue poll for every job, scancel, over SSH.

Parsing and the batch script are pure functions, tested on literal Slurm output and a golden
script; the shell-outs are three small methods.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from codeswarm.backends import Submitted, agent_count
from codeswarm.backends.ssh import SSHConnection
from codeswarm.backends.ssh_transport import SSHTransport
from codeswarm.config import SlurmConfig
from codeswarm.errors import BackendError
from codeswarm.hpc import slurm_env, worker_settings
from codeswarm.registry import Allocation, SwarmRecord

log = logging.getLogger(__name__)
SBATCH_TIMEOUT = 120.0  # a busy controller can take long to accept a job
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class Shape:
    """How a swarm of ``nodes`` nodes sits in Slurm: the sbatch options and exports it needs.

    ``job``: one job of all nodes, ``agents_per_node`` srun tasks a node, the task id being
    the agent's index. ``array``: a job array of ``tasks`` tasks of ``nodes_per_task`` nodes
    each; a task's workers add its first agent's index (``hpc.slurm_env``).
    """

    nodes: int
    agents_per_node: int
    layout: str = "job"
    nodes_per_task: int = 1
    throttle: int | None = None

    @classmethod
    def of(cls, nodes: int, agents_per_node: int | None, slurm: SlurmConfig) -> Shape:
        """The shape a launch asks for; BackendError if the array cannot hold ``nodes`` or
        the swarm would have more agents than node ids."""
        per_task = slurm.array_nodes_per_task
        agents_per_node = agents_per_node or slurm.agents_per_node
        agent_count(nodes, agents_per_node)
        if slurm.layout == "array" and nodes % per_task:
            raise BackendError(
                f"{nodes} nodes do not split into array tasks of {per_task} "
                "(slurm.array_nodes_per_task): launch a multiple of it, or change it"
            )
        return cls(
            nodes,
            agents_per_node,
            slurm.layout,
            per_task if slurm.layout == "array" else nodes,
            slurm.array_throttle,
        )

    @property
    def task_agents(self) -> int:
        """The agents one array task runs; 0 for the job layout."""
        return self.nodes_per_task * self.agents_per_node if self.layout == "array" else 0

    def options(self) -> list[str]:
        options = [f"--nodes={self.nodes_per_task}", f"--ntasks-per-node={self.agents_per_node}"]
        if self.layout == "array":
            last = self.nodes // self.nodes_per_task - 1
            throttle = f"%{self.throttle}" if self.throttle else ""
            options.append(f"--array=0-{last}{throttle}")
        return options

    def exports(self) -> list[str]:
        if self.layout == "array":
            return [f"export {slurm_env.AGENTS_PER_TASK}={self.task_agents}"]
        return []


def batch_script(
    *,
    swarm_id: str,
    shape: Shape,
    slurm: SlurmConfig,
    cluster_dir: str,
    python: str,
    settings_path: str,
    time: str | None = None,
    partition: str | None = None,
) -> str:
    """The sbatch script of a swarm: ``agents_per_node`` workers a node under srun.

    ``--signal=TERM@N`` (without ``B:``) signals the srun step, so every worker gets SIGTERM N
    seconds before the time limit, as it does on scancel; with ``slurm.continue`` it is
    SIGUSR2 instead, and each worker exits to continue in the next job. Paths, which may hold
    spaces, are never in ``#SBATCH`` lines (sbatch does not parse shell quoting there): the
    output file goes on sbatch's command line (``sbatch_argv``).
    """
    options = [
        f"--job-name=codeswarm-{swarm_id}",
        *shape.options(),
        f"--time={time or slurm.time}",
        f"--signal={'USR2' if slurm.continuation else 'TERM'}@{slurm.signal_seconds}",
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
    lines += [f"export PYTHONPATH={shlex.quote(cluster_dir)}", *shape.exports()]
    lines += [f"cd {shlex.quote(cluster_dir)}"]
    lines += [f"exec {shlex.join(worker)}", ""]
    return "\n".join(lines)


def resubmission_script(
    script: str, job_id: str, first: int | None = None, continuation: bool = False
) -> str:
    """A swarm's saved script, its workers filing under the swarm's first job ``job_id``;
    with ``first``, their agents numbered from it (a job of added agents, ``scale``); with
    ``continuation``, their workers run the prompts the job before requeued.

    The exports are in the script, not in ``--export``, which would override a site's
    ``--export=NONE``.
    """
    lines = script.split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("exec ")), None)
    if at is None:
        raise BackendError("the swarm's saved job.sh has no exec line: launch a new swarm")
    exports = [f"export {slurm_env.JOB_ID}={shlex.quote(job_id)}"]
    if first is not None:
        exports.append(f"export {slurm_env.NODE_OFFSET}={first}")
    if continuation:
        exports.append(f"export {slurm_env.CONTINUATION}=1")
    lines[at:at] = exports
    return "\n".join(lines)


def added_shape(swarm: SwarmRecord, nodes: int, slurm: SlurmConfig) -> Shape:
    """The shape of a job adding ``nodes`` nodes to a swarm: the swarm's agents a node and
    layout (an array's tasks as large as its first ones); BackendError if they do not fit."""
    agent_count(swarm.nodes + nodes * swarm.agents_per_node, 1)
    if swarm.layout != "array" or not swarm.task_agents:
        return Shape(nodes, swarm.agents_per_node, "job", nodes)
    per_task = swarm.task_agents // swarm.agents_per_node
    if nodes % per_task:
        raise BackendError(
            f"{nodes} nodes do not split into the array tasks of {per_task} nodes swarm "
            f"{swarm.swarm_id} runs: add a multiple of {per_task}"
        )
    return Shape(nodes, swarm.agents_per_node, "array", per_task, slurm.array_throttle)


def job_tag(kind: str) -> str:
    """The ``--comment`` a job submitted after the launch carries (``add-<first>``,
    ``continue``): unique, so that a submit whose sbatch answer was lost adopts its own job,
    never another's."""
    return f"codeswarm-{kind}-{uuid.uuid4().hex[:12]}"


def tagged_job(output: bytes, tag: str) -> str | None:
    """From ``squeue -o "%F %k"`` (job id, comment): the job submitted with ``tag``."""
    for line in output.decode("utf-8", "replace").splitlines():
        job, _, comment = line.strip().partition(" ")
        if job.isdigit() and comment.strip() == tag:
            return job
    return None


def sbatch_argv(cluster_dir: str, array: bool = False) -> list[str]:
    """sbatch reading the script on stdin, its output in ``<cluster_dir>/logs``: one file a
    job, or one an array task (``slurm-<job>_<task>.out``, the ``slurm_job`` status shows).

    It runs under umask 077: Slurm creates the output file, and runs the job, with the umask
    sbatch had, and the output holds the workers' logs.
    """
    name = "slurm-%A_%a.out" if array else "slurm-%j.out"
    return [
        "sh",
        "-c",
        'umask 077 && exec "$@"',
        "sh",
        "sbatch",
        "--parsable",
        f"--output={posixpath.join(cluster_dir, 'logs', name)}",
    ]


def parse_job_id(sbatch_output: bytes) -> str:
    """The job id from ``sbatch --parsable`` (``1234`` or ``1234;cluster``)."""
    text = sbatch_output.decode("utf-8", "replace").strip()
    job_id = text.splitlines()[-1].split(";")[0] if text else ""
    if not job_id.isdigit():
        raise BackendError(f"sbatch printed no job id: {text!r}")
    return job_id


def array_tasks(job_id: str) -> list[str]:
    """``1234_[2-5,7%2]``, pending tasks squeue lists in one line, as ``1234_2`` ...
    ``1234_7``; any other id as itself."""
    match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    job, ranges = match.groups()
    tasks = []
    for part in filter(None, ranges.split(",")):
        first, _, last = part.partition("-")
        tasks += range(int(first), int(last or first) + 1)
    return [f"{job}_{task}" for task in tasks]


def parse_squeue(output: bytes) -> dict[str, str]:
    """``squeue -h -r -o %i|%T[|%r]`` as job id (``1234``, array task ``1234_2``) -> pending
    | running | exited."""
    states = {}
    for line in output.decode("utf-8", "replace").splitlines():
        job_id, _, rest = line.strip().partition("|")
        if not job_id:
            continue
        state = rest.split("|")[0].split()[0] if rest.strip() else ""
        if state in PENDING_STATES:
            state = "pending"
        elif state in RUNNING_STATES:
            state = "running"
        else:
            state = "exited"
        states.update(dict.fromkeys(array_tasks(job_id), state))
    return states


def resubmitted_tasks(output: bytes, swarm: SwarmRecord, tasks: list[int]) -> dict[int, str]:
    """From ``squeue -r -o %i`` of the swarm's job name: task -> id of the jobs the swarm
    is not known to run as (launch, resubmitted tasks, added or continuation jobs), for the
    ``tasks`` asked for."""
    known = {job.partition("_")[0] for job in swarm.jobs()}
    found = {}
    for line in output.decode("utf-8", "replace").split():
        job, _, task = line.partition("_")
        if job.isdigit() and task.isdigit() and job not in known and int(task) in tasks:
            found[int(task)] = line
    return found


def node_states(swarm: SwarmRecord, states: dict[str, str]) -> dict[int, str]:
    """Each agent's state: its job's, or its array task's (``1234_2``) in a job array."""
    return {node: states.get(swarm.slurm_job(node), "exited") for node in range(swarm.nodes)}


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


def reason_of(reasons: dict[str, str], job_id: str) -> str | None:
    """Why the job waits; for a job array, why its first waiting task does."""
    if job_id in reasons:
        return reasons[job_id]
    return next((r for job, r in reasons.items() if job.startswith(f"{job_id}_")), None)


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
        shape = Shape.of(nodes, options.get("agents_per_node"), self.slurm)
        script = batch_script(
            swarm_id=swarm_id,
            shape=shape,
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
                sbatch_argv(cluster_dir, shape.layout == "array"),
                stdin=script.encode(),
                timeout=SBATCH_TIMEOUT,
            )
            job_id = parse_job_id(out)
        except BackendError:
            # sbatch may have submitted before the answer was lost: adopt the job, never leave
            # one running that no registry knows.
            job_id = self.find_job(swarm_id)
            if job_id is None:
                raise
            log.warning("sbatch's answer was lost; found the job %s by name", job_id)
        return Submitted(job_id, [], shape.agents_per_node, shape.layout, shape.task_agents)

    def find_job(self, swarm_id: str) -> str | None:
        try:
            out = self.connection.run(
                ["squeue", "--me", "-h", "-n", f"codeswarm-{swarm_id}", "-o", "%F"]
            )
        except BackendError:
            return None
        ids = out.decode("utf-8", "replace").split()
        return ids[0] if ids and ids[0].isdigit() else None

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        out = self.connection.run(
            ["squeue", "--me", "-h", "-n", f"codeswarm-{swarm_id}", "-o", "%F"]
        )
        found = out.decode("utf-8", "replace").split()
        job_ids = sorted({job for job in found if job.isdigit()})
        if job_ids:
            self.connection.run(["scancel", *job_ids])
        return ",".join(job_ids) or None

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        """One squeue call for all jobs and array tasks (``-r``: a line each); a job or task
        squeue no longer lists has exited."""
        if not swarms:
            return {}
        out = self.connection.run(["squeue", "--me", "-h", "-r", "-o", "%i|%T|%r"])
        states = parse_squeue(out)
        self.reasons = parse_pending_reasons(out)
        return {swarm.job_id: node_states(swarm, states) for swarm in swarms}

    def resubmit(
        self, swarm: SwarmRecord, tasks: list[int], continuation: bool = False
    ) -> dict[int, str]:
        """The swarm's saved script again, for these array tasks only (``--array`` on the
        command line wins over the script's); its workers file under the first job's id."""
        cluster_dir = self.transport.cluster_dir
        saved = posixpath.join(cluster_dir, "swarms", swarm.swarm_id, "job.sh")
        saved_script = self.connection.run(["cat", saved]).decode("utf-8", "replace")
        script = resubmission_script(saved_script, swarm.job_id, continuation=continuation)
        argv = [*sbatch_argv(cluster_dir, array=True), f"--array={','.join(map(str, tasks))}"]
        try:
            out = self.connection.run(argv, stdin=script.encode(), timeout=SBATCH_TIMEOUT)
            job_id = parse_job_id(out)
        except BackendError:
            # sbatch may have queued the tasks before its answer was lost: adopt them.
            found = self.find_resubmitted(swarm, tasks)
            if not found:
                raise
            log.warning("sbatch's answer was lost; found the resubmitted tasks %s", found)
            return found
        return {task: f"{job_id}_{task}" for task in tasks}

    def continue_job(self, swarm: SwarmRecord) -> str:
        """The swarm's saved script again, as a new job of the same shape whose workers file
        under the first job's id and resume their threads (``slurm.continue``)."""
        cluster_dir = self.transport.cluster_dir
        saved = posixpath.join(cluster_dir, "swarms", swarm.swarm_id, "job.sh")
        saved_script = self.connection.run(["cat", saved]).decode("utf-8", "replace")
        script = resubmission_script(saved_script, swarm.job_id, continuation=True)
        tag = job_tag("continue")
        argv = [*sbatch_argv(cluster_dir), f"--comment={tag}"]
        return self.sbatch_adopting(argv, script, swarm, tag, "continuation")

    def add_agents(self, swarm: SwarmRecord, first: int, nodes: int) -> Allocation:
        """The swarm's saved script again for ``nodes`` more nodes (``--nodes``/``--array``
        on the command line win over the script's), its workers numbered from ``first``."""
        shape = added_shape(swarm, nodes, self.slurm)
        cluster_dir = self.transport.cluster_dir
        saved = posixpath.join(cluster_dir, "swarms", swarm.swarm_id, "job.sh")
        script = resubmission_script(
            self.connection.run(["cat", saved]).decode("utf-8", "replace"), swarm.job_id, first
        )
        tag = job_tag(f"add-{first}")
        argv = [
            *sbatch_argv(cluster_dir, shape.layout == "array"),
            *shape.options(),
            f"--comment={tag}",
        ]
        job_id = self.sbatch_adopting(argv, script, swarm, tag, "added")
        count = nodes * swarm.agents_per_node
        return Allocation(job_id, first, count, shape.layout, shape.task_agents)

    def sbatch_adopting(
        self, argv: list[str], script: str, swarm: SwarmRecord, tag: str, what: str
    ) -> str:
        """sbatch a job submitted with ``--comment=<tag>``: its id, or, when sbatch's answer
        was lost after it queued the job, the id of the job carrying that tag."""
        try:
            out = self.connection.run(argv, stdin=script.encode(), timeout=SBATCH_TIMEOUT)
            return parse_job_id(out)
        except BackendError:
            found = self.find_tagged(swarm, tag)
            if found is None:
                raise
            log.warning("sbatch's answer was lost; found the %s job %s by its tag", what, found)
            return found

    def find_tagged(self, swarm: SwarmRecord, tag: str) -> str | None:
        """The job of the swarm's name submitted with ``tag``."""
        try:
            out = self.connection.run(
                ["squeue", "--me", "-h", "-n", f"codeswarm-{swarm.swarm_id}", "-o", "%F %k"]
            )
        except BackendError:
            return None
        return tagged_job(out, tag)

    def find_resubmitted(self, swarm: SwarmRecord, tasks: list[int]) -> dict[int, str]:
        """The swarm's queued array tasks that are neither its first array's nor known
        resubmissions: a resubmission of ``tasks`` whose answer was lost."""
        try:
            out = self.connection.run(
                ["squeue", "--me", "-h", "-r", "-n", f"codeswarm-{swarm.swarm_id}", "-o", "%i"]
            )
        except BackendError:
            return {}
        return resubmitted_tasks(out, swarm, tasks)

    def pending_reason(self, job_id: str) -> str | None:
        return reason_of(self.reasons, job_id)

    def cancel(self, swarm: SwarmRecord) -> None:
        """Every job the swarm runs as: the launch's (with array tasks resubmitted alone) and
        those submitted since (``allocations``)."""
        self.connection.run(["scancel", *swarm.jobs()])
