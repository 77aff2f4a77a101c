"""``scale`` on the local backend with real codex agents: an added agent answers in the same
swarm; a removed one finishes its turn, fails what it had queued, refuses what comes later,
and leaves nothing behind in the router while the others go on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codeswarm.config import load_config
from codeswarm.embed import Codeswarm
from codeswarm.errors import CommandError
from codeswarm.model_server import Reply

pytestmark = pytest.mark.integration


def answers_of(swarms: Codeswarm, wanted: set[str], timeout: float = 120) -> dict[str, dict]:
    """The final event (``usage`` or ``inject_failed``) of each injection in ``wanted``."""
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while wanted - set(found) and time.monotonic() < deadline:
        for event in swarms.events(timeout=1):
            if event.get("injection_id") in wanted and event["type"] in ("usage", "inject_failed"):
                found[event["injection_id"]] = event
    assert not wanted - set(found), f"no answer for {wanted - set(found)}"
    return found


def wait_until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert check()


def test_an_added_agent_answers_and_a_removed_one_drains_and_is_released(config_file, model_server):
    model_server.add_rule("slow one", Reply(text="slowly done", delay_seconds=2.0))
    with Codeswarm(load_config(config_file)) as swarms:
        swarm = swarms.launch(nodes=2)
        sid, job_id = swarm["swarm_id"], swarm["job_id"]
        try:
            grown = swarms.scale(sid, add=1)
            assert [n["node_id"] for n in grown["nodes"]] == [0, 1, 2]
            assert grown["job_id"] == job_id and grown["swarm_id"] == sid
            stored = swarms.router.registry.get(sid)
            (added,) = stored.allocations
            assert (added.first, added.count, len(added.pids)) == (2, 1, 1)

            first = swarms.inject(sid, "hello new agent", nodes=2, injection_id="new")
            assert answers_of(swarms, {"new"})["new"]["type"] == "usage", first

            swarms.inject(sid, "slow one", nodes=1, injection_id="running")
            swarms.inject(sid, "queued behind it", nodes=1, injection_id="queued")
            wait_for_delivery(swarms, "queued")
            shrunk = swarms.scale(sid, remove=[1])
            node1 = shrunk["nodes"][1]
            assert node1["removed"] is True and node1["state"] == "running"  # draining
            refused = swarms.inject_and_wait(sid, "anyone?", nodes=1)
            assert [(a["type"], a["error"]) for a in refused] == [("inject_failed", "node_removed")]
            ends = answers_of(swarms, {"running", "queued"})
            assert ends["running"]["type"] == "usage"
            assert (ends["queued"]["type"], ends["queued"]["error"]) == (
                "inject_failed",
                "node_removed",
            )
            after = swarms.inject(sid, "still here?", nodes="all", injection_id="after")
            ends = answers_of(swarms, {"after-0", "after-2"})
            assert {e["type"] for e in ends.values()} == {"usage"}, after

            supervisor = swarms.router.supervisor.proxy()
            removed_key = f"{job_id}_1"
            wait_until(lambda: removed_key not in supervisor.nodes.get())
            shards = supervisor.shards.get()
            owned = {key for shard in shards for key in shard.proxy().nodes.get()}
            assert removed_key not in owned and {f"{job_id}_0", f"{job_id}_2"} <= owned
            cursor = supervisor.cursor.get()
            assert removed_key not in cursor.seqs
            # its outbox offsets stay (it is not read again) until the swarm is released
            assert any(i.startswith(f"{removed_key}:") for i in cursor.offsets)
            table = supervisor.table.get()
            assert removed_key not in table.reported and removed_key not in table.gone_since
            # the registry keeps its last seq (written on the next tick): late lines not resent
            wait_until(lambda: "1" in swarms.router.registry.get(sid).last_seqs)  # 30 s: many ticks
            # a late line of the released agent is read past, not routed; the router goes on
            late = Path(swarms.router.registry.get(sid).mailbox) / "outbox" / f"{removed_key}.jsonl"
            late.write_bytes(
                b'{"type":"node_started","job_id":"%s","node_id":1,"seq":0}\n' % job_id.encode()
            )
            identity = f"{removed_key}:{late.stat().st_ino}"
            wait_until(lambda: cursor.offsets.get(identity) == late.stat().st_size)
            assert swarms.status(sid)["nodes"][0]["state"] == "running"

            with pytest.raises(CommandError, match="every agent"):
                swarms.scale(sid, remove=[0, 2])
            with pytest.raises(CommandError, match="removed already"):
                swarms.scale(sid, remove=[1])
        finally:
            swarms.terminate(sid)


def wait_for_delivery(swarms: Codeswarm, injection_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in swarms.events(timeout=1):
            if event["type"] == "inject_delivered" and event["injection_id"] == injection_id:
                return
    raise AssertionError(f"{injection_id} was never delivered")
