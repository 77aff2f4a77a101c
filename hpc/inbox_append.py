"""Append the lines on stdin to one node's inbox: how the router writes over SSH.

Run as ``python3 -m hpc.inbox_append --mailbox DIR --job-id J --node-id N``. The prompt
travels on stdin, never on the command line, so no shell ever sees it. Exit 0 when the lines
are in the file; 1 with a message on stderr otherwise.
"""

import argparse
import os
import sys

from . import records
from .mailbox_io import append_lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m hpc.inbox_append")
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--node-id", type=int, required=True)
    args = parser.parse_args(argv)
    data = sys.stdin.buffer.read()
    try:
        name = records.record_name(args.job_id, args.node_id)
        append_lines(os.path.join(args.mailbox, records.INBOX_DIR, name), data)
    except (OSError, records.RecordError) as exc:
        sys.stderr.write("inbox_append: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
