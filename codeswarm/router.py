"""The router: the actor system the daemon runs and other Python services embed.

Start-up is ordered (sink, supervisor, then input), and so is shutdown (input, supervisor with
its follower and nodes, sink, timer); anything left alive afterwards is logged as a bug.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, BinaryIO

import pykka

from codeswarm import __version__
from codeswarm.actors.eventlog import EventLogActor
from codeswarm.actors.messages import Attach, Emit, Started
from codeswarm.actors.protocol import ProtocolActor
from codeswarm.actors.supervisor import SupervisorActor
from codeswarm.backends.local import LocalScheduler, LocalTransport
from codeswarm.codex_binary import find_codex
from codeswarm.config import Config
from codeswarm.cursor import CursorStore
from codeswarm.errors import CommandError, ConfigError
from codeswarm.eventlog import EventLog
from codeswarm.hpc.private import private_dir
from codeswarm.protocol import errors, make_event
from codeswarm.registry import SwarmRegistry
from codeswarm.timer import Timer

log = logging.getLogger(__name__)
LOCAL_POLL_SECONDS = 1.0
STARTUP_SECONDS = 60.0
SLURM_POLL_SECONDS = 5.0  # one squeue a poll for every job; kind to the controller


def worker_settings(config: Config, installed_codex: str | None = None) -> dict[str, Any]:
    """What every worker of a swarm reads from its ``--settings`` file.

    ``installed_codex`` is the binary the transport installed for ``agent.codex_version``;
    ``slurm.continue`` goes in the worker section, which is all a worker reads.
    """
    data = config.to_dict()
    agent = dict(data["agent"])
    if installed_codex:
        agent["codex_path"] = installed_codex
    elif config.backend == "local" and agent["codex_path"] == "codex":
        agent["codex_path"] = find_codex()
    worker = dict(data["worker"])
    if config.slurm.continuation is not None:
        worker["continue"] = config.slurm.continuation
    return {"agent": agent, "worker": worker}


def build_backend(config: Config) -> tuple[Any, Any, float]:
    """Transport, scheduler and scheduler poll interval for the configured backend."""
    cluster_dir = config.cluster.cluster_dir
    poll, idle = config.router.follower_poll_seconds, config.router.follower_idle_poll_seconds
    if config.backend == "slurm":
        from codeswarm.backends.slurm import SlurmScheduler
        from codeswarm.backends.ssh import SSHConnection
        from codeswarm.backends.ssh_transport import SSHTransport

        connection = SSHConnection(config.ssh)
        transport = SSHTransport(
            connection, cluster_dir, config.cluster.python, poll, idle, config.agent.codex_version
        )
        scheduler = SlurmScheduler(transport, config.slurm, config.cluster.python)
        return transport, scheduler, SLURM_POLL_SECONDS
    transport = LocalTransport(cluster_dir, poll, idle)
    scheduler = LocalScheduler(cluster_dir, agents_per_node=config.slurm.agents_per_node)
    return transport, scheduler, LOCAL_POLL_SECONDS


class Router:
    """The running actor system for one config. ``sink`` receives ``Emit`` messages.

    ``scheduler`` replaces the backend's own, for running other workers on the same mailbox
    (the benchmarks' simulated workers). ``follow`` says where events come from: ``"resume"``
    streams from the cursor saved by the last router (the daemon), ``"end"`` streams only what
    is written from now on without saving a cursor (``attach``), None streams nothing (the
    other CLI verbs, which only act).
    """

    def __init__(
        self,
        config: Config,
        sink: Any,
        scheduler: Any = None,
        follow: str | None = "resume",
    ) -> None:
        self.config = config
        self.sink = sink
        self.stop_requested = threading.Event()  # set by the supervisor: shutdown, EOF, failure
        transport, default_scheduler, poll_seconds = build_backend(config)
        self.transport = transport
        scheduler = scheduler or default_scheduler
        try:
            private_dir(config.router.state_dir)  # made 0700, and tightened if it was not
            self.registry = registry = SwarmRegistry(config.router.state_dir, transport.mailbox)
            registry.all()  # a damaged registry is the caller's error now, not a dead actor later
            cursor = CursorStore(
                config.router.state_dir, transport.mailbox, persist=follow == "resume"
            )
        except OSError as exc:
            transport.close()
            problem = f"cannot use {config.router.state_dir}: {exc.strerror or exc}"
            raise ConfigError("config", [("router.state_dir", problem)]) from None
        except BaseException:
            transport.close()
            raise
        try:
            transport.prepare()
            settings = worker_settings(config, transport.installed_codex)
        except BaseException:
            transport.close()
            cursor.close()
            raise
        self.timer = Timer()
        # Only the router holding the cursor lock logs: it alone sees every event in order.
        self.event_log: Any = None
        self.log_dir: str | None = None
        if cursor.persist:
            self.log_dir = config.router.state_dir
            self.event_log = EventLogActor.start(
                EventLog(
                    self.log_dir,
                    config.router.event_log_segment_bytes,
                    config.router.event_log_max_bytes,
                ),
                sink,
            )
        self.supervisor = SupervisorActor.start(
            transport=transport,
            scheduler=scheduler,
            registry=registry,
            cursor=cursor,
            sink=self.event_log or sink,
            log_dir=self.log_dir,
            timer=self.timer,
            worker_settings=settings,
            inject_timeout=config.router.inject_timeout_seconds,
            poll_seconds=poll_seconds,
            stop_requested=self.stop_requested,
            follow=follow,
            # A node the scheduler reports gone fails its injections only after the follower
            # had time to deliver the worker's own last events; a CLI call waits for nothing.
            gone_grace=0.0 if follow is None else 2 * config.router.follower_idle_poll_seconds + 1,
            continue_jobs=config.backend == "slurm" and config.slurm.continuation is not None,
        )
        try:
            self.supervisor.ask(Started(), timeout=STARTUP_SECONDS)
        except Exception:
            self.stop()
            raise

    def tell(self, message: Any) -> None:
        """Hand ``message`` to the supervisor; CommandError once the router has stopped."""
        try:
            self.supervisor.tell(message)
        except pykka.ActorDeadError:
            stopped = make_event(
                "error",
                error=errors.INTERNAL,
                message="the router has stopped (see the log for why); start a new one",
            )
            raise CommandError(stopped) from None

    def stop(self) -> None:
        self.supervisor.stop()
        if self.event_log is not None:
            self.event_log.stop()
        self.timer.stop()
        self.transport.close()
        leftovers = [ref for ref in pykka.ActorRegistry.get_all() if ref is not self.sink]
        for ref in leftovers:
            log.error("actor still alive after shutdown: %s", ref)


def run_daemon(
    config: Config, input_stream: BinaryIO, output_stream: BinaryIO, stop_fd: int
) -> int:
    """Serve the JSON-lines protocol until EOF on input, ``shutdown``, or ``stop_fd`` is readable.

    The main thread selects on ``stop_fd``, where signals arrive, and reads the router's stop
    flag between selects without taking its lock (see ``codeswarm.cli.stop_signals_fd``).
    """
    protocol = ProtocolActor.start(input_stream, output_stream)
    router = None
    try:
        router = Router(config, protocol)
        protocol.tell(
            Emit(
                [make_event("ready", version=__version__, backend=config.backend, pid=os.getpid())]
            )
        )
        protocol.tell(Attach(router.supervisor, router.log_dir))
        while not router.stop_requested.is_set():
            if select.select([stop_fd], [], [], 0.5)[0]:
                break
        return 0
    finally:
        if router is not None:
            router.stop()
        protocol.stop()
