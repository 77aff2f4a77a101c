"""``codeswarm doctor`` on the Slurm backend: from the ssh alias to a compute node's request.

One connection answers the three SSH questions (the alias reaches a server, the host key is
known, the login works); the compute-node probes run under one short ``srun``.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import shlex
from collections.abc import Iterator
from typing import Any

from codeswarm.config import Config
from codeswarm.doctor import (
    FAIL,
    ON_NODE,
    PASS,
    PROBE_TIMEOUT,
    PYTHON_VERSION,
    SKIP,
    Check,
    connect_failure,
    host_key_fix,
    model_endpoint,
    network_env,
    parse_probe,
    probe_argv,
    probe_checks,
    probe_source,
    python_problem,
    skipped,
)
from codeswarm.errors import BackendError


def slurm_checks(config: Config, srun_timeout: float) -> Iterator[Check]:
    """The Slurm backend, from the ssh alias to a request from a compute node."""
    from codeswarm.backends.ssh import SSHConnection
    from codeswarm.backends.ssh_transport import SSHTransport

    alias = config.ssh.login_alias
    connection = SSHConnection(config.ssh)
    transport = SSHTransport(
        connection,
        config.cluster.cluster_dir,
        config.cluster.python,
        1.0,
        1.0,
        None,  # codex is installed as a check of its own (_codex_install), not by prepare()
    )
    try:
        checks = list(_ssh_checks(connection, alias))
        yield from checks
        if any(check.status == FAIL for check in checks):
            needs = ["slurm", "python", "workspace", "codex install", *ON_NODE]
            yield from skipped(needs, "needs a login")
            return
        yield from _cluster_checks(config, connection, transport, srun_timeout)
    finally:
        transport.close()


def _ssh_checks(connection: Any, alias: str | None) -> Iterator[Check]:
    """The alias resolves, the host key is known, the login works: one connection tells all."""
    where = f"Host {alias} in {connection.settings.ssh_config}"
    try:
        connection.transport()
    except BackendError as exc:
        step = connect_failure(exc)
        fixes = {
            "reach": f"Check HostName and Port of {where}, and that `ssh {alias} true` "
            "reaches it from this machine (VPN, ProxyJump).",
            "host_key": host_key_fix(
                exc, alias, "ssh.known_hosts, or the UserKnownHostsFile of the alias"
            ),
            "login": f"Make `ssh -o BatchMode=yes {alias} true` work without a prompt: an "
            "IdentityFile in the alias (or ssh.identity_file), or a key loaded in ssh-agent.",
        }
        order = ["reach", "host_key", "login"]
        names = {"reach": "ssh alias", "host_key": "host key", "login": "login"}
        passed = {"reach": f"{alias} reaches an SSH server", "host_key": "known"}
        for done in order[: order.index(step)]:
            yield Check(names[done], PASS, passed[done])
        yield Check(names[step], FAIL, str(exc), fixes[step])
        yield from skipped(
            [names[s] for s in order[order.index(step) + 1 :]], f"needs {names[step]}"
        )
        return
    yield Check("ssh alias", PASS, f"{alias} resolves and answers")
    yield Check("host key", PASS, "known")
    yield Check("login", PASS, f"logged in to {alias}")


def _cluster_checks(
    config: Config, connection: Any, transport: Any, srun_timeout: float
) -> Iterator[Check]:
    alias = config.ssh.login_alias
    try:
        versions = [
            connection.run([tool, "--version"]).decode().strip() for tool in ("sbatch", "squeue")
        ]
        connection.run(["squeue", "--me", "-h", "-o", "%i"])
        yield Check("slurm", PASS, f"sbatch and squeue answer ({versions[0]})")
    except BackendError as exc:
        yield Check(
            "slurm",
            FAIL,
            str(exc),
            f"sbatch and squeue must be on the PATH of a non-interactive `ssh {alias}` "
            "(set it in ~/.bashrc on the login node), and the controller up.",
        )
        yield from skipped(["python", "workspace", "codex install", *ON_NODE], "needs slurm")
        return
    python = config.cluster.python
    try:
        version = connection.run([python, "-c", PYTHON_VERSION]).decode().strip()
        problem = python_problem(version)
    except BackendError as exc:
        problem, version = f"does not run: {exc}", ""
    if problem:
        yield Check(
            "python",
            FAIL,
            f"cluster.python {python!r} {problem}",
            "Set cluster.python to a Python 3.8 or newer on the login node "
            "(an absolute path works).",
        )
        yield from skipped(["workspace", "codex install", *ON_NODE], "needs python")
        return
    yield Check("python", PASS, f"{python} is Python {version} on {alias}")
    root, cluster_dir = config.cluster.workspace_root, config.cluster.cluster_dir
    token_file = posixpath.join(cluster_dir, "logs", f"doctor-{secrets.token_hex(6)}.token")
    token = secrets.token_hex(8)
    try:
        connection.run(["sh", "-c", 'test -d "$1" && test -w "$1"', "sh", root])
    except BackendError:
        yield Check(
            "workspace",
            FAIL,
            f"cluster.workspace_root {root} is not a directory you can write on {alias}",
            f"Create it (`ssh {alias} mkdir -p {shlex.quote(root)}`) on the filesystem "
            "the compute nodes share, or set cluster.workspace_root to one that is.",
        )
        yield from skipped(["codex install", *ON_NODE], "needs the workspace")
        return
    try:
        transport.prepare()
        transport.write_file(token_file, token.encode())
    except BackendError as exc:
        yield Check(
            "workspace",
            FAIL,
            str(exc),
            f"Fix what the message names in {cluster_dir} (permissions, quota).",
        )
        yield from skipped(["codex install", *ON_NODE], "needs the workspace")
        return
    yield Check("workspace", PASS, f"{cluster_dir} is writable, codeswarm's scripts installed")
    name = f"codeswarm-doctor-{secrets.token_hex(4)}"
    try:
        install = _codex_install(config, transport)
        yield install
        if install.status == FAIL:
            yield from skipped(ON_NODE, "needs codex")
            return
        codex = transport.installed_codex or config.agent.codex_path
        endpoint = model_endpoint(config.agent)
        command = probe_argv(python, token_file, token, codex, endpoint)
        argv = srun_argv(config, command, name, srun_timeout)
        try:
            source = probe_source(network_env(config.agent))
            # --immediate bounds the wait in the queue; the ssh timeout adds the probe's run.
            out = connection.run(argv, stdin=source, timeout=srun_timeout + PROBE_TIMEOUT)
            found = parse_probe(out)
        except BackendError as exc:
            detail = f"srun on {alias}: {exc.stderr}" if exc.stderr else str(exc)
            yield Check("compute node", FAIL, detail, srun_fix(exc, srun_timeout))
            yield from skipped(ON_NODE[1:], "needs srun")
            return
        yield Check("compute node", PASS, "srun ran the probe")
        yield from probe_checks(found, "a compute node", endpoint, codex, shared=True)
    finally:
        with contextlib.suppress(BackendError):  # a step still queued or running: not left behind
            connection.run(["scancel", "--me", f"--name={name}"])
        with contextlib.suppress(BackendError):
            connection.run(["rm", "-f", token_file])


def _codex_install(config: Config, transport: Any) -> Check:
    """agent.codex_version installed with npm on the login node, as ``launch`` would."""
    version = config.agent.codex_version
    if not version:
        return Check("codex install", SKIP, f"agent.codex_version unset: {config.agent.codex_path}")
    try:
        transport.installed_codex = transport.install_codex(version)
    except BackendError as exc:
        return Check(
            "codex install",
            FAIL,
            str(exc),
            f"Make npm work on {config.ssh.login_alias} (on the PATH of a non-interactive ssh "
            "command, reaching its registry), or set agent.codex_path to a codex binary on the "
            "shared filesystem instead of agent.codex_version.",
        )
    return Check("codex install", PASS, f"@openai/codex@{version} at {transport.installed_codex}")


def srun_argv(config: Config, command: list[str], name: str, wait: float) -> list[str]:
    """One short 1-node step with the job's options and ``slurm.setup``, running ``command``;
    named ``name`` (to cancel it by), given up by srun itself if not allocated within ``wait``
    seconds."""
    slurm = config.slurm
    options = {
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "constraint": slurm.constraint,
        "gres": slurm.gres,
    }
    argv = ["srun", f"--job-name={name}", f"--immediate={max(int(wait), 1)}"]
    argv += ["--nodes=1", "--ntasks=1", "--time=2"]
    argv += [f"--{name}={value}" for name, value in options.items() if value is not None]
    script = "\n".join([*slurm.setup, 'exec "$@"'])
    return [*argv, "sh", "-c", script, "sh", *command]


def srun_fix(exc: BackendError, srun_timeout: float) -> str:
    """What to do when the probe's srun failed: it waited too long (``--immediate`` gave up on
    a step Slurm had queued, or the ssh command timed out), or ran and failed."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, TimeoutError):
        seen = seen.__cause__ or seen.__context__
    queued = "queued and waiting" in f"{exc.stderr or ''}{exc}"
    if seen is not None or queued or "timed out" in str(exc):
        return (
            f"srun did not run a 1-node step within {srun_timeout:.0f}s: the queue is busy "
            "(retry with a longer --srun-timeout) or slurm.partition/account/qos cannot run it."
        )
    return (
        "srun or the probe failed: check slurm.partition, account and qos, and that "
        "cluster.python (after slurm.setup) runs on the compute nodes."
    )
