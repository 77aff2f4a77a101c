"""The activity stream at scale, on the local backend with simulated workers, beside baselines.

1. Events per second through worker (the activity translation of ``hpc/activity.py``),
   follower, router and the protocol output, with ``command_output_delta`` events flowing on
   64 simulated nodes (target >= 50,000/s), beside the follower process alone on the same
   files.
2. Router RSS while one node's command prints 50 MB (target: within 20 MB of idle), beside
   the RSS before it started; and how much of the output reached the outbox.

Run: .venv/bin/python benchmarks/activity_stream.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from router_scale import Bench, follower_alone, rss_mb  # noqa: E402

from codeswarm.actors.messages import CommandReceived  # noqa: E402
from codeswarm.protocol import commands  # noqa: E402

NODES = 64
LINES_PER_NODE = 1000  # 60-byte lines: 60 KB a node, under the default 64 KiB bound
HUGE_LINES, HUGE_LINE_BYTES = 6400, 8192  # 52 MB


def inject(bench: Bench, swarm_id: str, content: str) -> None:
    bench.router.tell(
        CommandReceived(commands.Inject(content=content, nodes="all", swarm_id=swarm_id))
    )


def throughput(bench: Bench) -> None:
    swarm = bench.launch(NODES)
    before = len(bench.output.lines)
    # per node: inject_ack, inject_delivered, turn_started, item_started, the deltas,
    # item_completed, assistant, turn_complete, usage (a predicate that counts types would
    # cost more than the router, run on each event)
    expected = NODES * (LINES_PER_NODE + 8)
    started = time.time()
    inject(bench, swarm["swarm_id"], f"command {LINES_PER_NODE} 60")
    last = bench.output.wait_count(before + expected, timeout=600)  # parses nothing meanwhile
    rate = expected / (last - started)
    events = bench.output.wait(lambda evs: True)[before : before + expected]
    deltas = sum(1 for _, e in events if e["type"] == "command_output_delta")
    outboxes = (Path(bench.mailbox) / "outbox").iterdir()
    alone = follower_alone(bench.mailbox, sum(len(f.read_bytes().splitlines()) for f in outboxes))
    print(
        f"events/s through worker, follower, router and output, {NODES} nodes "
        f"({deltas:,} command_output_delta of {len(events):,} events): {rate:,.0f} "
        f"(target 50,000); follower alone: {alone:,.0f} lines/s"
    )


def huge_output(bench: Bench) -> None:
    swarm = bench.launch(1)
    idle = rss_mb()
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    before = len(bench.output.events)
    started = time.time()
    inject(bench, swarm["swarm_id"], f"command {HUGE_LINES} {HUGE_LINE_BYTES}")
    events = bench.output.wait(
        lambda evs: any(e["type"] == "usage" for _, e in evs[before:]), timeout=600
    )
    took = time.time() - started
    done.set()
    sampler.join()
    forwarded = [e for _, e in events[before:] if e["type"] == "command_output_delta"]
    streamed = sum(len(e["delta"].encode()) for e in forwarded)
    logs = Path(bench.mailbox) / "logs" / f"{swarm['job_id']}_0"
    kept = sum(f.stat().st_size for f in logs.iterdir())
    total = HUGE_LINES * HUGE_LINE_BYTES
    print(
        f"router RSS while a node's command prints {total / 1e6:.0f} MB: peak {peak[0]:.1f} MB "
        f"(target within 20 MB of idle); idle before it: {idle:.1f} MB; {len(forwarded)} "
        f"output events, {streamed / 1024:.0f} KiB, reached the router; {kept / 1e6:.1f} MB "
        f"kept in the log dir; {took:.1f} s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        try:
            # a program that wants the output streams asks for them: the default leaves them out
            bench.protocol.tell(commands.Subscribe(events=("*",)))
            throughput(bench)
            huge_output(bench)
        finally:
            bench.close()


if __name__ == "__main__":
    main()
