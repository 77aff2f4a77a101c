"""Outbox follower throughput: N lines across 64 outbox files, through ``hpc.outbox_follower``.

Two figures through the follower, each beside a baseline measured in the same run:
- catch-up: the lines are already on disk when the follower starts (a router reconnecting),
  beside ``cat`` of the same files to /dev/null and a plain Python read that splits lines;
- live: a writer process appends the lines round-robin, one ``write`` each, while the follower
  runs, beside the writer alone (the rate the follower has to keep up with).
Target: well over 20,000 lines/s.

Run: python benchmarks/follower_throughput.py [--lines 200000] [--files 64]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeswarm.hpc import mailbox_io, records  # noqa: E402

WRITER = r"""
import os, sys
from hpc import records
outbox, lines, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fds = [os.open(os.path.join(outbox, "9000_%d.jsonl" % n), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
               0o600) for n in range(files)]
for i in range(lines):
    n = i % files
    event = records.outbox_event("assistant_delta", "9000", n, i // files,
                                 injection_id="bench", delta="token %d of a streamed reply" % i)
    os.write(fds[n], records.encode_line(event).encode())
"""


def write_lines(outbox: Path, lines: int, files: int) -> float:
    """Append the lines with the writer process; return its wall time."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", WRITER, str(outbox), str(lines), str(files)], cwd=ROOT, check=True
    )
    return time.perf_counter() - started


class Follower:
    def __init__(self, mailbox: Path):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hpc.outbox_follower", "--mailbox", str(mailbox)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"{}\n")
        self.process.stdin.flush()

    def read(self, lines: int, until_heartbeat: bool = False) -> float:
        """Count L lines until ``lines`` arrived (or the first H); return the time it was."""
        assert self.process.stdout is not None
        seen = 0
        for line in self.process.stdout:
            if line.startswith(b"L\t"):
                seen += 1
                if seen == lines:
                    return time.perf_counter()
            elif until_heartbeat and line.startswith(b"H\t"):
                return time.perf_counter()
        raise RuntimeError(f"follower ended after {seen} of {lines} lines")

    def stop(self) -> float:
        """End it by closing stdin; return the CPU seconds all finished children used so far."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def rate(lines: int, seconds: float) -> str:
    return f"{lines / seconds:>12,.0f} lines/s  ({seconds * 1000:8.1f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=64)
    args = parser.parse_args()
    n, files = args.lines, args.files
    base = Path(tempfile.mkdtemp(prefix="follower-bench-"))
    try:
        mailbox = base / "mailbox"
        mailbox_io.ensure_mailbox(str(mailbox))
        outbox = mailbox / records.OUTBOX_DIR
        write_lines(outbox, n, files)
        paths = sorted(outbox.glob("*.jsonl"))
        size = sum(p.stat().st_size for p in paths)
        print(f"{n:,} lines, {files} files, {size / 1e6:.1f} MB")

        started = time.perf_counter()
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
        cat = time.perf_counter() - started
        started = time.perf_counter()
        count = sum(len(p.read_bytes().splitlines()) for p in paths)
        python_read = time.perf_counter() - started
        assert count == n

        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_before_s = cpu_before.ru_utime + cpu_before.ru_stime
        follower = Follower(mailbox)
        done = follower.read(n)
        catch_up = done - follower.started
        cpu = follower.stop() - cpu_before_s
        print("catch-up (lines on disk, follower start included)")
        print(f"  follower                      {rate(n, catch_up)}  cpu {cpu:.2f} s")
        print(f"  baseline: cat > /dev/null     {rate(n, cat)}")
        print(f"  baseline: Python read + split {rate(n, python_read)}")

        shutil.rmtree(mailbox)
        mailbox_io.ensure_mailbox(str(mailbox))
        follower = Follower(mailbox)
        follower.read(0, until_heartbeat=True)  # up, first poll done
        started = time.perf_counter()
        write_alone = write_lines(outbox, n, files)
        done = follower.read(n)
        live = done - started
        follower.stop()
        shutil.rmtree(mailbox)
        mailbox_io.ensure_mailbox(str(mailbox))
        writer_only = write_lines(mailbox / records.OUTBOX_DIR, n, files)
        print("live (a writer process appends while the follower runs)")
        print(f"  writer start -> last line out {rate(n, live)}  (writer took {write_alone:.2f} s)")
        print(f"  baseline: writer alone       {rate(n, writer_only)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
