"""The outbox follower's wire: the header the router sends it, and the records it sends back.

The router writes the header, and the follower parses it; the follower writes the records,
and the router parses them. Both sides import this module (the router as
``codeswarm.hpc.follower_wire``), so each format has one definition.

Header: the first line on the follower's stdin, one JSON object, every key optional::

    {"cursor": {"<JOB>_<NODE>:<inode>": <offset>, ...}, "jobs": ["<job id>", ...],
     "from_end": false}

Records: the follower's stdout, one a line, as bytes::

    L<TAB><JOB>_<NODE><TAB><identity><TAB><offset after the line><TAB><raw line, no newline>
    H<TAB><unix time>          heartbeat: the follower is alive and has nothing new
    E<TAB><message>            a follower-level problem (bad file name, unreadable directory)

The raw line is an outbox line passed through byte for byte. It is the last field, so it may
hold tabs; it holds no newline, because the follower cuts lines at newlines.
"""

from __future__ import annotations

import json
from typing import Tuple

from . import records


class HeaderError(ValueError):
    """A follower header that is not a JSON object of the documented shape."""


# One outbox line as the follower forwards it: (key, identity, offset after the line, raw
# line). A plain tuple: a NamedTuple's constructor cost the router's reader a tenth of its time.
LineRecord = Tuple[str, str, int, bytes]


def encode_header(cursor: dict[str, int], jobs: list[str], from_end: bool) -> bytes:
    """The header line: resume each file identity at its offset, follow archives of ``jobs``."""
    header = {"cursor": cursor, "jobs": jobs, "from_end": from_end}
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n"


def parse_header(line: bytes) -> tuple[dict[str, int], set[str], bool]:
    """Return (cursor, jobs, from_end) from a header line; HeaderError says what is wrong.

    An empty line is an empty header: follow everything from the start.
    """
    text = line.strip()
    if not text:
        return {}, set(), False
    try:
        header = json.loads(text.decode("utf-8"))
    except ValueError as exc:
        raise HeaderError("header is not valid JSON: %s" % exc) from None
    if not isinstance(header, dict):
        raise HeaderError("header must be a JSON object")
    cursor = header.get("cursor", {})
    jobs = header.get("jobs", [])
    if not isinstance(cursor, dict):
        raise HeaderError("cursor must be an object")
    for identity, offset in cursor.items():
        key, sep, inode = identity.rpartition(":")
        if not sep or not inode.isdigit():
            raise HeaderError("cursor key %r is not <JOB>_<NODE>:<inode>" % identity)
        try:
            records.parse_node_key(key)
        except records.RecordError as exc:
            raise HeaderError("cursor key %r: %s" % (identity, exc)) from None
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise HeaderError("cursor offset for %r must be a non-negative integer" % identity)
    if not isinstance(jobs, list) or not all(isinstance(job, str) for job in jobs):
        raise HeaderError("jobs must be a list of job id strings")
    from_end = header.get("from_end", False)
    if not isinstance(from_end, bool):
        raise HeaderError("from_end must be true or false")
    return dict(cursor), set(jobs), from_end


def line_records(key: str, identity: str, offset: int, data: bytes, end: int) -> list[bytes]:
    """``L`` records for the lines of ``data[:end]``, which was read at file ``offset``.

    ``data[:end]`` must be whole lines: ``end`` is 0 or just after a newline. The follower's
    hot path: a poll may carry a MiB of short lines.
    """
    prefix = ("L\t%s\t%s\t" % (key, identity)).encode("ascii")
    out = []
    find = data.find
    start = 0
    while start < end:
        stop = find(b"\n", start, end) + 1
        out.append(b"%s%d\t%s" % (prefix, offset + stop, data[start:stop]))
        start = stop
    return out


def heartbeat_record(now: float) -> bytes:
    return b"H\t%.3f\n" % now


def problem_record(message: str) -> bytes:
    """An ``E`` record; newlines in ``message`` become spaces so that it stays one record."""
    return b"E\t" + message.replace("\n", " ").encode("utf-8", "replace") + b"\n"


class RecordReader:
    """Parses the follower's stdout as it arrives, in chunks cut anywhere.

    ``feed`` returns the line records and the problems (``E`` messages, and records this
    module does not know) of every record completed by the chunk; heartbeats only say the
    follower is alive, and are dropped. A record cut by the chunk's end waits for the next.
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> tuple[list[LineRecord], list[str]]:
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        lines = []
        problems = []
        for raw in data[:cut].split(b"\n")[:-1]:
            if raw.startswith(b"L\t"):
                line = _line_record(raw)
                if line is not None:
                    lines.append(line)
                    continue
            elif raw.startswith(b"H\t"):
                continue
            elif raw.startswith(b"E\t"):
                problems.append(raw[2:].decode("utf-8", "replace"))
                continue
            problems.append("unknown follower record %r" % raw[:200])
        return lines, problems


def _line_record(raw: bytes) -> LineRecord | None:
    parts = raw.split(b"\t", 4)
    if len(parts) != 5 or not parts[3].isdigit():
        return None
    try:
        key, identity = parts[1].decode("ascii"), parts[2].decode("ascii")
    except UnicodeDecodeError:
        return None
    return (key, identity, int(parts[3]), parts[4])
