"""The login-node follower: streams new complete outbox lines to the router, exactly once.

Run as ``python3 -m hpc.outbox_follower --mailbox DIR`` (over SSH, or locally).

Input: the header (``follower_wire``) as the first line on stdin. Later input is read only to
notice EOF: on EOF (the SSH channel closed), SIGTERM, SIGINT, SIGHUP or a broken stdout pipe
the follower exits 0 within one poll interval. A header that is not valid, or a mailbox that
does not exist, gives an ``E`` record and exit status 2.

Files. Every ``outbox/<JOB>_<NODE>.jsonl``, and every ``archive/<JOB>_<NODE>.jsonl`` or
``archive/<JOB>_<NODE>.r<N>.jsonl`` that appears after the first poll (the first ``H`` record),
even one created and archived between two polls. Of the archives there before, only those whose
identity is in the cursor or whose job is in ``jobs``. A file's identity is
``<JOB>_<NODE>:<inode>``: a rename keeps the inode, so a file archived while no follower ran
continues from its cursor offset, and a requeued run's new outbox (a new inode) starts at 0.
A file not in the cursor starts at 0, unless ``from_end`` is true: then an outbox file already
there at the first poll starts after its last complete line (``codeswarm attach`` shows what
happens from now on). Other names are reported once each with an ``E`` record
(dot files, such as NFS's ``.nfsXXXX``, are ignored).

Output: ``follower_wire`` records on stdout, flushed once per poll: an ``L`` record per new
complete line, an ``H`` record after the first poll and then after --heartbeat-seconds of
silence, an ``E`` record per problem. The router's cursor for an identity is the offset of the
last ``L`` record it handled.

Shared filesystems: a poll lists the directories again only when a directory's own stat
changed, and at least every REOPEN_SECONDS. It stats every outbox that had lines in the last
ACTIVE_WINDOW_SECONDS and, in turn, a share of the quiet ones, each at least every
STAT_SWEEP_SECONDS (and at least STAT_AT_LEAST a poll: a small swarm's every one); one whose
size is its offset is not opened (10,000 opens a poll would cost more than the lines). In
turn again, it opens each outbox at least every REOPEN_SECONDS, fstats it (opening
revalidates NFS attributes, close-to-open, where a bare stat may serve a stale size), reads
past the offset and closes it: on NFS a new line waits at most that long for a stat that was
stale. So with 10,000 agents a poll costs what happens, not 10,000 stats, and a quiet
agent's first line waits at most STAT_SWEEP_SECONDS more. A new outbox is found by the next
listing: at once where directory timestamps are fine-grained, within REOPEN_SECONDS where they
are coarse or cached (Lustre, NFS). Only complete lines are
emitted; a partial last line waits for the next poll. A file that vanishes (ENOENT, ESTALE) is
skipped until the next poll. An archived file read to its end is never opened again: archives
do not grow. A cursor offset that is past the end of the file, or not just after a newline
(the inode was reused), is reported and the file is read from 0; the router drops duplicates
by ``seq``.
"""

import argparse
import errno
import functools
import os
import re
import signal
import sys
import threading
import time

from . import follower_wire, records

DEFAULTS = {"poll_seconds": 0.02, "idle_poll_seconds": 1.0, "heartbeat_seconds": 5.0}
ACTIVE_WINDOW_SECONDS = 2.0  # an outbox with lines this recently is statted every poll
STAT_SWEEP_SECONDS = 0.25  # a quiet outbox is statted at least this often
STAT_AT_LEAST = 256  # quiet outboxes statted a poll, at least: a small swarm's are all
REOPEN_SECONDS = 1.0  # and opened at least this often, whatever a bare stat said
READ_CHUNK = 1 << 20  # per file per poll; a file with more left makes the next poll immediate
WRITE_BATCH = 4 << 20  # write out mid-poll past this many bytes, to bound memory
GONE = (errno.ENOENT, errno.ESTALE)
_RUN_SUFFIX = re.compile(r"\.r[1-9][0-9]*\Z")


def _last_line_end(fd, size):
    """The offset just after the last newline in the file (0 if none in its last MiB)."""
    start = max(0, size - READ_CHUNK)
    tail = _pread(fd, size - start, start)
    return start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0


@functools.lru_cache(maxsize=1 << 16)
def parse_name(name, archived):
    """The ``<JOB>_<NODE>`` key of a followed file name, or None if the name is not one.

    Remembered: each poll asks again for every file, 10,000 of them with 10,000 agents.
    """
    if not name.endswith(records.RECORD_SUFFIX):
        return None
    stem = name[: -len(records.RECORD_SUFFIX)]
    if archived:
        stem = _RUN_SUFFIX.sub("", stem, count=1)
    try:
        records.parse_node_key(stem)
    except records.RecordError:
        return None
    return stem


def run_number(name, archived):
    """Which run of a node wrote a file: archive/<key>.jsonl is 0, .rN is N, outbox/ is last."""
    if not archived:
        return float("inf")
    match = _RUN_SUFFIX.search(name[: -len(records.RECORD_SUFFIX)])
    return int(match.group(0)[2:]) if match else 0


def _pread(fd, size, offset):
    """Read ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts = []
    while size > 0:
        data = os.pread(fd, size, offset)
        if not data:
            break
        parts.append(data)
        size -= len(data)
        offset += len(data)
    return b"".join(parts)


class Follower:
    """The follower's state: an offset per file identity, and what each poll found."""

    def __init__(self, mailbox, cursor, jobs, write, from_end=False, clock=time.monotonic):
        self.outbox = os.path.join(mailbox, records.OUTBOX_DIR)
        self.archive = os.path.join(mailbox, records.ARCHIVE_DIR)
        self.offsets = dict(cursor)
        self.unverified = {ident for ident, offset in cursor.items() if offset > 0}
        self.jobs = set(jobs)
        self.from_end = from_end
        self.write = write
        self.clock = clock
        self.skip = set()  # (name, d_ino) in archive/: read to the end, or not ours
        self.archive_seen = False  # after the first listing, anything new in archive/ is ours
        self.first_poll_done = False  # a whole first poll is done
        self.reported = set()
        self.dir_errors = {}
        self.pending = []
        self.pending_bytes = 0
        # The files to follow, from the last listing of both directories: listed again when
        # a directory's own stat changes, and at least every REOPEN_SECONDS.
        self.listed = {}  # directory -> the stat signature it was listed at
        self.followed = []  # (key, run, archived, entry), oldest run of each key first
        self.outboxes = []  # indices in ``followed`` of the outbox files
        self.archives = []  # ...and of the archives
        self.index = {}  # outbox path -> its index in ``followed``
        self.known = set()  # (outbox path, inode) listed before
        self.last_list = None  # when both directories were last listed
        self.active = {}  # outbox path -> when it last had lines (or appeared)
        self.sweeps = {"stat": [0, 0.0, None], "open": [0, 0.0, None]}  # next, credit, when

    def problem(self, message, once=None):
        if once is not None:
            if once in self.reported:
                return
            self.reported.add(once)
        self.pending.append(follower_wire.problem_record(message))

    def flush(self):
        """Write out everything pending in one call; False if there was nothing."""
        if not self.pending:
            return False
        data = b"".join(self.pending)
        self.pending = []
        self.pending_bytes = 0
        self.write(data)
        return True

    def poll(self):
        """Read the followed files due this poll once; return (lines found, more waiting).

        Due are every unfinished archive, every outbox with lines in the last
        ACTIVE_WINDOW_SECONDS (statted: opened only if grown) and, in turn, a share of the
        quiet ones: each is statted at least every STAT_SWEEP_SECONDS and opened at least every
        REOPEN_SECONDS. With 10,000 agents a poll so costs what is happening, not 10,000 stats.

        A node's files are read oldest run first (archive/<key>.jsonl, then .r1, .r2, ...,
        then its outbox), and a newer one waits while an older one still has lines: the
        router drops a node's events whose seq is not above the last it saw, so reading a new
        run's lines before an old run's backlog would lose that backlog.
        """
        now = self.clock()
        self._list(now)
        lines = 0
        more = False
        due = set(self.archives)
        for path, since in list(self.active.items()):
            if now - since >= ACTIVE_WINDOW_SECONDS:
                del self.active[path]
            elif path in self.index:
                due.add(self.index[path])
        due.update(self._sweep("stat", now, STAT_SWEEP_SECONDS, STAT_AT_LEAST))
        opened = self._sweep("open", now, REOPEN_SECONDS)
        due.update(opened)
        waiting = set()
        for i in sorted(due):
            key, _, archived, entry = self.followed[i]
            if key in waiting or (archived and (entry.name, entry.inode()) in self.skip):
                continue
            if not (archived or i in opened) and self._unchanged(entry, key):
                continue  # an archive is opened until read to its end, then never again
            found, left, done = self._read(entry.path, key, None if archived else entry.inode())
            lines += found
            if left:
                more = True
                waiting.add(key)
            if (found or left) and not archived:
                self.active[entry.path] = now
            if archived and done:
                # Never read again: its offset is not needed any more either.
                self.skip.add((entry.name, entry.inode()))
                self.offsets.pop("%s:%d" % (key, entry.inode()), None)
            if self.pending_bytes > WRITE_BATCH:
                self.flush()
        self.first_poll_done = True
        return lines, more

    def _sweep(self, kind, now, seconds, at_least=0):
        """The indices of the quiet outboxes whose turn it is, so that each comes once in
        ``seconds``: a share of them each poll, as much as the time since the last allows,
        and ``at_least`` that many."""
        sweep = self.sweeps[kind]
        count = len(self.outboxes)
        if sweep[2] is not None and count:
            sweep[1] += count * min(now - sweep[2], seconds) / seconds
        sweep[2] = now
        take = min(max(int(sweep[1]), at_least), count)
        sweep[1] = max(sweep[1] - take, 0.0)
        start = sweep[0] % count if count else 0
        sweep[0] = start + take
        return {self.outboxes[(start + n) % count] for n in range(take)}

    def _list(self, now):
        """List both directories again if either changed, or REOPEN_SECONDS went by."""
        stale = self.last_list is None or now - self.last_list >= REOPEN_SECONDS
        signatures = {}
        for directory in (self.archive, self.outbox):
            try:
                st = os.stat(directory)
                signatures[directory] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            except OSError:
                signatures[directory] = None
        if not stale and signatures == self.listed:
            return
        self.last_list = now
        self.listed = signatures
        followed = []
        for directory, archived in ((self.archive, True), (self.outbox, False)):
            entries = self._scan(directory)
            if entries is None:
                self.listed[directory] = None  # listed again next poll
            filtering = archived and not self.archive_seen
            if archived and entries is not None:
                self.archive_seen = True
                # A months-long follower keeps only what is still on disk: archives removed
                # (``codeswarm prune``) leave this set.
                self.skip &= {(entry.name, entry.inode()) for entry in entries}
            for entry in entries or ():
                name = entry.name
                if archived and (name, entry.inode()) in self.skip:
                    continue
                key = parse_name(name, archived)
                if key is None:
                    if not name.startswith("."):  # .nfsXXXX silly renames, editors' files
                        self.problem("ignoring %s" % entry.path, once=entry.path)
                    continue
                if filtering and not self._wanted(entry, key):
                    self.skip.add((name, entry.inode()))
                    continue
                followed.append((key, run_number(name, archived), archived, entry))
        followed.sort(key=lambda f: (f[0], f[1]))
        self.followed = followed
        self.outboxes = [i for i, f in enumerate(followed) if not f[2]]
        self.archives = [i for i, f in enumerate(followed) if f[2]]
        self.index = {followed[i][3].path: i for i in self.outboxes}
        known = set()
        for i in self.outboxes:
            entry = followed[i][3]
            known.add((entry.path, entry.inode()))
            if (entry.path, entry.inode()) not in self.known:
                self.active[entry.path] = now  # new: read at once, then kept an eye on
        self.known = known
        for path in [path for path in self.active if path not in self.index]:
            del self.active[path]

    def _scan(self, directory):
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            message = "cannot list %s: %s" % (directory, exc.strerror or exc)
            if self.dir_errors.get(directory) != message:
                self.dir_errors[directory] = message
                self.problem(message)
            return None
        self.dir_errors.pop(directory, None)
        return entries

    def _unchanged(self, entry, key):
        """Whether a bare stat shows the file ending at its offset: nothing new to read.

        ``os.stat``, not the listing's ``entry.stat()``: that one is the listing's, cached.
        """
        ident = "%s:%d" % (key, entry.inode())
        offset = self.offsets.get(ident)
        if offset is None or ident in self.unverified:
            return False
        try:
            return os.stat(entry.path).st_size == offset
        except OSError:
            return False

    def _wanted(self, entry, key):
        if key.rpartition("_")[0] in self.jobs:
            return True
        try:
            inode = entry.stat().st_ino
        except OSError:
            return False
        return "%s:%d" % (key, inode) in self.offsets

    def _read(self, path, key, inode=None):
        """Emit the new complete lines of one file: (lines, more waiting, read to its end).

        ``inode``: the one the listing saw. An outbox renamed into archive/ and created anew
        since is not read through the old listing: the new run's lines would come before the
        old run's last ones, which the router would then drop as old. The next poll lists
        again instead.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            if exc.errno not in GONE:
                self.problem("cannot open %s: %s" % (path, exc.strerror), once=path)
            return 0, False, False
        try:
            st = os.fstat(fd)
            if inode is not None and st.st_ino != inode:
                self.last_list = None
                return 0, True, False
            return self._read_fd(fd, st, path, key)
        except OSError as exc:
            if exc.errno not in GONE:
                self.problem("cannot read %s: %s" % (path, exc.strerror), once=path)
            return 0, False, False
        finally:
            os.close(fd)

    def _read_fd(self, fd, st, path, key):
        size = st.st_size
        ident = "%s:%d" % (key, st.st_ino)
        if ident not in self.offsets and self.from_end and not self.first_poll_done:
            self.offsets[ident] = _last_line_end(fd, size)
        offset = self.offsets.get(ident, 0)
        if offset > size:
            self.problem(
                "%s (%s) is shorter than its offset %d; reading it from 0" % (path, ident, offset)
            )
            offset = 0
            self.unverified.discard(ident)
        if size == offset:
            self.offsets[ident] = offset
            return 0, False, True
        if ident in self.unverified:
            self.unverified.discard(ident)
            if _pread(fd, 1, offset - 1) != b"\n":
                self.problem(
                    "%s (%s): offset %d is not at a line start; reading it from 0"
                    % (path, ident, offset)
                )
                offset = 0
        data = _pread(fd, min(size - offset, READ_CHUNK), offset)
        end = data.rfind(b"\n") + 1
        while end == 0 and offset + len(data) < size:  # a line longer than READ_CHUNK
            more = _pread(fd, min(size - offset - len(data), READ_CHUNK), offset + len(data))
            if not more:
                break
            data += more
            end = data.rfind(b"\n") + 1
        lines = self._emit(key, ident, offset, data, end) if end else 0
        self.offsets[ident] = offset + end
        if offset + len(data) < size:
            return lines, True, False
        if end < len(data) and path.startswith(self.archive + os.sep):
            # An archive never grows, so its partial last line never ends: say so, once.
            self.problem(
                "%s (%s) ends with %d bytes of an incomplete line" % (path, ident, len(data) - end),
                once=(ident, "tail"),
            )
        return lines, False, True

    def _emit(self, key, ident, offset, data, end):
        found = follower_wire.line_records(key, ident, offset, data, end)
        self.pending.extend(found)
        self.pending_bytes += sum(map(len, found))
        return len(found)


class StdinWatcher:
    """Reads the header line, then reads on only to notice EOF, on a daemon thread.

    Raw reads on the fd: a daemon thread blocked in ``sys.stdin.buffer`` would hold its lock
    at interpreter exit. ``ready`` is set once the header is in (or there will be none);
    ``stop`` on EOF or a signal.
    """

    def __init__(self, fd):
        self.fd = fd
        self.header = None
        self.ready = threading.Event()
        self.stop = threading.Event()

    def start(self):
        threading.Thread(target=self._run, name="stdin", daemon=True).start()
        return self

    def request_stop(self):
        self.stop.set()
        self.ready.set()

    def _run(self):
        data = b""
        try:
            while b"\n" not in data:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                data += chunk
            if b"\n" in data:
                self.header = data.split(b"\n", 1)[0]
                self.ready.set()
                while os.read(self.fd, 65536):
                    pass
        except OSError:
            pass
        finally:
            self.request_stop()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python3 -m hpc.outbox_follower",
        description="Stream new complete outbox lines of a mailbox to stdout, from a cursor.",
    )
    parser.add_argument("--mailbox", required=True, help="the mailbox directory")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=DEFAULTS["poll_seconds"],
        help="poll interval while lines arrive (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-poll-seconds",
        type=float,
        default=DEFAULTS["idle_poll_seconds"],
        help="longest poll interval when idle (default: %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=DEFAULTS["heartbeat_seconds"],
        help="write an H line after this long without output (default: %(default)s)",
    )
    return parser.parse_args(argv)


def run(follower, write, stop, args):
    """Poll until ``stop`` is set: fast while lines arrive, backing off when idle."""
    poll = max(args.poll_seconds, 0.0)
    idle = max(args.idle_poll_seconds, poll)
    interval = poll
    last_active = last_write = time.monotonic()
    first = True
    while not stop.is_set():
        lines, more = follower.poll()
        now = time.monotonic()
        if lines:
            last_active = now
        wrote = follower.flush()
        if first or (not wrote and now - last_write >= args.heartbeat_seconds):
            write(follower_wire.heartbeat_record(time.time()))
            first = False
            wrote = True
        if wrote:
            last_write = now
        if more:
            continue
        if now - last_active < ACTIVE_WINDOW_SECONDS:
            interval = poll
        else:
            interval = min(max(interval, 0.001) * 2, idle)
        stop.wait(max(0.0, min(interval, args.heartbeat_seconds - (now - last_write))))
    return 0


def main(argv=None):
    args = parse_args(argv)
    out = sys.stdout.buffer

    def write(data):
        out.write(data)
        out.flush()

    try:
        if not os.path.isdir(args.mailbox):
            missing = "mailbox directory %s does not exist" % args.mailbox
            write(follower_wire.problem_record(missing))
            return 2
        watcher = StdinWatcher(sys.stdin.fileno())

        def on_signal(signum, frame):
            # Setting an Event takes its lock, which the interrupted main thread may hold.
            threading.Thread(target=watcher.request_stop, daemon=True).start()

        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), on_signal)
        watcher.start().ready.wait()
        if watcher.header is None:
            return 0
        try:
            cursor, jobs, from_end = follower_wire.parse_header(watcher.header)
        except follower_wire.HeaderError as exc:
            write(follower_wire.problem_record(str(exc)))
            return 2
        follower = Follower(args.mailbox, cursor, jobs, write, from_end)
        return run(follower, write, watcher.stop, args)
    except BrokenPipeError:
        # Nobody reads stdout any more; keep interpreter shutdown from flushing into the pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
