"""Codeswarm configuration: JSON files checked by marshmallow, loaded into frozen dataclasses.

Each dataclass field carries its marshmallow field in its metadata and the schemas are built
from the dataclasses, so keys, types, checks and defaults are written once and cannot drift.
Unknown keys are errors: a typo must fail loudly, not fall back to a default. Every error
names the file and the dotted field path.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_type_hints

from marshmallow import RAISE, Schema, ValidationError, fields
from marshmallow.validate import OneOf

from codeswarm.errors import ConfigError

# The worker and the follower run on clusters without codeswarm, so their defaults are defined
# in hpc/ and read from there.
from codeswarm.hpc.outbox_follower import DEFAULTS as _FOLLOWER
from codeswarm.hpc.workdir import template_problem
from codeswarm.hpc.worker_settings import AGENT_DEFAULTS as _AGENT
from codeswarm.hpc.worker_settings import CONTINUE_DEFAULTS as _CONTINUE
from codeswarm.hpc.worker_settings import WORKER_DEFAULTS as _WORKER

Backend = Literal["slurm", "local"]
LOCAL_WORKSPACE_ROOT = "~/.codeswarm/local"
LOCAL_CONFIG: dict[str, Any] = {  # the embedded default; a test keeps configs/local.json equal
    "backend": "local",
    "cluster": {"workspace_root": LOCAL_WORKSPACE_ROOT},
    "router": {"inject_timeout_seconds": 60, "state_dir": "~/.codeswarm/state"},
    "agent": {"codex_path": "codex", "approval_policy": "never", "sandbox": "workspace-write"},
}
_NULL = "must not be null (leave the key out instead)"


# ---- checks and field types -------------------------------------------------------------


def _rule(ok: Any, message: str) -> Any:
    """A marshmallow validator from a predicate, with our own short message."""

    def check(value: Any) -> None:
        if not ok(value):
            raise ValidationError(message)

    return check


def _re(regex: str, message: str) -> Any:
    return _rule(lambda v: re.fullmatch(regex, v) is not None, message)


_POSITIVE = _rule(lambda v: v > 0, "must be greater than 0")
_AT_LEAST_4K = _rule(lambda v: v >= 4096, "must be at least 4096")
_NON_NEGATIVE = _rule(lambda v: v >= 0, "must be at least 0")
_ONE_LINE = _rule(lambda v: not re.search(r"[\x00-\x1f\x7f]", v), "must not contain newlines")
_WORD = _re(r"\S+", "must be one word (no spaces)")
_SUBDIR = _re(
    r"(?!\.\.?$)[A-Za-z0-9._-]+",
    "must be one directory name of letters, digits, '.', '_', '-' (no '/', '..', shell chars)",
)
_ALIAS = _re(r"[\w.@][\w.@-]*", "must be a Host alias from your ssh config (no leading '-')")
_TIME = _re(
    r"(?:\d+-)?\d+(?::[0-5]?\d){0,2}|(?i:unlimited|infinite)",
    'must be a Slurm time such as "30", "1:00:00" or "2-00:00:00"',
)
_MEM = _re(r"\d+[KMGTkmgt]?", 'must be a Slurm memory size such as "4000" or "16G"')
_OPTION = _rule(lambda v: v.startswith("--"), "must start with '--' (one sbatch option an item)")
# sbatch options that set the swarm's shape: codeswarm sets them, from these keys.
_SHAPE_OPTIONS = {
    "--nodes": "launch --nodes",
    "--ntasks-per-node": "slurm.agents_per_node",
    "--ntasks": "slurm.agents_per_node",
    "--array": 'slurm.layout "array", slurm.array_nodes_per_task and slurm.array_throttle',
    "--distribution": "slurm.agents_per_node (agents are numbered node by node)",
}


def _not_shape(value: str) -> None:
    name = value.split("=", 1)[0]
    if name in _SHAPE_OPTIONS:
        raise ValidationError(
            f"{name} sets the swarm's shape, which codeswarm sets: use {_SHAPE_OPTIONS[name]}"
        )


_VERSION = _re(r"\w[\w.+-]*", 'must be an npm version or tag such as "0.46.0"')
_ENV = r"[A-Za-z_][A-Za-z0-9_]*"
_ABSOLUTE = _rule(lambda v: v.startswith("/"), "must be an absolute path (~ is not expanded)")


def _template(value: str) -> None:
    problem = template_problem(value)
    if problem:
        raise ValidationError(problem)


def _choice(*choices: str) -> OneOf:
    return OneOf(choices, error="must be one of: {choices}")


def _str(*validate: Any) -> fields.String:
    msgs = {"invalid": "must be a string", "null": _NULL}
    return fields.String(validate=[_ONE_LINE, *validate], error_messages=msgs)


def _int(*validate: Any) -> fields.Integer:
    msgs = {"invalid": "must be an integer", "null": _NULL}
    return fields.Integer(strict=True, validate=list(validate), error_messages=msgs)


def _strs(*validate: Any) -> fields.List:
    return fields.List(_str(*validate), error_messages={"invalid": "must be a list", "null": _NULL})


class _Seconds(fields.Field):
    """A finite JSON number. Ints stay ints, so a file round-trips as written."""

    default_error_messages: ClassVar = {"invalid": "must be a number of seconds", "null": _NULL}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):  # bool is no number here
            raise self.make_error("invalid")
        return value


def _secs(*validate: Any) -> _Seconds:
    return _Seconds(validate=list(validate) or [_POSITIVE])


def _toml_errors(value: Any) -> dict[Any, Any]:
    """Errors for what TOML cannot hold (null above all), keyed like the input."""
    errors: dict[Any, Any] = {}
    for key, item in value.items() if isinstance(value, Mapping) else enumerate(value):
        if item is None:
            errors[key] = ["null is not allowed (TOML has no null); leave the key out"]
        elif isinstance(item, Mapping | list | tuple):
            if sub := _toml_errors(item):
                errors[key] = sub
        elif not isinstance(item, str | int | float | bool):
            errors[key] = [f"{type(item).__name__} cannot be written to TOML"]
    return errors


def _env_errors(env: Mapping[str, Any]) -> dict[str, list[str]]:
    """NAME -> literal value, or "$NAME" to copy it from the environment (keeps secrets out)."""
    bad = {k: "must be an environment variable name" for k in env if not re.fullmatch(_ENV, k)}
    for key, value in env.items():
        literal = isinstance(value, str) and not value.startswith("$")
        if not literal and not (isinstance(value, str) and re.fullmatch(_ENV, value[1:])):
            bad.setdefault(key, f'must be a literal string or "$NAME" (got {_show(value)})')
    return {k: [m] for k, m in bad.items()}


def _continue_errors(block: Mapping[str, Any]) -> dict[str, list[str]]:
    """slurm.continue: only ``turn_grace_seconds``, a positive number of seconds."""
    errors = {k: ["unknown key (known: turn_grace_seconds)"] for k in block if k not in _CONTINUE}
    grace = block.get("turn_grace_seconds", _CONTINUE["turn_grace_seconds"])
    if type(grace) not in (int, float) or not math.isfinite(grace) or grace <= 0:
        errors["turn_grace_seconds"] = ["must be a positive number of seconds"]
    return errors


class _Object(fields.Field):
    """A JSON object with string keys, checked by a function that returns nested errors."""

    default_error_messages: ClassVar = {"invalid": "must be an object", "null": _NULL}

    def __init__(self, check: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.make_error("invalid")
        if errors := self.check(value):
            raise ValidationError(errors)
        return copy.deepcopy(dict(value))


def _k(schema: fields.Field, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that carries its marshmallow field (type and checks) in metadata."""
    return dataclasses.field(default=default, metadata={"schema": schema})


# ---- the config -------------------------------------------------------------------------


@dataclass(frozen=True)
class SshConfig:
    """How the router reaches the login node. The local backend ignores it."""

    login_alias: str | None = _k(_str(_ALIAS), None)
    ssh_config: str = _k(_str(), "~/.ssh/config")
    identity_file: str | None = _k(_str(), None)
    known_hosts: str = _k(_str(), "~/.ssh/known_hosts")
    connect_timeout_seconds: float = _k(_secs(), 15)
    keepalive_seconds: float = _k(_secs(_NON_NEGATIVE), 30)
    command_timeout_seconds: float = _k(_secs(), 60)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the hpc/ scripts and the mailbox live (on the cluster, or on this host)."""

    workspace_root: str = _k(_str())
    cluster_subdir: str = _k(_str(_SUBDIR), "codeswarm")
    python: str = _k(_str(), "python3")

    @property
    def cluster_dir(self) -> str:
        """`<workspace_root>/<cluster_subdir>`: the hpc/ scripts are copied here at launch."""
        return posixpath.join(self.workspace_root, self.cluster_subdir)

    @property
    def mailbox_root(self) -> str:
        """A string join, never a filesystem call: it is usually a path on another host."""
        return posixpath.join(self.cluster_dir, "mailbox")


@dataclass(frozen=True)
class RouterConfig:
    """Router-host settings: the inject timeout, its own state, how fast it reads events."""

    inject_timeout_seconds: float = _k(_secs(), 60)
    state_dir: str = _k(_str(), "~/.codeswarm/state")
    follower_poll_seconds: float = _k(_secs(), _FOLLOWER["poll_seconds"])
    follower_idle_poll_seconds: float = _k(_secs(), _FOLLOWER["idle_poll_seconds"])
    event_log_segment_bytes: int = _k(_int(_AT_LEAST_4K), 8 << 20)
    event_log_max_bytes: int = _k(_int(_AT_LEAST_4K), 256 << 20)


@dataclass(frozen=True)
class SlurmConfig:
    """sbatch options; None leaves the choice to the cluster's defaults.

    ``agents_per_node`` and ``layout`` shape the swarm (the local backend honours
    ``agents_per_node`` too): ``job`` is one job of all nodes, ``array`` a job array of
    ``array_nodes_per_task`` nodes a task, at most ``array_throttle`` running at once.
    ``continuation`` (the key ``continue``) lets a swarm outlive its job: None is off.
    """

    partition: str | None = _k(_str(_WORD), None)
    account: str | None = _k(_str(_WORD), None)
    qos: str | None = _k(_str(_WORD), None)
    time: str = _k(_str(_TIME), "01:00:00")
    gres: str | None = _k(_str(_WORD), None)
    constraint: str | None = _k(_str(_WORD), None)
    cpus_per_task: int | None = _k(_int(_POSITIVE), None)
    mem: str | None = _k(_str(_MEM), None)
    extra_args: tuple[str, ...] = _k(_strs(_OPTION, _not_shape), ())
    setup: tuple[str, ...] = _k(_strs(), ())
    signal_seconds: int = _k(_int(_rule(lambda v: 0 < v <= 65535, "must be 1 to 65535")), 60)
    agents_per_node: int = _k(_int(_rule(lambda v: 1 <= v <= 256, "must be 1 to 256")), 1)
    layout: str = _k(_str(_choice("job", "array")), "job")
    array_nodes_per_task: int = _k(_int(_POSITIVE), 1)
    array_throttle: int | None = _k(_int(_POSITIVE), None)
    continuation: dict[str, Any] | None = dataclasses.field(
        default=None, metadata={"schema": _Object(_continue_errors, data_key="continue")}
    )


@dataclass(frozen=True)
class WorkerConfig:
    """Worker polling (fast while active, backing off when idle), codex restarts, event bounds."""

    poll_active_seconds: float = _k(_secs(), _WORKER["poll_active_seconds"])
    poll_idle_seconds: float = _k(_secs(), _WORKER["poll_idle_seconds"])
    active_window_seconds: float = _k(_secs(_NON_NEGATIVE), _WORKER["active_window_seconds"])
    codex_restart_backoff_seconds: float = _k(
        _secs(_NON_NEGATIVE), _WORKER["codex_restart_backoff_seconds"]
    )
    codex_restart_max: int = _k(_int(_NON_NEGATIVE), _WORKER["codex_restart_max"])
    max_event_bytes: int = _k(
        _int(_rule(lambda v: v >= 1024, "must be at least 1024")), _WORKER["max_event_bytes"]
    )


@dataclass(frozen=True)
class AgentConfig:
    """The codex agent. `config` and `env` are plain dicts (JSON-ready): treat as read-only."""

    codex_path: str = _k(_str(), _AGENT["codex_path"])
    codex_version: str | None = _k(_str(_VERSION), None)
    model: str | None = _k(_str(), _AGENT["model"])
    approval_policy: str = _k(
        _str(_choice("untrusted", "on-request", "never")), _AGENT["approval_policy"]
    )
    sandbox: str = _k(
        _str(_choice("read-only", "workspace-write", "danger-full-access")), _AGENT["sandbox"]
    )
    config: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"schema": _Object(_toml_errors)}
    )
    env: dict[str, str] = dataclasses.field(
        default_factory=dict, metadata={"schema": _Object(_env_errors)}
    )
    approval_decision: str = _k(_str(_choice("accept", "decline")), _AGENT["approval_decision"])
    approval_timeout_seconds: float = _k(_secs(), _AGENT["approval_timeout_seconds"])
    workdir: str | None = _k(_str(_template), _AGENT["workdir"])
    repo: str | None = _k(_str(_ABSOLUTE), _AGENT["repo"])


@dataclass(frozen=True)
class Config:
    """A whole, validated config. Paths on the router host are absolute, `~` expanded."""

    backend: Backend
    ssh: SshConfig
    cluster: ClusterConfig
    router: RouterConfig
    slurm: SlurmConfig
    worker: WorkerConfig
    agent: AgentConfig

    @property
    def mailbox_root(self) -> str:
        return self.cluster.mailbox_root

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, None values left out, such that parse_config(c.to_dict()) == c."""
        out: dict[str, Any] = {"backend": self.backend}
        for name in SECTIONS:
            section = getattr(self, name)
            values = (
                (f.metadata["schema"].data_key or f.name, getattr(section, f.name))
                for f in dataclasses.fields(section)
            )
            out[name] = {
                k: list(v) if isinstance(v, tuple) else copy.deepcopy(v)
                for k, v in values
                if v is not None
            }
        return out


SECTIONS: dict[str, type] = {k: v for k, v in get_type_hints(Config).items() if k != "backend"}


# ---- schemas, errors, loading -----------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE

    error_messages: ClassVar = {"type": "must be an object", "unknown": "unknown key"}


def _schema() -> Schema:
    """The marshmallow schema, generated from the dataclasses above."""
    root: dict[str, fields.Field] = {"backend": _str(_choice("slurm", "local"))}
    for name, cls in SECTIONS.items():
        keys = {f.name: f.metadata["schema"] for f in dataclasses.fields(cls)}
        section = _Strict.from_dict(keys, name=f"{cls.__name__}Schema")
        root[name] = fields.Nested(section, load_default=dict, error_messages={"null": _NULL})
    return _Strict.from_dict(root, name="ConfigSchema")()


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(errors: Any, schema: Any, data: Any, path: str, out: list[tuple[str, str]]) -> None:
    """marshmallow's nested error dict -> (dotted path, message) pairs, showing the bad value
    and suggesting the closest known key for an unknown one."""
    if not isinstance(errors, Mapping):
        shown = data is not None  # None: absent, or a null that the message already names
        out.extend((path, f"{m} (got {_show(data)})" if shown else m) for m in errors)
        return
    for key, sub in errors.items():
        if key == "_schema":
            _flatten(sub, schema, data, path, out)
            continue
        sub_path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip(".")
        known = (
            [field.data_key or name for name, field in schema.fields.items()]
            if isinstance(schema, Schema)
            else []
        )
        if sub == ["unknown key"] and known:
            close = difflib.get_close_matches(str(key), known, n=1)
            out.append(
                (sub_path, "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))
            )
            continue
        nested = schema.fields.get(key) if isinstance(schema, Schema) else None
        try:  # an _Object's messages show the values themselves
            child = None if isinstance(nested, _Object) else data[key]
        except (KeyError, IndexError, TypeError):
            child = None
        _flatten(sub, getattr(nested, "schema", None), child, sub_path, out)


def _cross_field(loaded: Mapping[str, Any], data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules that span keys. They run on whatever loaded, so one pass reports every error."""
    errors: list[tuple[str, str]] = []
    if "backend" in data and "backend" not in loaded:
        return errors  # the backend itself is wrong: its rules cannot apply
    if loaded.get("backend", "slurm") == "slurm":
        for section, key in (("ssh", "login_alias"), ("cluster", "workspace_root")):
            raw = data.get(section, {})
            if isinstance(raw, Mapping) and key not in raw:
                errors.append((f"{section}.{key}", "required when backend is slurm"))
        root = (loaded.get("cluster") or {}).get("workspace_root")
        if root is not None and not root.startswith("/"):
            msg = "must be an absolute path on the cluster for backend slurm (~ is not expanded)"
            errors.append(("cluster.workspace_root", f"{msg} (got {_show(root)})"))
    for section, fast, slow in (
        ("router", "follower_poll_seconds", "follower_idle_poll_seconds"),
        ("worker", "poll_active_seconds", "poll_idle_seconds"),
    ):
        given, cls = loaded.get(section) or {}, SECTIONS[section]
        lo, hi = given.get(fast, getattr(cls, fast)), given.get(slow, getattr(cls, slow))
        if hi < lo:
            msg = f"must be at least {section}.{fast} ({lo}) (got {hi})"
            errors.append((f"{section}.{slow}", msg))
    agent = loaded.get("agent") or {}
    if agent.get("codex_version") is not None:
        if agent.get("codex_path", "codex") != "codex":
            errors.append(("agent.codex_version", "set agent.codex_path or this, not both"))
        if loaded.get("backend", "slurm") == "local":
            msg = "is for backend slurm; the local backend runs the repository's pinned codex"
            errors.append(("agent.codex_version", msg))
    workdir = agent.get("workdir")
    if (
        agent.get("repo")
        and workdir
        and not ("{node_id}" in workdir and ("{swarm_id}" in workdir or "{job_id}" in workdir))
    ):
        msg = "must hold {node_id} and {swarm_id} or {job_id} with agent.repo: one worktree a node"
        errors.append(("agent.workdir", msg))
    slurm = loaded.get("slurm") or {}
    if slurm.get("continuation") is not None:
        signal = slurm.get("signal_seconds", SlurmConfig.signal_seconds)
        grace = dict(_CONTINUE, **slurm["continuation"])["turn_grace_seconds"]
        if isinstance(grace, int | float) and grace >= signal:
            msg = f"must be less than slurm.signal_seconds ({signal}), to exit before the limit"
            errors.append(("slurm.continue.turn_grace_seconds", f"{msg} (got {grace})"))
    shadowed = {"model": "model", "approval_policy": "approval_policy", "sandbox_mode": "sandbox"}
    for key, own in shadowed.items():  # one place to set each, no silent override
        if key in (loaded.get("agent") or {}).get("config", {}):
            errors.append((f"agent.config.{key}", f"set agent.{own} instead"))
    return errors


def _host_path(path: str, base: Path) -> str:
    """A path on the router host: `~` expanded, a relative path taken from `base`."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def parse_config(
    data: Mapping[str, Any],
    source: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate parsed JSON. Paths on the router host (router.state_dir, the ssh files, and
    cluster.workspace_root for the local backend) get `~` expanded, and relative ones resolve
    against `base_dir`: the config file's directory, or the current directory if None. A Slurm
    workspace_root is a path on the cluster: it is kept as written and must be absolute."""
    schema = _schema()
    errors: list[tuple[str, str]] = []
    try:
        loaded = schema.load(data)
    except ValidationError as err:
        _flatten(err.messages, schema, data, "", errors)
        loaded = err.valid_data if isinstance(err.valid_data, dict) else {}
    if isinstance(data, Mapping):
        errors += _cross_field(loaded, data)
    if errors:
        raise ConfigError(source, errors)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    backend = loaded.get("backend", "slurm")
    cluster = dict(loaded["cluster"])
    if backend == "local":
        root = cluster.get("workspace_root", LOCAL_WORKSPACE_ROOT)
        cluster["workspace_root"] = _host_path(root, base)
    ssh = SshConfig(**loaded["ssh"])
    ssh_paths = {k: getattr(ssh, k) for k in ("ssh_config", "identity_file", "known_hosts")}
    router = RouterConfig(**loaded["router"])
    return Config(
        backend=backend,
        ssh=dataclasses.replace(ssh, **{k: _host_path(v, base) for k, v in ssh_paths.items() if v}),
        cluster=ClusterConfig(**cluster),
        router=dataclasses.replace(router, state_dir=_host_path(router.state_dir, base)),
        slurm=SlurmConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in loaded["slurm"].items()}
        ),
        worker=WorkerConfig(**loaded["worker"]),
        agent=AgentConfig(**loaded["agent"]),
    )


def _unique_keys(source: str) -> Any:
    """A json object hook: a key given twice is a mistake that json.loads would hide."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if dupes := sorted({k for k in keys if keys.count(k) > 1}):
            raise ConfigError(source, [("", f"duplicate key {dupes[0]!r}")])
        return dict(pairs)

    return hook


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a JSON config file; relative local paths resolve against its folder."""
    source = os.fspath(path)
    try:
        data = json.loads(
            Path(source).read_text(encoding="utf-8"), object_pairs_hook=_unique_keys(source)
        )
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise ConfigError(source, [("", f"invalid JSON at {where}: {err.msg}")]) from None
    except OSError as err:
        raise ConfigError(source, [("", f"cannot read: {err.strerror or err}")]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(source, [("", str(err))]) from None
    return parse_config(data, source, base_dir=Path(source).absolute().parent)


def default_local_config() -> Config:
    """The embedded default: the local backend, no SSH or Slurm (same as configs/local.json)."""
    return parse_config(LOCAL_CONFIG, "<default local config>")
