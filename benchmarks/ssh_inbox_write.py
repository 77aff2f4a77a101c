"""Inbox writes over SSH: codeswarm's one connection beside one ``ssh`` process per write.

The original design ran ``ssh <alias> 'cat >> inbox'`` for every injection. This measures
100 single writes both ways, a 64-node fan-out, and fan-outs to 1,024 and 10,000 nodes as the
node shards write them (batch frames, each append answered once durable; target 0.3 s for
1,024) beside the path before them (a thread a node, one request each, through the same
long-lived writer), against the minicluster (tests/cluster/minicluster; run as root: it starts
the cluster if it is not up).

Run: .venv/bin/python benchmarks/ssh_inbox_write.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeswarm.backends.ssh import SSHConnection  # noqa: E402
from codeswarm.backends.ssh_transport import SSHTransport  # noqa: E402
from codeswarm.config import parse_config  # noqa: E402
from codeswarm.hpc import records  # noqa: E402
from tests.support.cluster import minicluster_up  # noqa: E402


def ms(values: list[float]) -> str:
    ordered = sorted(v * 1000 for v in values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms"


def fan_out_both_ways(transport: SSHTransport, line: bytes, nodes: int) -> tuple[float, float]:
    """Seconds to append ``line`` to ``nodes`` inboxes batched, and a thread per node."""
    job = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    results = transport.append_inboxes([(f"{job}a", node, [line]) for node in range(nodes)])
    batched = time.perf_counter() - started
    assert results == [None] * nodes, [r for r in results if r is not None][:1]
    threads = [
        threading.Thread(target=transport.append_inbox, args=(f"{job}b", node, [line]))
        for node in range(nodes)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return batched, time.perf_counter() - started


def main() -> None:
    env = minicluster_up()
    workspace = f"{env['MINICLUSTER_HOME']}/bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["install", "-d", "-o", env["MINICLUSTER_USER"], workspace], check=True)
    config = parse_config(
        {
            "ssh": {
                "login_alias": env["MINICLUSTER_SSH_ALIAS"],
                "ssh_config": env["MINICLUSTER_SSH_CONFIG"],
            },
            "cluster": {"workspace_root": workspace},
        }
    )
    connection = SSHConnection(config.ssh)
    transport = SSHTransport(connection, config.cluster.cluster_dir, "python3", 0.02, 1.0)
    transport.prepare()
    line = records.encode_line(records.inbox_user("bench", "hello")).encode()
    ssh = ["ssh", "-F", env["MINICLUSTER_SSH_CONFIG"], env["MINICLUSTER_SSH_ALIAS"]]
    try:
        ours, theirs = [], []
        for n in range(100):
            started = time.perf_counter()
            transport.append_inbox("1", n % 4, [line])
            ours.append(time.perf_counter() - started)
            path = f"{transport.mailbox}/inbox/{records.record_name('2', n % 4)}"
            started = time.perf_counter()
            subprocess.run([*ssh, f"cat >> {path}"], input=line, check=True)
            theirs.append(time.perf_counter() - started)
        print("one inbox write, 100 times")
        print(f"  codeswarm (one connection, one writer)     {ms(ours)}")
        print(f"  baseline: one ssh process per write         {ms(theirs)}")

        started = time.perf_counter()
        threads = [
            threading.Thread(target=transport.append_inbox, args=("3", node, [line]))
            for node in range(64)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fan_out = time.perf_counter() - started
        started = time.perf_counter()
        for node in range(64):
            path = f"{transport.mailbox}/inbox/{records.record_name('4', node)}"
            subprocess.run([*ssh, f"cat >> {path}"], input=line, check=True)
        sequential = time.perf_counter() - started
        print("fan-out to 64 nodes")
        print(f"  codeswarm (64 threads, one writer)          {fan_out * 1000:7.1f} ms")
        print(f"  baseline: 64 ssh processes in turn          {sequential * 1000:7.1f} ms")
        for nodes in (1024, 10_000):
            batched, threaded = fan_out_both_ways(transport, line, nodes)
            print(f"fan-out to {nodes:,} nodes (target 0.3 s for 1,024)")
            print(f"  codeswarm (batch frames, one round trip)    {batched * 1000:7.1f} ms")
            print(f"  baseline: a thread and a request per node   {threaded * 1000:7.1f} ms")
    finally:
        connection.close()
        subprocess.run(["rm", "-rf", workspace], check=False)


if __name__ == "__main__":
    main()
