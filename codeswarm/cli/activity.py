"""What an agent does, in a few lines for a person: commands, file changes, plans, approvals.

Each function turns one event into body lines, styled by ``paint`` (``click.style``, or a
function that leaves text plain); ``codeswarm.cli.render`` puts the node's prefix in front.
Fields may be missing or null in events from older or newer workers, so every one is read
with a fallback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

Paint = Callable[..., str]

OUTPUT_TAIL_LINES = 5  # of a failed command's output
ARGUMENTS_CHARS = 80
FALLBACK_CHARS = 200
CHANGE_LETTERS = {"add": ("A", "green"), "delete": ("D", "red"), "update": ("M", "yellow")}
STEP_MARKS = {
    "completed": ("[x]", "green"),
    "in_progress": ("[>]", "yellow"),
    "pending": ("[ ]", None),
}
DECISIONS = "accept|accept_for_session|decline"
ENVELOPE = ("type", "ts", "swarm_id", "job_id", "node_id", "seq", "request_id")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def clean(value: Any) -> str:
    """Text from an agent, safe on a terminal: control characters (escape sequences that
    would move the cursor or recolour the screen) are shown, not obeyed."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def outcome(label: str, duration_ms: Any) -> str:
    """``(exit 0, 1.2s)``: the label, with the duration when the event has one."""
    if not isinstance(duration_ms, (int, float)) or isinstance(duration_ms, bool):
        return f"({label})"
    return f"({label}, {duration_ms / 1000:.1f}s)"


def compact(event: dict[str, Any]) -> str:
    """Any event's own fields as one short JSON line: the fallback for types we do not know."""
    body = {key: value for key, value in event.items() if key not in ENVELOPE}
    return cut(clean(json.dumps(body, ensure_ascii=False, default=str)), FALLBACK_CHARS)


def item_lines(event: dict[str, Any], paint: Paint) -> list[str]:
    """An ``item_started`` or ``item_completed``; nothing for a start that says nothing new."""
    item = event.get("item") if isinstance(event.get("item"), dict) else {}
    done = event["type"] == "item_completed"
    kind = item.get("kind")
    if kind == "command":
        return command_lines(item, done, paint)
    if kind == "file_change":
        return change_lines(item, paint) if done else []
    if kind == "tool_call":
        return [tool_line(item, done, paint)]
    if not done:
        return [paint("compacting the context", dim=True)] if kind == "compaction" else []
    if kind == "web_search":
        return [f"search: {clean(item.get('query') or '')}"]
    if kind == "reasoning":
        summary = item.get("summary") or []
        return [paint(f"thinking: {clean(part)}", dim=True, italic=True) for part in summary]
    if kind == "plan":
        return ["plan:", *(f"  {clean(line)}" for line in str(item.get("text") or "").splitlines())]
    if kind == "compaction":
        return [paint("context compacted", dim=True)]
    if kind == "review":
        text = str(item.get("review") or "").splitlines()
        return [f"review {clean(item.get('phase') or '')}", *(f"  {clean(line)}" for line in text)]
    return [paint(f"item {clean(kind)} {clean(item.get('status') or '')}".rstrip(), dim=True)]


def command_lines(item: dict[str, Any], done: bool, paint: Paint) -> list[str]:
    line = paint(f"$ {clean(item.get('command') or '')}", bold=True)
    if not done:
        return [line]
    exit_code, status = item.get("exit_code"), item.get("status")
    took = item.get("duration_ms")
    if status == "declined":
        result = paint("(declined)", fg="yellow")
    elif exit_code == 0:
        result = paint(outcome("exit 0", took), fg="green")
    elif exit_code is None:
        result = paint(f"({clean(status or 'no exit code')})", fg="red")
    else:
        result = paint(outcome(f"exit {clean(exit_code)}", took), fg="red")
    lines = [f"{line}  {result}"]
    output = item.get("output")
    if exit_code not in (0, None) and isinstance(output, str) and output.strip():
        tail = output.rstrip("\n").splitlines()[-OUTPUT_TAIL_LINES:]
        lines.extend(paint(f"  | {clean(text)}", dim=True) for text in tail)
    if item.get("output_truncated") and item.get("output_path"):
        lines.append(paint(f"  full output: {clean(item['output_path'])}", dim=True))
    return lines


def change_lines(item: dict[str, Any], paint: Paint) -> list[str]:
    """``M src/x.py +12 -3`` a file, ``R old -> new`` for a rename."""
    status = item.get("status")
    suffix = "" if status in (None, "completed") else f" ({clean(status)})"
    lines = [f"{change_summary(change, paint)}{suffix}" for change in item.get("changes") or []]
    if item.get("diff_truncated") and item.get("diff_path"):
        lines.append(paint(f"  full diff: {clean(item['diff_path'])}", dim=True))
    return lines


def change_summary(change: dict[str, Any], paint: Paint) -> str:
    letter, colour = CHANGE_LETTERS.get(change.get("change"), ("?", None))
    path = clean(change.get("path") or "")
    if change.get("move_path"):
        letter, colour = "R", "cyan"
        path = f"{path} -> {clean(change['move_path'])}"
    counts = []
    if change.get("additions"):
        counts.append(paint(f"+{change['additions']}", fg="green"))
    if change.get("deletions"):
        counts.append(paint(f"-{change['deletions']}", fg="red"))
    return " ".join([paint(letter, fg=colour, bold=True), path, *counts])


def tool_line(item: dict[str, Any], done: bool, paint: Paint) -> str:
    name = clean(item.get("tool") or "?")
    if item.get("server"):
        name = f"{clean(item['server'])}.{name}"
    if not done:
        arguments = json.dumps(item.get("arguments"), ensure_ascii=False, default=str)
        return f"tool {name} {cut(clean(arguments), ARGUMENTS_CHARS)}"
    if item.get("error") or item.get("status") in ("failed", "declined"):
        why = clean(item.get("error") or item.get("status"))
        return f"tool {name}  {paint(f'(failed: {why})', fg='red')}"
    return f"tool {name}  {paint(outcome('ok', item.get('duration_ms')), fg='green')}"


def diff_stat(diff: str) -> tuple[int, int, int]:
    """Files, added and deleted lines of a unified diff, counted inside hunks only."""
    git_files = plus_files = additions = deletions = 0
    old = new = 0
    for line in diff.splitlines():
        if old > 0 or new > 0:
            if line.startswith("+"):
                additions, new = additions + 1, new - 1
            elif line.startswith("-"):
                deletions, old = deletions + 1, old - 1
            elif not line.startswith("\\"):
                old, new = old - 1, new - 1
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old, new = (int(n) if n is not None else 1 for n in hunk.groups())
        elif line.startswith("diff --git "):
            git_files += 1
        elif line.startswith("+++ "):
            plus_files += 1
    return git_files or plus_files, additions, deletions


def turn_diff_line(event: dict[str, Any], paint: Paint) -> str:
    files, additions, deletions = diff_stat(str(event.get("diff") or ""))
    line = f"diff so far: {files} file{'s' if files != 1 else ''} +{additions} -{deletions}"
    if event.get("diff_truncated") and event.get("diff_path"):
        line += f" (truncated; full diff: {clean(event['diff_path'])})"
    return paint(line, dim=True)


def plan_lines(event: dict[str, Any], paint: Paint) -> list[str]:
    explanation = event.get("explanation")
    lines = [f"plan: {clean(explanation)}" if explanation else "plan:"]
    for step in event.get("plan") or []:
        mark, colour = STEP_MARKS.get(step.get("status"), ("[?]", None))
        text = f"  {mark} {clean(step.get('step') or '')}"
        lines.append(paint(text, fg=colour, dim=colour is None))
    return lines


def rate_limits_line(event: dict[str, Any], paint: Paint) -> str:
    """codex's RateLimitSnapshot: how much of each window is used."""
    snapshot = event.get("rate_limits") if isinstance(event.get("rate_limits"), dict) else {}
    windows = []
    for name in ("primary", "secondary"):
        window = snapshot.get(name)
        if isinstance(window, dict) and "usedPercent" in window:
            minutes = window.get("windowDurationMins")
            span = f" of {minutes} min" if minutes else ""
            windows.append(f"{name} {clean(window['usedPercent'])}% used{span}")
    return paint(f"rate limits: {', '.join(windows) or compact(event)}", dim=True)


def approval_lines(event: dict[str, Any], paint: Paint) -> list[str]:
    """A pending approval, loud enough to notice, with the command that answers it."""
    approval_id = clean(event.get("approval_id") or "?")
    kind = clean(event.get("approval_kind") or "")
    head = paint(f"APPROVAL {approval_id} ({kind})", fg="magenta", bold=True)
    if event.get("command"):
        head += " " + paint(f"$ {clean(event['command'])}", bold=True)
    lines = [head]
    lines.extend(f"  {change_summary(c, paint)}" for c in event.get("changes") or [])
    if event.get("reason"):
        lines.append(f"  reason: {clean(event['reason'])}")
    swarm = clean(event.get("swarm_id") or "SWARM")
    answer = f"  answer: codeswarm approve {swarm} {approval_id} --decision {DECISIONS}"
    lines.append(paint(answer, fg="magenta"))
    if event.get("default_decision"):
        expires = event.get("expires_at")
        when = f" at {clock(expires)}" if isinstance(expires, (int, float)) else ""
        lines.append(f"  unanswered: {clean(event['default_decision'])}{when}")
    return lines


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def approval_resolved_line(event: dict[str, Any], paint: Paint) -> str:
    decision = clean(event.get("decision") or "?")
    colour = "red" if decision == "decline" else "green"
    approval_id, by = clean(event.get("approval_id") or "?"), clean(event.get("by") or "?")
    return f"approval {approval_id}: {paint(decision, fg=colour)} (by {by})"
