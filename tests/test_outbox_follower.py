"""The outbox follower as a real process on a temporary mailbox: exactly-once, resumable."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codeswarm.hpc import mailbox_io

ROOT = Path(__file__).resolve().parents[1]
PY38 = Path.home() / ".pyenv" / "versions" / "3.8.18" / "bin" / "python3.8"
PYTHONS = [sys.executable] + ([str(PY38)] if PY38.exists() else [])


class Run:
    """One follower process; a thread collects its stdout records."""

    def __init__(self, mailbox: Path, python: str, header: dict | None = None, *extra: str):
        argv = [python, "-m", "hpc.outbox_follower", "--mailbox", str(mailbox)]
        argv += ["--poll-seconds", "0.005", "--idle-poll-seconds", "0.05", *extra]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.records: list[list[bytes]] = []
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if header is not None:
            self.send(json.dumps(header).encode() + b"\n")

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            assert line.endswith(b"\n"), line
            self._queue.put(line[:-1].split(b"\t", 4))
        self._queue.put(None)

    def _take(self, timeout: float) -> bool:
        try:
            record = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False
        if record is None:
            return False
        self.records.append(record)
        return True

    def lines(self) -> list[list[bytes]]:
        return [r for r in self.records if r[0] == b"L"]

    def errors(self) -> list[str]:
        return [r[1].decode() for r in self.records if r[0] == b"E"]

    def wait(self, predicate, timeout: float = 10.0) -> list[list[bytes]]:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if not self._take(deadline - time.monotonic()) and time.monotonic() >= deadline:
                raise AssertionError(f"timed out; records so far: {self.records[-5:]}")
        return self.lines()

    def wait_started(self) -> None:
        """Wait for the first heartbeat, which follows the follower's first poll."""
        self.wait(lambda run: any(r[0] == b"H" for r in run.records))

    def wait_lines(self, count: int, timeout: float = 10.0) -> list[list[bytes]]:
        return self.wait(lambda run: len(run.lines()) >= count, timeout)

    def settle(self, seconds: float = 0.1) -> None:
        """Let the follower poll a few more times (a few active intervals)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._take(deadline - time.monotonic())

    def stop(self, timeout: float = 5.0) -> int:
        """Close stdin (EOF ends the follower), collect what is left, return the exit status."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        rc = self.process.wait(timeout=timeout)
        while self._take(timeout):
            pass
        return rc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=PYTHONS, ids=lambda p: "py38" if p == str(PY38) else "py")
def follower(request, tmp_path):
    runs: list[Run] = []

    def start(header: dict | None = None, *extra: str, send_header: bool = True) -> Run:
        header = (header or {}) if send_header else None
        run = Run(tmp_path / "mailbox", request.param, header, *extra)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


@pytest.fixture
def mailbox(tmp_path) -> Path:
    mailbox_io.ensure_mailbox(str(tmp_path / "mailbox"))
    return tmp_path / "mailbox"


def append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def event(n: int, tag: str = "x") -> bytes:
    return json.dumps({"seq": n, "tag": tag}).encode() + b"\n"


def raw(lines: list[list[bytes]], key: str | None = None) -> list[bytes]:
    return [r[4] for r in lines if key is None or r[1] == key.encode()]


def cursor_of(lines: list[list[bytes]]) -> dict[str, int]:
    cursor: dict[str, int] = {}
    for record in lines:
        cursor[record[2].decode()] = int(record[3])
    return cursor


def ident(path: Path, key: str) -> str:
    return f"{key}:{path.stat().st_ino}"


def test_lines_in_several_writes_and_a_line_in_two_halves(follower, mailbox):
    path = mailbox / "outbox" / "100_0.jsonl"
    append(path, event(0))
    run = follower()
    run.wait_lines(1)
    append(path, event(1) + event(2))
    half = event(3)
    append(path, half[:7])
    run.wait_lines(3)
    run.settle()
    assert len(run.lines()) == 3  # the half line waits
    append(path, half[7:] + event(4))
    lines = run.wait_lines(5)
    assert run.stop() == 0

    assert raw(run.lines()) == [event(n).rstrip(b"\n") for n in range(5)]
    assert {r[1] for r in lines} == {b"100_0"}
    assert {r[2].decode() for r in lines} == {ident(path, "100_0")}
    ends = [int(r[3]) for r in lines]
    assert ends == [len(b"".join(event(n) for n in range(k + 1))) for k in range(5)]
    assert run.errors() == []
    # The first poll's lines, then a heartbeat that says the first poll is done.
    assert [r[0] for r in run.records[:2]] == [b"L", b"H"]


def test_several_files_at_once(follower, mailbox):
    keys = [f"200_{n}" for n in range(5)]
    for key in keys:
        append(mailbox / "outbox" / f"{key}.jsonl", b"".join(event(i, key) for i in range(3)))
    run = follower()
    run.wait_lines(15)
    for key in keys:
        append(mailbox / "outbox" / f"{key}.jsonl", event(3, key))
    run.wait_lines(20)
    assert run.stop() == 0
    for key in keys:
        assert raw(run.lines(), key) == [event(i, key).rstrip(b"\n") for i in range(4)]
    assert len(run.lines()) == 20


def test_resume_from_a_cursor_repeats_and_loses_nothing(follower, mailbox):
    path = mailbox / "outbox" / "300_0.jsonl"
    append(path, b"".join(event(n) for n in range(5)))
    first = follower()
    seen = first.wait_lines(5)
    assert first.stop() == 0
    # The router handled only three lines before it went away; two more arrive meanwhile.
    cursor = cursor_of(seen[:3])
    append(path, event(5) + event(6))
    second = follower({"cursor": cursor})
    second.wait_lines(4)
    second.settle()
    assert second.stop() == 0
    assert raw(second.lines()) == [event(n).rstrip(b"\n") for n in range(3, 7)]


def test_from_end_skips_what_was_there_and_streams_what_comes(follower, mailbox):
    old = mailbox / "outbox" / "310_0.jsonl"
    append(old, event(0) + event(1) + b'{"seq": 2, "half')
    run = follower({"from_end": True})
    run.wait_started()
    append(old, b'": 1}\n' + event(3))
    new = mailbox / "outbox" / "311_0.jsonl"
    append(new, event(0, "new"))
    run.wait_lines(3)
    run.settle()
    assert run.stop() == 0
    assert raw(run.lines(), "310_0") == [b'{"seq": 2, "half": 1}', event(3).rstrip(b"\n")]
    assert raw(run.lines(), "311_0") == [event(0, "new").rstrip(b"\n")]


def test_a_nodes_runs_are_read_oldest_first_even_with_a_backlog(follower, mailbox):
    # Three runs of one requeued node, the first with more than one read's worth of lines.
    runs = [
        ("archive", "410_0.jsonl", 0, 3000),
        ("archive", "410_0.r2.jsonl", 3000, 10),
        ("archive", "410_0.r10.jsonl", 3010, 10),
        ("outbox", "410_0.jsonl", 3020, 10),
    ]
    for directory, name, first, count in runs:
        append(
            mailbox / directory / name,
            b"".join(event(n, "p" * 500) for n in range(first, first + count)),
        )
    run = follower({"jobs": ["410"]})
    run.wait_lines(3030, timeout=30)
    assert run.stop() == 0
    seqs = [json.loads(line)["seq"] for line in raw(run.lines(), "410_0")]
    assert seqs == list(range(3030))


def test_file_archived_while_stopped_is_finished_from_the_cursor(follower, mailbox):
    path = mailbox / "outbox" / "400_1.jsonl"
    append(path, event(0) + event(1))
    first = follower()
    cursor = cursor_of(first.wait_lines(2))
    assert first.stop() == 0
    append(path, event(2) + event(3))
    os.rename(path, mailbox / "archive" / "400_1.jsonl")
    second = follower({"cursor": cursor})
    lines = second.wait_lines(2)
    second.settle()
    assert second.stop() == 0
    assert raw(second.lines()) == [event(2).rstrip(b"\n"), event(3).rstrip(b"\n")]
    assert {r[2].decode() for r in lines} == set(cursor)


def test_requeued_run_reads_from_zero_and_the_archived_run_is_finished(follower, mailbox):
    key = "500_0"
    outbox = mailbox / "outbox" / f"{key}.jsonl"
    append(outbox, event(0, "run1"))
    first = follower()
    cursor = cursor_of(first.wait_lines(1))
    assert first.stop() == 0
    # While no follower runs: run 1 ends and is archived, the requeued run 2 starts.
    append(outbox, event(1, "run1"))
    mailbox_io.archive_outbox(str(mailbox), "500", 0)
    append(outbox, event(0, "run2") + event(1, "run2"))
    run2 = ident(outbox, key)
    assert run2 not in cursor
    second = follower({"cursor": cursor})
    second.wait_lines(3)
    # Live: run 2 writes once more and is archived as 500_0.r1.jsonl right away.
    append(outbox, event(2, "run2"))
    mailbox_io.archive_outbox(str(mailbox), "500", 0)
    lines = second.wait_lines(4)
    second.settle()
    assert second.stop() == 0
    by_ident = {}
    for record in lines:
        by_ident.setdefault(record[2].decode(), []).append(record[4])
    assert by_ident == {
        next(iter(cursor)): [event(1, "run1").rstrip(b"\n")],
        run2: [event(n, "run2").rstrip(b"\n") for n in range(3)],
    }
    assert (mailbox / "archive" / f"{key}.r1.jsonl").exists()


def test_archives_not_in_the_cursor_are_read_only_for_listed_jobs(follower, mailbox):
    archive = mailbox / "archive"
    append(archive / "600_0.jsonl", event(0, "600_0"))
    append(archive / "600_1.r2.jsonl", event(0, "600_1"))
    append(archive / "700_0.jsonl", event(0, "700_0"))
    append(mailbox / "outbox" / "800_0.jsonl", event(0, "800_0"))
    run = follower({"jobs": ["600"]})
    run.wait_lines(3)
    run.settle()
    assert run.stop() == 0
    assert sorted(r[1] for r in run.lines()) == [b"600_0", b"600_1", b"800_0"]
    assert run.errors() == []


def test_an_archive_appearing_while_it_runs_is_read_whatever_its_job(follower, mailbox):
    run = follower()
    run.wait_started()
    run.settle(0.05)
    # Created and archived between two polls, as a worker that fails at once would.
    append(mailbox / "archive" / "650_0.jsonl", event(0, "650_0") + event(1, "650_0"))
    run.wait_lines(2)
    assert run.stop() == 0
    assert raw(run.lines()) == [event(0, "650_0").rstrip(b"\n"), event(1, "650_0").rstrip(b"\n")]


def test_eof_on_stdin_ends_it_promptly(follower, mailbox):
    run = follower({}, "--idle-poll-seconds", "1.0")
    run.wait_started()  # it is up and idle
    run.settle(0.3)
    started = time.monotonic()
    assert run.stop(timeout=5) == 0
    assert time.monotonic() - started < 2.0


def test_eof_before_the_header_and_sigterm_end_it_with_status_0(follower, mailbox):
    run = follower(send_header=False)
    run.process.stdin.close()
    assert run.process.wait(timeout=5) == 0
    run = follower({})
    run.wait_started()
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=5) == 0


def test_missing_mailbox_and_bad_header_exit_2(follower, tmp_path, mailbox):
    run = Run(tmp_path / "nowhere", PYTHONS[0])  # no header: it may exit before reading
    assert run.stop() == 2
    assert run.errors() and "does not exist" in run.errors()[0]
    run = follower({"cursor": {"no-inode": 3}})
    assert run.stop() == 2
    assert "cursor key" in run.errors()[0]
    run = follower({"cursor": {"1000_\u00b2:7": 3}})
    assert run.stop() == 2
    assert "cursor key" in run.errors()[0]


def test_non_utf8_line_passes_through_byte_exact(follower, mailbox):
    line = b'{"seq":0,"text":"\xff\xfe\x80 tab\there"}'
    append(mailbox / "outbox" / "900_0.jsonl", line + b"\n")
    run = follower()
    assert raw(run.wait_lines(1)) == [line]
    assert run.stop() == 0


def test_a_bad_file_name_gives_one_error_line(follower, mailbox):
    append(mailbox / "outbox" / "not-a-node.jsonl", event(0))
    append(mailbox / "outbox" / ".nfs0000000000abcd", event(0))
    append(mailbox / "outbox" / "1000_\u00b2.jsonl", event(0))  # isdigit(), but not int()
    run = follower()
    run.wait(lambda r: len(r.errors()) == 2)
    append(mailbox / "outbox" / "1000_0.jsonl", event(0))
    run.wait_lines(1)
    run.settle()
    assert run.stop() == 0
    assert len(run.errors()) == 2
    assert any("not-a-node.jsonl" in error for error in run.errors())
    assert raw(run.lines(), "1000_0") == [event(0).rstrip(b"\n")]


def test_cursor_offset_inside_a_line_rereads_from_zero(follower, mailbox):
    path = mailbox / "outbox" / "1100_0.jsonl"
    append(path, event(0) + event(1))
    run = follower({"cursor": {ident(path, "1100_0"): 5}})
    run.wait_lines(2)
    assert run.stop() == 0
    assert raw(run.lines()) == [event(0).rstrip(b"\n"), event(1).rstrip(b"\n")]
    assert len(run.errors()) == 1 and "not at a line start" in run.errors()[0]


def test_ten_quick_writers_arrive_exactly_once_in_order(follower, mailbox):
    run = follower()
    run.wait_started()
    keys = [f"1200_{n}" for n in range(10)]

    def write(key: str) -> None:
        path = mailbox / "outbox" / f"{key}.jsonl"
        for i in range(100):
            append(path, event(i, key))
        if key.endswith(("_1", "_2")):  # two are archived at once, maybe before all is read
            os.rename(path, mailbox / "archive" / f"{key}.jsonl")

    writers = [threading.Thread(target=write, args=(key,)) for key in keys]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=10)
    run.wait_lines(1000)
    run.settle()
    assert run.stop() == 0
    assert len(run.lines()) == 1000
    for key in keys:
        assert raw(run.lines(), key) == [event(i, key).rstrip(b"\n") for i in range(100)]


def test_a_long_running_follower_keeps_state_only_for_files_still_there(mailbox):
    from codeswarm.hpc.outbox_follower import Follower

    written: list[bytes] = []
    follower = Follower(str(mailbox), {}, [], written.append)
    follower.poll()  # the first listing: from now on every new archive is followed
    for job in range(50):
        outbox = mailbox / "outbox" / f"{job}_0.jsonl"
        append(outbox, event(0) + event(1))
        follower.poll()
        mailbox_io.archive_outbox(str(mailbox), str(job), 0)
        follower.poll()
    follower.flush()
    records = b"".join(written).splitlines()
    assert sum(r.startswith(b"L\t") for r in records) == 100  # every line once
    assert len(follower.offsets) == 0  # finished archives need no offset
    assert len(follower.skip) == 50
    for path in (mailbox / "archive").iterdir():
        path.unlink()  # codeswarm prune
    follower.poll()
    assert follower.skip == set()


def test_a_poll_opens_only_grown_outboxes_and_sweeps_the_quiet_ones_in_turn(mailbox, monkeypatch):
    from codeswarm.hpc import outbox_follower

    opened: list[str] = []
    statted: list[str] = []
    real_open, real_stat = os.open, os.stat

    def counting_open(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    def counting_stat(path, *args, **kwargs):
        if str(path).endswith(".jsonl"):
            statted.append(os.path.basename(path))
        return real_stat(path, *args, **kwargs)

    for node in range(20):
        append(mailbox / "outbox" / f"9_{node}.jsonl", event(0, tag=str(node)))
    monkeypatch.setattr(outbox_follower.os, "open", counting_open)  # os itself: poll only
    monkeypatch.setattr(outbox_follower.os, "stat", counting_stat)
    monkeypatch.setattr(outbox_follower, "STAT_AT_LEAST", 0)  # as if these were 10,000
    now = [1000.0]
    written: list[bytes] = []
    follower = outbox_follower.Follower(str(mailbox), {}, [], written.append, clock=lambda: now[0])
    follower.poll()  # the first poll opens every file
    assert len(opened) == 20

    # Every outbox had lines just now: each poll stats them all, and opens only the grown one.
    append(mailbox / "outbox" / "9_7.jsonl", event(1))
    opened.clear()
    statted.clear()
    now[0] += 0.01
    follower.poll()
    assert opened == ["9_7.jsonl"]
    assert len(statted) == 20

    # Quiet past the active window: a poll stats only its share of the quiet outboxes (each
    # once in STAT_SWEEP_SECONDS) and opens its share (each once in REOPEN_SECONDS).
    now[0] += outbox_follower.ACTIVE_WINDOW_SECONDS
    follower.poll()
    append(mailbox / "outbox" / "9_3.jsonl", event(1))
    step = outbox_follower.STAT_SWEEP_SECONDS / 4
    opened.clear()
    statted.clear()
    polls = round(outbox_follower.REOPEN_SECONDS / step)
    for _ in range(polls):
        now[0] += step
        follower.poll()
        assert len(statted) <= 5 + 1  # its share, and 9_3 once it had its line
        statted.clear()
    quiet = sorted(f"9_{n}.jsonl" for n in range(20) if n != 3)
    assert sorted(set(opened) - {"9_3.jsonl"}) == quiet
    follower.flush()
    lines = [r for r in b"".join(written).splitlines() if r.startswith(b"L\t")]
    assert len(lines) == 22


def test_a_new_run_behind_a_stale_listing_waits_for_the_old_runs_last_lines(mailbox, monkeypatch):
    """A directory whose timestamps did not move (coarse or cached, as on Lustre or NFS) keeps
    the old listing: the outbox that listing names was archived and made anew since. Its new
    run is not read through the old entry, before the old run's last lines in archive/."""
    from codeswarm.hpc import outbox_follower

    now = [1000.0]
    written: list[bytes] = []
    follower = outbox_follower.Follower(str(mailbox), {}, [], written.append, clock=lambda: now[0])
    outbox = mailbox / "outbox" / "9_0.jsonl"
    append(outbox, event(0))
    follower.poll()
    append(outbox, event(1, tag="old run's last"))
    mailbox_io.archive_outbox(str(mailbox), "9", 0)
    append(outbox, event(2, tag="new run"))
    relist = outbox_follower.Follower._list
    monkeypatch.setattr(outbox_follower.Follower, "_list", lambda self, now: None)
    now[0] += 0.01
    follower.poll()  # the stale listing: the old outbox's entry, a new file at its path
    monkeypatch.setattr(outbox_follower.Follower, "_list", relist)
    now[0] += 0.01
    follower.poll()
    follower.flush()
    lines = [r for r in b"".join(written).splitlines() if r.startswith(b"L\t")]
    assert [json.loads(r.split(b"\t", 4)[4])["seq"] for r in lines] == [0, 1, 2]
