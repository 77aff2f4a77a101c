"""Many prompts and interrupts at once through the daemon: every injection ends exactly once."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from codeswarm.model_server import Reply
from tests.support.daemon import Daemon

pytestmark = pytest.mark.integration

FINAL = ("usage", "inject_failed")


def test_ninety_injections_with_interrupts_each_end_exactly_once(
    config_file, model_server, tmp_path
):
    model_server.add_rule(
        "slow", Reply(text="a slow answer", deltas=20, delay_seconds=0.02), times=None
    )
    d = Daemon(config_file, tmp_path / "daemon.stderr")
    try:
        d.wait_event("ready", timeout=30)
        d.send({"command": "launch", "nodes": 3, "request_id": "L"})
        swarm_id = d.wait_event("swarm_launched", request_id="L")["swarm"]["swarm_id"]
        rng = random.Random(7)
        for n in range(30):
            content = "slow prompt" if n % 3 == 0 else f"prompt {n}"
            d.send(
                {
                    "command": "inject",
                    "swarm_id": swarm_id,
                    "nodes": "all",
                    "content": content,
                    "injection_id": f"s{n}",
                }
            )
            if rng.random() < 0.2:
                d.send({"command": "interrupt", "swarm_id": swarm_id, "nodes": [rng.randrange(3)]})
        expected = {f"s{n}-{node}" for n in range(30) for node in range(3)}

        def all_final(events):
            return {e["injection_id"] for e in events if e["type"] in FINAL} >= expected

        events = d.wait_for(all_final, timeout=240)
        by_injection = defaultdict(list)
        for event in events:
            if event.get("injection_id") in expected:
                by_injection[event["injection_id"]].append(event)
        for injection_id, mine in by_injection.items():
            types = [e["type"] for e in mine]
            assert sum(t in FINAL for t in types) == 1, (injection_id, types)
            assert types[0] == "inject_ack" and types[-1] in FINAL, (injection_id, types)
            if types[-1] == "usage":
                assert types[1:3] == ["inject_delivered", "turn_started"], types
                (complete,) = [e for e in mine if e["type"] == "turn_complete"]
                assert complete["status"] in ("completed", "interrupted")
            seqs = [e["seq"] for e in mine if "seq" in e]
            assert seqs == sorted(seqs)
        node_seqs = defaultdict(list)
        for event in events:
            if "seq" in event:
                node_seqs[event["node_id"]].append(event["seq"])
        for seqs in node_seqs.values():
            assert seqs == sorted(set(seqs)), "an event was repeated or out of order"
        d.send({"command": "terminate", "swarm_id": swarm_id})
    finally:
        d.close()
