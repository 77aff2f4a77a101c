"""The local backend: workers and the follower as processes on this machine, no SSH, no Slurm.

It runs the very scripts a cluster runs, from a copy of ``hpc/`` beside the mailbox, so that
everything but the network and the batch system is exercised by a local swarm.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from codeswarm.backends import Pruned, Submitted, agent_count, follower_args
from codeswarm.errors import BackendError
from codeswarm.hpc import diff, mailbox_io, prune, records, worker_settings
from codeswarm.hpc.git_worktree import WorktreeError
from codeswarm.hpc.private import FILE_MODE, private_dir, private_file
from codeswarm.registry import Allocation, SwarmRecord


def install_hpc(cluster_dir: Path) -> None:
    """Copy the packaged hpc/ scripts to ``<cluster_dir>/hpc`` (as a launch does on a cluster).

    ``hpc/__pycache__`` is made here, private: Python would make it under the worker's umask.
    """
    target = cluster_dir / "hpc"
    private_dir(target / "__pycache__")
    private_dir(target)
    for entry in resources.files("codeswarm.hpc").iterdir():
        if entry.name.endswith(".py"):
            data = entry.read_bytes()
            path = target / entry.name
            if not path.exists() or path.read_bytes() != data:
                # running workers import these files: rename a new copy over, never rewrite
                tmp = path.with_name(f".{path.name}.{os.getpid()}")
                with open(tmp, "wb", opener=private_file) as f:
                    f.write(data)
                os.replace(tmp, path)
            elif path.stat().st_mode & 0o777 != FILE_MODE:
                path.chmod(FILE_MODE)


class LocalProcess:
    """A child process whose stdin we hold open: closing it ends the follower."""

    def __init__(self, argv: list[str], cwd: Path, stderr: Path) -> None:
        with open(stderr, "ab", opener=private_file) as err:
            self.process = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        self.stdout = self.process.stdout

    def read(self, size: int) -> bytes:
        assert self.stdout is not None
        return os.read(self.stdout.fileno(), size)

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        self.process.kill()


class LocalTransport:
    def __init__(self, cluster_dir: str, poll_seconds: float, idle_poll_seconds: float) -> None:
        self.cluster_dir = Path(cluster_dir)
        self.mailbox = str(self.cluster_dir / "mailbox")
        self.installed_codex: str | None = None  # the local backend installs no codex
        self.poll_seconds = poll_seconds
        self.idle_poll_seconds = idle_poll_seconds

    def prepare(self) -> None:
        private_dir(self.cluster_dir)
        mailbox_io.ensure_mailbox(self.mailbox)
        private_dir(self.cluster_dir / "logs")
        install_hpc(self.cluster_dir)

    def close(self) -> None:
        """Nothing to release: every call opens and closes what it uses."""

    def append_inbox(self, job_id: str, node_id: int, lines: list[bytes]) -> None:
        path = os.path.join(self.mailbox, records.INBOX_DIR, records.record_name(job_id, node_id))
        try:
            mailbox_io.append_lines(path, b"".join(lines))
        except OSError as exc:
            raise BackendError(f"cannot write inbox {path}: {exc}") from exc

    def append_inboxes(
        self, appends: list[tuple[str, int, list[bytes]]]
    ) -> list[BackendError | None]:
        results: list[BackendError | None] = []
        for job_id, node_id, lines in appends:
            try:
                self.append_inbox(job_id, node_id, lines)
            except BackendError as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    def read_states(self, job_id: str, node_ids: list[int]) -> dict[int, bytes]:
        found = {}
        for node_id in node_ids:
            path = os.path.join(
                self.mailbox, records.STATE_DIR, records.state_name(job_id, node_id)
            )
            try:
                with open(path, "rb") as f:
                    found[node_id] = f.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BackendError(f"cannot read {path}: {exc}") from exc
        return found

    def remove_swarm_files(self, swarms: list[SwarmRecord]) -> dict[str, Pruned]:
        removed = {}
        try:
            for swarm in swarms:
                try:
                    paths = prune.prune_swarm(
                        str(self.cluster_dir), swarm.swarm_id, swarm.job_id, swarm.nodes
                    )
                except prune.PruneError as exc:
                    removed[swarm.swarm_id] = Pruned(exc.removed, str(exc))
                else:
                    removed[swarm.swarm_id] = Pruned(paths)
        except (OSError, records.RecordError, WorktreeError) as exc:
            raise BackendError(f"cannot remove swarm files in {self.cluster_dir}: {exc}") from exc
        return removed

    def read_diffs(self, job_id: str, nodes: list[int], stat_only: bool) -> list[dict[str, Any]]:
        try:
            return diff.read_diffs(self.mailbox, job_id, nodes, stat_only)
        except (OSError, records.RecordError) as exc:
            raise BackendError(f"cannot read the diffs of job {job_id}: {exc}") from exc

    def start_follower(self, header: bytes) -> LocalProcess:
        argv = [
            sys.executable,
            "-m",
            "hpc.outbox_follower",
            *follower_args(self.mailbox, self.poll_seconds, self.idle_poll_seconds),
        ]
        follower = LocalProcess(argv, self.cluster_dir, self.cluster_dir / "logs" / "follower.log")
        follower.send(header)
        return follower


def pid_state(pid: int, job_id: str) -> str:
    """``running`` or ``exited``, read from /proc: a zombie, or a reused pid, counts as exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "exited"
    if job_id.encode() not in cmdline.split(b"\0"):
        return "exited"
    return "exited" if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X") else "running"


class LocalScheduler:
    """Runs a job's workers as local processes and tracks them like a batch system would."""

    name = "local"

    def __init__(
        self, cluster_dir: str, python: str = sys.executable, agents_per_node: int = 1
    ) -> None:
        self.cluster_dir = Path(cluster_dir)
        self.python = python
        self.agents_per_node = agents_per_node
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def submit(
        self, swarm_id: str, nodes: int, settings: dict[str, Any], **options: Any
    ) -> Submitted:
        """Start ``nodes x agents_per_node`` workers: a "node" here is a group of agents."""
        agents_per_node = options.get("agents_per_node") or self.agents_per_node
        job_id = f"local-{uuid.uuid4().hex[:10]}"
        swarm_dir = self.cluster_dir / "swarms" / swarm_id
        private_dir(swarm_dir.parent)
        private_dir(swarm_dir)
        settings_path = swarm_dir / "worker.json"
        data = worker_settings.encode_settings(settings["agent"], settings["worker"])
        with open(settings_path, "wb", opener=private_file) as f:
            f.write(data)
        agents = range(agent_count(nodes, agents_per_node))
        pids = [self.start_worker(swarm_id, job_id, n, settings_path) for n in agents]
        return Submitted(job_id, pids, agents_per_node)

    def add_agents(self, swarm: SwarmRecord, first: int, nodes: int) -> Allocation:
        """More workers of the swarm, filing under its first job id; their own job id names
        them in ``swarm_status`` only."""
        count = nodes * swarm.agents_per_node
        settings_path = self.cluster_dir / "swarms" / swarm.swarm_id / "worker.json"
        if not settings_path.exists():
            raise BackendError(f"{settings_path} is gone: launch a new swarm")
        agents = range(first, first + count)
        pids = [self.start_worker(swarm.swarm_id, swarm.job_id, n, settings_path) for n in agents]
        return Allocation(f"local-{uuid.uuid4().hex[:10]}", first, count, pids=pids)

    def start_worker(self, swarm_id: str, job_id: str, node_id: int, settings_path: Path) -> int:
        """One worker process, its output in ``logs/<JOB>_<NODE>.worker.log``; its pid."""
        log = self.cluster_dir / "logs" / f"{records.node_key(job_id, node_id)}.worker.log"
        argv = [
            self.python,
            "-m",
            "hpc.codex_worker",
            "--mailbox",
            str(self.cluster_dir / "mailbox"),
            "--job-id",
            job_id,
            "--node-id",
            str(node_id),
            "--settings",
            str(settings_path),
            "--swarm-id",
            swarm_id,
        ]
        try:
            with open(log, "ab", opener=private_file) as out:
                child = subprocess.Popen(
                    argv,
                    cwd=self.cluster_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
        except OSError as exc:
            raise BackendError(f"cannot start a local worker: {exc}") from exc
        self._children[child.pid] = child
        return child.pid

    def poll(self, swarms: list[SwarmRecord]) -> dict[str, dict[int, str]]:
        for child in list(self._children.values()):
            if child.poll() is not None:
                self._children.pop(child.pid, None)
        return {swarm.job_id: self.node_states(swarm) for swarm in swarms}

    @staticmethod
    def node_states(swarm: SwarmRecord) -> dict[int, str]:
        """Each agent's state, from the process of the job that runs it (launch or scale)."""
        states = {}
        for node in range(swarm.nodes):
            pid = swarm.pid(node)
            states[node] = "exited" if pid is None else pid_state(pid, swarm.job_id)
        return states

    def cancel_unregistered(self, swarm_id: str) -> str | None:
        """Nothing to do: a local submit either started its processes or raised."""
        return None

    def pending_reason(self, job_id: str) -> str | None:
        return None  # processes start at once: nothing waits

    def continue_job(self, swarm: SwarmRecord) -> str:
        raise BackendError("the local backend has no time limit to continue past")

    def cancel(self, swarm: SwarmRecord) -> None:
        for pid in [*swarm.pids, *(p for a in swarm.allocations for p in a.pids)]:
            if pid_state(pid, swarm.job_id) == "running":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
