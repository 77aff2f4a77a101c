"""Replaying the event log: the daemon's ``subscribe since``, exactly once across kills, and the
embedding API's ``history``, ``events(since=...)`` and ``wait``; simulated workers, real mailbox."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from codeswarm import eventlog
from codeswarm.config import parse_config
from codeswarm.embed import Codeswarm
from codeswarm.protocol.subscription import DEFAULT_PATTERNS
from tests.support.daemon import Daemon
from tests.support.simulated_workers import SimulatedScheduler

pytestmark = pytest.mark.timeout(300)


def config_data(tmp_path: Path) -> dict:
    return {
        "backend": "local",
        "cluster": {"workspace_root": str(tmp_path / "ws")},
        "router": {"state_dir": str(tmp_path / "state")},
    }


@pytest.fixture
def launched(tmp_path):
    """A simulated 2-node swarm launched by a CLI-like router; the workers outlive it."""
    config = parse_config(config_data(tmp_path))
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    with Codeswarm(config, scheduler=scheduler, follow=None) as launcher:
        swarm = launcher.launch(nodes=2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_data(tmp_path)))
    yield swarm["swarm_id"], path
    scheduler.close()


def usages(events: list[dict], request_id: str) -> int:
    return sum(e["type"] == "usage" and e.get("request_id") == request_id for e in events)


def counted(wanted: Callable[[dict], bool], enough: int) -> Callable[[list[dict]], bool]:
    """A wait_for predicate true once ``enough`` events are ``wanted``; each event read once."""
    seen = {"events": 0, "wanted": 0}

    def predicate(events: list[dict]) -> bool:
        seen["wanted"] += sum(map(wanted, events[seen["events"] :]))
        seen["events"] = len(events)
        return seen["wanted"] >= enough

    return predicate


def is_usage(event: dict) -> bool:
    return event["type"] == "usage" and event.get("request_id") == "big"


def test_a_subscribe_since_in_the_middle_of_a_stream_has_no_gap_and_no_repeat(launched, tmp_path):
    swarm_id, config = launched
    daemon = Daemon(config, tmp_path / "daemon.stderr")
    try:
        daemon.wait_event("ready")
        # Live, this connection first takes only the answers: the replay then has the deltas
        # to send, however far the router has got when the subscribe comes.
        daemon.send({"command": "subscribe", "events": ["inject_*"], "request_id": "narrow"})
        daemon.wait_event("subscribed", request_id="narrow")
        inject = {"command": "inject", "swarm_id": swarm_id, "nodes": "all"}
        daemon.send({**inject, "content": "burst 40000", "request_id": "big"})
        log_dir = eventlog.swarm_log_dir(tmp_path / "state", swarm_id)
        while eventlog.last_cursor(log_dir) < 3000:  # the log shows how far the router got
            assert daemon.process.poll() is None
            time.sleep(0.002)
        everything = list(DEFAULT_PATTERNS)
        since = {"swarm_id": swarm_id, "since": 1000, "events": everything, "request_id": "s"}
        daemon.send({"command": "subscribe", **since})
        events = daemon.wait_for(counted(is_usage, 2), timeout=120)
        daemon.wait_event("subscribed", request_id="s")
    finally:
        daemon.close()
    seam = next(i for i, e in enumerate(events) if e.get("request_id") == "s")
    answer = events[seam]
    until, count = answer["replay_until"], answer["replayed"]
    assert answer["swarm_id"] == swarm_id and count > 0
    before = [e["cursor"] for e in events[:seam] if "cursor" in e]
    live, replay = before[: len(before) - count], before[len(before) - count :]
    assert live == sorted(live)  # the answers, sent live
    # The replay is what the client asked for, less what this connection had sent already
    # (an answer a slow node gave after cursor 1000 went out live).
    assert replay == [c for c in range(1001, until + 1) if c not in set(live)]
    after = [e["cursor"] for e in events[seam + 1 :] if "cursor" in e]
    assert after == list(range(until + 1, until + 1 + len(after)))  # live again: no gap
    assert after and max(after) >= 20_000  # the subscribe landed mid-stream


def test_a_daemon_killed_three_times_mid_stream_loses_and_repeats_nothing(launched, tmp_path):
    swarm_id, config = launched
    received: list[dict] = []
    last_cursor = 0
    for round_ in range(4):
        daemon = Daemon(config, tmp_path / f"daemon{round_}.stderr")
        try:
            daemon.wait_event("ready")
            if round_ == 0:
                command = {"command": "inject", "swarm_id": swarm_id, "nodes": "all"}
                daemon.send({**command, "content": "burst 20000", "request_id": "big"})
            else:
                resume = {"command": "subscribe", "swarm_id": swarm_id, "since": last_cursor}
                daemon.send(resume)
            if round_ < 3:
                # Kill on raw lines read, not parsed ones: parsing lags far behind the daemon.
                while daemon.lines.qsize() < 4000:
                    assert daemon.process.poll() is None
                    time.sleep(0.005)
                os.kill(daemon.process.pid, signal.SIGKILL)
                daemon.process.wait(10)
                while (item := daemon.lines.get(timeout=10)) is not None:  # what it had sent
                    if item[1].endswith(b"\n"):  # not a line cut short by the kill
                        daemon.events.append(json.loads(item[1]))
            else:
                # A restarted router no longer knows the request_id: count usages alone.
                done = sum(e["type"] == "usage" for e in received)
                daemon.wait_for(counted(lambda e: e["type"] == "usage", 2 - done), timeout=180)
        finally:
            daemon.close()
        mine = [e for e in daemon.events if "cursor" in e]
        received += mine
        last_cursor = max([last_cursor, *(e["cursor"] for e in mine)])
    seqs = Counter((e["job_id"], e["node_id"], e["seq"]) for e in received if "seq" in e)
    assert [key for key, count in seqs.items() if count > 1] == []  # nothing twice
    for node_id in (0, 1):
        mine = sorted(seq for (_, node, seq) in seqs if node == node_id)
        assert mine == list(range(len(mine))) and len(mine) > 20000  # nothing lost
    cursors = sorted(e["cursor"] for e in received)  # a replay can follow newer live events
    assert cursors == list(range(1, len(cursors) + 1))


def test_wait_history_and_events_since_in_the_embedding_api(launched):
    swarm_id, config = launched
    with Codeswarm(parse_config(json.loads(config.read_text()))) as swarms:
        acks = swarms.inject_and_wait(swarm_id, "burst 30", nodes="all", injection_id="q")
        ids = [ack["injection_id"] for ack in acks]
        progress: list[dict] = []
        answers = swarms.wait(swarm_id, [*ids, "never"], timeout=5, on_answer=progress.append)
        assert [(a["injection_id"], a["node_id"], a["status"], a["message"]) for a in answers] == [
            ("q-0", 0, "completed", "done"),
            ("q-1", 1, "completed", "done"),
            ("never", None, "pending", None),
        ]
        assert sorted(a["injection_id"] for a in progress) == ["q-0", "q-1"]
        again = swarms.wait(swarm_id, ids, timeout=0.1)  # finished before: from the log
        assert [a["status"] for a in again] == ["completed", "completed"]

        logged = swarms.history(swarm_id)
        assert [e["cursor"] for e in logged] == list(range(1, len(logged) + 1))
        page = swarms.history(swarm_id, since=logged[9]["cursor"], nodes=[1], limit=5)
        assert len(page) == 5 and {e["node_id"] for e in page} == {1}
        assert page[0]["cursor"] > 10

        stream = swarms.events(timeout=0.5, swarm_id=swarm_id, since=len(logged) - 3)
        assert [e["cursor"] for e in stream] == [len(logged) - 2, len(logged) - 1, len(logged)]
