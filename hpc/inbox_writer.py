"""A long-lived inbox writer on the login node: the router's writes without a process each.

Run as ``python3 -m hpc.inbox_writer --mailbox DIR`` on one SSH channel. Each request on stdin
(``inbox_writer_wire``) is appended to ``inbox/<JOB>_<NODE>.jsonl`` in one locked write (see
``mailbox_io.append_lines``), then answered on stdout. EOF on stdin ends it.
"""

import argparse
import os
import sys

from . import inbox_writer_wire, records
from .mailbox_io import append_lines


def serve(mailbox, stdin, stdout):
    while True:
        try:
            request = inbox_writer_wire.read_request(stdin)
        except inbox_writer_wire.FrameError as exc:
            stdout.write(inbox_writer_wire.encode_reply(inbox_writer_wire.UNREADABLE, str(exc)))
            stdout.flush()
            return 2
        if request is None:
            return 0
        request_id, key, data = request
        try:
            job_id, node_id = records.parse_node_key(key)
            path = os.path.join(mailbox, records.INBOX_DIR, records.record_name(job_id, node_id))
            append_lines(path, data)
            reply = inbox_writer_wire.encode_reply(request_id)
        except (OSError, records.RecordError) as exc:
            reply = inbox_writer_wire.encode_reply(request_id, str(exc))
        stdout.write(reply)
        stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m hpc.inbox_writer")
    parser.add_argument("--mailbox", required=True)
    args = parser.parse_args(argv)
    return serve(args.mailbox, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
