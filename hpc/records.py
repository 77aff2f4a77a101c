"""Mailbox record formats: the one definition both the router and the cluster side use.

The cluster side cannot import marshmallow (compute nodes may have a bare Python >= 3.8), so
the facts about ids, file names and records live here, in the standard library only, each
record's builder beside its parser: inbox lines (the router writes, the worker reads), outbox
events (the worker writes, the router reads) and the worker's state file.
"""

import functools
import json
import re
import time

# Ids reach file names (job, node) and command lines (job): a conservative alphabet keeps
# them safe in both, and a bound keeps file names legal on every filesystem.
ID_MAX_LENGTH = 128
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ID_RE = re.compile(ID_PATTERN)
NODE_ID_MAX = 99999
# ASCII digits, no more than NODE_ID_MAX has: str.isdigit() also says yes to "²" (int() refuses
# it), to "٣" (int() reads 3: not the file's own <JOB>_3) and to 5,000 digits (int() refuses).
_NODE_RE = re.compile(r"0|[1-9][0-9]{0,%d}" % (len(str(NODE_ID_MAX)) - 1))

INBOX_DIR = "inbox"
OUTBOX_DIR = "outbox"
ARCHIVE_DIR = "archive"
STATE_DIR = "state"
LOG_DIR = "logs"
MAILBOX_DIRS = (INBOX_DIR, OUTBOX_DIR, ARCHIVE_DIR, STATE_DIR, LOG_DIR)
RECORD_SUFFIX = ".jsonl"
STATE_SUFFIX = ".json"

# What the router writes to a node's inbox.
INBOX_USER = "user"
INBOX_INTERRUPT = "interrupt"
INBOX_SHUTDOWN = "shutdown"
INBOX_REVIEW = "review"  # an injection: codex reviews the working tree instead of a prompt
INBOX_COMPACT = "compact"  # an injection: codex compacts the thread
INBOX_APPROVE = "approve"
INBOX_STEER = "steer"
INBOX_TYPES = (
    INBOX_USER,
    INBOX_INTERRUPT,
    INBOX_SHUTDOWN,
    INBOX_REVIEW,
    INBOX_COMPACT,
    INBOX_APPROVE,
    INBOX_STEER,
)
# Inbox records the worker queues as turns, each with an injection_id.
INJECTION_TYPES = (INBOX_USER, INBOX_REVIEW, INBOX_COMPACT)
# The answers a client gives to an approval request; the worker maps them to codex's words.
APPROVAL_DECISIONS = ("accept", "accept_for_session", "decline")
# What an approval request is about (``approval_request.approval_kind``).
APPROVAL_COMMAND = "command"
APPROVAL_FILE_CHANGE = "file_change"
APPROVAL_KINDS = (APPROVAL_COMMAND, APPROVAL_FILE_CHANGE)

# A worker's ``node_exited`` reason when Slurm signalled it before the time limit with
# slurm.continue on: it keeps its queue and thread, and the next job's worker carries on.
EXIT_CONTINUING = "continuing"

# What a worker writes to its outbox: the event type and the fields it must carry beyond
# the envelope (type, job_id, node_id, seq, ts).
OUTBOX_EVENT_FIELDS = {
    "node_started": ("pid", "host"),
    "inject_delivered": ("injection_id",),
    "turn_started": ("injection_id", "turn_id"),
    "assistant_delta": ("injection_id", "delta"),
    "assistant": ("injection_id", "content"),
    "turn_complete": ("injection_id", "status"),
    "usage": (
        "injection_id",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_output_tokens",
        "total_tokens",
    ),
    "inject_failed": ("injection_id", "error", "message"),
    "approval_request": ("approval_id", "approval_kind", "injection_id", "expires_at"),
    "approval_resolved": ("approval_id", "decision", "by"),
    "steer_applied": ("steer_id", "injection_id", "turn_id"),
    "steer_failed": ("steer_id", "error", "message"),
    "error": ("error", "message"),
    "node_exited": ("reason",),
    "item_started": ("injection_id", "turn_id", "item"),
    "item_completed": ("injection_id", "turn_id", "item"),
    "command_output_delta": ("injection_id", "turn_id", "item_id", "delta"),
    "reasoning_delta": ("injection_id", "turn_id", "item_id", "delta"),
    "turn_diff": ("injection_id", "turn_id", "diff"),
    "plan_updated": ("injection_id", "turn_id", "plan"),
    "rate_limits": ("rate_limits",),
    "model_rerouted": ("injection_id", "turn_id", "from_model", "to_model", "reason"),
}
OUTBOX_ENVELOPE = ("type", "job_id", "node_id", "seq", "ts")
# Every field each outbox event must carry: the router checks these on each line it routes.
OUTBOX_REQUIRED = {
    kind: frozenset(OUTBOX_ENVELOPE + fields) for kind, fields in OUTBOX_EVENT_FIELDS.items()
}
TURN_STATUSES = ("completed", "interrupted", "failed")

# Codes a worker writes: ``inject_failed.error`` and ``error.error``.
FAILED_AGENT_CRASHED = "agent_crashed"
FAILED_NODE_EXITING = "node_exiting"
FAILED_WORKER_RESTARTED = "worker_restarted"
FAILED_INVALID = "invalid"
FAILED_NODE_REMOVED = "node_removed"
WORKER_FAILURE_CODES = (
    FAILED_AGENT_CRASHED,
    FAILED_NODE_EXITING,
    FAILED_WORKER_RESTARTED,
    FAILED_INVALID,
    FAILED_NODE_REMOVED,
)
ERROR_INVALID_INBOX_LINE = "invalid_inbox_line"
ERROR_AGENT = "agent_error"
ERROR_WORKER = "worker_error"
ERROR_UNKNOWN_APPROVAL = "unknown_approval"
WORKER_ERROR_CODES = (ERROR_INVALID_INBOX_LINE, ERROR_AGENT, ERROR_WORKER, ERROR_UNKNOWN_APPROVAL)
# Who settled an approval (``approval_resolved.by``), and why a steer failed.
RESOLVED_BY = ("client", "timeout", "turn_ended")
STEER_NO_TURN = "no_running_turn"
STEER_REFUSED = "agent_error"

# Version 2 added the pending approvals (``approvals``: approval_id -> its approval_request
# fields), the counter their ids come from, and ``read_offset``: how far the inbox has been
# read (``inbox_offset`` stays at the first queued prompt, so a restarted worker reads again
# from there, and must not act twice on the approve, steer and interrupt records it had
# read). ``requeued`` came later in version 2: the injections a worker that continues in
# the next Slurm job left queued (delivered already: the next worker says so only once).
# A version 1 file is upgraded on load.
STATE_VERSION = 2
STATE_FIELDS = (
    "version",
    "inbox_offset",
    "read_offset",
    "thread_id",
    "handled",
    "in_flight",
    "next_seq",
    "approvals",
    "next_approval",
    "requeued",
)


class RecordError(ValueError):
    """A record or id that does not follow the mailbox format."""


def id_problem(value):
    """Say what is wrong with an id that will reach a file name or command line, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > ID_MAX_LENGTH:
        return "must be at most %d characters" % ID_MAX_LENGTH
    if ".." in value:
        return "must not contain '..'"
    if not _ID_RE.fullmatch(value):
        return "may use only letters, digits, '.', '_' and '-', starting with a letter or digit"
    return None


def node_id_problem(value):
    """Say what is wrong with a node id (a small non-negative integer), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if not 0 <= value <= NODE_ID_MAX:
        return "must be between 0 and %d" % NODE_ID_MAX
    return None


def check_id(value, what="id"):
    """Return ``value`` if it is a safe id, else raise RecordError naming ``what``."""
    problem = id_problem(value)
    if problem:
        raise RecordError("%s %s" % (what, problem))
    return value


def check_node_id(value):
    problem = node_id_problem(value)
    if problem:
        raise RecordError("node_id %s" % problem)
    return value


def node_key(job_id, node_id):
    """The ``<JOB>_<NODE>`` stem shared by a node's inbox, outbox, archive and state files."""
    return "%s_%d" % (check_id(job_id, "job_id"), check_node_id(node_id))


def parse_node_key(stem):
    """Split a ``<JOB>_<NODE>`` stem back into (job_id, node_id); RecordError if it is not one."""
    job_id, sep, node = stem.rpartition("_")
    if not sep or not _NODE_RE.fullmatch(node):
        raise RecordError("not a <JOB>_<NODE> name: %r" % stem)
    check_id(job_id, "job_id")
    return job_id, check_node_id(int(node))


def record_name(job_id, node_id):
    return node_key(job_id, node_id) + RECORD_SUFFIX


def state_name(job_id, node_id):
    return node_key(job_id, node_id) + STATE_SUFFIX


def encode_line(record):
    """One record as one line: compact JSON, non-ASCII kept, newline-terminated."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def inbox_user(injection_id, content):
    check_id(injection_id, "injection_id")
    if not isinstance(content, str):
        raise RecordError("content must be a string")
    return {"type": INBOX_USER, "injection_id": injection_id, "content": content}


def inbox_injection(kind, injection_id, content):
    """A prompt (``user``), a ``review`` (content: instructions, may be empty) or a ``compact``."""
    if kind not in INJECTION_TYPES:
        raise RecordError("not an injection record type: %r" % (kind,))
    record = inbox_user(injection_id, content)
    record["type"] = kind
    return record


def _request_id_problem(value):
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    if isinstance(value, str) and len(value) <= ID_MAX_LENGTH:
        return None
    return "request_id must be a string of at most %d characters, an integer or null" % (
        ID_MAX_LENGTH
    )


def inbox_approve(approval_id, decision, request_id=None):
    """The client's answer to an approval request; the worker echoes ``request_id``."""
    record = {
        "type": INBOX_APPROVE,
        "approval_id": approval_id,
        "decision": decision,
        "request_id": request_id,
    }
    _check_approve(record)
    return record


def inbox_steer(steer_id, content, request_id=None):
    """Input for the running turn; the worker echoes ``steer_id`` and ``request_id``."""
    record = {"type": INBOX_STEER, "steer_id": steer_id, "content": content}
    record["request_id"] = request_id
    _check_steer(record)
    return record


def _check_approve(record):
    check_id(record.get("approval_id"), "approval_id")
    if record.get("decision") not in APPROVAL_DECISIONS:
        raise RecordError("decision must be one of %s" % ", ".join(APPROVAL_DECISIONS))
    problem = _request_id_problem(record.get("request_id"))
    if problem:
        raise RecordError(problem)


def _check_steer(record):
    check_id(record.get("steer_id"), "steer_id")
    if not isinstance(record.get("content"), str) or not record["content"]:
        raise RecordError("content must be a non-empty string")
    problem = _request_id_problem(record.get("request_id"))
    if problem:
        raise RecordError(problem)


def inbox_interrupt():
    return {"type": INBOX_INTERRUPT}


def inbox_shutdown(removed=False):
    """Stop once the queue is done; ``removed`` (``scale --remove``): once the running turn
    is done, the queued prompts failing with ``node_removed``."""
    return {"type": INBOX_SHUTDOWN, "removed": True} if removed else {"type": INBOX_SHUTDOWN}


def parse_inbox_line(line):
    """Decode one inbox line into a record dict; RecordError says what is wrong with it."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise RecordError("not valid JSON: %s" % exc) from None
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    kind = record.get("type")
    if kind not in INBOX_TYPES:
        raise RecordError("unknown inbox record type %r" % (kind,))
    if kind in INJECTION_TYPES:
        check_id(record.get("injection_id"), "injection_id")
        if not isinstance(record.get("content"), str):
            raise RecordError("content must be a string")
    elif kind == INBOX_APPROVE:
        _check_approve(record)
    elif kind == INBOX_STEER:
        _check_steer(record)
    return record


def without_nulls(emit):
    """``emit`` leaving out the fields given as None: what codex leaves null is not sent."""
    return lambda kind, **fields: emit(
        kind, **{key: value for key, value in fields.items() if value is not None}
    )


def outbox_event(kind, job_id, node_id, seq, **fields):
    """Build one outbox event with its envelope; RecordError if a required field is missing."""
    required = OUTBOX_EVENT_FIELDS.get(kind)
    if required is None:
        raise RecordError("unknown outbox event type %r" % (kind,))
    missing = [name for name in required if name not in fields]
    if missing:
        raise RecordError("%s event lacks %s" % (kind, ", ".join(missing)))
    event = {
        "type": kind,
        "job_id": check_id(job_id, "job_id"),
        "node_id": check_node_id(node_id),
        "seq": seq,
        "ts": round(time.time(), 6),
    }
    event.update(fields)
    return event


def outbox_event_problem(event):
    """Say what is wrong with a decoded outbox event, or None: the follower's sanity check."""
    if not isinstance(event, dict):
        return "not a JSON object"
    kind = event.get("type")
    required = OUTBOX_REQUIRED.get(kind) if isinstance(kind, str) else None
    if required is None:
        return "unknown outbox event type %r" % (kind,)
    if not event.keys() >= required:
        fields = OUTBOX_ENVELOPE + OUTBOX_EVENT_FIELDS[kind]
        return "lacks %s" % ", ".join(name for name in fields if name not in event)
    job_id = event["job_id"]
    problem = _job_id_problem(job_id) if isinstance(job_id, str) else id_problem(job_id)
    if problem:
        return "job_id " + problem
    problem = node_id_problem(event["node_id"])
    if problem:
        return "node_id " + problem
    if isinstance(event["seq"], bool) or not isinstance(event["seq"], int) or event["seq"] < 0:
        return "seq must be a non-negative integer"
    return None


@functools.lru_cache(maxsize=1024)
def _job_id_problem(job_id):
    """``id_problem`` for a string, remembered: a router checks a few job ids on every line."""
    return id_problem(job_id)


_DECODER = json.JSONDecoder()


def decode_object(text):
    """``json.loads(text)``, minus its two whitespace scans on the router's busiest path."""
    try:
        value, end = _DECODER.raw_decode(text)
        if end == len(text) or not text[end:].strip():
            return value
    except ValueError:
        pass
    return json.loads(text)  # says what is wrong; allows leading blanks


def parse_outbox_line(line):
    """Decode one outbox line into an event dict; RecordError says what is wrong with it.

    A line is UTF-8, as the worker writes it (the router passes its bytes on to clients).
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        event = decode_object(line)
    except ValueError as exc:
        raise RecordError("outbox line is not UTF-8 JSON: %s" % exc) from None
    problem = outbox_event_problem(event)
    if problem:
        raise RecordError("outbox event %s" % problem)
    return event


def new_state():
    return {
        "version": STATE_VERSION,
        "inbox_offset": 0,
        "read_offset": 0,
        "thread_id": None,
        "handled": [],
        "in_flight": None,
        "next_seq": 0,
        "approvals": {},
        "next_approval": 1,
        "requeued": [],
    }


def upgrade_state(state):
    """A state record of an older version in today's shape (others are returned as they are)."""
    if not isinstance(state, dict):
        return state
    if state.get("version") == 1:
        state = dict(state, version=STATE_VERSION, approvals={}, next_approval=1)
    if state.get("version") == STATE_VERSION and "read_offset" not in state:
        # read_offset came later in version 2: what it guards was read up to inbox_offset.
        state = dict(state, read_offset=state.get("inbox_offset", 0))
    if state.get("version") == STATE_VERSION and "requeued" not in state:
        state = dict(state, requeued=[])
    return state


def pending_approvals(data):
    """The pending approvals (approval_id -> fields) in a state file's bytes; RecordError if bad."""
    try:
        state = upgrade_state(json.loads(data.decode("utf-8")))
    except ValueError as exc:
        raise RecordError("state file is not JSON: %s" % exc) from None
    problem = state_problem(state)
    if problem:
        raise RecordError("state file %s" % problem)
    return state["approvals"]


def state_problem(state):
    """Say what is wrong with a worker state record, or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    missing = [name for name in STATE_FIELDS if name not in state]
    if missing:
        return "lacks %s" % ", ".join(missing)
    if state["version"] != STATE_VERSION:
        return "unsupported state version %r" % (state["version"],)
    for name in ("inbox_offset", "read_offset", "next_seq"):
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "%s must be a non-negative integer" % name
    if state["thread_id"] is not None and not isinstance(state["thread_id"], str):
        return "thread_id must be a string or null"
    if not isinstance(state["handled"], list) or any(id_problem(i) for i in state["handled"]):
        return "handled must be a list of injection ids"
    if not isinstance(state["requeued"], list) or any(id_problem(i) for i in state["requeued"]):
        return "requeued must be a list of injection ids"
    if state["in_flight"] is not None and id_problem(state["in_flight"]):
        return "in_flight must be an injection id or null"
    if not isinstance(state["approvals"], dict) or any(id_problem(i) for i in state["approvals"]):
        return "approvals must map approval ids to requests"
    counter = state["next_approval"]
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 1:
        return "next_approval must be a positive integer"
    return None
