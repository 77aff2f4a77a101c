"""Messages the router's actors tell each other. Frozen, small, and never waited on."""

from __future__ import annotations

from typing import Any, NamedTuple

from codeswarm.hpc.follower_wire import LineRecord
from codeswarm.protocol import Command


class CommandReceived(NamedTuple):
    command: Command


class Attach(NamedTuple):
    """Where the ProtocolActor sends commands; it starts reading its input only then.

    ``log_dir`` is the state dir whose event log it may replay (None: this router logs none).
    """

    supervisor: Any
    log_dir: str | None = None


class Started(NamedTuple):
    """Asked once after start: answered when on_start has run (or raises if it failed)."""


class InputClosed(NamedTuple):
    """The protocol input reached EOF: the daemon's cue to stop."""


class Emit(NamedTuple):
    """Events for the client, in order."""

    events: list[dict[str, Any]]


class CloseLog(NamedTuple):
    """A swarm was released: its event log file can be closed (it reopens if events come)."""

    swarm_id: str


class AfterLog(NamedTuple):
    """Tell ``target`` ``message`` once every event sent to the log before it is written:
    the cursor advances past a line only when its events are in the event log."""

    target: Any
    message: Any


class FollowerLines(NamedTuple):
    generation: int
    lines: list[LineRecord]


class FollowerDied(NamedTuple):
    generation: int
    reason: str


class StartFollower(NamedTuple):
    pass


class Injection(NamedTuple):
    injection_id: str
    content: str
    request_id: Any = None
    kind: str = "user"  # the inbox record type: user, review or compact


class NodeCommand(NamedTuple):
    """An inbox record for a running node (approve, steer), answered with ``<command>_ack``."""

    command: str
    record: dict[str, Any]
    ack: dict[str, Any]
    request_id: Any = None


class ListApprovals(NamedTuple):
    """Read the pending approvals of ``nodes`` of a swarm and answer with ``approval_list``."""

    swarm_id: str
    job_id: str
    nodes: list[int]
    request_id: Any = None


class Inject(NamedTuple):
    injection: Injection


class InterruptNode(NamedTuple):
    request_id: Any = None


class WorkerLines(NamedTuple):
    lines: list[LineRecord]  # one node's: key, file identity, offset after the line, raw line


class Progress(NamedTuple):
    """A shard has emitted everything up to these file offsets and seqs.

    ``nodes`` holds (node key, file identity -> offset, last seq), one entry a node.
    """

    nodes: list[tuple[str, dict[str, int], int]]


class ForNodes(NamedTuple):
    """Messages for nodes of one shard, each as (node key, message), handled in order.

    Consecutive ``Inject`` messages become one batched inbox write.
    """

    items: list[tuple[str, Any]]


class AddNode(NamedTuple):
    """A shard takes over a node (its correlation, with the last seq already emitted)."""

    correlation: Any  # correlation.NodeCorrelation


class RemoveNodes(NamedTuple):
    """A released swarm's nodes leave their shard, with their timers."""

    keys: list[str]


class NodeRunning(NamedTuple):
    """The scheduler reports the node running (its node_started may have been read earlier)."""


class NodePending(NamedTuple):
    """The scheduler reports the node's job queued: after a requeue it will run again."""


class NodeRemoved(NamedTuple):
    """``scale --remove`` took the node out: its running turn ends, nothing queued runs.

    ``write``: append the shutdown record to its inbox (not when another router did); a
    failed write is told back with the ``Passed`` of ``token``, which answers the ``scale``.
    """

    write: bool = True
    token: int = 0


class Passed(NamedTuple):
    """Told back to the supervisor by a shard once it has handled what it was told before:
    an answer that must follow inbox writes (a removal) waits for it. ``failures``: why the
    removals told with this token could not be written."""

    token: int
    failures: tuple[str, ...] = ()


class NodesDrained(NamedTuple):
    """Removed nodes whose worker is gone: the supervisor releases them. (node key, last
    seq) each, the seq of this very batch: its ``Progress`` comes after, once released."""

    nodes: list[tuple[str, int]]


class NodeGone(NamedTuple):
    reason: str


class InjectTimeout(NamedTuple):
    injection_id: str


class NodeStarted(NamedTuple):
    """Workers' own ``node_started`` were routed: the nodes run, whatever the last poll said.

    One message a batch: each costs the swarm's record a copy, so a thousand nodes starting
    at once must not cost a thousand. ``nodes`` holds (node key, host, Slurm node) each.
    """

    nodes: list[tuple[str, str | None, str | None]]


class PollJobs(NamedTuple):
    """Poll the scheduler: on the poller's schedule, or at once (``urgent``) for status."""

    urgent: bool = False


class LiveSwarms(NamedTuple):
    """The swarms the poller must poll: followed, and not yet seen to end."""

    swarms: list[Any]


class Polled(NamedTuple):
    """The scheduler's view, job id -> node id -> state; None if the poll failed."""

    states: dict[str, dict[int, str]] | None


class Submit(NamedTuple):
    command: Command
    swarm_id: str
    settings: dict[str, Any]


class Launched(NamedTuple):
    command: Command
    swarm_id: str
    submitted: Any  # backends.Submitted


class LaunchFailed(NamedTuple):
    command: Command
    error: Exception


class Cancel(NamedTuple):
    swarm: Any  # registry.SwarmRecord
    request_id: Any


class Cancelled(NamedTuple):
    swarm: Any  # registry.SwarmRecord, as the Cancel had it
    request_id: Any
    error: Exception | None


class Resubmit(NamedTuple):
    """Submit these array tasks of a swarm again, alone (``restart``)."""

    swarm: Any  # registry.SwarmRecord
    tasks: list[int]
    request_id: Any


class Resubmitted(NamedTuple):
    swarm: Any  # registry.SwarmRecord, as the Resubmit had it
    tasks: dict[int, str]  # task -> its new Slurm id, <job>_<task>
    request_id: Any
    error: Exception | None


class NodesContinuing(NamedTuple):
    """Workers said ``node_exited`` reason ``continuing``: node keys, one message a batch."""

    keys: list[str]


class ContinueJob(NamedTuple):
    """Submit the continuation of a Slurm job whose workers exited to continue: the launch's
    job again (``task`` None), or array task ``task`` again."""

    swarm: Any  # registry.SwarmRecord
    slurm_job: str
    nodes: list[int]
    task: int | None


class Continued(NamedTuple):
    """The answer to a ContinueJob: the new job's id, or why sbatch failed (``error``)."""

    swarm: Any  # registry.SwarmRecord, as the ContinueJob had it
    slurm_job: str
    nodes: list[int]
    task: int | None
    new_job: str  # the continuation's Slurm id (``<job>_<task>`` for a task)
    error: Exception | None


class AddAgents(NamedTuple):
    """Submit ``nodes`` more nodes of agents into a swarm, from index ``first`` (``scale``)."""

    swarm: Any  # registry.SwarmRecord
    first: int
    nodes: int
    request_id: Any


class AgentsAdded(NamedTuple):
    swarm: Any  # registry.SwarmRecord, as the AddAgents had it
    allocation: Any  # registry.Allocation; None if the submit failed
    request_id: Any
    error: Exception | None


class Withdraw(NamedTuple):
    """Cancel jobs resubmitted for a swarm that ended or was pruned meanwhile: nobody would
    follow them. ``swarm`` names only those jobs; a failure is logged, not answered."""

    swarm: Any  # registry.SwarmRecord


class Sweep(NamedTuple):
    """Look again for jobs queued by launches that were reported failed."""


class Tick(NamedTuple):
    """Twice a second: save the cursor, write the registry, release finished swarms."""


class AnswerDue(NamedTuple):
    """A status or list answer may wait no longer for a fresh scheduler poll."""

    token: int


class ReadDiffs(NamedTuple):
    """Read these nodes' worktree diffs and answer the client with ``swarm_diff``."""

    swarm: Any  # registry.SwarmRecord
    command: Command
