"""A long-lived inbox writer on the login node: the router's writes without a process each.

Run as ``python3 -m hpc.inbox_writer --mailbox DIR`` on one SSH channel. Requests on stdin are
framed by length, so a prompt may hold any bytes::

    <request id> <JOB>_<NODE> <length>\\n<length bytes: whole inbox lines>

Each is appended to ``inbox/<JOB>_<NODE>.jsonl`` in one locked write (see
``mailbox_io.append_lines``), then answered on stdout with ``<request id> ok`` or
``<request id> error <message>``. EOF on stdin ends it.
"""

import argparse
import os
import sys

from . import records
from .mailbox_io import append_lines


def serve(mailbox, stdin, stdout):
    while True:
        header = stdin.readline()
        if not header:
            return 0
        try:
            request_id, key, length = header.decode("ascii").split()
            size = int(length)
            if size < 0:
                raise ValueError(length)
        except (UnicodeDecodeError, ValueError):
            stdout.write(b"- error malformed request header\n")
            stdout.flush()
            return 2
        data = stdin.read(size)
        if len(data) != size:
            # the channel closed mid-request: append nothing rather than part of a prompt
            return 0
        try:
            job_id, node_id = records.parse_node_key(key)
            path = os.path.join(mailbox, records.INBOX_DIR, records.record_name(job_id, node_id))
            append_lines(path, data)
            reply = "%s ok\n" % request_id
        except (OSError, records.RecordError) as exc:
            reply = "%s error %s\n" % (request_id, str(exc).replace("\n", " "))
        stdout.write(reply.encode("utf-8", "replace"))
        stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m hpc.inbox_writer")
    parser.add_argument("--mailbox", required=True)
    args = parser.parse_args(argv)
    return serve(args.mailbox, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
