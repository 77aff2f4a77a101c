"""Slurm pieces that need no cluster: the batch script and the scheduler parsers."""

from dataclasses import replace
from pathlib import Path

import pytest

from codeswarm.backends.slurm import (
    Shape,
    batch_script,
    node_states,
    parse_job_id,
    parse_pending_reasons,
    parse_squeue,
    reason_of,
    resubmission_script,
    resubmitted_tasks,
    sbatch_argv,
)
from codeswarm.config import parse_config
from codeswarm.errors import BackendError
from codeswarm.hpc import slurm_env
from codeswarm.registry import Allocation, SwarmRecord

GOLDEN = Path(__file__).parent / "golden" / "batch_script.sh"
GOLDEN_ARRAY = Path(__file__).parent / "golden" / "batch_script_array.sh"


def full_config(**slurm):
    return parse_config(
        {
            "ssh": {"login_alias": "hpc"},
            "cluster": {"workspace_root": "/work1/me/work space"},
            "slurm": {
                "partition": "gpu",
                "account": "proj42",
                "time": "02:00:00",
                "gres": "gpu:1",
                "extra_args": ["--exclusive"],
                "setup": ["module load python/3.11"],
                **slurm,
            },
        }
    )


def script_of(config, nodes: int, **options) -> str:
    """Swarm sw-abc's batch script: ``nodes`` nodes under ``config``'s slurm settings."""
    cluster_dir = config.cluster.cluster_dir
    return batch_script(
        swarm_id="sw-abc",
        shape=Shape.of(nodes, None, config.slurm),
        slurm=config.slurm,
        cluster_dir=cluster_dir,
        python="python3",
        settings_path=cluster_dir + "/swarms/sw-abc/worker.json",
        **options,
    )


def test_batch_script_matches_the_golden_file():
    script = script_of(full_config(), 4)
    assert script == GOLDEN.read_text(), "update tests/golden/batch_script.sh if intended"


def test_launch_overrides_time_and_partition():
    script = script_of(full_config(), 1, time="00:10:00", partition="debug")
    assert "#SBATCH --time=00:10:00" in script and "#SBATCH --partition=debug" in script


def test_continue_signals_the_workers_with_sigusr2_instead_of_sigterm():
    scripts = {}
    for name, extra in (("off", {}), ("on", {"continue": {"turn_grace_seconds": 10}})):
        scripts[name] = script_of(full_config(signal_seconds=90, **extra), 2)
    assert "#SBATCH --signal=TERM@90\n" in scripts["off"]
    assert scripts["on"] == scripts["off"].replace("--signal=TERM@90", "--signal=USR2@90")


@pytest.mark.parametrize(
    ("output", "job_id"), [(b"1234\n", "1234"), (b"98765;cluster2\n", "98765")]
)
def test_parse_job_id(output, job_id):
    assert parse_job_id(output) == job_id


@pytest.mark.parametrize("output", [b"", b"sbatch: error: Batch job submission failed\n"])
def test_parse_job_id_refuses_garbage(output):
    with pytest.raises(BackendError):
        parse_job_id(output)


def test_parse_squeue():
    output = b"12|PENDING\n13|RUNNING\n14|COMPLETING\n15|CANCELLED by 0\n16|TIMEOUT\n\n"
    assert parse_squeue(output) == {
        "12": "pending",
        "13": "running",
        "14": "running",
        "15": "exited",
        "16": "exited",
    }


def test_the_array_layout_matches_its_golden_file():
    config = full_config(
        layout="array", agents_per_node=4, array_nodes_per_task=2, array_throttle=3
    )
    script = script_of(config, 6)
    assert script == GOLDEN_ARRAY.read_text(), "update tests/golden/batch_script_array.sh"


@pytest.mark.parametrize(
    ("slurm", "nodes", "apn", "lines"),
    [
        ({"agents_per_node": 2}, 3, None, ["--nodes=3", "--ntasks-per-node=2"]),
        ({"agents_per_node": 2}, 3, 5, ["--nodes=3", "--ntasks-per-node=5"]),
        ({"layout": "array"}, 3, None, ["--nodes=1", "--ntasks-per-node=1", "--array=0-2"]),
        (
            {"layout": "array", "array_nodes_per_task": 2, "array_throttle": 1},
            4,
            2,
            ["--nodes=2", "--ntasks-per-node=2", "--array=0-1%1"],
        ),
    ],
)
def test_the_shape_sets_nodes_tasks_and_array(slurm, nodes, apn, lines):
    config = full_config(**slurm)
    shape = Shape.of(nodes, apn, config.slurm)
    assert shape.options() == lines
    assert shape.agents_per_node == (apn or slurm.get("agents_per_node", 1))


def test_an_array_the_nodes_do_not_fill_is_refused_with_what_to_change():
    config = full_config(layout="array", array_nodes_per_task=2)
    with pytest.raises(BackendError, match="array_nodes_per_task"):
        Shape.of(3, None, config.slurm)


def test_parse_squeue_keeps_each_array_task():
    output = b"40_0|RUNNING\n40_1|CANCELLED\n40_2|PENDING\n41|RUNNING\n"
    assert parse_squeue(output) == {
        "40_0": "running",
        "40_1": "exited",
        "40_2": "pending",
        "41": "running",
    }


def test_parse_squeue_expands_pending_tasks_listed_in_one_line():
    output = b"40_[2-4,7%2]|PENDING|JobArrayTaskLimit\n40_0|RUNNING|None\n41_[5]|PENDING|x\n"
    assert parse_squeue(output) == {
        "40_2": "pending",
        "40_3": "pending",
        "40_4": "pending",
        "40_7": "pending",
        "40_0": "running",
        "41_5": "pending",
    }


def test_each_agent_of_an_array_takes_its_task_state():
    swarm = SwarmRecord(
        "sw-a", "40", "slurm", "/m", nodes=6, created=0.0, layout="array", task_agents=2
    )
    states = parse_squeue(b"40_0|RUNNING\n40_2|PENDING\n41|RUNNING\n")
    assert node_states(swarm, states) == {
        0: "running",
        1: "running",
        2: "exited",  # task 1 was cancelled alone
        3: "exited",
        4: "pending",
        5: "pending",
    }
    one_job = SwarmRecord("sw-b", "41", "slurm", "/m", nodes=4, created=0.0, agents_per_node=2)
    assert node_states(one_job, states) == dict.fromkeys(range(4), "running")


@pytest.mark.parametrize(
    ("env", "ids"),
    [
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "3", "SLURM_NODEID": "1"}, ("7", 3)),
        ({"SLURM_JOB_ID": "7", "SLURM_NODEID": "1"}, ("7", 1)),
        (
            {
                "SLURM_JOB_ID": "12",
                "SLURM_ARRAY_JOB_ID": "9",
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_PROCID": "1",
                "CODESWARM_AGENTS_PER_TASK": "4",
            },
            ("9", 9),
        ),
        (
            {
                "SLURM_JOB_ID": "20",
                "SLURM_ARRAY_JOB_ID": "20",
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_PROCID": "0",
                "CODESWARM_AGENTS_PER_TASK": "2",
                "CODESWARM_JOB_ID": "9",
            },
            ("9", 2),
        ),
        ({}, (None, None)),
    ],
)
def test_a_worker_knows_its_job_and_agent_index_from_slurm(env, ids):
    assert (slurm_env.job_id(env), slurm_env.node_id(env)) == ids


def test_a_swarm_past_the_node_ids_is_refused_with_what_to_change():
    config = full_config(agents_per_node=256)
    with pytest.raises(BackendError, match="4096 nodes x 256 agents is 1048576 agents"):
        Shape.of(4096, None, config.slurm)
    assert Shape.of(390, None, config.slurm).agents_per_node == 256


def test_parse_squeue_with_reasons():
    output = b"12|PENDING|Priority\n13|RUNNING|None\n14|PENDING|\n15|CANCELLED by 0|None\n"
    output += b"16|PENDING|None\n"
    assert parse_squeue(output) == {
        "12": "pending",
        "13": "running",
        "14": "pending",
        "15": "exited",
        "16": "pending",
    }
    assert parse_pending_reasons(output) == {"12": "Priority"}


def test_an_array_waits_for_the_reason_its_first_waiting_task_gives():
    reasons = parse_pending_reasons(b"40_0|RUNNING|None\n40_1|PENDING|Resources\n7|PENDING|QOS\n")
    assert reason_of(reasons, "40") == "Resources"
    assert reason_of(reasons, "7") == "QOS"
    assert reason_of(reasons, "4") is None


def test_each_array_task_logs_to_its_own_file_named_as_status_names_it():
    assert sbatch_argv("/c")[-1] == "--output=/c/logs/slurm-%j.out"
    assert sbatch_argv("/c", array=True)[-1] == "--output=/c/logs/slurm-%A_%a.out"


def test_a_resubmission_exports_the_first_job_id_in_the_script_not_with_export():
    script = GOLDEN_ARRAY.read_text()
    again = resubmission_script(script, "40")
    added = [line for line in again.splitlines() if line not in script.splitlines()]
    assert added == [f"export {slurm_env.JOB_ID}=40"]
    lines = again.splitlines()
    assert lines.index(added[0]) == len(lines) - 2 and lines[-1].startswith("exec ")
    with pytest.raises(BackendError, match="no exec line"):
        resubmission_script("#!/bin/bash\n", "40")


def test_a_resubmission_whose_answer_was_lost_is_found_among_the_swarms_tasks():
    swarm = SwarmRecord(
        "sw-a",
        "40",
        "slurm",
        "/m",
        nodes=4,
        created=0.0,
        layout="array",
        task_agents=1,
        tasks={"1": "41_1"},
    )
    squeue = b"40_0\n40_2\n41_1\n45_1\n45_3\n46_0\nbogus\n"
    assert resubmitted_tasks(squeue, swarm, [1, 3]) == {1: "45_1", 3: "45_3"}
    assert resubmitted_tasks(b"40_1\n41_1\n", swarm, [1]) == {}
    # an array of agents added by scale (or a continuation) is one of the swarm's jobs
    grown = replace(
        swarm, nodes=6, allocations=[Allocation("43", 4, 2, layout="array", task_agents=1)]
    )
    assert resubmitted_tasks(b"43_1\n45_1\n", grown, [1]) == {1: "45_1"}
    assert resubmitted_tasks(b"43_1\n", grown, [1]) == {}
