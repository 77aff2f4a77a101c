"""The inbox writer's wire: the router's framed requests, and the writer's one-line replies.

The router's SSH transport writes requests and reads replies; ``hpc.inbox_writer`` on the login
node reads requests and writes replies. Both sides import this module (the router as
``codeswarm.hpc.inbox_writer_wire``), so the framing has one definition.

A request is framed by length, so that a prompt may hold any bytes::

    <request id> <JOB>_<NODE> <length>\\n<length bytes: whole inbox lines>

Many requests may travel as one batch: ``batch <count>\n`` and then that many requests. The
writer answers each request once its lines are in the inbox, and flushes its replies once a
batch, so that a thousand appends cost one round trip over SSH, not a thousand.

A reply is one line: ``<request id> ok`` or ``<request id> error <message>``. A request whose
header cannot be read is answered ``- error <message>``, and the writer stops: it can no longer
tell where the next request starts.
"""

from __future__ import annotations

from typing import BinaryIO

UNREADABLE = "-"  # the request id of the reply to a request header that cannot be read


class FrameError(ValueError):
    """A request header that does not follow the framing."""


def _is_token(value: str) -> bool:
    """Whether ``value`` is one field of a request header: ASCII, not empty, no whitespace."""
    return value.isascii() and value.split() == [value]


def encode_request(request_id: str, key: str, data: bytes) -> bytes:
    """One framed request: append ``data`` to the inbox of node ``key`` (``<JOB>_<NODE>``)."""
    for name, value in (("request id", request_id), ("node key", key)):
        if not _is_token(value):
            raise FrameError("%s %r must be ASCII with no whitespace" % (name, value))
    return b"%s %s %d\n%s" % (request_id.encode("ascii"), key.encode("ascii"), len(data), data)


def encode_batch(requests: list[bytes]) -> bytes:
    """Encoded requests (``encode_request``) as one batch, answered in one flush."""
    return b"batch %d\n%s" % (len(requests), b"".join(requests))


def read_requests(stream: BinaryIO) -> list[tuple[str, str, bytes]] | None:
    """The next request, or every request of the next batch; None at EOF.

    A batch cut short is the requests read whole before the cut (None if there are none).
    """
    header = stream.readline()
    if not header:
        return None
    fields = header.split()
    if len(fields) != 2 or fields[0] != b"batch":
        request = _read_body(stream, header)
        return None if request is None else [request]
    if not fields[1].isdigit():
        raise FrameError("malformed batch count %r" % fields[1].decode("ascii", "replace"))
    requests = []
    for _ in range(int(fields[1])):
        request = read_request(stream)
        if request is None:
            break
        requests.append(request)
    return requests or None


def read_request(stream: BinaryIO) -> tuple[str, str, bytes] | None:
    """The next request as (request id, node key, data); None at EOF.

    A request cut short (the channel closed inside it) is None too: appending part of a
    prompt would be worse than appending nothing. FrameError if the header is unreadable.
    """
    header = stream.readline()
    if not header:
        return None
    return _read_body(stream, header)


def _read_body(stream: BinaryIO, header: bytes) -> tuple[str, str, bytes] | None:
    """The request whose header line is ``header``, its data read from ``stream``."""
    try:
        request_id, key, length = header.decode("ascii").split()
    except (UnicodeDecodeError, ValueError):
        raise FrameError("malformed request header") from None
    if not length.isdigit():
        raise FrameError("malformed request length %r" % length)
    size = int(length)
    data = stream.read(size)
    if len(data) != size:
        return None
    return request_id, key, data


def encode_reply(request_id: str, error: str | None = None) -> bytes:
    """``ok`` when ``error`` is None; else the error, on one line."""
    if error is None:
        return b"%s ok\n" % request_id.encode("ascii")
    message = error.replace("\n", " ").encode("utf-8", "replace")
    return b"%s error %s\n" % (request_id.encode("ascii"), message)


def parse_reply(line: bytes) -> tuple[str, str | None]:
    """(request id, None) for ``ok``; (request id, the message) for anything else."""
    request_id, _, rest = line.rstrip(b"\n").decode("utf-8", "replace").partition(" ")
    status, _, message = rest.partition(" ")
    return request_id, None if status == "ok" else message or status
