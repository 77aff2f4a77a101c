"""A worker's exit to continue in the next Slurm job (slurm.continue), mixed into ``Worker``:
the running turn's grace, its prompt put back at the head of the queue, and what the next
job's worker reads again."""

import logging
import time

from . import records

log = logging.getLogger("codeswarm.worker")

EXIT_INTERRUPT_GRACE = 3.0  # seconds an interrupted turn has to end in


class ContinuingWorker:
    """The continuation steps of ``Worker``, which owns every attribute used here."""

    def continue_finished(self):
        """The running turn may end within its grace; after it, it is interrupted and its
        prompt goes back to the head of the queue, the continuation job runs it again."""
        if self.turn is None:
            return True
        late = self.hurry or time.monotonic() >= self.exit_deadline
        if late and not self.turn.requeue:
            log.info("turn of %s still running: interrupting it", self.turn.injection_id)
            self.turn.requeue = True
            if not self.codex.ready:
                self.requeue_turn()
                return True
            self.exit_deadline = time.monotonic() + EXIT_INTERRUPT_GRACE
            self.interrupt()
            return False
        if self.turn.requeue and (self.hurry or time.monotonic() >= self.exit_deadline):
            self.requeue_turn()
            return True
        return False

    def requeue_turn(self):
        """Put the running turn's prompt back at the head of the queue, as not yet handled."""
        turn = self.turn
        self.queue.appendleft(turn.entry)
        if turn.injection_id in self.state["handled"]:
            self.state["handled"].remove(turn.injection_id)
        self.approvals.turn_ended()
        self.activity.turn_ended()
        self.turn = None
        self.state["in_flight"] = None

    def continuation_lost(self, injection_id):
        """A prompt requeued for a continuation job, read by another job (a restart, a
        requeue): the router failed it when no continuation came, so it never runs."""
        log.info("%s was requeued for a continuation that never ran: failing it", injection_id)
        self.fail(
            injection_id,
            records.FAILED_WORKER_RESTARTED,
            "requeued for a continuation job (slurm.continue) that never ran",
        )
        self.mark_handled(injection_id)

    def save_queue(self):
        """The continuation's worker reads the inbox again from the head of the queue, or from
        the shutdown this one had not yet obeyed; prompts requeued before and not yet read
        again stay requeued (their inject_delivered was sent)."""
        end = self.drain_offset if self.draining else self.inbox.offset
        self.state["inbox_offset"] = self.queue[0][0] if self.queue else end
        queued = [entry[1] for entry in self.queue]
        unread = [i for i in self.state["requeued"] if i not in queued]
        self.state["requeued"] = queued + unread
