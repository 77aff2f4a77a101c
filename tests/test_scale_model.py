"""The swarm record with several jobs: scale adds, removed agents, and older records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from codeswarm.actors.messages import NodeGone, NodePending, NodeRemoved, NodeRunning
from codeswarm.actors.scaling import (
    ADD_CLAIM_SECONDS,
    add_problem,
    claimed,
    idle_jobs,
    remove_problem,
    unclaimed,
)
from codeswarm.actors.swarms import SwarmTable, restart_tasks, written_over
from codeswarm.backends.slurm import added_shape, job_tag, resubmission_script, tagged_job
from codeswarm.config import parse_config
from codeswarm.cursor import CursorStore
from codeswarm.errors import BackendError
from codeswarm.hpc import slurm_env
from codeswarm.protocol.codec import decode_line
from codeswarm.protocol.commands import Scale
from codeswarm.registry import Allocation, SwarmRecord, SwarmRegistry

GOLDEN_ARRAY = Path(__file__).parent / "golden" / "batch_script_array.sh"


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


# ---- the SwarmTable: adding, removing, and what another router did -------------------------


def table_with(swarm: SwarmRecord, grace: float = 0.0) -> SwarmTable:
    table = SwarmTable(grace, drain_seconds=1.0)
    table.follow(swarm, 0.0)
    return table


def test_added_agents_wait_pending_in_their_job():
    table = table_with(record(node_states={"0": "running", "1": "running"}))
    grown = table.add_allocation("7", Allocation("9", 2, 2), 1.0)
    assert grown.nodes == 4 and [grown.node_state(n) for n in (2, 3)] == ["pending"] * 2
    assert grown.state == "running" and "7" in table.dirty


def test_one_add_at_a_time_is_claimed_under_the_registry_lock_by_every_router(tmp_path):
    # Two routers (a daemon and a CLI) share the registry; neither's memory knows the other's.
    daemon, cli = SwarmRegistry(tmp_path, "/mb"), SwarmRegistry(tmp_path, "/mb")
    daemon.put(record())
    assert daemon.update("sw-7", lambda r: claimed(r, 100.0)).add_started == 100.0
    with pytest.raises(ValueError, match="another scale --add of swarm sw-7"):
        cli.update("sw-7", lambda r: claimed(r, 101.0))
    assert cli.get("sw-7").add_started == 100.0  # the refusal wrote nothing
    # Answered (recorded or failed): the next add claims, from the stored nodes on.
    daemon.update("sw-7", lambda r: unclaimed(replace(r, nodes=4)))
    assert cli.update("sw-7", lambda r: claimed(r, 102.0)).nodes == 4
    # A claim whose router died during sbatch lapses.
    assert claimed(record(add_started=1.0), 1.0 + ADD_CLAIM_SECONDS).add_started is not None


def test_an_array_grows_by_whole_tasks_refused_before_anything_is_claimed():
    swarm = record(nodes=4, layout="array", task_agents=4, agents_per_node=2)  # 2 nodes a task
    assert add_problem(swarm, 4, 2) is None
    assert "add a multiple of 2, not 3" in add_problem(swarm, 4, 3)
    assert add_problem(record(), 2, 3) is None  # one job: any size


def test_a_removed_agent_keeps_its_state_while_it_drains_and_the_poll_tells_only_its_end():
    table = table_with(record(nodes=3, node_states=dict.fromkeys("012", "running")))
    table.remove_nodes("7", (1,), 0.0)
    assert table.get("7").node_state(1) == "running" and table.get("7").removed == [1]
    # The job still runs (two more agents in it): the removed one drains, untold.
    assert table.apply({"7": {0: "running", 1: "running", 2: "running"}}, 1.0) == [
        ("7_0", NodeRunning()),
        ("7_2", NodeRunning()),
    ]
    assert table.get("7").node_state(1) == "running"
    told = table.apply({"7": {0: "running", 1: "exited", 2: "running"}}, 2.0)
    assert told == [("7_1", NodeGone("its job ended after it was removed"))]
    assert table.get("7").node_state(1) == "exited"
    assert table.apply({"7": {0: "running", 1: "exited", 2: "running"}}, 3.0) == []
    table.release_nodes("7", {"1": 12})
    assert table.get("7").last_seqs == {"1": 12}
    assert "7_1" not in table.reported and "7_1" not in table.gone_since
    assert table.apply({"7": {0: "running", 1: "exited", 2: "running"}}, 4.0) == []


def test_a_swarm_whose_other_agents_exited_stays_live_while_a_removed_one_drains():
    table = table_with(record(nodes=2, node_states={"0": "exited", "1": "running"}))
    table.remove_nodes("7", (1,), 0.0)
    swarm = table.get("7")
    assert swarm.state == "running" and not swarm.all_exited()
    assert table.releasable(10.0) == []
    table.apply({"7": {0: "exited", 1: "running"}}, 1.0)
    assert table.get("7").state == "running"  # polled still, and terminate would scancel
    table.apply({"7": {0: "exited", 1: "exited"}}, 2.0)
    assert table.get("7").state == "exited" and table.get("7").all_exited()


def test_a_write_from_an_older_view_keeps_another_routers_added_job_and_removals():
    stored = record(
        nodes=4,
        allocations=[Allocation("9", 2, 2)],
        removed=[0],
        node_states={"0": "exited", "1": "exited", "2": "running", "3": "exited"},
    )
    mine = record(nodes=2, node_states={"0": "running", "1": "running"})
    kept = written_over(stored, mine)
    assert kept.nodes == 4 and kept.allocations == stored.allocations
    assert [kept.node_state(n) for n in range(4)] == ["running", "running", "running", "exited"]
    assert kept.removed == [0] and kept.node_state(0) == "running"  # draining: its own state
    released = written_over(replace(stored, last_seqs={"0": 4}), mine)
    assert released.node_state(0) == "exited"  # gone and released: exited
    both = written_over(stored, replace(mine, nodes=5, allocations=[Allocation("8", 4, 1)]))
    assert [a.job_id for a in both.allocations] == ["8", "9"]  # submission order
    assert both.nodes == 5


def test_agents_another_router_added_are_followed_and_its_removals_told():
    table = table_with(record(node_states={"0": "running", "1": "running"}))
    elsewhere = record(
        nodes=3,
        allocations=[Allocation("9", 2, 1)],
        removed=[1],
        node_states={"0": "running", "1": "exited", "2": "running"},
    )
    new, _, told = table.merge([elsewhere], 1.0)
    assert new == [] and table.grown == {"7"}
    assert told == [("7_1", NodeRemoved(write=False))]
    adopted = table.get("7")
    assert adopted.nodes == 3 and adopted.node_state(2) == "running"
    assert adopted.slurm_job(2) == "9" and adopted.removed == [1]


def test_removal_is_refused_for_unknown_removed_or_every_agent():
    swarm = record(nodes=3, removed=[2])
    assert remove_problem(swarm, (1,)) is None
    assert "nodes 0 to 2, not 5" in remove_problem(swarm, (5,))
    assert "removed already" in remove_problem(swarm, (2,))
    assert "terminate it" in remove_problem(swarm, (0, 1))
    assert "has terminated" in remove_problem(replace(swarm, state="terminated"), (1,))


def test_only_jobs_that_would_run_nothing_but_removed_agents_and_wait_are_cancelled():
    added = Allocation("9", 2, 4, layout="array", task_agents=2)
    states = {"0": "running", "1": "running", **dict.fromkeys("2345", "pending")}
    swarm = record(nodes=6, allocations=[added], node_states=states)
    assert idle_jobs(swarm, (4, 5)) == ["9_1"]
    assert idle_jobs(swarm, (3, 5)) == []  # each task keeps an agent
    assert idle_jobs(swarm, (1,)) == []  # job 7 runs agent 0 too


def test_restart_leaves_added_agents_alone():
    swarm = record(
        nodes=6,
        layout="array",
        task_agents=2,
        allocations=[Allocation("9", 4, 2, layout="array", task_agents=2)],
        node_states=dict.fromkeys("012345", "exited"),
    )
    assert restart_tasks(swarm, "all") == [0, 1]
    # a task whose agents were all removed is not brought back
    assert restart_tasks(replace(swarm, removed=[2, 3]), "all") == [0]
    with pytest.raises(ValueError, match="node 2 was removed"):
        restart_tasks(replace(swarm, removed=[2]), (2,))
    with pytest.raises(ValueError, match="node 4 runs in job 9_0, submitted after the launch"):
        restart_tasks(swarm, (4,))


# ---- the job of added agents on Slurm --------------------------------------------------------


def test_an_added_job_exports_the_first_job_and_its_first_agent_before_exec():
    script = GOLDEN_ARRAY.read_text()
    again = resubmission_script(script, "40", first=24)
    added = [line for line in again.splitlines() if line not in script.splitlines()]
    assert added == [f"export {slurm_env.JOB_ID}=40", f"export {slurm_env.NODE_OFFSET}=24"]
    assert again.splitlines()[-1].startswith("exec ")


@pytest.mark.parametrize(
    ("env", "node"),
    [
        ({"SLURM_PROCID": "1", "CODESWARM_NODE_OFFSET": "4"}, 5),
        (
            {
                "SLURM_PROCID": "1",
                "SLURM_ARRAY_TASK_ID": "1",
                "CODESWARM_AGENTS_PER_TASK": "2",
                "CODESWARM_NODE_OFFSET": "6",
            },
            9,
        ),
    ],
)
def test_an_added_worker_counts_its_index_from_its_jobs_first_agent(env, node):
    assert slurm_env.node_id(env) == node


def test_an_added_job_has_the_swarms_shape_and_sbatch_options():
    slurm = parse_config(
        {
            "ssh": {"login_alias": "hpc"},
            "cluster": {"workspace_root": "/w"},
            "slurm": {"array_throttle": 2},
        }
    ).slurm
    one_job = record(nodes=4, agents_per_node=2)
    shape = added_shape(one_job, 3, slurm)
    assert shape.options() == ["--nodes=3", "--ntasks-per-node=2"]
    array = record(nodes=8, agents_per_node=2, layout="array", task_agents=4)
    shape = added_shape(array, 4, slurm)
    assert shape.options() == ["--nodes=2", "--ntasks-per-node=2", "--array=0-1%2"]
    assert shape.task_agents == 4
    with pytest.raises(BackendError, match="add a multiple of 2"):
        added_shape(array, 3, slurm)


def test_an_added_job_whose_answer_was_lost_is_the_one_submitted_with_its_tag():
    mine, other = job_tag("add-4"), job_tag("add-4")
    assert mine != other and mine.startswith("codeswarm-add-4-")
    # another router's add (or a continuation) queued meanwhile is never taken
    squeue = f"7 (null)\n12 {other}\n13 {mine}\n14 \n".encode()
    assert tagged_job(squeue, mine) == "13"
    assert tagged_job(b"7 (null)\n12 " + other.encode(), mine) is None


def test_a_restarted_task_leaves_its_removed_agents_exited_here_and_when_adopted():
    states = dict.fromkeys("0123", "exited")
    swarm = record(nodes=4, layout="array", task_agents=2, removed=[1], node_states=states)
    table = table_with(swarm)
    told = table.resubmitted("7", {0: "20_0"}, 1.0)
    assert told == [("7_0", NodePending())]
    assert table.get("7").node_state(1) == "exited" and table.get("7").node_state(0) == "pending"
    # Another router restarted it: adopted the same way.
    other = table_with(swarm)
    _, _, told = other.merge([replace(swarm, tasks={"0": "20_0"})], 1.0)
    assert told == [("7_0", NodePending())]
    assert other.get("7").node_state(1) == "exited"


# ---- the scale command -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"add": 1, "remove": [1]}, {}, {"add": 0}, {"remove": []}, {"remove": [-1]}],
    ids=["both", "neither", "add-zero", "remove-empty", "remove-negative"],
)
def test_a_scale_with_both_neither_or_bad_counts_is_refused(fields):
    line = json.dumps({"command": "scale", "swarm_id": "sw-1", "request_id": "g", **fields})
    refused = decode_line(line)
    assert isinstance(refused, dict) and refused["error"] == "invalid_field"
    assert refused["request_id"] == "g" and refused["field"].split(".")[0] in ("add", "remove")


def test_a_scale_removes_each_node_once_in_order():
    line = json.dumps({"command": "scale", "swarm_id": "sw-1", "remove": [3, 1, 3]})
    assert decode_line(line) == Scale("sw-1", None, (1, 3), None)
    assert decode_line(json.dumps({"command": "scale", "swarm_id": "sw-1", "add": 2})).add == 2


def test_a_released_agents_outbox_offsets_stay_until_its_swarm_is_released(tmp_path):
    cursor = CursorStore(tmp_path, "/mb", persist=False)
    cursor.advance("7_1", {"7_1:9": 400}, 12)
    cursor.advance("7_0", {"7_0:9": 100}, 3)
    assert cursor.forget_node("7_1") == 12
    assert "7_1" not in cursor.seqs and cursor.offsets["7_1:9"] == 400  # not read again
    cursor.advance_offsets({"7_1:9": 520})  # its final batch, read after the release
    assert cursor.offsets["7_1:9"] == 520 and "7_1" not in cursor.seqs
    assert cursor.forget("7") == {"0": 3} and cursor.offsets == {}
