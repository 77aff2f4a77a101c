"""Config layer: the seed file loads as written, shipped configs load, errors name the field."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from codeswarm.config import (
    LOCAL_CONFIG,
    SECTIONS,
    Config,
    default_local_config,
    load_config,
    parse_config,
)
from codeswarm.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.json"))
SEED = """{"ssh": {"login_alias": "hpcfund"},
 "cluster": {"workspace_root": "/work1/amd/klowery/workspace", "cluster_subdir": "codeswarm"},
 "router": {"inject_timeout_seconds": 60}}"""
SLURM_BASE = json.loads(SEED)


def _write(tmp_path: Path, text: str, name: str = "x.json") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_example_loads_verbatim(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SEED))
    assert config.backend == "slurm"
    assert config.ssh.login_alias == "hpcfund"
    assert config.cluster.workspace_root == "/work1/amd/klowery/workspace"
    assert config.cluster.cluster_subdir == "codeswarm"
    assert config.router.inject_timeout_seconds == 60
    assert config.mailbox_root == "/work1/amd/klowery/workspace/codeswarm/mailbox"
    assert config.cluster.cluster_dir == "/work1/amd/klowery/workspace/codeswarm"


def test_hpcfund_json_is_the_seed_example() -> None:
    assert json.loads((ROOT / "configs/hpcfund.json").read_text()) == json.loads(SEED)


def test_shipped_configs_are_all_there() -> None:
    names = {p.name for p in CONFIGS}
    assert {"local.json", "hpcfund.json", "example-full.json", "minicluster.json"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    config = load_config(path)
    assert parse_config(config.to_dict()) == config
    json.dumps(config.to_dict())  # JSON-ready


def test_example_full_sets_every_key() -> None:
    data = json.loads((ROOT / "configs/example-full.json").read_text())
    assert set(data) == {"backend", *SECTIONS}
    for name, cls in SECTIONS.items():
        keys = {f.metadata["schema"].data_key or f.name for f in dataclasses.fields(cls)}
        assert set(data[name]) == keys, name
    provider = data["agent"]["config"]["model_providers"][data["agent"]["config"]["model_provider"]]
    assert provider["wire_api"] == "responses"
    assert {"base_url", "env_key"} <= set(provider)
    config = load_config(ROOT / "configs/example-full.json")
    assert config.slurm.extra_args == ("--exclusive", "--mail-type=END,FAIL")
    assert config.agent.env["SITE_LLM_API_KEY"] == "$SITE_LLM_API_KEY"


def test_minicluster() -> None:
    config = load_config(ROOT / "configs/minicluster.json")
    assert (config.backend, config.ssh.login_alias) == ("slurm", "codeswarm-minicluster")
    assert config.cluster.workspace_root == "/home/swarm/codeswarm-work"
    assert (config.slurm.partition, config.slurm.time) == ("debug", "00:30:00")


def test_default_local_config_matches_configs_local_json() -> None:
    assert json.loads((ROOT / "configs/local.json").read_text()) == LOCAL_CONFIG
    assert load_config(ROOT / "configs/local.json") == default_local_config()


def test_defaults() -> None:
    config = default_local_config()
    home = os.path.expanduser("~")
    assert config.backend == "local"
    assert config.cluster.workspace_root == f"{home}/.codeswarm/local"
    assert config.mailbox_root == f"{home}/.codeswarm/local/codeswarm/mailbox"
    assert config.router.state_dir == f"{home}/.codeswarm/state"
    assert config.ssh.ssh_config == f"{home}/.ssh/config"
    assert config.ssh.known_hosts == f"{home}/.ssh/known_hosts"
    assert config.ssh.identity_file is None and config.ssh.login_alias is None
    assert (config.ssh.connect_timeout_seconds, config.ssh.keepalive_seconds) == (15, 30)
    assert config.ssh.command_timeout_seconds == 60
    assert (config.cluster.cluster_subdir, config.cluster.python) == ("codeswarm", "python3")
    assert config.router.inject_timeout_seconds == 60
    assert config.router.follower_poll_seconds == 0.02
    assert config.router.follower_idle_poll_seconds == 1.0
    assert config.slurm.time == "01:00:00" and config.slurm.signal_seconds == 60
    assert config.slurm.partition is None and config.slurm.extra_args == ()
    worker = config.worker
    assert (worker.poll_active_seconds, worker.poll_idle_seconds) == (0.005, 0.5)
    assert worker.active_window_seconds == 2.0
    assert (worker.codex_restart_backoff_seconds, worker.codex_restart_max) == (1.0, 5)
    agent = config.agent
    assert (agent.codex_path, agent.codex_version, agent.model) == ("codex", None, None)
    assert (agent.approval_policy, agent.sandbox) == ("never", "workspace-write")
    assert (agent.config, agent.env, agent.approval_decision) == ({}, {}, "decline")
    assert parse_config({"backend": "local"}) == config


def test_config_is_frozen() -> None:
    config = default_local_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.backend = "slurm"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.router.inject_timeout_seconds = 1  # type: ignore[misc]


def test_local_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    data = {
        "backend": "local",
        "cluster": {"workspace_root": "work"},
        "router": {"state_dir": "../st"},
    }
    text = json.dumps(data)
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", text)
    config = load_config(os.path.relpath(path))  # a relative file name, too
    assert config.cluster.workspace_root == str(tmp_path / "sub" / "work")
    assert config.router.state_dir == str(tmp_path / "st")
    assert config.mailbox_root == str(tmp_path / "sub" / "work" / "codeswarm" / "mailbox")
    assert parse_config(config.to_dict()) == config


def test_parse_config_resolves_against_base_dir_or_cwd(tmp_path: Path) -> None:
    data = {"backend": "local", "cluster": {"workspace_root": "w"}}
    assert parse_config(data, base_dir=tmp_path).cluster.workspace_root == str(tmp_path / "w")
    assert parse_config(data).cluster.workspace_root == str(Path.cwd() / "w")


def test_slurm_paths_are_kept_as_written() -> None:
    data = {**SLURM_BASE, "cluster": {"workspace_root": "/scratch/me/../ws"}}
    assert parse_config(data).cluster.workspace_root == "/scratch/me/../ws"


def test_seconds_keep_their_json_type() -> None:
    config = parse_config(SLURM_BASE)
    assert config.to_dict()["router"]["inject_timeout_seconds"] == 60
    assert isinstance(config.to_dict()["router"]["inject_timeout_seconds"], int)


@pytest.mark.parametrize(
    "time", ["30", "30:00", "1:00:00", "01:00:00", "2-00", "2-12:30", "2-00:00:00", "UNLIMITED"]
)
def test_slurm_time_formats(time: str) -> None:
    assert parse_config({**SLURM_BASE, "slurm": {"time": time}}).slurm.time == time


def _with(section: str, **values: object) -> dict:
    data = json.loads(SEED)
    data.setdefault(section, {}).update(values)
    return data


INVALID = [
    (
        "negative timeout",
        _with("router", inject_timeout_seconds=-5),
        "x.json: router.inject_timeout_seconds: must be greater than 0 (got -5)",
    ),
    (
        "bad approval_policy",
        _with("agent", approval_policy="always"),
        "agent.approval_policy: must be one of: untrusted, on-request, never",
    ),
    (
        "unknown key with suggestion",
        _with("router", inject_timout_seconds=5),
        "router.inject_timout_seconds: unknown key (did you mean 'inject_timeout_seconds'?)",
    ),
    (
        "unknown section with suggestion",
        {**SLURM_BASE, "slrum": {}},
        "slrum: unknown key (did you mean 'slurm'?)",
    ),
    (
        "cluster_subdir escapes",
        _with("cluster", cluster_subdir="../x"),
        "cluster.cluster_subdir: must be one directory name",
    ),
    (
        "cluster_subdir with shell characters",
        _with("cluster", cluster_subdir="a;rm -rf"),
        "cluster.cluster_subdir:",
    ),
    (
        "login_alias missing for slurm",
        {"cluster": {"workspace_root": "/w"}},
        "ssh.login_alias: required when backend is slurm",
    ),
    (
        "workspace_root missing for slurm",
        {"backend": "slurm", "ssh": {"login_alias": "h"}},
        "cluster.workspace_root: required when backend is slurm",
    ),
    (
        "relative workspace_root for slurm",
        _with("cluster", workspace_root="workspace"),
        "cluster.workspace_root: must be an absolute path on the cluster",
    ),
    (
        "home-relative workspace_root for slurm",
        _with("cluster", workspace_root="~/ws"),
        "cluster.workspace_root: must be an absolute path",
    ),
    (
        "null inside agent.config",
        _with("agent", config={"model_providers": {"site": {"base_url": None}}}),
        "agent.config.model_providers.site.base_url: null is not allowed",
    ),
    (
        "null in a list inside agent.config",
        _with("agent", config={"notify": ["a", None]}),
        "agent.config.notify[1]: null is not allowed",
    ),
    (
        "agent.config shadows agent.model",
        _with("agent", config={"model": "m"}),
        "agent.config.model: set agent.model instead",
    ),
    (
        "bad slurm time",
        _with("slurm", time="1 hour"),
        'slurm.time: must be a Slurm time such as "30", "1:00:00" or "2-00:00:00" (got "1 hour")',
    ),
    (
        "slurm time minutes out of range",
        _with("slurm", time="1:75:00"),
        "slurm.time: must be a Slurm",
    ),
    (
        "extra_args without --",
        _with("slurm", extra_args=["--exclusive", "-N 2"]),
        "slurm.extra_args[1]: must start with '--'",
    ),
    (
        "extra_args setting the shape",
        _with("slurm", extra_args=["--exclusive", "--ntasks-per-node=4"]),
        "slurm.extra_args[1]: --ntasks-per-node sets the swarm's shape, which codeswarm "
        "sets: use slurm.agents_per_node",
    ),
    (
        "extra_args making an array",
        _with("slurm", extra_args=["--array=0-3"]),
        "slurm.extra_args[0]: --array sets the swarm's shape, which codeswarm sets: use "
        'slurm.layout "array"',
    ),
    ("setup not a list", _with("slurm", setup="module load x"), "slurm.setup: must be a list"),
    (
        "newline in setup",
        _with("slurm", setup=["a\nb"]),
        "slurm.setup[0]: must not contain newlines",
    ),
    (
        "string for a number",
        _with("router", inject_timeout_seconds="60"),
        "router.inject_timeout_seconds: must be a number",
    ),
    (
        "bool for a number",
        _with("ssh", connect_timeout_seconds=True),
        "ssh.connect_timeout_seconds: must be a number",
    ),
    (
        "float for an int",
        _with("slurm", cpus_per_task=1.5),
        "slurm.cpus_per_task: must be an integer (got 1.5)",
    ),
    ("int for a string", _with("slurm", partition=3), "slurm.partition: must be a string (got 3)"),
    ("section of wrong type", {**SLURM_BASE, "router": 60}, "router: must be an object (got 60)"),
    ("null section", {**SLURM_BASE, "agent": None}, "agent: must not be null"),
    ("null value", _with("slurm", partition=None), "slurm.partition: must not be null"),
    (
        "bad backend",
        {**SLURM_BASE, "backend": "kubernetes"},
        "backend: must be one of: slurm, local",
    ),
    ("alias like an option", _with("ssh", login_alias="-oProxyCommand=x"), "ssh.login_alias:"),
    (
        "bad env name",
        _with("agent", env={"1X": "v"}),
        "agent.env.1X: must be an environment variable name",
    ),
    (
        "bad env reference",
        _with("agent", env={"K": "$1"}),
        'agent.env.K: must be a literal string or "$NAME"',
    ),
    (
        "signal too large",
        _with("slurm", signal_seconds=70000),
        "slurm.signal_seconds: must be 1 to 65535",
    ),
    (
        "continue grace past the signal",
        _with("slurm", signal_seconds=30, **{"continue": {"turn_grace_seconds": 30}}),
        "slurm.continue.turn_grace_seconds: must be less than slurm.signal_seconds (30)",
    ),
    (
        "continue unknown key",
        _with("slurm", **{"continue": {"grace": 5}}),
        "slurm.continue.grace: unknown key (known: turn_grace_seconds)",
    ),
    (
        "continue grace not a number",
        _with("slurm", **{"continue": {"turn_grace_seconds": "5"}}),
        "slurm.continue.turn_grace_seconds: must be a positive number of seconds",
    ),
    (
        "idle poll below active",
        _with("worker", poll_idle_seconds=0.001),
        "worker.poll_idle_seconds: must be at least worker.poll_active_seconds",
    ),
    ("bad mem", _with("slurm", mem="lots"), "slurm.mem: must be a Slurm memory size"),
    (
        "codex_version beside a codex_path",
        _with("agent", codex_path="/opt/codex", codex_version="0.171.0"),
        "agent.codex_version: set agent.codex_path or this, not both",
    ),
    (
        "codex_version on the local backend",
        {"backend": "local", "agent": {"codex_version": "0.171.0"}},
        "agent.codex_version: is for backend slurm",
    ),
    ("top level not an object", [SLURM_BASE], "x.json: must be an object"),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_names_the_field(tmp_path: Path, data: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, json.dumps(data)))
    assert expected in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'x.json'}: ")


def test_every_error_is_reported_at_once() -> None:
    data = {
        "ssh": {"login_alias": "h", "keepalive_seconds": -1},
        "cluster": {"workspace_root": "rel", "cluster_subdir": ".."},
        "agent": {"sandbox": "none"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "configs/x.json")
    paths = [path for path, _ in info.value.errors]
    assert sorted(paths) == sorted(
        [
            "ssh.keepalive_seconds",
            "cluster.cluster_subdir",
            "cluster.workspace_root",
            "agent.sandbox",
        ]
    )
    assert all(line.startswith("configs/x.json: ") for line in str(info.value).splitlines())


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "ssh": {"login_alias": "h"}\n  "router": {}\n}\n')
    with pytest.raises(ConfigError, match=r"x\.json: invalid JSON at line 3, column 3"):
        load_config(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key 'router'"):
        load_config(_write(tmp_path, '{"router": {}, "router": {}}'))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: cannot read"):
        load_config(tmp_path / "nope.json")


def test_to_dict_round_trip_with_everything_set() -> None:
    config = load_config(ROOT / "configs/example-full.json")
    data = config.to_dict()
    assert parse_config(json.loads(json.dumps(data))) == config
    data["agent"]["config"]["model_provider"] = "changed"  # a copy, not the config's own dict
    assert config.agent.config["model_provider"] == "site"


def test_local_backend_needs_no_ssh_or_cluster() -> None:
    config = parse_config({"backend": "local", "ssh": {}, "slurm": {"partition": "x"}})
    assert config.ssh.login_alias is None


# ---- docs/configuration.md stays in step with the schema -----------------------------------


def _documented_keys() -> dict[str, set[str]]:
    """Backticked keys in the first column of each table, by section heading."""
    found: dict[str, set[str]] = {}
    section = None
    for line in (ROOT / "docs/configuration.md").read_text().splitlines():
        heading = re.match(r"## (?:`(\w+)`|(Top level))$", line)
        if heading:
            section = heading.group(1) or ""
            found[section] = set()
        elif section is not None and (row := re.match(r"\| `(\w+)` \|", line)):
            found[section].add(row.group(1))
    return found


def test_docs_cover_every_key_and_only_real_keys() -> None:
    schema = {"": {"backend", *SECTIONS}}
    schema.update(
        {
            name: {f.metadata["schema"].data_key or f.name for f in dataclasses.fields(cls)}
            for name, cls in SECTIONS.items()
        }
    )
    assert _documented_keys() == schema


def test_config_sections_match_dataclass() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == ["backend", *SECTIONS]
