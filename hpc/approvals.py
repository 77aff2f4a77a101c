"""codex's approval requests, held for whoever drives the swarm.

With ``approval_policy`` ``on-request`` or ``untrusted`` codex asks before it runs a command or
changes a file, and its turn waits for the answer. The worker turns each request into an
``approval_request`` event and waits for an ``approve`` inbox record (the router writes it like
a prompt, so the cluster path needs nothing new); after ``approval_timeout_seconds`` the
configured ``approval_decision`` answers instead. The pending requests live in the worker's
state, so a restarted worker can say that they will never be answered.
"""

import hashlib
import json
import time

from . import records

# codex's v2 requests this module answers, and the kind each one reports.
REQUEST_KINDS = {
    "item/commandExecution/requestApproval": records.APPROVAL_COMMAND,
    "item/fileChange/requestApproval": records.APPROVAL_FILE_CHANGE,
}
CODEX_DECISIONS = {
    "accept": "accept",
    "accept_for_session": "acceptForSession",
    "decline": "decline",
}


# What an approval request shows of a file change item.
CHANGE_FIELDS = ("changes", "diff_truncated", "diff_path", "changes_omitted")

# What a request asks for, of codex's request fields (the rest are ids, times and the model's
# reason, which differ between nodes asking the same thing), and what accepting it would grant.
WHAT_IS_ASKED = (
    "command",
    "kind",
    "networkApprovalContext",
    "grantRoot",
    "proposedExecpolicyAmendment",
    "proposedNetworkPolicyAmendments",
)


def approval_id_for(count, method, params, changes, workspace):
    """``ap-<count>-<digest of what is asked>``, unique on its node.

    The count alone would let one ``approve`` with ``nodes: "all"`` accept a different command
    on a node that asked once more before; with the digest it answers only the nodes that ask
    the same thing at the same point. The digest covers all that codex asks (the command,
    network access, a root to write under, the changes) with the node's own workspace path
    taken out, so that nodes asking the same thing in their own worktrees agree.
    """
    asked = {key: value for key, value in params.items() if key in WHAT_IS_ASKED}
    text = json.dumps([method, asked, changes], sort_keys=True)
    if workspace:
        text = text.replace(workspace.rstrip("/"), "<workspace>")
    return "ap-%d-%s" % (count, hashlib.sha256(text.encode("utf-8")).hexdigest()[:8])


class Approvals:
    """Pending approvals of one worker; ``emit`` writes events, ``respond`` answers codex.

    ``save`` writes the state before each event, so a client that reads the state file after
    an event (``approvals``) finds what the event said.
    """

    def __init__(self, state, agent, emit, respond, save, workspace=""):
        self.state = state
        self.timeout = float(agent["approval_timeout_seconds"])
        self.default = agent["approval_decision"]
        self.emit = records.without_nulls(emit)
        self.respond = respond
        self.save = save
        self.asks = agent.get("approval_policy", "never") != "never"
        self.workspace = workspace
        self.waiting = {}  # approval_id -> (codex request id, monotonic deadline)
        self.changes = {}  # fileChange item id -> its described changes, from item/started

    def restarted(self):
        """The codex that asked is gone with the old worker: nobody can answer these now."""
        for approval_id, request in list(self.state["approvals"].items()):
            self._resolved(approval_id, request, "decline", "turn_ended")

    def note_item(self, method, item):
        """Remember a file change while it runs, as its item event shows it (bounded): its
        approval request names the item, not the changes."""
        if not self.asks or item.get("kind") != "file_change":
            return
        if method == "item/started":
            self.changes[item["id"]] = {key: item[key] for key in CHANGE_FIELDS if key in item}
        else:
            self.changes.pop(item["id"], None)

    def request(self, message, injection_id):
        """codex asks: announce the request and start its clock."""
        params = message.get("params") or {}
        fields = {
            "approval_kind": REQUEST_KINDS[message["method"]],
            "injection_id": injection_id,
            "turn_id": params.get("turnId"),
            "reason": params.get("reason"),
            "default_decision": self.default,
            "expires_at": round(time.time() + self.timeout, 3),
        }
        if fields["approval_kind"] == records.APPROVAL_COMMAND:
            fields["command"] = params.get("command")
            fields["cwd"] = params.get("cwd")
        else:
            fields.update(self.changes.pop(params.get("itemId"), {"changes": []}))
        fields = {key: value for key, value in fields.items() if value is not None}
        approval_id = approval_id_for(
            self.state["next_approval"],
            message["method"],
            params,
            [fields.get(key) for key in ("changes", "changes_omitted")],
            self.workspace,
        )
        self.state["next_approval"] += 1
        self.state["approvals"][approval_id] = fields
        self.waiting[approval_id] = (message["id"], time.monotonic() + self.timeout)
        self.save()
        self.emit("approval_request", approval_id=approval_id, **fields)

    def answer(self, record):
        """An ``approve`` inbox record: answer codex, or say there is no such request."""
        approval_id = record["approval_id"]
        request = self.state["approvals"].get(approval_id)
        if request is None or approval_id not in self.waiting:
            self.emit(
                "error",
                error=records.ERROR_UNKNOWN_APPROVAL,
                message="no pending approval %s on this node" % approval_id,
                approval_id=approval_id,
                request_id=record.get("request_id"),
            )
            return
        self._answer_codex(approval_id, record["decision"])
        self._resolved(approval_id, request, record["decision"], "client", record.get("request_id"))

    def expire(self):
        """Apply the configured decision to every request whose time is up."""
        now = time.monotonic()
        due = [key for key, (_, deadline) in self.waiting.items() if deadline <= now]
        for approval_id in due:
            self._answer_codex(approval_id, self.default)
            request = self.state["approvals"][approval_id]
            self._resolved(approval_id, request, self.default, "timeout")

    def next_due(self):
        """When the next request times out (monotonic), or None."""
        return min((deadline for _, deadline in self.waiting.values()), default=None)

    def turn_ended(self):
        """codex dropped the requests of a turn that ended (interrupted, crashed)."""
        for approval_id, request in list(self.state["approvals"].items()):
            self._resolved(approval_id, request, "decline", "turn_ended")
        self.changes.clear()

    def _answer_codex(self, approval_id, decision):
        request_id, _ = self.waiting[approval_id]
        self.respond(request_id, {"decision": CODEX_DECISIONS[decision]})

    def _resolved(self, approval_id, request, decision, by, request_id=None):
        self.waiting.pop(approval_id, None)
        del self.state["approvals"][approval_id]
        self.save()
        self.emit(
            "approval_resolved",
            approval_id=approval_id,
            injection_id=request.get("injection_id"),
            decision=decision,
            by=by,
            request_id=request_id,
        )
