"""Reading and writing a node's mailbox files the way shared filesystems need.

NFS gives close-to-open consistency: a reader sees another host's appends only after it opens
the file again. So the inbox reader stats and reopens on every poll, keeps a byte offset, and
takes only complete lines. Writers append whole lines with one ``write`` call each.
"""

import errno
import fcntl
import json
import os

from . import records
from .private import FILE_MODE, private_dir


def ensure_mailbox(root):
    """Create the mailbox directories, private to their owner (other users must not inject)."""
    private_dir(root)
    for name in records.MAILBOX_DIRS:
        private_dir(os.path.join(root, name))


def create_inbox(path):
    """Make a node's inbox, empty, if it is not there: the worker does, at its start.

    Creating a file costs a shared filesystem far more than appending to one, so a fan-out to
    thousands of running nodes must find their inboxes there already.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE))


def append_lines(path, data):
    """Append whole lines to ``path`` in one write under an exclusive lock.

    Two writers on one inbox (a daemon and a CLI call) must not interleave: each holds the
    lock for its single write. ``data`` must be complete lines.
    """
    if not data.endswith(b"\n"):
        raise records.RecordError("refusing to append a partial line")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class InboxReader:
    """Complete new lines of one inbox file, from a byte offset kept by the caller's state."""

    def __init__(self, path, offset=0):
        self.path = path
        self.offset = offset

    def poll(self):
        """Return a list of (start_offset, line_bytes) for every complete line past the offset."""
        try:
            size = os.stat(self.path).st_size
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return []
            raise
        if size <= self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return []
            raise
        lines = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            lines.append((self.offset + start, data[start : end + 1]))
            start = end + 1
        self.offset += start
        return lines


class OutboxWriter:
    """Appends events to a node's outbox, numbering them with a per-node ``seq``."""

    def __init__(self, path, job_id, node_id, next_seq):
        self.path = path
        self.job_id = job_id
        self.node_id = node_id
        self.next_seq = next_seq
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)

    def write(self, kind, **fields):
        event = records.outbox_event(kind, self.job_id, self.node_id, self.next_seq, **fields)
        self.next_seq += 1
        os.write(self._fd, records.encode_line(event).encode("utf-8"))
        return event

    def close(self):
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def last_seq(paths):
    """The highest ``seq`` in the last complete line of any of ``paths``, or -1."""
    best = -1
    for path in paths:
        seq = _last_line_seq(path)
        if seq is not None:
            best = max(best, seq)
    return best


def _last_line_seq(path):
    """The ``seq`` of the last complete line that has one, reading back as far as needed."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            window = 65536
            while True:
                start = max(0, size - window)
                f.seek(start)
                lines = f.read(size - start).split(b"\n")
                # the first piece may be a cut line unless the window reached the start
                for line in reversed(lines if start == 0 else lines[1:]):
                    try:
                        seq = json.loads(line).get("seq")
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(seq, int):
                        return seq
                if start == 0:
                    return None
                window *= 4
    except OSError:
        return None


class StateStore:
    """A worker's durable state, replaced atomically so a crash never leaves half a file."""

    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return records.new_state()
        state = records.upgrade_state(state)
        problem = records.state_problem(state)
        if problem:
            raise records.RecordError("%s: %s" % (self.path, problem))
        return state

    def save(self, state):
        tmp = "%s.tmp.%d" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def archive_outbox(root, job_id, node_id):
    """Move a node's outbox into ``archive/``, never over an earlier run's archive."""
    name = records.record_name(job_id, node_id)
    source = os.path.join(root, records.OUTBOX_DIR, name)
    target = os.path.join(root, records.ARCHIVE_DIR, name)
    run = 1
    while os.path.exists(target):
        target = os.path.join(
            root,
            records.ARCHIVE_DIR,
            "%s.r%d%s" % (records.node_key(job_id, node_id), run, records.RECORD_SUFFIX),
        )
        run += 1
    os.replace(source, target)
    return target
