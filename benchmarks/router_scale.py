"""Router scale on the local backend with simulated workers, each figure beside a baseline.

1. Fan-out of one ``nodes:"all"`` inject to 64, 256, 1,024 and 10,000 nodes, until every
   ``inject_delivered`` (issue 10: 1,024 in 0.15 s, 10,000 in 1.5 s), each swarm terminated
   after it is measured. Baseline, with ``--baseline-tree DIR``: the same measurement run on
   the code in DIR (the router and simulated workers before the change, e.g. ``git archive
   <commit> | tar -x -C DIR``) in the same run; else one process per inbox write, the way the
   original design ran one ``ssh`` per injection.
2. Router RSS with 1,024 nodes (target <= 150 MB), beside the RSS before launching.
3. Events per second through the simulated workers' outbox writes, follower, router and the
   protocol output with 16 and 64 nodes streaming (target >= 50,000, issue 10: 200,000),
   beside the follower process alone reading the same files, and the router process's CPU
   time per event (user, system): on a shared 2-core machine the rate follows the load, the
   CPU time per event much less.
4. Outbox line written -> its event on the protocol output, median and p99, at the default poll
   settings (target median <= 30 ms), beside the follower alone.
5. With 10,000 live nodes: the router's RSS (target <= 300 MB), its idle CPU while every
   worker is stopped (target < 2% of a core), in the 5 s from 1 s after the stop (the
   launch's leftover work falls there) and in the 5 s after those, and 4. again (issue 10:
   median <= 30 ms).

With ``--baseline-tree DIR`` every figure is measured on DIR's code too, in a process of its
own before this code's, and printed beside this code's ("before the change").

Run: .venv/bin/python benchmarks/router_scale.py [--baseline-tree DIR] [--fan-out 64,1024]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

# The code measured: this checkout, or the baseline tree a --baseline-tree run starts us on.
ROOT = Path(os.environ.get("CODESWARM_BENCH_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from codeswarm.actors.messages import CommandReceived  # noqa: E402
from codeswarm.actors.protocol import ProtocolActor  # noqa: E402
from codeswarm.config import parse_config  # noqa: E402
from codeswarm.hpc import follower_wire, mailbox_io, records  # noqa: E402
from codeswarm.protocol import commands  # noqa: E402
from codeswarm.router import Router  # noqa: E402
from tests.support.simulated_workers import SimulatedScheduler  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Output:
    """The protocol output as a pipe, read on a thread: each event with its arrival time.

    The reader only cuts lines and stamps them; JSON is parsed when a waiter asks, so that the
    router's process spends its time on the router, not on this reader.
    """

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "wb")
        self.read_fd = read_fd
        self.cond = threading.Condition()
        self.lines: list[tuple[float, bytes]] = []
        self.parsed: list[tuple[float, dict]] = []
        self.counts: dict[str, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        partial = b""
        while chunk := os.read(self.read_fd, 1 << 20):
            now = time.time()
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            with self.cond:
                self.lines.extend((now, line) for line in lines)
                self.cond.notify_all()

    @property
    def events(self) -> list[tuple[float, dict]]:
        """Every event so far, parsed; call with ``cond`` held or after the reader is done."""
        for t, line in self.lines[len(self.parsed) :]:
            event = json.loads(line)
            self.parsed.append((t, event))
            self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1
        return self.parsed

    def wait_kind(self, kind: str, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` events of type ``kind`` have come, counted as they are parsed."""
        with self.cond:
            if not self.cond.wait_for(
                lambda: self.events and self.counts.get(kind, 0) >= count, timeout
            ):
                raise TimeoutError(f"after {len(self.lines)} events")

    def wait(self, predicate, timeout: float = 120.0) -> list[tuple[float, dict]]:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.events), timeout):
                raise TimeoutError(f"after {len(self.lines)} events")
            return list(self.events)

    def wait_count(self, count: int, timeout: float) -> float:
        """Wait for ``count`` lines without parsing them; the arrival time of the last."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.lines) >= count, timeout):
                raise TimeoutError(f"after {len(self.lines)} events")
            return self.lines[count - 1][0]

    def count(self, kind: str) -> int:
        with self.cond:
            self.events  # noqa: B018 (parses what came, and counts it)
            return self.counts.get(kind, 0)


class Bench:
    """One router with a protocol actor writing to a pipe, and simulated workers."""

    def __init__(self, tmp: Path) -> None:
        self.config = parse_config(
            {
                "backend": "local",
                "cluster": {"workspace_root": str(tmp / "ws")},
                "router": {"state_dir": str(tmp / "state")},
            }
        )
        self.scheduler = SimulatedScheduler(self.config.cluster.cluster_dir)
        self.output = Output()
        self.protocol = ProtocolActor.start(sys.stdin.buffer, self.output.writer)
        self.router = Router(self.config, self.protocol, scheduler=self.scheduler)
        self.mailbox = self.config.cluster.mailbox_root

    def launch(self, nodes: int) -> dict:
        before = self.output.count("swarm_launched")
        started = self.output.count("node_started")
        self.router.tell(CommandReceived(commands.Launch(nodes=nodes)))
        self.output.wait_kind("swarm_launched", before + 1)
        self.output.wait_kind("node_started", started + nodes)
        with self.output.cond:
            events = self.output.events
            return next(e for _, e in reversed(events) if e["type"] == "swarm_launched")["swarm"]

    def inject_all(self, swarm_id: str, content: str) -> float:
        before = self.output.count("inject_delivered")
        nodes = len(self.swarm_nodes(swarm_id))
        started = time.time()
        self.router.tell(
            CommandReceived(commands.Inject(content=content, nodes="all", swarm_id=swarm_id))
        )
        self.output.wait_kind("inject_delivered", before + nodes)
        return time.time() - started

    def terminate(self, swarm_id: str, nodes: int) -> None:
        """End a measured swarm: its simulated workers' polling would load the next figure."""
        exited = self.output.count("node_exited")
        self.router.tell(CommandReceived(commands.Terminate(swarm_id=swarm_id)))
        self.output.wait_kind("node_exited", exited + nodes, timeout=600)

    def swarm_nodes(self, swarm_id: str) -> list:
        with self.output.cond:
            events = list(self.output.events)
        for _, event in reversed(events):
            if event["type"] == "swarm_launched" and event["swarm"]["swarm_id"] == swarm_id:
                return event["swarm"]["nodes"]
        return []

    def close(self) -> None:
        self.router.stop()
        self.protocol.stop()
        self.scheduler.close()


def process_per_write(mailbox: str, job_id: str, nodes: int) -> float:
    """Baseline: one process per inbox write, as one ssh per injection did."""
    started = time.time()
    for node_id in range(nodes):
        path = os.path.join(mailbox, "inbox", records.record_name(job_id, node_id))
        line = records.encode_line(records.inbox_user(f"b{node_id}", "hello"))
        subprocess.run(["sh", "-c", f"cat >> {path}"], input=line.encode(), check=True)
    return time.time() - started


def follower_alone(mailbox: str, lines_expected: int) -> float:
    """Baseline: lines/s of the follower process alone over the same outbox files."""
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc.outbox_follower", "--mailbox", mailbox],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    proc.stdin.write(b"{}\n")
    proc.stdin.flush()
    seen = 0
    for line in proc.stdout:
        if line.startswith(b"L\t"):
            seen += 1
            if seen >= lines_expected:
                break
    elapsed = time.time() - started
    proc.kill()
    proc.wait(10)
    return seen / elapsed


def latency(bench: Bench, samples: int) -> tuple[list[float], list[float]]:
    """Outbox line -> protocol output, and outbox line -> follower stdout (baseline)."""
    swarm = bench.launch(1)
    job_id = swarm["job_id"]
    # Pause every simulated worker: on 2 cores their inbox polling would be measured too.
    pids = [child.pid for child in bench.scheduler.children if child.poll() is None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    path = os.path.join(bench.mailbox, "outbox", records.record_name(job_id, 0))
    writer = mailbox_io.OutboxWriter(path, job_id, 0, next_seq=1)
    through_router = []
    for n in range(samples):
        with bench.output.cond:
            before = len(bench.output.lines)
        event = writer.write("error", error="worker_error", message=f"probe {n}")
        arrived = bench.output.wait_count(before + 1, timeout=120)
        through_router.append(arrived - event["ts"])
        time.sleep(0.05)
    follower = subprocess.Popen(
        [sys.executable, "-m", "hpc.outbox_follower", "--mailbox", bench.mailbox],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    cursor = {}
    for entry in os.scandir(os.path.join(bench.mailbox, "outbox")):
        stem = entry.name[: -len(records.RECORD_SUFFIX)]
        stat = entry.stat()
        cursor[f"{stem}:{stat.st_ino}"] = stat.st_size
    follower.stdin.write(follower_wire.encode_header(cursor, [], False))
    follower.stdin.flush()
    alone = []
    for n in range(samples):
        event = writer.write("error", error="worker_error", message=f"alone {n}")
        probe = f'"alone {n}"'.encode()
        while probe not in follower.stdout.readline():
            pass
        alone.append(time.time() - event["ts"])
        time.sleep(0.05)
    follower.kill()
    follower.wait(10)
    writer.close()
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    return through_router, alone


def measure_latency(bench: Bench) -> dict[str, float]:
    """Median and p99 (ms) through the router, and of the follower alone."""
    router_ms, alone_ms = latency(bench, 100)
    router_ms = [v * 1000 for v in router_ms]
    alone_ms = [v * 1000 for v in alone_ms]
    return {
        "median": statistics.median(router_ms),
        "p99": pct(router_ms, 0.99),
        "alone_median": statistics.median(alone_ms),
        "alone_p99": pct(alone_ms, 0.99),
    }


def measure_throughput(bench: Bench, nodes: int, per_node: int) -> dict[str, float]:
    """Events/s while ``nodes`` simulated nodes stream ``per_node`` deltas each."""
    swarm = bench.launch(nodes)
    with bench.output.cond:
        before = len(bench.output.lines)
    started, cpu = time.time(), os.times()
    bench.router.tell(
        CommandReceived(
            commands.Inject(content=f"burst {per_node}", nodes="all", swarm_id=swarm["swarm_id"])
        )
    )
    expected = nodes * (per_node + 6)
    last = bench.output.wait_count(before + expected, timeout=300)
    rate = expected / (last - started)
    used = os.times()
    user, system = ((a - b) / expected * 1e6 for a, b in zip(used[:2], cpu[:2], strict=True))
    alone = follower_alone(bench.mailbox, expected)
    return {"rate": rate, "alone": alone, "user_us": user, "system_us": system}


def idle_cpu(bench: Bench, seconds: float) -> tuple[float, float]:
    """Percent of a core the router process uses while every simulated worker is stopped: in
    the first ``seconds`` (what a launch left to do, such as registry writes, falls there)
    and in the next ``seconds``."""
    pids = [child.pid for child in bench.scheduler.children if child.poll() is None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(1.0)  # what was written before the stop is routed first
    marks = [os.times()]
    for _ in range(2):
        time.sleep(seconds)
        marks.append(os.times())
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    first, second = (100 * (sum(b[:2]) - sum(a[:2])) / seconds for a, b in pairwise(marks))
    return first, second


def measure_ten_thousand(bench: Bench) -> dict[str, Any]:
    """RSS, idle CPU and line-to-output latency with 10,000 live nodes."""
    before = rss_mb()  # the harness keeps every event it read: count the launch's growth too
    swarm = bench.launch(10_000)
    figures = {"rss": rss_mb(), "rss_growth": rss_mb() - before}
    figures["idle"], figures["idle_settled"] = idle_cpu(bench, 5.0)
    figures["latency"] = measure_latency(bench)
    bench.terminate(swarm["swarm_id"], 10_000)
    return figures


def measure_all(bench: Bench) -> dict[str, Any]:
    """Every figure but the fan-out, on the code this process runs."""
    figures: dict[str, Any] = {"idle_rss": rss_mb(), "latency_1": measure_latency(bench)}
    swarm = bench.launch(1024)
    figures["rss_1024"] = rss_mb()
    bench.terminate(swarm["swarm_id"], 1024)
    for nodes, per_node in ((16, 2500), (64, 1000)):
        figures[f"events_{nodes}"] = measure_throughput(bench, nodes, per_node)
    figures["ten_thousand"] = measure_ten_thousand(bench)
    return figures


def figures_of_tree(tree: str, timeout: float) -> dict[str, Any]:
    """``measure_all`` run in a process on the code in ``tree``: {} if it did not finish."""
    text = run_in_tree(tree, ["--figures-json"], timeout).strip()
    return json.loads(text) if text else {}


def run_in_tree(tree: str, args: list[str], timeout: float) -> bytes:
    """This script with ``args`` in a fresh process on the code in ``tree``: what it printed
    by the end, or by ``timeout``, when it is killed with its process group (the run, its
    follower and its simulated workers)."""
    env = {**os.environ, "CODESWARM_BENCH_TREE": tree}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory() as work:
        argv = [sys.executable, __file__, *args, "--work-dir", work]
        child = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        out.seek(0)
        return out.read()


def at(figures: dict[str, Any], path: str) -> Any:
    """The figure at a dotted ``path`` (None where the baseline has none)."""
    for key in path.split("."):
        figures = figures.get(key) if isinstance(figures, dict) else None
    return figures


def ms(f: dict[str, float]) -> str:
    return f"median {f['median']:.1f} ms, p99 {f['p99']:.1f} ms"


def rate(f: dict[str, float]) -> str:
    return f"{f['rate']:,.0f} events/s, {f['user_us']:.1f} us user CPU per event"


def one_decimal(v: float) -> str:
    return f"{v:.1f}"


def beside(base: dict[str, Any], path: str, show: Any, unit: str = "") -> str:
    """The baseline tree's figure at ``path``, as ``show`` prints it; "" if there is none."""
    value = at(base, path)
    return "" if value is None else f"; before the change: {show(value)}{unit}"


def report(figures: dict[str, Any], base: dict[str, Any]) -> None:
    """Print every figure but the fan-out, each beside the baseline tree's (when measured)."""

    def latency_line(where: str, path: str) -> None:
        now = at(figures, path)
        alone = f"median {now['alone_median']:.1f} ms, p99 {now['alone_p99']:.1f} ms"
        print(
            f"outbox line -> output event, {where}: {ms(now)} (target median 30 ms); "
            f"follower alone: {alone}" + beside(base, path, ms)
        )

    latency_line("with 1 outbox file", "latency_1")
    print(
        f"router RSS with 1,024 nodes: {figures['rss_1024']:.1f} MB (target 150 MB); before "
        f"launching: {figures['idle_rss']:.1f} MB" + beside(base, "rss_1024", one_decimal, " MB")
    )
    for nodes in (16, 64):
        f = figures[f"events_{nodes}"]
        print(
            f"events/s through worker output, follower, router and output, {nodes} nodes "
            f"streaming: {f['rate']:,.0f} (target 50,000; 200,000 in issue 10); follower alone: "
            f"{f['alone']:,.0f} lines/s; router process CPU per event: {f['user_us']:.1f} us "
            f"user, {f['system_us']:.1f} us system" + beside(base, f"events_{nodes}", rate)
        )
    big = figures["ten_thousand"]
    growth = beside(base, "ten_thousand.rss_growth", one_decimal, " MB more")
    print(
        f"router RSS with 10,000 nodes: {big['rss']:.1f} MB, {big['rss_growth']:.1f} MB more "
        f"than before their launch (target 300 MB){growth}"
    )
    idle = beside(base, "ten_thousand.idle", one_decimal, "%")
    settled = beside(base, "ten_thousand.idle_settled", one_decimal, "%")
    print(
        f"router idle CPU with 10,000 nodes (target 2%), in the 5 s after the workers stop: "
        f"{big['idle']:.1f}% of a core{idle}; in the next 5 s: {big['idle_settled']:.1f}%{settled}"
    )
    latency_line("with 10,000 live outbox files", "ten_thousand.latency")


FAN_OUT_TARGETS = {64: 0.5, 256: 1.0, 1024: 0.15, 10_000: 1.5}


def fan_out(bench: Bench, sizes: list[int], report: Any = None) -> dict[int, float]:
    """Seconds from one inject to "all" until every inject_delivered, per swarm size."""
    took = {}
    for nodes in sizes:
        swarm = bench.launch(nodes)
        took[nodes] = bench.inject_all(swarm["swarm_id"], "hello")
        if report is not None:
            report(nodes, took[nodes])
        bench.terminate(swarm["swarm_id"], nodes)
    return took


def fan_out_of_tree(tree: str, sizes: list[int], timeout: float) -> dict[int, float]:
    """``fan_out`` run in a fresh process on the code in ``tree`` (the baseline's, or ours).

    Each size's figure is printed as it is measured, so a run past ``timeout`` (then killed,
    with its process group) keeps those.
    """
    out = run_in_tree(tree, ["--fan-out-json", ",".join(map(str, sizes))], timeout)
    return {int(k): v for line in out.splitlines() for k, v in json.loads(line).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", help="measure the fan-out of this tree's code too")
    parser.add_argument("--fan-out", default="64,256,1024,10000", help="swarm sizes")
    parser.add_argument("--baseline-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--fan-out-json", help=argparse.SUPPRESS)  # a baseline run's figures
    parser.add_argument("--figures-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)  # ...in a directory we remove
    args = parser.parse_args()
    if args.fan_out_json or args.figures_json:
        bench = Bench(Path(args.work_dir))
        try:
            if args.figures_json:
                print(json.dumps(measure_all(bench)), flush=True)
            else:
                sizes = [int(n) for n in args.fan_out_json.split(",")]
                fan_out(bench, sizes, lambda n, t: print(json.dumps({n: t}), flush=True))
        finally:
            bench.close()
        return
    sizes = [int(n) for n in args.fan_out.split(",")]
    baseline: dict[int, float] = {}
    base_figures: dict[str, Any] = {}
    if args.baseline_tree:
        baseline = fan_out_of_tree(args.baseline_tree, sizes, args.baseline_timeout)
        base_figures = figures_of_tree(args.baseline_tree, 4 * args.baseline_timeout)
    # This code's fan-out in a fresh process too, as the baseline's: a router that has
    # measured the rest keeps its swarms' records, and writing them costs every later figure.
    took_here = fan_out_of_tree(str(ROOT), sizes, args.baseline_timeout)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        try:
            figures = measure_all(bench)
            report(figures, base_figures)
            print('fan-out of one nodes:"all" inject, until every inject_delivered')
            for nodes, took in took_here.items():
                if nodes in baseline:
                    base = f"{baseline[nodes]:6.3f} s before the change ({args.baseline_tree})"
                elif args.baseline_tree:
                    base = f"before the change: not done in {args.baseline_timeout:g} s"
                else:
                    swarm = bench.launch(nodes)
                    per_write = process_per_write(bench.mailbox, swarm["job_id"], nodes)
                    bench.terminate(swarm["swarm_id"], nodes)
                    base = f"one process per write: {per_write:6.3f} s"
                target = FAN_OUT_TARGETS.get(nodes)
                print(f"  {nodes:6d} nodes: {took:6.3f} s (target {target} s); {base}")
        finally:
            bench.close()


if __name__ == "__main__":
    main()
