"""The event log: every event the router emitted for a swarm, kept for clients that were away.

Layout: ``<router.state_dir>/events/<swarm_id>/<first cursor>.jsonl``, one protocol line per
event exactly as it was sent, each with its ``cursor``: 1, 2, 3... per swarm. A segment closes
at ``router.event_log_segment_bytes``; the oldest segments go once a swarm's log passes
``router.event_log_max_bytes``; ``codeswarm prune`` removes the whole log with the swarm.

Only the router that holds the mailbox's cursor lock writes (the daemon, or a CLI call when no
daemon runs). It writes each batch with one ``os.write`` before any client sees it, so a
killed router has lost nothing a client saw, and a restarted one learns from the log which
worker ``seq`` it already emitted (``last_seqs``) and emits nothing twice. A line cut short by
a crash is dropped when the log is reopened; readers only ever take complete lines.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeswarm.hpc import records
from codeswarm.hpc.private import private_dir
from codeswarm.protocol.codec import EncodedEvent, encode_event
from codeswarm.protocol.since import START, Since

log = logging.getLogger(__name__)
SUFFIX = ".jsonl"
NAME_DIGITS = 12
READ_CHUNK = 1 << 16
MAX_OPEN_LOGS = 256  # swarms written at once; the least recently written is closed past this
# Events that describe the swarm as a whole; every other logged event names its node.
SWARM_EVENTS = ("swarm_launched", "swarm_terminated")


def swarm_log_dir(state_dir: str | os.PathLike[str], swarm_id: str) -> Path:
    return Path(os.path.expanduser(state_dir)) / "events" / swarm_id


def remove(state_dir: str | os.PathLike[str], swarm_id: str) -> None:
    """Delete a swarm's whole log (``codeswarm prune``)."""
    shutil.rmtree(swarm_log_dir(state_dir, swarm_id), ignore_errors=True)


def event_swarm(event: dict[str, Any]) -> Any:
    """The swarm an event names: its ``swarm_id``, or the launched swarm's (None for neither)."""
    if event.get("type") == "swarm_launched":
        return (event.get("swarm") or {}).get("swarm_id")
    return event.get("swarm_id")


def logged_swarm(event: dict[str, Any]) -> str | None:
    """The swarm whose log keeps ``event``, or None for answers that belong to no swarm.

    Node events (they carry ``job_id``) and the swarm's launch and end are kept; query
    answers (status, lists, diffs) are not: they are state, asked for again at will.
    """
    if "job_id" not in event and event.get("type") not in SWARM_EVENTS:
        return None
    swarm_id = event_swarm(event)
    return swarm_id if isinstance(swarm_id, str) and _safe_id(swarm_id) else None


@functools.lru_cache(maxsize=1024)
def _safe_id(swarm_id: str) -> bool:
    """Whether a swarm id may name a directory; remembered: a log sees a few ids, many times."""
    return records.id_problem(swarm_id) is None


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The log's segments, oldest first, each with the cursor of its first event."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem = name[: -len(SUFFIX)]
        if name.endswith(SUFFIX) and stem.isdigit():
            found.append((int(stem), directory / name))
    return sorted(found)


def _segment_path(directory: Path, first_cursor: int) -> Path:
    return directory / f"{first_cursor:0{NAME_DIGITS}d}{SUFFIX}"


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The complete lines of a file, last first (a trailing partial line is skipped)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (a missing file is no error; closed below)
    except FileNotFoundError:
        return
    with handle:
        end = handle.seek(0, os.SEEK_END)
        rest = b""
        complete = None  # whether the bytes after the last newline seen end a line
        while end > 0:
            start = max(0, end - READ_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start) + rest
            end = start
            pieces = chunk.split(b"\n")
            rest = pieces[0]
            if complete is None:
                complete = False  # the last piece follows the last newline: partial or empty
            for piece in reversed(pieces[1:]):
                if complete and piece:
                    yield piece
                complete = True
        if rest and complete:
            yield rest


def _cursor_at_end(line: bytes) -> int | None:
    """The cursor a logged line ends with (``,"cursor":N}``), or None if it does not."""
    at = line.rfind(b'"cursor":', -32)
    if at < 0 or not line.endswith(b"}"):
        return None
    digits = line[at + 9 : -1]
    return int(digits) if digits.isdigit() else None


def _cursor(line: bytes) -> int | None:
    try:
        cursor = json.loads(line).get("cursor")
    except (ValueError, AttributeError):
        return None
    return cursor if isinstance(cursor, int) and not isinstance(cursor, bool) else None


def _last_cursor(found: list[tuple[int, Path]]) -> int:
    for _, path in reversed(found):
        for line in _lines_backwards(path):
            cursor = _cursor(line)
            if cursor is not None:
                return cursor
    return 0


def last_cursor(directory: Path) -> int:
    """The cursor of the last complete event in a log (0 for none), read from its end."""
    return _last_cursor(segments(directory))


def check_since(directory: Path, since: Since) -> None:
    """ValueError for a cursor past the log's end: it would hide every event up to it."""
    if since.ts is None and since.cursor > 0:
        last = last_cursor(directory)
        if since.cursor > last:
            raise ValueError(
                f"since {since.cursor} is past the end of this swarm's event log (its last "
                f'cursor is {last}); give a cursor you received, "start" or a time'
            )


class SwarmLog:
    """The open end of one swarm's log: appends lines and stamps cursors."""

    def __init__(self, directory: Path, segment_bytes: int, max_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        private_dir(directory.parent)  # events/: 0700 like the rest of the state dir
        private_dir(directory)
        found = segments(directory)
        self.sizes = {path: path.stat().st_size for _, path in found}
        self.next_cursor = 1
        if found:
            first, path = found[-1]
            self._drop_partial_line(path)
            self.next_cursor = max(first, _last_cursor(found) + 1)
            self.path = path
        else:
            self.path = _segment_path(directory, 1)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.sizes[self.path] = os.fstat(self.fd).st_size

    def _drop_partial_line(self, path: Path) -> None:
        """Cut a line a crash left unfinished, back to the last newline (or to nothing)."""
        with open(path, "rb+") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return
            handle.seek(end - 1)
            if handle.read(1) == b"\n":
                return
            keep = 0
            while end > 0:
                start = max(0, end - READ_CHUNK)
                handle.seek(start)
                cut = handle.read(end - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            log.warning("event log %s: dropped a line cut short by a crash", path)
            handle.truncate(keep)

    def take_cursor(self) -> int:
        cursor = self.next_cursor
        self.next_cursor += 1
        return cursor

    def append(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        while data:  # a regular file takes it all at once, short of a full disk
            written = os.write(self.fd, data)
            data = data[written:]
            self.sizes[self.path] += written
        if self.sizes[self.path] >= self.segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        path = _segment_path(self.directory, self.next_cursor)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # before the close
        os.close(self.fd)
        self.path, self.fd = path, fd
        self.sizes[self.path] = 0
        total = sum(self.sizes.values())
        for _, oldest in segments(self.directory)[:-1]:
            if total <= self.max_bytes:
                break
            total -= self.sizes.pop(oldest, 0)
            oldest.unlink(missing_ok=True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class EventLog:
    """Every swarm's log, written by one thread (the EventLogActor's)."""

    def __init__(
        self, state_dir: str | os.PathLike[str], segment_bytes: int, max_bytes: int
    ) -> None:
        self.state_dir = state_dir
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.open: OrderedDict[str, SwarmLog] = OrderedDict()
        self.failing: set[str] = set()
        # The next cursor of each swarm whose log failed: sent events keep theirs, even if the
        # file lost them, so a reopened log never hands one out twice.
        self.floors: dict[str, int] = {}

    def record(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stamp the logged events with their cursors and write them; returns what to send."""
        batches: dict[str, list[bytes]] = {}
        sent = []
        last_id: str | None = None  # a batch is mostly one swarm's: look its log up once
        swarm_log = None
        for event in events:
            swarm_id = logged_swarm(event)
            if swarm_id is None:
                sent.append(event)
                continue
            if swarm_id != last_id:
                last_id, swarm_log = swarm_id, self._log(swarm_id)
            if swarm_log is not None:
                stamped = _stamped(event, swarm_log.next_cursor)
                if stamped is not None:
                    swarm_log.take_cursor()
                    batches.setdefault(swarm_id, []).append(stamped.line)
                    event = stamped
            sent.append(event)
        for swarm_id, lines in batches.items():
            try:
                self.open[swarm_id].append(lines)
            except OSError as exc:
                self._trouble(swarm_id, exc)
                self.floors[swarm_id] = self.open[swarm_id].next_cursor
                self.close(swarm_id)  # the next event reopens it
        while len(self.open) > MAX_OPEN_LOGS:  # only now: a batch's logs stay open until written
            self.open.popitem(last=False)[1].close()
        return sent

    def _log(self, swarm_id: str) -> SwarmLog | None:
        swarm_log = self.open.get(swarm_id)
        if swarm_log is not None:
            self.open.move_to_end(swarm_id)
            return swarm_log
        try:
            swarm_log = SwarmLog(
                swarm_log_dir(self.state_dir, swarm_id), self.segment_bytes, self.max_bytes
            )
        except OSError as exc:
            self._trouble(swarm_id, exc)
            return None
        self.failing.discard(swarm_id)
        swarm_log.next_cursor = max(swarm_log.next_cursor, self.floors.pop(swarm_id, 1))
        self.open[swarm_id] = swarm_log
        return swarm_log

    def _trouble(self, swarm_id: str, exc: OSError) -> None:
        """Routing goes on without the log; said once per swarm until it works again."""
        if swarm_id not in self.failing:
            self.failing.add(swarm_id)
            log.error(
                "cannot write the event log of swarm %s (%s): clients see its events live, "
                "but cannot replay them",
                swarm_id,
                exc,
            )

    def close(self, swarm_id: str) -> None:
        swarm_log = self.open.pop(swarm_id, None)
        if swarm_log is not None:
            swarm_log.close()

    def close_all(self) -> None:
        for swarm_id in list(self.open):
            self.close(swarm_id)


def _stamped(event: dict[str, Any], cursor: int) -> EncodedEvent | None:
    """``event`` with its cursor and its protocol line; None if it cannot be encoded."""
    if isinstance(event, EncodedEvent) and "cursor" not in event:
        # A routed worker event, handed on by one actor to the next: stamped where it is.
        event["cursor"] = cursor
        event.line = event.line[:-2] + b',"cursor":%d}\n' % cursor
        return event
    stamped = EncodedEvent(event)
    stamped["cursor"] = cursor
    try:
        stamped.line = encode_event(stamped)
    except (TypeError, ValueError, RecursionError):
        return None  # the client gets an unencodable_event error in its place, unlogged
    return stamped


class LogTail:
    """Reads a log as it grows: each ``poll`` returns the complete lines added since the last.

    Segments deleted under it (trimmed) are skipped; it never goes back.
    """

    def __init__(self, directory: Path, since: Since = START) -> None:
        self.directory = directory
        self.since = since
        self.last_cursor = since.cursor if since.ts is None else 0
        self.seen = self.last_cursor  # the highest cursor read, taken or not
        self.path: Path | None = None
        self.offset = 0

    def _start(self, found: list[tuple[int, Path]]) -> int:
        """Index of the segment to start reading: the last that can hold what ``since`` asks."""
        index = 0
        for i, (first, path) in enumerate(found):
            if self.since.ts is None:
                if first <= self.since.cursor + 1:
                    index = i
            elif self._first_ts(path) <= self.since.ts:
                index = i
        return index

    @staticmethod
    def _first_ts(path: Path) -> float:
        """When the segment's first event happened; an empty one starts nothing (inf)."""
        try:
            with open(path, "rb") as handle:
                return float(json.loads(handle.readline()).get("ts", 0.0))
        except (OSError, ValueError, AttributeError, TypeError):
            return math.inf

    def poll(self) -> Iterator[EncodedEvent]:
        found = segments(self.directory)
        if not found:
            return
        paths = [path for _, path in found]
        if self.path is None or self.path not in paths:
            index = self._start(found) if self.path is None else self._after(found)
            if index is None:
                return
            self.path, self.offset = paths[index], 0
        while True:
            yield from self._read_segment()
            index = paths.index(self.path)
            if index + 1 >= len(paths):
                return
            self.path, self.offset = paths[index + 1], 0

    def _after(self, found: list[tuple[int, Path]]) -> int | None:
        """Our segment was trimmed away: go on from the first that is left after it."""
        for i, (first, _) in enumerate(found):
            if first > self.last_cursor:
                return i
        return len(found) - 1 if found else None

    def _read_segment(self) -> Iterator[EncodedEvent]:
        assert self.path is not None
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].splitlines():
            cursor = _cursor_at_end(raw)
            if cursor is not None and cursor <= self.last_cursor:
                continue  # read before, or before `since`: not worth parsing
            try:
                event = EncodedEvent(json.loads(raw))
            except (ValueError, TypeError):
                log.warning("event log %s: skipped a line that is not JSON", self.path)
                continue
            cursor = event.get("cursor")
            if not isinstance(cursor, int) or cursor <= self.last_cursor:
                continue
            self.seen = max(self.seen, cursor)
            if self.since.ts is not None:
                if not self.since.admits(event):
                    continue
                self.since = Since(cursor=cursor - 1)  # from here on, every later event
            self.last_cursor = cursor
            event.line = raw + b"\n"
            yield event


def last_seqs(directory: Path, saved: dict[str, int], not_before: float) -> dict[str, int]:
    """The highest worker ``seq`` logged per node (``<JOB>_<NODE>`` -> seq) above ``saved``.

    ``saved`` is what the router's saved cursor covers, for every node of the swarm. Reads
    back from the end until each node has shown a seq the cursor covers, or a router-made
    event (stamped by this host's clock, unlike a worker's) is older than ``not_before``.
    """
    seqs: dict[str, int] = {}
    waiting = set(saved)
    for _, path in reversed(segments(directory)):
        for line in _lines_backwards(path):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            seq, job_id, node_id = event.get("seq"), event.get("job_id"), event.get("node_id")
            if not isinstance(seq, int):
                if event.get("ts", 0.0) < not_before:
                    return seqs
                continue
            if not isinstance(node_id, int) or not isinstance(job_id, str):
                continue
            key = records.node_key(job_id, node_id)
            if seq <= saved.get(key, -1):
                waiting.discard(key)
                if not waiting:
                    return seqs
            elif seq > seqs.get(key, -1):
                seqs[key] = seq
    return seqs
