"""hpc.worker_settings: the settings file both sides read, and the one set of worker defaults."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from codeswarm.config import AgentConfig, WorkerConfig, parse_config
from codeswarm.hpc import worker_settings
from codeswarm.hpc.worker_settings import AGENT_DEFAULTS, WORKER_DEFAULTS
from codeswarm.router import worker_settings as settings_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
sections = st.dictionaries(st.text(max_size=20), json_values, max_size=6)


@given(sections, sections)
def test_what_the_router_writes_the_worker_reads_with_the_defaults_beneath(agent, worker):
    data = worker_settings.encode_settings(agent, worker)
    assert worker_settings.parse_settings(data) == (
        {**AGENT_DEFAULTS, **agent},
        {**WORKER_DEFAULTS, **worker},
    )


def test_without_a_file_the_worker_runs_on_the_defaults():
    assert worker_settings.load_settings(None) == (AGENT_DEFAULTS, WORKER_DEFAULTS)


def test_the_config_defaults_are_the_workers():
    config = parse_config({"backend": "local"})
    assert {name: getattr(config.worker, name) for name in WORKER_DEFAULTS} == WORKER_DEFAULTS
    assert {name: getattr(config.agent, name) for name in AGENT_DEFAULTS} == AGENT_DEFAULTS
    assert {f.name for f in dataclasses.fields(WorkerConfig)} == set(WORKER_DEFAULTS)
    router_only = {f.name for f in dataclasses.fields(AgentConfig)} - set(AGENT_DEFAULTS)
    assert router_only == {"codex_version"}  # the version a cluster setup installs


def test_a_configs_settings_reach_the_worker_unchanged(tmp_path):
    data = {
        "backend": "local",
        "agent": {"codex_path": "/opt/codex", "model": "m", "env": {"K": "$K"}},
        "worker": {"poll_idle_seconds": 2},
    }
    config = parse_config(data)
    written = settings_for(config)
    path = tmp_path / "worker.json"
    path.write_bytes(worker_settings.encode_settings(written["agent"], written["worker"]))
    agent, worker = worker_settings.load_settings(str(path))
    assert agent == {**AGENT_DEFAULTS, **config.to_dict()["agent"]}
    assert worker == dataclasses.asdict(config.worker)


def test_slurm_continue_reaches_the_worker_as_its_turn_grace(tmp_path):
    def grace_for(slurm):
        config = parse_config({"backend": "local", "slurm": slurm})
        written = settings_for(config)
        path = tmp_path / "worker.json"
        path.write_bytes(worker_settings.encode_settings(written["agent"], written["worker"]))
        return worker_settings.turn_grace_seconds(worker_settings.load_settings(str(path))[1])

    assert grace_for({"continue": {"turn_grace_seconds": 12}}) == 12
    assert grace_for({"continue": {}}) == worker_settings.CONTINUE_DEFAULTS["turn_grace_seconds"]
    assert grace_for({}) == worker_settings.CONTINUE_DEFAULTS["turn_grace_seconds"]
