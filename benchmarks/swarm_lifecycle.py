"""A router that runs for months: launch and terminate 1,000 swarms of 4 nodes through one.

Each swarm (simulated workers, one process a swarm) is launched, answers one prompt on every
node, and is terminated; the router must then release it. Printed after the first 10 swarms
(the baseline, same run) and after all of them: the router's threads, its RSS, the swarms it
still follows, and the size of the follower header it would send (target: threads and RSS
within 10% of the baseline, header under 4 KB).

Swarms go through in waves of ``--wave`` live at once, 10 by default: the baseline is taken
after a first wave of 10, and the router's RSS follows its peak concurrency (each live node has
an actor thread, whose stack glibc keeps for the next thread), so a larger wave measures that
high-water mark, not what finished swarms leave behind (waves of 25: +12%, of 10: +5%).

Ended swarms keep their registry records until ``codeswarm prune``; ``--prune`` prunes after
every wave, as a daemon's operator would (``codeswarm prune --older-than 0``), to show what of
the growth is those records.

Run: .venv/bin/python benchmarks/swarm_lifecycle.py [--swarms 1000] [--wave 10] [--prune]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeswarm.config import parse_config  # noqa: E402
from codeswarm.embed import Codeswarm  # noqa: E402
from codeswarm.prune import prune as prune_swarms  # noqa: E402
from tests.support.simulated_workers import SimulatedScheduler  # noqa: E402

NODES = 4


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(swarms: Codeswarm, want: dict[str, int], timeout: float = 120.0) -> None:
    """Consume events until each type in ``want`` has been seen that many times."""
    seen = dict.fromkeys(want, 0)
    deadline = time.monotonic() + timeout
    while any(seen[k] < n for k, n in want.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"saw {seen}, wanted {want}")
        for event in swarms.events(timeout=1.0):
            if event["type"] in seen:
                seen[event["type"]] += 1
            break


def wave(swarms: Codeswarm, scheduler: SimulatedScheduler, count: int, prune: bool) -> None:
    launched = [swarms.launch(nodes=NODES)["swarm_id"] for _ in range(count)]
    wait_for(swarms, {"node_started": NODES * count})
    for swarm_id in launched:
        swarms.inject(swarm_id, "hello", nodes="all")
    wait_for(swarms, {"usage": NODES * count})
    for swarm_id in launched:
        swarms.terminate(swarm_id)
    wait_for(swarms, {"node_exited": NODES * count})
    supervisor = swarms.router.supervisor.proxy()
    deadline = time.monotonic() + 60
    while supervisor.table.get().followed:
        if time.monotonic() > deadline:
            raise TimeoutError("finished swarms were not released")
        time.sleep(0.1)
    scheduler.children = [child for child in scheduler.children if child.poll() is None]
    if prune:
        prune_swarms(swarms.router.registry, swarms.router.transport, older_than=0)


def figures(swarms: Codeswarm) -> dict[str, float]:
    supervisor = swarms.router.supervisor.proxy()
    cursor = supervisor.cursor.get()
    header = {"cursor": cursor.offsets, "jobs": sorted(supervisor.table.get().followed)}
    return {
        "threads": threading.active_count(),
        "rss_mb": rss_mb(),
        "followed": len(supervisor.table.get().followed),
        "header_bytes": len(json.dumps(header)),
        "registry_kb": swarms.router.registry.path.stat().st_size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swarms", type=int, default=1000)
    parser.add_argument("--wave", type=int, default=10, help="swarms live at once")
    parser.add_argument("--prune", action="store_true", help="prune ended swarms every wave")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "backend": "local",
                "cluster": {"workspace_root": f"{tmp}/ws"},
                "router": {"state_dir": f"{tmp}/state", "follower_idle_poll_seconds": 0.2},
            }
        )
        scheduler = SimulatedScheduler(config.cluster.cluster_dir)
        started = time.monotonic()
        with Codeswarm(config, scheduler=scheduler) as swarms:
            wave(swarms, scheduler, 10, args.prune)
            baseline = figures(swarms)
            done = 10
            while done < args.swarms:
                count = min(args.wave, args.swarms - done)
                wave(swarms, scheduler, count, args.prune)
                done += count
                print(f"  {done} swarms, {time.monotonic() - started:.0f} s", file=sys.stderr)
            final = figures(swarms)
        scheduler.close()
    pruned = ", pruned every wave" if args.prune else ", ended ones kept in the registry"
    print(f"{args.swarms} swarms of {NODES} nodes launched, answered and terminated{pruned}")
    print(f"{'':24}{'after 10 (baseline)':>22}{f'after {args.swarms}':>16}{'change':>10}")
    for key, label in (
        ("threads", "threads"),
        ("rss_mb", "RSS (MB)"),
        ("followed", "swarms followed"),
        ("header_bytes", "follower header (B)"),
        ("registry_kb", "registry file (KB)"),
    ):
        before, after = baseline[key], final[key]
        change = f"{(after - before) / before * 100:+.1f}%" if before else "-"
        print(f"{label:24}{before:>22.1f}{after:>16.1f}{change:>10}")


if __name__ == "__main__":
    main()
