"""A swarm's past from the shell: ``logs``, ``attach --since`` and ``inject --wait``.

When no daemon runs, the CLI call becomes the router for as long as it runs: it takes the
mailbox's cursor, so what the workers wrote while nothing ran reaches the event log (and the
screen) first. When a daemon runs, it holds the cursor and writes the log; the call then reads
the daemon's log as it grows.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from fnmatch import fnmatchcase
from typing import Any

import click

from codeswarm.answers import AnswerBook
from codeswarm.config import Config
from codeswarm.errors import MailboxBusyError
from codeswarm.eventlog import LogTail, check_since, last_cursor, swarm_log_dir
from codeswarm.protocol.since import parse_since
from codeswarm.protocol.subscription import Subscription, pattern_problem
from codeswarm.prune import parse_age

POLL_SECONDS = 0.2  # how often a daemon's log is read again
CATCH_UP_SECONDS = 1.5  # `logs`: quiet this long, the backlog has been read
CATCH_UP_LIMIT = 10.0  # `logs` with its own router stops here even if the swarm is busy
_AGE = re.compile(r"[0-9]+(?:\.[0-9]+)?[smhd]")

SINCE_HELP = (
    "Replay from: 'start', a cursor (the `cursor` of an event you saw), an ISO-8601 time "
    "(2026-12-02T13:00:00Z), or an age such as 10m, 2h, 1d."
)


def since_option(value: str) -> int | float | str:
    """A --since value for the embedding API: cursor, "start", ISO time, or epoch seconds."""
    text = value.strip()
    if _AGE.fullmatch(text):
        return time.time() - parse_age(text)
    try:
        parse_since(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; or an age such as 10m", param_hint="--since") from None
    return int(text) if text.isdigit() else text


def event_patterns(value: str | None) -> list[str] | None:
    """The --events option: comma-separated types or globs, each checked."""
    if value is None:
        return None
    types = [p.strip() for p in value.split(",") if p.strip()]
    for pattern in types:
        problem = pattern_problem(pattern)
        if problem:
            raise click.BadParameter(problem, param_hint="--events")
    return types


@contextlib.contextmanager
def own_router(open_router: Callable[[str | None], Any]) -> Iterator[Any]:
    """This call's router following the mailbox, or None while a daemon does."""
    try:
        swarms = open_router("resume")
    except MailboxBusyError:
        yield None
        return
    with swarms:
        yield swarms


def daemon_log(
    config: Config,
    swarm_id: str,
    since: int | float | str,
    idle_exit: float | None,
    deadline: float | None = None,
) -> Iterator[dict[str, Any] | None]:
    """The daemon's log of a swarm from ``since``, as it grows; ends once quiet ``idle_exit``
    or at ``deadline`` (monotonic). With a deadline, None comes on each quiet poll, so a
    caller can stop without waiting for another event."""
    directory = swarm_log_dir(config.router.state_dir, swarm_id)
    start = parse_since(since)
    try:
        check_since(directory, start)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    tail = LogTail(directory, start)
    if idle_exit == 0:  # what is there now, once
        yield from tail.poll()
        return
    quiet_since = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        fresh = False
        for event in tail.poll():
            fresh = True
            yield event
        now = time.monotonic()
        if fresh:
            quiet_since = now
        elif idle_exit is not None and now - quiet_since >= idle_exit:
            return
        elif deadline is not None:
            yield None
        time.sleep(POLL_SECONDS)


def swarm_events(
    swarms: Any,
    config: Config,
    swarm_id: str,
    since: int | float | str,
    idle_exit: float | None,
    types: list[str] | None,
) -> Iterator[dict[str, Any]]:
    """A swarm's events from ``since`` on, replayed then live, from wherever they are.

    ``types`` selects strictly: past answers (acks) are history here, not replies to this call.
    """
    if swarms is not None:
        events = swarms.events(timeout=idle_exit, types=types, swarm_id=swarm_id, since=since)
    else:
        events = daemon_log(config, swarm_id, since, idle_exit)
    wanted = Subscription() if types is None else None
    for event in events:
        kind = event["type"]
        if wanted.wants(event) if wanted else any(fnmatchcase(kind, t) for t in types or ()):
            yield event


def answer_line(answer: dict[str, Any]) -> str:
    node = f"node {answer['node_id'] if answer['node_id'] is not None else '?'}"
    if answer["status"] == "completed":
        return f"{node}: {answer['message'] or '(no message)'}"
    if answer["status"] == "pending":
        return f"{node}: no answer yet ({answer['injection_id']} still queued or running)"
    why = answer["detail"] or answer["error"] or answer["status"]
    return f"{node}: {answer['status']} ({answer['error'] or answer['status']}): {why}"


def wait_for_answers(
    swarms: Any,
    config: Config,
    swarm_id: str,
    injection_ids: list[str],
    since: int,
    timeout: float,
    on_answer: Callable[[dict[str, Any]], None],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Each injection's answer, from this call's router or from the daemon's log."""
    if swarms is not None:
        return swarms.wait(
            swarm_id, injection_ids, timeout, on_answer=on_answer, since=since, on_event=on_event
        )
    book = AnswerBook(injection_ids)
    deadline = time.monotonic() + timeout
    events = daemon_log(config, swarm_id, since, None, deadline)
    while not book.done() and (event := next(events, False)) is not False:
        if event is not None:
            book.take(event, on_answer, on_event)
    return book.results()


def log_end(config: Config, swarm_id: str) -> int:
    """The last cursor in a swarm's log now (0 if none): where a wait starts reading."""
    return last_cursor(swarm_log_dir(config.router.state_dir, swarm_id))


def print_events(events: Iterable[dict[str, Any]], as_json: bool, render: Any) -> None:
    for event in events:
        if as_json:
            click.echo(json.dumps(event))
        else:
            render(event)
