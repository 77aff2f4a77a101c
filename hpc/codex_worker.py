"""The compute-node worker: feeds inbox prompts to one ``codex app-server``, writes events.

Run as ``python3 -m hpc.codex_worker --mailbox DIR`` (one per agent, job and node ids from
Slurm's environment). Everything happens on one main thread, which consumes a queue fed by the
app-server's reader thread and polls the inbox between messages, so no lock guards the state.
Signal handlers only set a flag.
"""

import argparse
import collections
import faulthandler
import glob
import logging
import os
import queue
import signal
import socket
import sys
import time

from . import (
    approvals,
    codex_protocol,
    git_worktree,
    private,
    records,
    slurm_env,
    steering,
    workdir,
    worker_settings,
)
from .activity import Activity, error_fields
from .codex_session import CodexSession
from .continuation import EXIT_INTERRUPT_GRACE, ContinuingWorker
from .mailbox_io import (
    InboxReader,
    OutboxWriter,
    StateStore,
    archive_outbox,
    create_inbox,
    ensure_mailbox,
    last_seq,
)

log = logging.getLogger("codeswarm.worker")

HANDLED_KEPT = 1000
# scancel and Slurm's time limit signal every process of the job step at once, in no set
# order: codex may die just before the worker's own SIGTERM arrives. A codex exit is judged
# only after this long, so that a node going down is not reported as a crash.
CODEX_EXIT_GRACE = 1.0
CONTINUING = records.EXIT_CONTINUING
CONTINUE_SIGNAL = signal.SIGUSR2


# Records that act on what runs now; read again after a restart they would act twice.
CONTROL_KINDS = (records.INBOX_APPROVE, records.INBOX_STEER, records.INBOX_INTERRUPT)


class Turn:
    """The injection codex is working on: at most one at a time (a second turn/start steers)."""

    def __init__(self, entry, usage_base):
        self.entry = entry  # the queue entry, put back at the head when the node continues
        self.injection_id = entry[1]
        self.usage_base = usage_base
        self.turn_id = None
        self.interrupt_wanted = False
        self.requeue = False  # interrupted to continue in the next job: no turn_complete


def interrupted(params):
    """A ``turn/completed`` for a turn that was cut short (not one that ended meanwhile)."""
    return (params.get("turn") or {}).get("status") == "interrupted"


class Worker(ContinuingWorker):
    def __init__(
        self, mailbox, job_id, node_id, workspace, codex_home, agent, settings, worktree=None
    ):
        self.mailbox = mailbox
        self.workspace = workspace
        self.worktree = worktree  # (repo, branch) when the node works in a git worktree
        self.job_id = records.check_id(job_id, "job_id")
        self.node_id = records.check_node_id(node_id)
        self.settings = settings
        key = records.node_key(job_id, node_id)
        ensure_mailbox(mailbox)
        os.makedirs(workspace, mode=0o700, exist_ok=True)
        self.store = StateStore(
            os.path.join(mailbox, records.STATE_DIR, records.state_name(job_id, node_id))
        )
        self.state = self.store.load()
        inbox = os.path.join(mailbox, records.INBOX_DIR, records.record_name(job_id, node_id))
        create_inbox(inbox)
        self.inbox = InboxReader(inbox, self.state["inbox_offset"])
        self.outbox_path = os.path.join(
            mailbox, records.OUTBOX_DIR, records.record_name(job_id, node_id)
        )
        # Not SimpleQueue: its get(timeout) waits forever once a signal is handled past the
        # deadline (seen on CPython 3.11), and this wait is where SIGTERM usually lands.
        self.events = queue.Queue()
        self.queue = collections.deque()  # (line start offset, injection_id, content, kind)
        self.turn = None
        self.codex = CodexSession(
            agent,
            codex_home,
            workspace,
            os.path.join(mailbox, records.LOG_DIR, key + ".codex.log"),
            self.events,
            report=self.agent_error,
            on_thread=self.thread_open,
            on_request=self.server_request,
        )
        self.activity = Activity(
            self.emit, os.path.join(mailbox, records.LOG_DIR, key), settings["max_event_bytes"]
        )
        self.approvals = approvals.Approvals(
            self.state,
            agent,
            self.emit,
            self.codex.respond,
            self.save_state,
            workspace,
        )
        self.steering = steering.Steering(self.emit, self.codex.call)
        self.usage_total = None
        self.failures = 0
        self.restart_at = None
        self.codex_lost = None  # (judge at, exit code, stderr tail) of a codex that exited
        self.stop_reason = None
        self.hurry = False  # a second stop signal: the continuing turn's grace is over
        self.draining = None  # why to stop once the queue is done: "shutdown" or "removed"
        self.drain_offset = None  # where the record that set ``draining`` starts in the inbox
        self.state_dirty = False
        self.exit_deadline = None
        self.last_activity = time.monotonic()
        self.last_inbox_poll = 0.0
        self.poll_delay = settings["poll_active_seconds"]
        archives = glob.glob(
            os.path.join(mailbox, records.ARCHIVE_DIR, key + "*" + records.RECORD_SUFFIX)
        )
        next_seq = max(self.state["next_seq"], last_seq([self.outbox_path, *archives]) + 1)
        self.outbox = OutboxWriter(self.outbox_path, self.job_id, self.node_id, next_seq)

    # ---- life cycle -------------------------------------------------------------------------

    def request_stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
        else:
            self.hurry = True

    def run(self):
        # Several agents share a node: say which host and which Slurm node (one host may
        # run several slurmd) this one is on.
        self.emit(
            "node_started",
            pid=os.getpid(),
            host=socket.gethostname(),
            slurm_node=os.environ.get("SLURMD_NODENAME"),
        )
        self.approvals.restarted()
        if self.state["in_flight"]:
            self.fail(
                self.state["in_flight"],
                records.FAILED_WORKER_RESTARTED,
                "the worker restarted while this prompt's turn was running",
            )
            self.state["in_flight"] = None
            self.save_state()
        if self.worktree is not None:
            self.prepare_worktree()
        if self.stop_reason is None:
            self.start_codex()
        while not self.finished():
            self.step()
        self.finish()
        return 0

    def prepare_worktree(self):
        """Check out the node's branch before codex starts; without it the node ends."""
        repo, branch = self.worktree
        try:
            workdir.prepare_worktree(
                self.mailbox, self.job_id, self.node_id, repo, self.workspace, branch
            )
        except (git_worktree.WorktreeError, OSError) as exc:
            log.error("cannot make the node's worktree: %s", exc)
            self.request_stop("worktree_failed: %s" % exc)

    def finished(self):
        if self.stop_reason is None:
            return False
        if self.exit_deadline is None:
            self.begin_exit()
        if self.stop_reason == CONTINUING:
            return self.continue_finished()
        if self.turn is not None and time.monotonic() < self.exit_deadline:
            return False
        if self.turn is not None:
            self.approvals.turn_ended()  # nobody can answer them once the node is gone
            self.activity.turn_ended()
            self.fail(
                self.turn.injection_id,
                records.FAILED_NODE_EXITING,
                "the node stopped before the turn ended",
            )
            self.turn = None
        return True

    def begin_exit(self):
        log.info("stopping: %s", self.stop_reason)
        if self.stop_reason == CONTINUING:
            grace = worker_settings.turn_grace_seconds(self.settings)
            self.exit_deadline = time.monotonic() + grace
            self.save_state()
            return
        self.exit_deadline = time.monotonic() + EXIT_INTERRUPT_GRACE
        while self.queue:
            injection_id = self.queue.popleft()[1]
            self.fail(
                injection_id,
                records.FAILED_NODE_EXITING,
                "the node is exiting (%s)" % self.stop_reason,
            )
            self.mark_handled(injection_id)
        # A removed agent's worker started again (a continuation or a requeue reruns the whole
        # job) reads its removal again, and ends.
        removed = self.draining == "removed" and self.drain_offset is not None
        self.state["inbox_offset"] = self.drain_offset if removed else self.inbox.offset
        self.save_state()
        if self.turn is not None:
            if self.codex.ready:
                self.interrupt()
            else:
                self.exit_deadline = time.monotonic()

    def finish(self):
        self.state["in_flight"] = None
        if self.stop_reason == CONTINUING:
            self.save_queue()
        self.save_state()
        self.codex.stop()
        self.emit("node_exited", reason=self.stop_reason)
        self.outbox.close()
        target = archive_outbox(self.mailbox, self.job_id, self.node_id)
        log.info("outbox archived to %s", target)

    # ---- the loop ---------------------------------------------------------------------------

    def step(self):
        try:
            item = self.events.get(timeout=self.next_delay())
        except queue.Empty:
            item = None
        while item is not None:
            self.last_activity = time.monotonic()
            self.handle(item)
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                item = None
        now = time.monotonic()
        if self.draining and self.turn is None and not self.queue:
            self.request_stop(self.draining)
        idle = self.stop_reason is None and not self.draining
        if idle and now - self.last_inbox_poll >= self.poll_delay:
            self.last_inbox_poll = now
            self.read_inbox()
        if self.codex_lost is not None and now >= self.codex_lost[0] and self.stop_reason is None:
            self.codex_crashed(*self.codex_lost[1:])
        if self.restart_at is not None and now >= self.restart_at and self.stop_reason is None:
            self.restart_at = None
            self.start_codex()
        self.start_next_turn()
        self.approvals.expire()
        if self.state_dirty:
            self.save_state()

    def next_delay(self):
        active = self.settings["poll_active_seconds"]
        busy = self.turn is not None or self.queue or self.stop_reason is not None
        if busy or time.monotonic() - self.last_activity < self.settings["active_window_seconds"]:
            self.poll_delay = active
        else:
            self.poll_delay = min(self.poll_delay * 2, self.settings["poll_idle_seconds"])
        delay = self.poll_delay
        for due in (
            self.restart_at,
            self.codex_lost and self.codex_lost[0],
            self.approvals.next_due(),
        ):
            if due is not None:
                delay = min(delay, max(0.0, due - time.monotonic()))
        return delay

    def handle(self, item):
        routed = self.codex.handle(item)
        if routed is None:
            return
        kind, payload = routed
        if kind == "exit":
            self.codex_exited(payload)
        else:
            self.notification(*payload)

    # ---- inbox ------------------------------------------------------------------------------

    def read_inbox(self):
        lines = self.inbox.poll()
        if not lines:
            return
        self.last_activity = time.monotonic()
        for start, raw in lines:
            self.inbox_line(start, raw)
            if self.draining:
                self.drain_offset = start
                self.inbox.offset = start + len(raw)
                break
        self.state["read_offset"] = max(self.state["read_offset"], self.inbox.offset)
        self.state["inbox_offset"] = self.queue[0][0] if self.queue else self.inbox.offset
        self.state_dirty = True

    def inbox_line(self, start, raw):
        try:
            record = records.parse_inbox_line(raw.decode("utf-8"))
        except (UnicodeDecodeError, records.RecordError) as exc:
            excerpt = raw[:200].decode("utf-8", "replace").rstrip("\n")
            self.emit(
                "error",
                error=records.ERROR_INVALID_INBOX_LINE,
                message="inbox line at byte %d ignored: %s" % (start, exc),
                line=excerpt,
            )
            return
        kind = record["type"]
        if kind in CONTROL_KINDS and start < self.state["read_offset"]:
            return  # acted on before this worker restarted
        if kind == records.INBOX_SHUTDOWN and record.get("removed"):
            self.removed()
        elif kind == records.INBOX_SHUTDOWN:
            log.info("shutdown requested: finishing %d queued prompts first", len(self.queue))
            self.draining = "shutdown"
        elif kind == records.INBOX_INTERRUPT:
            self.interrupt()
        elif kind == records.INBOX_APPROVE:
            self.approvals.answer(record)
        elif kind == records.INBOX_STEER:
            turn = self.turn if self.codex.ready else None
            self.steering.steer(record, turn, self.state["thread_id"])
        else:
            injection_id = record["injection_id"]
            queued = any(entry[1] == injection_id for entry in self.queue)
            running = self.turn is not None and self.turn.injection_id == injection_id
            if queued or running or injection_id in self.state["handled"]:
                self.emit(
                    "error",
                    error=records.ERROR_INVALID_INBOX_LINE,
                    message="duplicate injection_id %s ignored" % injection_id,
                    injection_id=injection_id,
                )
                return
            if injection_id in self.state["requeued"]:
                self.state["requeued"].remove(injection_id)  # delivered before the continuation
                if not os.environ.get(slurm_env.CONTINUATION):
                    self.continuation_lost(injection_id)
                    return
            else:
                self.emit("inject_delivered", injection_id=injection_id)
            self.queue.append((start, injection_id, record["content"], kind))

    def removed(self):
        """``scale --remove``: the running turn ends as it would, nothing queued runs."""
        log.info("removed from the swarm: failing %d queued prompts", len(self.queue))
        while self.queue:
            injection_id = self.queue.popleft()[1]
            self.fail(
                injection_id,
                records.FAILED_NODE_REMOVED,
                "the node was removed from the swarm (codeswarm scale --remove)",
            )
            self.mark_handled(injection_id)
        self.draining = "removed"

    # ---- codex ------------------------------------------------------------------------------

    def start_codex(self):
        self.usage_total = None
        self.codex.start(self.state["thread_id"])

    def thread_open(self, thread_id):
        self.state["thread_id"] = thread_id
        self.save_state()

    def server_request(self, message):
        """A running turn's approval request waits for the client; the session answers others."""
        if message["method"] not in approvals.REQUEST_KINDS or self.turn is None:
            return False
        self.approvals.request(message, self.turn.injection_id)
        return True

    def agent_error(self, message, stderr=None):
        fields = {"stderr": stderr} if stderr else {}
        self.emit("error", error=records.ERROR_AGENT, message=message, **fields)

    def codex_exited(self, code):
        tail = self.codex.exited()
        if self.stop_reason is None:
            self.codex_lost = (time.monotonic() + CODEX_EXIT_GRACE, code, tail)
        elif self.turn is not None and self.exit_deadline is not None:
            # no turn/completed will come: finished() fails the turn with node_exiting now
            self.exit_deadline = time.monotonic()

    def codex_crashed(self, code, tail):
        """codex exited and the node is not stopping: fail the turn, restart with backoff."""
        self.codex_lost = None
        if self.turn is not None:
            self.fail(
                self.turn.injection_id,
                records.FAILED_AGENT_CRASHED,
                "codex exited (code %s) during the turn" % code,
                stderr=tail,
            )
            self.end_turn()
        self.failures += 1
        if self.failures > self.settings["codex_restart_max"]:
            self.agent_error("codex failed %d times in a row; giving up" % self.failures, tail)
            self.request_stop("agent_unavailable")
            return
        delay = self.settings["codex_restart_backoff_seconds"] * 2 ** (self.failures - 1)
        log.warning("codex exited (code %s); restarting in %.1fs", code, delay)
        self.agent_error("codex exited (code %s); restarting in %.1fs" % (code, delay), tail)
        self.restart_at = time.monotonic() + delay

    # ---- turns ------------------------------------------------------------------------------

    def start_next_turn(self):
        if not self.codex.ready or self.turn is not None or not self.queue or self.stop_reason:
            return
        entry = self.queue.popleft()
        _, injection_id, content, kind = entry
        self.turn = Turn(entry, self.usage_total)
        self.state["in_flight"] = injection_id
        self.mark_handled(injection_id)
        self.state["inbox_offset"] = self.queue[0][0] if self.queue else self.inbox.offset
        self.save_state()
        method, params = steering.turn_request(kind, self.state["thread_id"], content)
        self.codex.call(method, params, self.turn_accepted)

    def turn_accepted(self, result, error):
        if self.turn is None:
            return
        if error:
            self.fail(
                self.turn.injection_id,
                records.FAILED_INVALID,
                "codex refused the turn: %s" % error.get("message"),
            )
            self.end_turn()
            return
        if self.turn.turn_id is None:
            self.turn.turn_id = steering.started_turn_id(result)
        if self.turn.interrupt_wanted:
            self.interrupt()

    def interrupt(self):
        if self.turn is None:
            return
        if self.turn.turn_id is None or not self.codex.ready:
            self.turn.interrupt_wanted = True
            return
        self.turn.interrupt_wanted = False
        params = {"threadId": self.state["thread_id"], "turnId": self.turn.turn_id}
        self.codex.call("turn/interrupt", params, lambda result, error: None)

    def notification(self, method, params):
        if method == "thread/tokenUsage/updated":
            total = params.get("tokenUsage", {}).get("total")
            if self.turn is not None and params.get("turnId") != self.turn.turn_id:
                # Another turn's running total (a resumed thread's, sent as this turn began
                # after a codex restart): this turn counts from it, not from before the restart.
                self.turn.usage_base = total
            self.usage_total = total
            return
        if method == "error":
            error = params.get("error") or {}
            typed = error_fields(error)
            typed.pop("error", None)  # codex's message is this event's message
            self.emit(
                "error",
                error=records.ERROR_AGENT,
                message=error.get("message", ""),
                will_retry=bool(params.get("willRetry")),
                **typed,
            )
            return
        turn = self.turn
        if turn is None:
            self.observe(method, params, None)
            return
        if method == "turn/started":
            turn.turn_id = params["turn"]["id"]
            self.emit("turn_started", injection_id=turn.injection_id, turn_id=turn.turn_id)
            if turn.interrupt_wanted:
                self.interrupt()
        elif method == "item/agentMessage/delta":
            self.emit("assistant_delta", injection_id=turn.injection_id, delta=params["delta"])
        elif method == "item/completed" and params.get("item", {}).get("type") == "agentMessage":
            self.emit("assistant", injection_id=turn.injection_id, content=params["item"]["text"])
        elif method == "turn/completed" and turn.requeue and interrupted(params):
            self.requeue_turn()  # the continuation job runs it again
        elif method == "turn/completed":
            done = params.get("turn") or {}
            self.emit(
                "turn_complete",
                injection_id=turn.injection_id,
                turn_id=done.get("id"),
                status=done.get("status", "completed"),
                **error_fields(done.get("error")),
            )
            self.emit(
                "usage",
                injection_id=turn.injection_id,
                **codex_protocol.turn_usage(self.usage_total, turn.usage_base),
            )
            self.failures = 0
            self.end_turn()
        else:
            self.observe(method, params, turn.injection_id)

    def observe(self, method, params, injection_id):
        """Report codex's activity. A report is not worth the node: a notification it cannot
        translate (an odd shape from codex, a full disk under the log dir) is an error event."""
        try:
            item = self.activity.handle(method, params, injection_id)
            if item is not None:
                self.approvals.note_item(method, item)
        except Exception as exc:
            log.exception("cannot report codex's %s", method)
            ids = {"injection_id": injection_id} if injection_id else {}
            message = "cannot report codex's %s: %r" % (method, exc)
            self.emit("error", error=records.ERROR_WORKER, message=message, **ids)

    def end_turn(self):
        self.approvals.turn_ended()
        self.activity.turn_ended()
        self.turn = None
        self.state["in_flight"] = None
        self.save_state()

    # ---- records ----------------------------------------------------------------------------

    def emit(self, kind, **fields):
        return self.outbox.write(kind, **fields)

    def fail(self, injection_id, code, message, stderr=None):
        fields = {"injection_id": injection_id, "error": code, "message": message}
        if stderr:
            fields["stderr"] = stderr
        self.emit("inject_failed", **fields)

    def mark_handled(self, injection_id):
        handled = self.state["handled"]
        handled.append(injection_id)
        del handled[:-HANDLED_KEPT]

    def save_state(self):
        self.state["next_seq"] = self.outbox.next_seq
        self.store.save(self.state)
        self.state_dirty = False


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python3 -m hpc.codex_worker",
        description="Run one node's Codex agent: read its inbox, write its outbox.",
    )
    parser.add_argument("--mailbox", required=True, help="the mailbox directory")
    parser.add_argument(
        "--job-id",
        default=slurm_env.job_id(os.environ),
        help="default: $SLURM_ARRAY_JOB_ID in a job array, else $SLURM_JOB_ID",
    )
    parser.add_argument(
        "--node-id",
        type=int,
        default=slurm_env.node_id(os.environ),
        help="default: $SLURM_PROCID (plus the array task's first agent in a job array)",
    )
    parser.add_argument(
        "--workspace",
        help="the agent's working directory (default: <mailbox>/../workspaces/<JOB>_<NODE>)",
    )
    parser.add_argument(
        "--codex-home",
        help="this node's CODEX_HOME (default: <mailbox>/../codex-home/<JOB>_<NODE>)",
    )
    parser.add_argument(
        "--swarm-id", help="the swarm's id: names the node's git branch, fills {swarm_id}"
    )
    parser.add_argument("--settings", help="JSON file with 'agent' and 'worker' settings")
    parser.add_argument("--codex-path", help="the codex binary (overrides the settings file)")
    args = parser.parse_args(argv)
    if args.job_id is None or args.node_id is None:
        parser.error("give --job-id and --node-id, or run under srun (SLURM_JOB_ID, SLURM_PROCID)")
    return args


def main(argv=None):
    # Prompts and answers end up in files this worker and codex create: keep them private.
    os.umask(private.UMASK)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s codex_worker[%(process)d] %(levelname)s %(message)s",
    )
    # A SIGTERM (scancel right after launch) may come before the worker exists: note it, so
    # the worker still writes node_exited and archives instead of dying silently.
    early_signals = []
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks to the job's output
    signal.signal(signal.SIGTERM, lambda signum, frame: early_signals.append("sigterm"))
    signal.signal(signal.SIGINT, lambda signum, frame: early_signals.append("sigint"))
    signal.signal(CONTINUE_SIGNAL, lambda signum, frame: early_signals.append(CONTINUING))
    args = parse_args(argv)
    agent, settings = worker_settings.load_settings(args.settings)
    if args.codex_path:
        agent["codex_path"] = args.codex_path
    try:
        key = records.node_key(args.job_id, args.node_id)
        if args.swarm_id is not None:  # it names a git branch and fills agent.workdir
            records.check_id(args.swarm_id, "swarm_id")
    except records.RecordError as exc:
        log.error("%s", exc)
        return 2
    base = os.path.dirname(os.path.abspath(args.mailbox))
    for shared in ("workspaces", "codex-home"):
        private.private_dir(os.path.join(base, shared))
    if (agent["repo"] or agent["workdir"]) and not args.swarm_id:
        log.error("agent.repo and agent.workdir need --swarm-id")
        return 2
    workspace = args.workspace or os.path.join(base, "workspaces", key)
    if agent["workdir"] and not args.workspace:
        workspace = workdir.expand(agent["workdir"], args.swarm_id, args.job_id, args.node_id)
    codex_home = args.codex_home or os.path.join(base, "codex-home", key)
    worktree = None
    if agent["repo"]:
        worktree = (agent["repo"], git_worktree.branch_name(args.swarm_id, args.node_id))
    worker = Worker(
        args.mailbox, args.job_id, args.node_id, workspace, codex_home, agent, settings, worktree
    )
    for reason in early_signals:
        worker.request_stop(reason)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop("sigterm"))
    signal.signal(signal.SIGINT, lambda signum, frame: worker.request_stop("sigint"))
    signal.signal(CONTINUE_SIGNAL, lambda signum, frame: worker.request_stop(CONTINUING))
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
