"""codeswarm prune: finished swarms' records and files go; running swarms stay."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from codeswarm.backends import Pruned
from codeswarm.cli import main
from codeswarm.config import parse_config
from codeswarm.embed import Codeswarm
from codeswarm.hpc import prune as hpc_prune
from codeswarm.hpc import records
from codeswarm.prune import finished_before, parse_age, prune
from codeswarm.registry import SwarmRecord, SwarmRegistry
from tests.support.simulated_workers import SimulatedScheduler


def test_ages():
    assert [parse_age(t) for t in ("0", "90", "90s", "30m", "12h", "7d", "1.5h")] == [
        0,
        90,
        90,
        1800,
        43200,
        604800,
        5400,
    ]
    for bad in ("", "7w", "-1d", "1d\n2", "d"):
        with pytest.raises(ValueError, match="not an age"):
            parse_age(bad)


def test_only_final_swarms_that_ended_before_the_cutoff_are_chosen():
    def record(job_id, state, ended=None, created=100.0, node="exited"):
        return SwarmRecord(
            f"sw-{job_id}", job_id, "local", "/mb", 1, created, state, {"0": node}, ended=ended
        )

    swarms = [
        record("1", "terminated", ended=150.0),
        record("2", "exited", ended=250.0),
        record("3", "running"),
        record("4", "exited", ended=None, created=120.0),
        record("5", "pending", created=10.0),
        record("6", "terminated", ended=150.0, node="running"),  # still shutting down
    ]
    assert [s.job_id for s in finished_before(swarms, 200.0)] == ["1", "4"]


def test_a_swarms_paths_are_its_own_nodes_files_and_no_other_jobs(tmp_path):
    archive = tmp_path / "mailbox" / "archive"
    logs = tmp_path / "mailbox" / "logs"
    archive.mkdir(parents=True)
    logs.mkdir()
    for name in ("12_0.r1.jsonl", "12_1.r2.jsonl", "12_2.r1.jsonl", "123_0.r1.jsonl", "12_0.x"):
        (archive / name).touch()
    for name in ("12_1.codex.log", "12_10.codex.log", "1_2.codex.log", "12_1x"):
        (logs / name).touch()
    for name in ("12_1", "12_10"):  # a node's outputs too large for an event
        (logs / name).mkdir()
    paths = hpc_prune.swarm_paths(str(tmp_path), "sw-12", "12", 2)
    found = {Path(p).relative_to(tmp_path).as_posix() for p in paths if Path(p).exists()}
    assert found == {
        "mailbox/archive/12_0.r1.jsonl",
        "mailbox/archive/12_1.r2.jsonl",
        "mailbox/logs/12_1.codex.log",
        "mailbox/logs/12_1",
    }


def test_hostile_ids_never_name_a_path_outside_the_cluster_dir(tmp_path):
    with pytest.raises(records.RecordError):
        hpc_prune.swarm_paths(str(tmp_path), "../../etc", "7", 1)
    with pytest.raises(records.RecordError):
        hpc_prune.swarm_paths(str(tmp_path), "sw-1", "7/../..", 1)


def test_prune_removes_finished_swarms_files_and_records_and_keeps_running_ones(tmp_path):
    config_data = {
        "backend": "local",
        "cluster": {"workspace_root": str(tmp_path / "ws")},
        "router": {"state_dir": str(tmp_path / "state")},
    }
    config = parse_config(config_data)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_data))
    scheduler = SimulatedScheduler(config.cluster.cluster_dir)
    cluster = Path(config.cluster.cluster_dir)
    try:
        with Codeswarm(config, scheduler=scheduler) as swarms:
            done = swarms.launch(nodes=2)
            running = swarms.launch(nodes=1)
            request = swarms.inject(done["swarm_id"], "hello", nodes="all")
            answered = 0
            for event in swarms.events(timeout=30):
                answered += event["type"] == "usage" and event.get("request_id") == request
                if answered == 2:
                    break
            swarms.terminate(done["swarm_id"])
            deadline = time.monotonic() + 30
            while not swarms.router.registry.get(done["swarm_id"]).all_exited():
                assert time.monotonic() < deadline, "the swarm's nodes never ended"
                time.sleep(0.1)
            while not list((cluster / "mailbox" / "archive").glob(f"{done['job_id']}_1*")):
                assert time.monotonic() < deadline, "the outbox was never archived"
                time.sleep(0.1)
        (cluster / "workspaces" / f"{done['job_id']}_0").mkdir(parents=True)
        (cluster / "workspaces" / f"{running['job_id']}_0").mkdir(parents=True)
        ours = sorted(str(p) for p in cluster.rglob(f"*{done['job_id']}_*"))
        assert any("inbox" in p for p in ours) and any("archive" in p for p in ours)
        logs = tmp_path / "state" / "events"
        assert sorted(p.name for p in logs.iterdir()) == sorted(
            [done["swarm_id"], running["swarm_id"]]
        )

        runner = CliRunner()
        dry = runner.invoke(
            main, ["prune", "--older-than", "0", "--dry-run", "--config", str(config_file)]
        )
        assert dry.exit_code == 0, dry.output
        assert (
            dry.output.strip() == f"would remove {done['swarm_id']} (job {done['job_id']}, "
            "terminated)"
        )
        assert sorted(str(p) for p in cluster.rglob(f"*{done['job_id']}_*")) == ours

        young = runner.invoke(main, ["prune", "--older-than", "1h", "--config", str(config_file)])
        assert young.exit_code == 0 and "no finished swarm" in young.output

        pruned = runner.invoke(main, ["prune", "--older-than", "0", "--config", str(config_file)])
        assert pruned.exit_code == 0, pruned.output
        assert pruned.output.startswith(f"removed {done['swarm_id']}")
        assert list(cluster.rglob(f"*{done['job_id']}_*")) == []
        assert not (cluster / "swarms" / done["swarm_id"]).exists()
        assert (cluster / "workspaces" / f"{running['job_id']}_0").exists()
        assert [p.name for p in logs.iterdir()] == [running["swarm_id"]]  # its event log too
        listed = runner.invoke(main, ["list", "--json", "--config", str(config_file)])
        ids = [json.loads(line)["swarm_id"] for line in listed.output.splitlines()]
        assert ids == [running["swarm_id"]]
    finally:
        scheduler.close()


def test_a_swarm_whose_worktree_cannot_be_retired_stays_listed(tmp_path):
    registry = SwarmRegistry(tmp_path / "state", "/mb")
    for job_id in ("1", "2"):
        registry.put(
            SwarmRecord(f"sw-{job_id}", job_id, "local", "/mb", 1, 0.0, "exited", {"0": "exited"})
        )

    class Transport:
        def remove_swarm_files(self, swarms):
            assert [s.swarm_id for s in swarms] == ["sw-1", "sw-2"]
            return {"sw-1": Pruned(["/a"]), "sw-2": Pruned([], "node 0: git add failed")}

    results = prune(registry, Transport(), 0)
    assert [(s.swarm_id, r) for s, r in results] == [
        ("sw-1", Pruned(["/a"])),
        ("sw-2", Pruned([], "node 0: git add failed")),
    ]
    assert [s.swarm_id for s in registry.all()] == ["sw-2"]
