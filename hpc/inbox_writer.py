"""A long-lived inbox writer on the login node: the router's writes without a process each.

Run as ``python3 -m hpc.inbox_writer --mailbox DIR`` on one SSH channel. Each request on stdin
(``inbox_writer_wire``) is appended to ``inbox/<JOB>_<NODE>.jsonl`` in one locked write (see
``mailbox_io.append_lines``), then answered on stdout; the answers to a batch of requests are
flushed together. EOF on stdin ends it.
"""

import argparse
import os
import sys

from . import inbox_writer_wire, records
from .mailbox_io import append_lines


def serve(mailbox, stdin, stdout):
    while True:
        try:
            requests = inbox_writer_wire.read_requests(stdin)
        except inbox_writer_wire.FrameError as exc:
            stdout.write(inbox_writer_wire.encode_reply(inbox_writer_wire.UNREADABLE, str(exc)))
            stdout.flush()
            return 2
        if requests is None:
            return 0
        for request_id, key, data in requests:
            stdout.write(append(mailbox, request_id, key, data))
        stdout.flush()


def append(mailbox, request_id, key, data):
    """Append one request's lines to its inbox; the reply that says how it went."""
    try:
        job_id, node_id = records.parse_node_key(key)
        path = os.path.join(mailbox, records.INBOX_DIR, records.record_name(job_id, node_id))
        append_lines(path, data)
    except (OSError, records.RecordError) as exc:
        return inbox_writer_wire.encode_reply(request_id, str(exc))
    return inbox_writer_wire.encode_reply(request_id)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m hpc.inbox_writer")
    parser.add_argument("--mailbox", required=True)
    args = parser.parse_args(argv)
    return serve(args.mailbox, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
