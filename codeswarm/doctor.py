"""``codeswarm doctor``: check, one step at a time, what a launch will need, and say what to fix.

Each check yields a ``Check`` as soon as it is known, so a person sees progress while an
``srun`` waits in the queue. A failed step skips those that depend on it (no login, no
``squeue``), and says so, rather than piling up errors that share one cause.

The compute-node probes (the workspace is shared, codex runs, the model answers) are one
``hpc.doctor_probe`` run, its source sent on stdin (it must not depend on the shared
workspace it checks): under ``srun`` on a cluster (``doctor_slurm``), as a plain process on
the local backend (here).
"""

from __future__ import annotations

import json
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import paramiko

from codeswarm.config import AgentConfig, Config
from codeswarm.errors import BackendError, CodeswarmError

PASS, FAIL, SKIP = "pass", "fail", "skip"
MIN_PYTHON = (3, 8)
PYTHON_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"
DEFAULT_ENDPOINT = "https://api.openai.com/v1"  # codex's built-in "openai" provider
PROBE_TIMEOUT = 120.0  # codex --version and one HTTP request, once the probe runs
ON_NODE = [
    "compute node",
    "workspace shared",
    "python on a compute node",
    "codex on a compute node",
    "model endpoint",
]


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is pass, fail or skip; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def model_endpoint(agent: AgentConfig) -> str | None:
    """The base URL codex will call, from ``agent.config`` as codex reads it.

    None for a built-in provider other than OpenAI's (codex knows its URL, codeswarm does not).
    """
    provider = agent.config.get("model_provider", "openai")
    custom = agent.config.get("model_providers", {}).get(provider)
    if isinstance(custom, dict) and custom.get("base_url"):
        return str(custom["base_url"])
    if provider == "openai":
        return str(agent.config.get("openai_base_url", DEFAULT_ENDPOINT))
    return None


def connect_failure(exc: BaseException) -> str:
    """Which step of ``ssh`` failed: ``reach`` (the alias, its address, a hop), ``host_key``
    or ``login``, from the exception and the causes it was raised from."""
    seen = exc.__cause__ if isinstance(exc, BackendError) else exc
    while seen is not None:
        if isinstance(seen, paramiko.AuthenticationException):
            return "login"
        if isinstance(seen, paramiko.BadHostKeyException) or any(
            words in str(seen) for words in ("known_hosts", "host key")
        ):
            return "host_key"
        if isinstance(seen, OSError | socket.timeout):
            return "reach"
        seen = seen.__cause__ or seen.__context__
    return "reach"  # e.g. the ssh config does not resolve the alias: no connection was tried


def host_key_fix(exc: BaseException, alias: str | None, known_hosts: str) -> str:
    """The fix for a refused host key, from the refusal's own words (``known_hosts.verify``
    knows whether the key is unknown, changed, revoked or only CA-signed); ``known_hosts``
    says which files codeswarm reads."""
    refusal = exc.__cause__
    while refusal is not None and not isinstance(refusal, BackendError):
        refusal = refusal.__cause__
    if refusal is None:
        action = f"Check the server's fingerprint, then add its key to {known_hosts}."
    else:
        text = str(refusal.args[0]).replace("<alias>", str(alias))
        _, sep, action = text.partition(". ")
        if not sep:  # @revoked: there is nothing to accept
            action = (
                f"Do not connect: {text}. Ask the cluster's administrators for the host's "
                "current key and its fingerprint."
            )
    return f"{action.rstrip('.')}. codeswarm reads {known_hosts}."


def python_problem(version: str) -> str | None:
    """Why a ``major.minor`` Python cannot run the cluster scripts, or None."""
    major, _, rest = version.strip().partition(".")
    minor = rest.partition(".")[0]
    if not (major.isdigit() and minor.isdigit()):
        return f"printed {version.strip()!r}, not a version"
    if (int(major), int(minor)) < MIN_PYTHON:
        return f"is Python {version.strip()}; codeswarm's cluster scripts need 3.8 or newer"
    return None


NETWORK_ENV = {
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "ssl_cert_file",
    "ssl_cert_dir",
}


def network_env(agent: AgentConfig) -> dict[str, str]:
    """The variables of agent.env that decide how codex reaches the model (proxies, CAs),
    "$NAME" left for the node to expand; no API key, which the probe does not send."""
    return {k: v for k, v in agent.env.items() if k.lower() in NETWORK_ENV}


def probe_source(env: dict[str, str] | None = None) -> bytes:
    """``hpc/doctor_probe.py`` as this codeswarm ships it, after ``PROBE_ENV = env``: sent on
    stdin, so the probe runs on a node that does not see the workspace and can say so, and
    a proxy's credentials stay off the command line."""
    source = resources.files("codeswarm.hpc").joinpath("doctor_probe.py").read_bytes()
    return f"PROBE_ENV = {json.dumps(env or {})}\n".encode() + source


def probe_argv(
    python: str, token_file: str, token: str, codex: str, endpoint: str | None
) -> list[str]:
    """``python - ARGS``: the probe reads its own source from stdin (``probe_source``)."""
    argv = [python, "-", "--token-file", token_file, "--token", token, "--codex", codex]
    return argv + (["--endpoint", endpoint] if endpoint else [])


def parse_probe(output: bytes) -> dict[str, dict[str, Any]]:
    """The probe's JSON line; srun and ``slurm.setup`` may print lines of their own before it."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise BackendError(f"the probe printed no result: {output[-500:]!r}")


def probe_checks(
    found: dict[str, dict[str, Any]], where: str, endpoint: str | None, codex: str, shared: bool
) -> Iterator[Check]:
    """The probe's verdicts as report lines, each failure with its fix; ``shared`` when the
    probe ran on a compute node, whose view of the workspace is then checked too, and whose
    python and codex are named apart from the login node's."""
    on = f" on {where}" if shared else ""
    if shared:
        ok = found["shared"]["ok"]
        yield Check(
            "workspace shared",
            PASS if ok else FAIL,
            f"{where} {found['shared']['detail']}",
            ""
            if ok
            else "cluster.workspace_root must be on a filesystem the compute nodes "
            "mount at the same path (a shared /home, /work or /scratch, not /tmp).",
        )
    python = found["python"]["detail"]
    problem = python_problem(python)
    yield Check(
        "python" + on,
        FAIL if problem else PASS,
        problem or f"Python {python}",
        "Set cluster.python to a Python 3.8+ the compute nodes have, or load one in "
        'slurm.setup (e.g. "module load python").'
        if problem
        else "",
    )
    ok = found["codex"]["ok"]
    yield Check(
        "codex" + on,
        PASS if ok else FAIL,
        found["codex"]["detail"],
        ""
        if ok
        else f"{codex} must run on {where}: set agent.codex_path to a binary "
        "on the shared filesystem, or agent.codex_version to have codeswarm install one.",
    )
    if endpoint is None:
        yield Check("model endpoint", SKIP, "agent.config names a built-in provider; not probed")
        return
    ok = found["endpoint"]["ok"]
    route = (
        "that compute nodes have a route to it (a proxy in agent.env, e.g. HTTPS_PROXY, or "
        "a server inside the cluster)."
    )
    yield Check(
        "model endpoint",
        PASS if ok else FAIL,
        f"from {where}: {found['endpoint']['detail']}",
        ""
        if ok
        else f"{where} cannot reach {endpoint}: check the provider's base_url in "
        f"agent.config, and {route if shared else 'that the server runs.'}",
    )


def skipped(names: list[str], why: str) -> Iterator[Check]:
    for name in names:
        yield Check(name, SKIP, why)


def local_checks(config: Config) -> Iterator[Check]:
    """The local backend: state dir, workspace, this Python, codex, the model endpoint."""
    from codeswarm.backends.local import LocalTransport
    from codeswarm.hpc.private import private_dir
    from codeswarm.registry import SwarmRegistry
    from codeswarm.router import worker_settings

    state_dir = config.router.state_dir
    transport = LocalTransport(config.cluster.cluster_dir, 1.0, 1.0)
    try:
        private_dir(state_dir)
        count = len(SwarmRegistry(state_dir, transport.mailbox).all())
        yield Check("state dir", PASS, f"{state_dir} ({count} swarms)")
    except (OSError, CodeswarmError) as exc:
        yield Check(
            "state dir",
            FAIL,
            f"{state_dir}: {exc}",
            "Set router.state_dir to a directory you can write, or fix the file named.",
        )
    cluster_dir = config.cluster.cluster_dir
    try:
        transport.prepare()
        token_file = Path(cluster_dir, "logs", f"doctor-{secrets.token_hex(6)}.token")
        token = secrets.token_hex(8)
        token_file.write_text(token)
    except OSError as exc:
        yield Check(
            "workspace",
            FAIL,
            f"{cluster_dir}: {exc.strerror or exc}",
            "Set cluster.workspace_root to a directory you can write.",
        )
        yield from skipped(["python", "codex", "model endpoint"], "needs the workspace")
        return
    yield Check("workspace", PASS, f"{cluster_dir} is writable")
    try:
        try:
            codex = worker_settings(config)["agent"]["codex_path"]
        except CodeswarmError as exc:
            yield from skipped(["python"], "needs codex")
            yield Check("codex", FAIL, str(exc), "Install codex as the message says.")
            yield from skipped(["model endpoint"], "needs codex")
            return
        endpoint = model_endpoint(config.agent)
        argv = probe_argv(sys.executable, str(token_file), token, codex, endpoint)
        try:
            done = subprocess.run(
                argv,
                input=probe_source(network_env(config.agent)),
                capture_output=True,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
            found = parse_probe(done.stdout)
        except (subprocess.TimeoutExpired, BackendError) as exc:
            fix = f"Run `{shlex.join(argv)} < hpc/doctor_probe.py` to see where it stops."
            yield Check("python", FAIL, f"hpc.doctor_probe: {exc}", fix)
            yield from skipped(["codex", "model endpoint"], "needs the probe")
            return
        yield from probe_checks(found, "this machine", endpoint, codex, shared=False)
    finally:
        token_file.unlink(missing_ok=True)


def run_checks(config: Config, srun_timeout: float) -> Iterator[Check]:
    """Every check of the configured backend, in order, as each completes."""
    if config.backend == "slurm":
        from codeswarm.doctor_slurm import slurm_checks

        return slurm_checks(config, srun_timeout)
    return local_checks(config)
