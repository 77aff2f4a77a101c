"""Commands aimed at a swarm's nodes: inject, interrupt, approve, steer and approvals.

Each names a swarm (or a job) and ``nodes`` (an index, a list or ``"all"``). The swarm is
resolved once; then every node is told (an inject to many nodes in one message a shard, so
that their inboxes are written in one batch), and a node that cannot be told (its swarm has
ended, or it has no such index) fails alone with an event that names it, while the others go
ahead. The SupervisorActor mixes this in: the node actors and the swarm table are its own.
"""

from __future__ import annotations

import uuid
from typing import Any

from codeswarm.actors.messages import Inject, Injection, InterruptNode, ListApprovals, NodeCommand
from codeswarm.actors.steering import node_command
from codeswarm.hpc import records
from codeswarm.protocol import commands, errors, make_event
from codeswarm.registry import SwarmRecord


class NodeTargeting:
    """The supervisor's handlers of node-targeted commands (a mixin of SupervisorActor)."""

    table: Any
    approvals: Any
    nodes: dict[str, Any]
    tell_nodes_at_once: Any

    def resolve(self, command: Any) -> tuple[SwarmRecord | None, list[int]]:
        """The swarm and nodes a targeted command names; an unknown swarm_id is reported.

        The registry is looked at first (a stat when unchanged): a restart or terminate that
        another process finished before this command was sent is taken in before it.
        """
        self.refresh_registry()
        if command.swarm_id is not None:
            swarm = self.known_swarm(command.swarm_id, command.request_id)
        else:
            swarm = self.table.get(command.job_id)
            if swarm is None:
                self.refresh_registry(force=True)
                swarm = self.table.get(command.job_id)
        if command.nodes != "all":
            return swarm, list(command.nodes)
        return swarm, swarm.active_nodes() if swarm else []

    def unreachable(
        self, swarm: SwarmRecord | None, job_id: str, node_id: int
    ) -> tuple[str, str] | None:
        """(error code, why) when a node cannot be told, else None."""
        key = records.node_key(job_id, node_id)
        if swarm is None:
            return errors.UNKNOWN_TARGET, f"no node {key} in any swarm this router knows"
        if swarm.is_final():
            return errors.NODE_GONE, f"swarm {swarm.swarm_id} has {swarm.state}"
        if node_id in swarm.removed:
            why = f"node {node_id} was removed from swarm {swarm.swarm_id} (scale --remove)"
            return errors.NODE_REMOVED, why
        if key not in self.nodes:
            why = f"swarm {swarm.swarm_id} has no node {node_id} (it has {swarm.nodes})"
            return errors.UNKNOWN_TARGET, why
        return None

    def inject(self, command: commands.Inject) -> None:
        swarm, nodes = self.resolve(command)
        if swarm is None and command.swarm_id is not None:
            return
        if swarm is None and not nodes:
            self.error(
                errors.UNKNOWN_SWARM, f"no job {command.job_id}", command.request_id, field="job_id"
            )
            return
        base = command.injection_id or f"inj-{uuid.uuid4().hex[:12]}"
        longest = base if len(nodes) == 1 else f"{base}-{max(nodes)}"
        problem = records.id_problem(longest)
        if problem:
            self.error(
                errors.INVALID_FIELD,
                f"injection_id {longest!r} {problem}",
                command.request_id,
                field="injection_id",
            )
            return
        job_id = swarm.job_id if swarm else command.job_id
        told: list[tuple[str, Any]] = []
        live = self.nodes if swarm is not None and not swarm.is_final() else {}
        removed = set(swarm.removed) if swarm is not None else set()
        for node_id in nodes:
            injection_id = base if len(nodes) == 1 else f"{base}-{node_id}"
            key = f"{job_id}_{node_id}"  # records.node_key's, unchecked: a followed node's
            if key in live and node_id not in removed:
                injection = Injection(
                    injection_id, command.content, command.request_id, command.kind
                )
                told.append((key, Inject(injection)))
                continue
            failed = self.unreachable(swarm, job_id, node_id)
            assert failed is not None  # a live swarm's followed, kept node is the reachable kind
            self.emit(
                make_event(
                    "inject_failed",
                    request_id=command.request_id,
                    swarm_id=swarm.swarm_id if swarm else None,
                    job_id=job_id,
                    node_id=node_id,
                    injection_id=injection_id,
                    error=failed[0],
                    message=failed[1],
                )
            )
        self.tell_nodes_at_once(told)

    def interrupt(self, command: commands.Interrupt) -> None:
        self.tell_nodes(command, InterruptNode(command.request_id))

    def node_command(self, command: commands.Approve | commands.Steer) -> None:
        self.tell_nodes(command, NodeCommand(*node_command(command), command.request_id))

    def list_approvals(self, command: commands.ListApprovals) -> None:
        swarm, nodes = self.resolve(command)
        if swarm is None:
            return
        unknown = [node for node in nodes if node >= swarm.nodes]
        if unknown:  # an empty list would read as "nothing pending there"
            why = f"swarm {swarm.swarm_id} has no node {unknown[0]} (it has {swarm.nodes})"
            self.error(errors.INVALID_FIELD, why, command.request_id, field="nodes")
        else:
            self.approvals.tell(
                ListApprovals(swarm.swarm_id, swarm.job_id, nodes, command.request_id)
            )

    def tell_nodes(self, command: Any, message: Any) -> None:
        """Tell each node a command names; a node that is gone or unknown fails on its own."""
        swarm, nodes = self.resolve(command)
        if swarm is None:
            if command.job_id is not None:
                self.error(
                    errors.UNKNOWN_SWARM,
                    f"no job {command.job_id}",
                    command.request_id,
                    field="job_id",
                )
            return
        told: list[tuple[str, Any]] = []
        for node_id in nodes:
            failed = self.unreachable(swarm, swarm.job_id, node_id)
            if failed is None:
                told.append((records.node_key(swarm.job_id, node_id), message))
            else:
                self.error(
                    *failed,
                    command.request_id,
                    field="nodes",
                    swarm_id=swarm.swarm_id,
                    job_id=swarm.job_id,
                    node_id=node_id,
                )
        self.tell_nodes_at_once(told)
