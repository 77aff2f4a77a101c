"""codex's item and turn notifications as protocol activity events, bounded in size.

The worker calls ``Activity.handle`` for each notification of the running turn. Names and
values become the protocol's (snake_case, ``kind`` instead of codex's item ``type``); text
that can grow without limit (command output, diffs) is cut at ``max_event_bytes`` with a
marker, and the full text goes to a file under the node's log directory, named in the event,
so that one ``cat`` of a huge file cannot flood the outbox, the follower and the router.
"""

import os
import re

from . import records

COMMAND_OUTPUT_DELTA = "command_output_delta"
REASONING_DELTA = "reasoning_delta"
ITEM_STARTED = "item_started"
ITEM_COMPLETED = "item_completed"
TURN_DIFF = "turn_diff"
PLAN_UPDATED = "plan_updated"
RATE_LIMITS = "rate_limits"
MODEL_REROUTED = "model_rerouted"
EVENT_TYPES = (
    ITEM_STARTED,
    ITEM_COMPLETED,
    COMMAND_OUTPUT_DELTA,
    REASONING_DELTA,
    TURN_DIFF,
    PLAN_UPDATED,
    RATE_LIMITS,
    MODEL_REROUTED,
)

ITEM_KINDS = {
    "commandExecution": "command",
    "fileChange": "file_change",
    "mcpToolCall": "tool_call",
    "dynamicToolCall": "tool_call",
    "webSearch": "web_search",
    "reasoning": "reasoning",
    "plan": "plan",
    "contextCompaction": "compaction",
    "enteredReviewMode": "review",
    "exitedReviewMode": "review",
}
REVIEW_PHASES = {"enteredReviewMode": "entered", "exitedReviewMode": "exited"}
CHANGE_KINDS = ("add", "delete", "update")
PLAN_STATUSES = ("pending", "in_progress", "completed")
MARKER = "\n[codeswarm: truncated at %d bytes; the full text is in %s]\n"
CHANGE_BYTES = 80  # what one entry of a file change list costs besides its path and diff
_HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(name):
    """``contextWindowExceeded`` -> ``context_window_exceeded``: codex's enums, our style."""
    return _CAMEL.sub(r"_\1", name).lower() if isinstance(name, str) else name


def error_fields(error):
    """``error`` and ``error_code`` (and ``http_status_code``) from codex's TurnError."""
    if not isinstance(error, dict):
        return {}
    fields = {"error": error.get("message")}
    info = error.get("codexErrorInfo")
    if isinstance(info, str):
        fields["error_code"] = snake(info)
    elif isinstance(info, dict) and info:
        name, detail = next(iter(info.items()))
        fields["error_code"] = snake(name)
        if isinstance(detail, dict) and detail.get("httpStatusCode") is not None:
            fields["http_status_code"] = detail["httpStatusCode"]
    return fields


def cut_bytes(text, limit):
    """The longest prefix of ``text`` that is at most ``limit`` bytes in UTF-8."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def unified_diff(path, kind, diff):
    """codex gives an added or deleted file's content, an update's unified diff: make all
    three unified diffs, so that a client reads one format."""
    if kind not in ("add", "delete") or diff.startswith("--- "):
        return diff
    lines = diff.splitlines(True)
    sign, span = ("+", "-0,0 +1,%d") if kind == "add" else ("-", "-1,%d +0,0")
    a, b = (path, path) if path.startswith("/") else ("a/" + path, "b/" + path)
    old, new = ("/dev/null", b) if kind == "add" else (a, "/dev/null")
    body = "".join(sign + line if line.endswith("\n") else sign + line + "\n" for line in lines)
    return "--- %s\n+++ %s\n@@ %s @@\n%s" % (old, new, span % len(lines), body)


def line_counts(diff):
    """(added, deleted) lines of a unified diff, counted inside its hunks: a deleted line
    ``-- x`` reads ``--- x``, like a file header, and only the hunk's length tells them apart."""
    added = deleted = old = new = 0
    for line in diff.splitlines():
        if old <= 0 and new <= 0:
            hunk = _HUNK.match(line)
            if hunk:
                old = int(hunk.group(1)) if hunk.group(1) is not None else 1
                new = int(hunk.group(2)) if hunk.group(2) is not None else 1
        elif line.startswith("+"):
            added, new = added + 1, new - 1
        elif line.startswith("-"):
            deleted, old = deleted + 1, old - 1
        elif not line.startswith("\\"):  # "\ No newline at end of file" counts for neither
            old, new = old - 1, new - 1
    return added, deleted


class Spill:
    """A command's output as it streams: kept in memory up to the bound, then in a file."""

    def __init__(self):
        self.size = 0
        self.head = []
        self.path = None
        self.file = None


class Activity:
    """Translates one node's codex notifications; ``emit(kind, **fields)`` writes an event."""

    def __init__(self, emit, log_dir, max_event_bytes):
        self.emit = records.without_nulls(emit)
        self.injection_id = None
        self.log_dir = log_dir
        self.max_bytes = max_event_bytes
        self.outputs = {}  # item id -> Spill, for commands running in this turn
        self.last_rate_limits = None
        self.last_turn_diff = None  # (turn id, diff): codex repeats an unchanged turn diff
        self.handlers = {
            "item/started": self.item_started,
            "item/completed": self.item_completed,
            "item/commandExecution/outputDelta": self.output_delta,
            "item/reasoning/summaryTextDelta": self.reasoning_delta,
            "turn/diff/updated": self.turn_diff,
            "turn/plan/updated": self.plan_updated,
            "model/rerouted": self.model_rerouted,
        }

    def handle(self, method, params, injection_id):
        """Emit the events for one notification of ``injection_id``'s turn (None between
        turns: only rate limits are news then). Returns the item of an item notification,
        as its event shows it, else None."""
        self.injection_id = injection_id
        if method == "account/rateLimits/updated":
            self.rate_limits(params, injection_id)
            return None
        handler = self.handlers.get(method)
        if handler is None or injection_id is None:
            return None
        return handler(params, {"injection_id": injection_id, "turn_id": params.get("turnId")})

    def turn_ended(self):
        for spill in self.outputs.values():
            if spill.file is not None:
                spill.file.close()
        self.outputs = {}
        self.last_turn_diff = None

    # ---- items ------------------------------------------------------------------------------

    def item_started(self, params, ids):
        item = self.item(params.get("item") or {}, done=False)
        if item is not None:
            self.emit(ITEM_STARTED, item=item, **ids)
        return item

    def item_completed(self, params, ids):
        item = self.item(params.get("item") or {}, done=True)
        if item is not None:
            self.emit(ITEM_COMPLETED, item=item, **ids)
        return item

    def item(self, raw, done):
        """The protocol's item for codex's ThreadItem, or None for one it does not show
        (messages: ``assistant`` carries those)."""
        codex_type = raw.get("type")
        kind = ITEM_KINDS.get(codex_type)
        if kind is None:
            return None
        item = {"id": raw.get("id"), "kind": kind}
        if raw.get("status") is not None:
            item["status"] = snake(raw["status"])
        if kind == "command":
            self.command(raw, item, done)
        elif kind == "file_change":
            self.file_change(raw, item)
        elif kind == "tool_call":
            item.update(tool=raw.get("tool"), arguments=raw.get("arguments"))
            item["server"] = raw.get("server") or raw.get("namespace")
            item["duration_ms"] = raw.get("durationMs")
            item["error"] = (raw.get("error") or {}).get("message")
        elif kind == "web_search":
            item["query"] = raw.get("query")
        elif kind == "reasoning":
            item["summary"] = raw.get("summary") or []
        elif kind == "plan":
            item["text"] = raw.get("text")
        elif kind == "review":
            item.update(phase=REVIEW_PHASES[codex_type], review=raw.get("review"))
        return {key: value for key, value in item.items() if value is not None}

    def command(self, raw, item, done):
        item.update(command=raw.get("command"), cwd=raw.get("cwd"))
        if not done:
            return
        item.update(exit_code=raw.get("exitCode"), duration_ms=raw.get("durationMs"))
        spill = self.outputs.pop(item["id"], None)
        if spill is not None and spill.file is not None:
            spill.file.close()
        streamed = spill.path if spill is not None else None
        output = raw.get("aggregatedOutput")
        if output is None:
            if streamed is not None:  # what streamed is all there is of it
                item.update(output_truncated=True, output_path=streamed)
            return
        size = len(output.encode("utf-8"))
        if size > self.max_bytes:
            # The file keeps the longer text: codex's own total, unless its stream had more
            # (it may cap one); the name is the stream's, so there is one file an output.
            if streamed is None or os.path.getsize(streamed) < size:
                streamed = self.write_file(str(item["id"]) + ".output", output)
            output = cut_bytes(output, self.max_bytes) + MARKER % (self.max_bytes, streamed)
            item.update(output_truncated=True, output_path=streamed)
        item["output"] = output

    def file_change(self, raw, item):
        item.update(self.changes(raw))

    def changes(self, raw):
        """A fileChange item's ``changes`` as events show them, within the bound.

        Over it, the whole diff goes to a file (``diff_truncated``, ``diff_path``); files are
        listed in order while the bound lasts, the diff that crosses it is cut and marked, and
        ``changes_omitted`` counts the files left out (a patch of 20,000 files is one event of
        at most about ``max_event_bytes``, not megabytes).
        """
        changes, diffs = [], []
        for change in raw.get("changes") or []:
            kind = (change.get("kind") or {}).get("type")
            path = change.get("path") or ""
            diff = unified_diff(path, kind, change.get("diff") or "")
            added, deleted = line_counts(diff)
            entry = {"path": path, "change": kind, "diff": diff}
            entry.update(additions=added, deletions=deleted)
            if (change.get("kind") or {}).get("move_path"):
                entry["move_path"] = change["kind"]["move_path"]
            changes.append(entry)
            diffs.append(diff)
        total = sum(len(diff.encode("utf-8")) + CHANGE_BYTES for diff in diffs)
        if total <= self.max_bytes:
            return {"changes": changes}
        path = self.write_file(str(raw.get("id")) + ".diff", "".join(diffs))
        budget, listed = self.max_bytes, []
        for entry in changes:
            budget -= len(entry["path"].encode("utf-8")) + CHANGE_BYTES
            if budget <= 0:
                break
            size = len(entry["diff"].encode("utf-8"))
            if size > budget:
                entry["diff"] = cut_bytes(entry["diff"], budget) + MARKER % (self.max_bytes, path)
            budget -= size
            listed.append(entry)
        bounded = {"changes": listed, "diff_truncated": True, "diff_path": path}
        if len(listed) < len(changes):
            bounded["changes_omitted"] = len(changes) - len(listed)
        return bounded

    # ---- streams ----------------------------------------------------------------------------

    def output_delta(self, params, ids):
        """Deltas pass through until the command's output reaches the bound; the delta that
        crosses it is cut and marked, later ones go to the file alone."""
        item_id, delta = params.get("itemId") or "", params.get("delta") or ""
        spill = self.outputs.setdefault(item_id, Spill())
        if spill.file is not None:
            spill.file.write(delta)
            return
        size = len(delta.encode("utf-8"))
        if spill.size + size <= self.max_bytes:
            spill.size += size
            spill.head.append(delta)
            self.emit(COMMAND_OUTPUT_DELTA, item_id=item_id, delta=delta, **ids)
            return
        spill.path = self.log_path(item_id + ".output")
        # open across the command's deltas; closed when it completes or the turn ends
        spill.file = open(spill.path, "w", encoding="utf-8")  # noqa: SIM115
        spill.file.write("".join(spill.head) + delta)
        spill.head = []
        kept = cut_bytes(delta, self.max_bytes - spill.size) + MARKER % (self.max_bytes, spill.path)
        self.emit(
            COMMAND_OUTPUT_DELTA,
            item_id=item_id,
            delta=kept,
            truncated=True,
            output_path=spill.path,
            **ids,
        )

    def reasoning_delta(self, params, ids):
        self.emit(
            REASONING_DELTA,
            item_id=params.get("itemId"),
            summary_index=params.get("summaryIndex"),
            delta=params.get("delta") or "",
            **ids,
        )

    def turn_diff(self, params, ids):
        diff = params.get("diff") or ""
        if (ids["turn_id"], diff) == self.last_turn_diff:
            return  # codex sends the same diff again; over the bound it would cost a file write
        self.last_turn_diff = (ids["turn_id"], diff)
        if len(diff.encode("utf-8")) <= self.max_bytes:
            self.emit(TURN_DIFF, diff=diff, **ids)
            return
        path = self.write_file("turn-%s.diff" % ids["turn_id"], diff)
        kept = cut_bytes(diff, self.max_bytes) + MARKER % (self.max_bytes, path)
        self.emit(TURN_DIFF, diff=kept, diff_truncated=True, diff_path=path, **ids)

    def plan_updated(self, params, ids):
        plan = [
            {"step": step.get("step"), "status": snake(step.get("status"))}
            for step in params.get("plan") or []
        ]
        self.emit(PLAN_UPDATED, explanation=params.get("explanation"), plan=plan, **ids)

    def model_rerouted(self, params, ids):
        self.emit(
            MODEL_REROUTED,
            from_model=params.get("fromModel"),
            to_model=params.get("toModel"),
            reason=snake(params.get("reason")),
            **ids,
        )

    def rate_limits(self, params, injection_id):
        """codex repeats an unchanged snapshot often: only a change is news."""
        snapshot = params.get("rateLimits") or {}
        if snapshot == self.last_rate_limits:
            return
        self.last_rate_limits = snapshot
        self.emit(RATE_LIMITS, rate_limits=snapshot, injection_id=injection_id)

    # ---- files ------------------------------------------------------------------------------

    def log_path(self, name):
        """``<log dir>/<injection>.<name>``: item ids repeat across turns, injections do not."""
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        return os.path.join(self.log_dir, _UNSAFE.sub("_", "%s.%s" % (self.injection_id, name)))

    def write_file(self, name, text):
        path = self.log_path(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
