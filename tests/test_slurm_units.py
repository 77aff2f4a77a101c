"""Slurm pieces that need no cluster: the batch script and the scheduler parsers."""

from pathlib import Path

import pytest

from codeswarm.backends.slurm import batch_script, parse_job_id, parse_squeue
from codeswarm.config import parse_config
from codeswarm.errors import BackendError

GOLDEN = Path(__file__).parent / "golden" / "batch_script.sh"


def full_config():
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
            },
        }
    )


def test_batch_script_matches_the_golden_file():
    config = full_config()
    script = batch_script(
        swarm_id="sw-abc",
        nodes=4,
        slurm=config.slurm,
        cluster_dir=config.cluster.cluster_dir,
        python="python3",
        settings_path=config.cluster.cluster_dir + "/swarms/sw-abc/worker.json",
    )
    assert script == GOLDEN.read_text(), "update tests/golden/batch_script.sh if intended"


def test_launch_overrides_time_and_partition():
    config = full_config()
    script = batch_script(
        swarm_id="sw-abc",
        nodes=1,
        slurm=config.slurm,
        cluster_dir="/c",
        python="python3",
        settings_path="/c/s.json",
        time="00:10:00",
        partition="debug",
    )
    assert "#SBATCH --time=00:10:00" in script and "#SBATCH --partition=debug" in script


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
