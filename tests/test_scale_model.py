"""The swarm record with several jobs: scale adds, removed agents, and older records."""

from __future__ import annotations

import json

from codeswarm.registry import Allocation, SwarmRecord, SwarmRegistry


def record(**fields) -> SwarmRecord:
    given = {"nodes": 2, "state": "running", **fields}
    return SwarmRecord(
        swarm_id="sw-7", job_id="7", backend="slurm", mailbox="/mb", created=7.0, **given
    )


def test_an_added_agent_runs_in_its_own_job_and_the_launched_ones_stay_in_the_first():
    swarm = record(nodes=5, allocations=[Allocation("9", first=2, count=3)])
    assert [swarm.slurm_job(n) for n in range(5)] == ["7", "7", "9", "9", "9"]
    assert swarm.jobs() == ["7", "9"]


def test_an_added_array_names_each_agents_task_from_the_allocations_first_agent():
    added = Allocation("9", first=4, count=4, layout="array", task_agents=2)
    swarm = record(nodes=8, layout="array", task_agents=2, allocations=[added])
    assert [swarm.slurm_job(n) for n in range(8)] == [
        *("7_0", "7_0", "7_1", "7_1"),
        *("9_0", "9_0", "9_1", "9_1"),
    ]


def test_a_later_job_over_every_agent_takes_them_all_over():
    """A continuation covers agents already in other jobs: the latest job wins."""
    allocations = [Allocation("9", first=2, count=1), Allocation("12", first=0, count=3)]
    swarm = record(nodes=3, tasks={"0": "8_0"}, allocations=allocations)
    assert [swarm.slurm_job(n) for n in range(3)] == ["12", "12", "12"]
    assert swarm.jobs() == ["7", "8", "9", "12"]


def test_local_workers_are_found_in_the_job_that_started_them():
    swarm = record(nodes=3, pids=[100, 101], allocations=[Allocation("l-2", 2, 1, pids=[200])])
    assert [swarm.pid(n) for n in range(3)] == [100, 101, 200]


def test_removed_agents_are_marked_in_status_and_left_out_of_the_active_ones():
    swarm = record(nodes=3, removed=[1], node_states={"0": "running", "1": "exited"})
    assert swarm.active_nodes() == [0, 2]
    nodes = swarm.to_event()["nodes"]
    assert nodes[1]["removed"] is True and "removed" not in nodes[0]
    assert nodes[1]["slurm_job"] == "7"


def test_allocations_survive_the_registry_and_older_records_load_without_them(tmp_path):
    registry = SwarmRegistry(tmp_path, "/mb")
    added = Allocation("9", first=2, count=2, layout="array", task_agents=1)
    registry.put(record(nodes=4, allocations=[added], removed=[3]))
    stored = registry.get("sw-7")
    assert stored.allocations == [added] and stored.removed == [3]
    assert stored.slurm_job(3) == "9_1"

    data = json.loads(registry.path.read_text())
    for key in ("allocations", "removed"):
        del data["sw-7"][key]  # as a codeswarm before scale wrote it
    data["sw-7"]["allocations_note"] = "a key a newer codeswarm added"
    registry.path.write_text(json.dumps(data))
    older = registry.get("sw-7")
    assert older.allocations == [] and older.removed == []
    assert older.slurm_job(3) == "7"
