"""The router in-process, on the local backend, with simulated workers on a real mailbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pykka
import pytest

from codeswarm.embed import Codeswarm
from codeswarm.protocol import event_errors
from tests.support.simulated_workers import SimulatedScheduler, local_config


@pytest.fixture
def simulated(tmp_path):
    threads_before = set(threading.enumerate())
    made = []

    def make(follow: str | None = "resume", **router) -> tuple[Codeswarm, SimulatedScheduler]:
        config = local_config(tmp_path, **router)
        scheduler = SimulatedScheduler(config.cluster.cluster_dir)
        swarms = Codeswarm(config, scheduler=scheduler, follow=follow)
        made.append((swarms, scheduler))
        return swarms, scheduler

    yield make
    for swarms, scheduler in made:
        swarms.close()
        scheduler.close()
    assert pykka.ActorRegistry.get_all() == []
    deadline = time.monotonic() + 5
    while (left := set(threading.enumerate()) - threads_before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {t.name for t in left} == set()


def collect(swarms: Codeswarm, until, timeout: float = 30.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in swarms.events(timeout=0.1):
            assert event_errors(event) == {}, event
            events.append(event)
            if until(events):
                return events
            break
    raise AssertionError(f"timed out after {len(events)} events; last: {events[-5:]}")


def children_running(module: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if module.encode() in cmdline and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def test_fan_out_to_all_nodes_completes_every_lifecycle(simulated):
    swarms, _ = simulated()
    swarm = swarms.launch(nodes=4)
    request = swarms.inject(swarm["swarm_id"], "hello", nodes="all")
    events = collect(
        swarms,
        lambda evs: sum(e["type"] == "usage" and e.get("request_id") == request for e in evs) == 4,
    )
    mine = [e for e in events if e.get("request_id") == request]
    by_node = {n: [e["type"] for e in mine if e["node_id"] == n] for n in range(4)}
    for types in by_node.values():
        assert types[:2] == ["inject_ack", "inject_delivered"]
        assert types[-3:] == ["assistant", "turn_complete", "usage"]
    assert len({e["injection_id"] for e in mine}) == 4


def test_inject_to_unknown_job_fails(simulated):
    swarms, _ = simulated()
    from codeswarm.actors.messages import CommandReceived
    from codeswarm.protocol import decode_line

    swarms.router.tell(
        CommandReceived(decode_line('{"action":"inject","job_id":"999","node_id":0,"content":"x"}'))
    )
    (failed,) = collect(swarms, lambda evs: any(e["type"] == "inject_failed" for e in evs))[-1:]
    assert failed["error"] == "unknown_target" and failed["job_id"] == "999"


def test_worker_that_never_reads_times_out(simulated):
    swarms, scheduler = simulated(inject_timeout_seconds=1)
    swarm = swarms.launch(nodes=1)
    collect(swarms, lambda evs: any(e["type"] == "node_started" for e in evs))
    worker = scheduler.children[-1].pid
    os.kill(worker, signal.SIGSTOP)
    try:
        started = time.monotonic()
        swarms.inject(swarm["swarm_id"], "anyone there?", nodes=0)
        events = collect(swarms, lambda evs: any(e["type"] == "inject_failed" for e in evs))
        elapsed = time.monotonic() - started
    finally:
        os.kill(worker, signal.SIGCONT)
    assert events[-1]["error"] == "timeout"
    assert 0.9 <= elapsed < 5, elapsed


def test_killed_worker_fails_its_open_injections_with_node_gone(simulated):
    swarms, scheduler = simulated()
    swarm = swarms.launch(nodes=2)
    collect(swarms, lambda evs: sum(e["type"] == "node_started" for e in evs) == 2)
    worker = scheduler.children[-1].pid
    os.kill(worker, signal.SIGSTOP)
    swarms.inject(swarm["swarm_id"], "one", nodes="all")
    swarms.inject(swarm["swarm_id"], "two", nodes="all")
    collect(swarms, lambda evs: sum(e["type"] == "inject_ack" for e in evs) == 4)
    os.kill(worker, signal.SIGKILL)
    events = collect(swarms, lambda evs: sum(e["type"] == "inject_failed" for e in evs) == 4)
    failed = [e for e in events if e["type"] == "inject_failed"]
    assert {e["error"] for e in failed} == {"node_gone"}
    nodes = swarms.status(swarm["swarm_id"])["nodes"]
    assert [(n["node_id"], n["state"]) for n in nodes] == [(0, "exited"), (1, "exited")]


def follower_pids(timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children_running("hpc.outbox_follower")
        if pids:
            return pids
        time.sleep(0.02)
    raise AssertionError("no follower process")


def test_killed_follower_is_restarted_without_losing_or_repeating_events(simulated):
    swarms, _ = simulated()
    swarm = swarms.launch(nodes=4)
    events = collect(swarms, lambda evs: sum(e["type"] == "node_started" for e in evs) == 4)
    for _ in range(4):
        request = swarms.inject(swarm["swarm_id"], "burst 60", nodes="all")
        events += collect(swarms, lambda evs, r=request: any(e.get("request_id") == r for e in evs))
        for pid in follower_pids():
            with contextlib.suppress(ProcessLookupError):  # gone already: restarted meanwhile
                os.kill(pid, signal.SIGKILL)
    events += collect(
        swarms, lambda evs: sum(e["type"] == "usage" for e in events + evs) == 16, timeout=60
    )
    worker_events = [e for e in events if "seq" in e]
    counts = Counter((e["node_id"], e["seq"]) for e in worker_events)
    assert len(worker_events) >= 1000
    assert max(counts.values()) == 1
    for node_id in range(4):
        seqs = sorted(s for n, s in counts if n == node_id)
        assert seqs == list(range(len(seqs)))


def test_registry_is_shared_with_a_second_process_view(simulated, tmp_path):
    swarms, _ = simulated()
    swarm = swarms.launch(nodes=1)
    from codeswarm.registry import SwarmRegistry

    config = local_config(tmp_path)
    other = SwarmRegistry(config.router.state_dir, swarms.router.config.cluster.mailbox_root)
    assert [s.swarm_id for s in other.all()] == [swarm["swarm_id"]]


def send(swarms: Codeswarm, line: str) -> None:
    from codeswarm.actors.messages import CommandReceived
    from codeswarm.protocol import decode_line

    swarms.router.tell(CommandReceived(decode_line(line)))


def test_launch_prompt_is_held_until_each_node_starts_then_answered(simulated):
    swarms, _ = simulated()
    send(swarms, '{"command":"launch","nodes":3,"prompt":"first words","request_id":"L"}')
    events = collect(
        swarms,
        lambda evs: sum(e["type"] == "usage" and e.get("request_id") == "L" for e in evs) == 3,
    )
    acks = [e for e in events if e["type"] == "inject_ack"]
    assert len(acks) == 3 and all(e["held"] for e in acks)
    for ack in acks:
        started = next(
            i
            for i, e in enumerate(events)
            if e["type"] == "node_started" and e["node_id"] == ack["node_id"]
        )
        delivered = next(
            i
            for i, e in enumerate(events)
            if e["type"] == "inject_delivered" and e["injection_id"] == ack["injection_id"]
        )
        assert events.index(ack) < started < delivered


def test_unknown_swarm_list_and_interrupt(simulated):
    swarms, _ = simulated()
    swarm = swarms.launch(nodes=2)
    sid = swarm["swarm_id"]
    send(
        swarms,
        '{"command":"inject","swarm_id":"sw-none","nodes":"all","content":"x","request_id":"u"}',
    )
    send(swarms, '{"command":"list","request_id":"l"}')
    events = collect(swarms, lambda evs: sum(e["type"] == "node_started" for e in evs) == 2)
    send(swarms, f'{{"command":"interrupt","swarm_id":"{sid}","nodes":[1],"request_id":"i"}}')
    events += collect(swarms, lambda evs: any(e["type"] == "interrupt_ack" for e in evs))
    unknown = next(e for e in events if e.get("request_id") == "u")
    assert (unknown["type"], unknown["error"]) == ("error", "unknown_swarm")
    listed = next(e for e in events if e["type"] == "swarm_list")
    assert [s["swarm_id"] for s in listed["swarms"]] == [sid]
    ack = next(e for e in events if e["type"] == "interrupt_ack")
    assert (ack["node_id"], ack["request_id"]) == (1, "i")


def test_a_restarted_router_picks_up_its_swarms_and_their_streams(tmp_path):
    config = local_config(tmp_path)
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    try:
        with Codeswarm(config, scheduler=scheduler) as first:
            swarm = first.launch(nodes=2)
            collect(first, lambda evs: sum(e["type"] == "node_started" for e in evs) == 2)
        with Codeswarm(config, scheduler=scheduler) as second:
            request = second.inject(swarm["swarm_id"], "after the restart", nodes="all")
            events = collect(
                second,
                lambda evs: (
                    sum(e["type"] == "usage" and e.get("request_id") == request for e in evs) == 2
                ),
            )
            assert not any(e["type"] == "node_started" for e in events)
            second.terminate(swarm["swarm_id"])
    finally:
        scheduler.close()


def test_bad_calls_are_refused_by_the_protocol_schemas(simulated):
    from codeswarm.errors import CommandError

    swarms, _ = simulated()
    swarm = swarms.launch(nodes=2)
    with pytest.raises(CommandError) as refused:
        swarms.inject(swarm["swarm_id"], "x", nodes=-1)
    assert refused.value.event["error"] == "invalid_field"
    with pytest.raises(CommandError) as refused:
        swarms.inject(swarm["swarm_id"], "a lone surrogate \udc80", nodes="all")
    assert (refused.value.event["error"], refused.value.event["field"]) == (
        "invalid_field",
        "content",
    )
    with pytest.raises(CommandError) as refused:
        swarms.launch(nodes=1, time="01:00:00\n")
    assert refused.value.event["field"] == "time"
    long_id = json.dumps(
        {
            "command": "inject",
            "swarm_id": swarm["swarm_id"],
            "nodes": "all",
            "content": "x",
            "injection_id": "a" * 127,
            "request_id": "long",
        }
    )
    send(swarms, long_id)
    send(
        swarms,
        '{"command":"inject","job_id":"nope","nodes":"all","content":"x","request_id":"nojob"}',
    )
    send(swarms, '{"command":"ping","request_id":"after"}')
    events = collect(swarms, lambda evs: any(e["type"] == "pong" for e in evs))
    answers = {e.get("request_id"): e for e in events}
    assert (
        answers["long"]["error"] == "invalid_field" and answers["long"]["field"] == "injection_id"
    )
    assert answers["nojob"]["error"] == "unknown_swarm"


def node_shard_threads() -> int:
    return sum(t.name.startswith("NodeShard") for t in threading.enumerate())


def shard_nodes(swarms, job_id: str) -> list[str]:
    """The nodes of a job the supervisor's shards still own (with their timers)."""
    shards = swarms.router.supervisor.proxy().shards.get()
    owned = [key for shard in shards for key in shard.proxy().nodes.get()]
    return [key for key in owned if key.startswith(f"{job_id}_")]


def test_a_finished_swarm_releases_its_actors_and_cursor_and_stays_listed(simulated):
    swarms, _ = simulated()
    before = node_shard_threads()
    swarm = swarms.launch(nodes=3)
    sid = swarm["swarm_id"]
    request = swarms.inject(sid, "hello", nodes="all")
    collect(swarms, lambda evs: sum(e.get("request_id") == request for e in evs) >= 3 * 6)
    assert len(shard_nodes(swarms, swarm["job_id"])) == 3
    assert node_shard_threads() == before  # a fixed pool: no thread a node
    swarms.terminate(sid)
    collect(swarms, lambda evs: sum(e["type"] == "node_exited" for e in evs) == 3)
    supervisor = swarms.router.supervisor.proxy()
    deadline = time.monotonic() + 20
    while supervisor.table.get().followed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert supervisor.table.get().followed == set()
    assert supervisor.nodes.get() == {}
    cursor = supervisor.cursor.get()
    assert not any(key.startswith(swarm["job_id"]) for key in cursor.offsets)
    assert cursor.seqs == {}
    assert shard_nodes(swarms, swarm["job_id"]) == []
    assert node_shard_threads() == before
    stored = swarms.router.registry.get(sid)
    assert stored.state == "terminated" and stored.ended is not None
    assert set(stored.last_seqs) == {"0", "1", "2"}
    assert [s["swarm_id"] for s in swarms.list()] == [sid]
    acks = swarms.inject_and_wait(sid, "anyone?", nodes="all")
    assert {(a["type"], a["error"]) for a in acks} == {("inject_failed", "node_gone")}
    assert all(f"swarm {sid} has terminated" in a["message"] for a in acks)


def test_a_swarm_another_process_launches_is_served_with_every_event(simulated):
    serving, _ = simulated()  # the daemon: follows the mailbox
    launcher, _ = simulated(follow=None)  # a CLI call on the same state dir
    swarm = launcher.launch(nodes=2)
    request = serving.inject(swarm["swarm_id"], "burst 20", nodes="all")
    events = collect(
        serving,
        lambda evs: sum(e["type"] == "usage" and e.get("request_id") == request for e in evs) == 2,
    )
    assert sum(e["type"] == "node_started" for e in events) == 2
    for node_id in (0, 1):
        seqs = [e["seq"] for e in events if e.get("node_id") == node_id and "seq" in e]
        assert seqs == list(range(len(seqs))), seqs
    assert not [e for e in events if e["type"] in ("error", "inject_failed")]


class SilentScheduler(SimulatedScheduler):
    """A scheduler whose polls know nothing yet: only the workers say they run."""

    def poll(self, swarms):
        return {}


def test_node_started_updates_the_registry_before_the_scheduler_does(tmp_path):
    config = local_config(tmp_path)
    scheduler = SilentScheduler(config.cluster.cluster_dir)
    try:
        with Codeswarm(config, scheduler=scheduler) as swarms:
            swarm = swarms.launch(nodes=2)
            collect(swarms, lambda evs: sum(e["type"] == "node_started" for e in evs) == 2)
            time.sleep(1.0)  # a tick writes the registry
            stored = swarms.router.registry.get(swarm["swarm_id"])
            assert stored.node_states == {"0": "running", "1": "running"}, stored
            assert swarms.status(swarm["swarm_id"])["state"] == "running", stored
    finally:
        scheduler.close()


def test_a_router_failure_reaches_every_caller_at_once(simulated, monkeypatch):
    from codeswarm.actors.supervisor import SupervisorActor
    from codeswarm.errors import CommandError

    def broken(self, command):
        raise RuntimeError("a bug")

    swarms, _ = simulated()
    monkeypatch.setattr(SupervisorActor, "command", broken)
    started = time.monotonic()
    with pytest.raises(CommandError, match="internal: the router failed"):
        swarms.list(timeout=30)
    with pytest.raises(CommandError, match="router failed"):
        list(swarms.events(timeout=30))
    with pytest.raises(CommandError, match="router failed"):
        list(swarms.events())
    assert time.monotonic() - started < 5
    assert swarms.router.stop_requested.wait(10)
    assert swarms.router.supervisor.actor_stopped.wait(10)
    with pytest.raises(CommandError, match="internal: the router has stopped"):
        swarms.list(timeout=5)


def test_an_error_answer_raises_command_error_and_silence_no_answer_error(simulated):
    from codeswarm.errors import CommandError, NoAnswerError
    from codeswarm.protocol import Ping

    swarms, _ = simulated()
    with pytest.raises(CommandError) as refused:
        swarms.status("sw-nope")
    assert refused.value.event["error"] == "unknown_swarm"
    with pytest.raises(NoAnswerError, match="may still take effect"):
        swarms.call(Ping(request_id="p1"), "swarm_status", timeout=0.3)  # pong is no status


def test_a_command_no_router_handler_takes_is_an_error_not_a_dead_router(simulated):
    from codeswarm.errors import CommandError
    from codeswarm.protocol import Ping
    from codeswarm.protocol.commands import Subscribe

    swarms, _ = simulated()
    with pytest.raises(CommandError) as refused:  # subscribe is the daemon connection's
        swarms.call(Subscribe(events=("assistant",), request_id="s1"), "subscribed", timeout=5)
    assert refused.value.event["error"] == "unknown_command"
    assert "Subscribe" in refused.value.event["message"]
    assert swarms.call(Ping(request_id="p1"), "pong", timeout=5)["request_id"] == "p1"


def test_an_unusable_state_dir_is_a_config_error_that_names_it(tmp_path):
    from codeswarm.errors import ConfigError

    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(ConfigError, match=r"router\.state_dir: cannot use .*state"):
        Codeswarm(local_config(tmp_path))
    assert pykka.ActorRegistry.get_all() == []


def test_a_second_router_following_the_same_mailbox_and_state_is_refused(simulated):
    from codeswarm.errors import UserError

    simulated()
    with pytest.raises(UserError, match=r"another router \(pid \d+\) follows this mailbox"):
        simulated()
    simulated(follow=None)  # a CLI call that only acts is welcome


def test_events_takes_a_subscription_and_calls_still_get_their_answers(simulated):
    from codeswarm.errors import CommandError

    swarms, _ = simulated()
    with pytest.raises(CommandError) as refused:
        swarms.events(types=["assistant", "tool_*"])
    assert refused.value.event["field"] == "events"
    assert "'tool_*' matches no event type" in refused.value.event["message"]
    assert swarms.subscribe(["assistant", "usage"]) == ["assistant", "usage"]
    swarm = swarms.launch(nodes=2)
    request = swarms.inject(swarm["swarm_id"], "hello", nodes="all")
    events = collect(
        swarms,
        lambda evs: sum(e["type"] == "usage" and e.get("request_id") == request for e in evs) == 2,
    )
    assert {e["type"] for e in events} == {"swarm_launched", "inject_ack", "assistant", "usage"}
    every = list(swarms.events(timeout=0.5, types=["*"]))  # left-out events were not kept
    assert "turn_complete" not in {e["type"] for e in every}
    request = swarms.inject(swarm["swarm_id"], "again", nodes=0)
    events = collect(swarms, lambda evs: any(e["type"] == "usage" for e in evs))
    assert [e["type"] for e in events if e.get("request_id") == request][:3] == [
        "inject_ack",
        "inject_delivered",
        "turn_started",
    ]
