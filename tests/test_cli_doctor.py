"""codeswarm doctor: its pure parts, then real runs on the local backend and the test cluster."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from codeswarm.backends.ssh import SSHConnection
from codeswarm.cli import main
from codeswarm.config import parse_config
from codeswarm.doctor import (
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
)
from codeswarm.doctor_slurm import srun_argv, srun_fix
from codeswarm.errors import BackendError
from tests.support.cluster import hold_every_node
from tests.support.worker import agent_settings
from tests.test_slurm import cluster_codex, slurm_config  # noqa: F401 (fixtures)


def provider(base_url: str) -> dict:
    return {
        "model_provider": "site",
        "model_providers": {"site": {"name": "s", "base_url": base_url, "wire_api": "responses"}},
    }


def test_model_endpoint_is_what_codex_will_call():
    agent = parse_config({"backend": "local", "agent": {"config": provider("http://h:1/v1")}})
    assert model_endpoint(agent.agent) == "http://h:1/v1"
    assert model_endpoint(parse_config({"backend": "local"}).agent) == "https://api.openai.com/v1"
    builtin = parse_config({"backend": "local", "agent": {"config": {"model_provider": "oss"}}})
    assert model_endpoint(builtin.agent) is None


def test_python_versions():
    assert python_problem("3.11.7") is None
    assert python_problem("3.8") is None
    assert "3.8 or newer" in python_problem("3.6")
    assert "not a version" in python_problem("Python")


def wrapped(cause: BaseException) -> BackendError:
    try:
        raise BackendError("cannot connect") from cause
    except BackendError as exc:
        return exc


def test_connect_failure_names_the_step_that_failed():
    assert connect_failure(wrapped(socket.gaierror(-2, "Name or service not known"))) == "reach"
    assert connect_failure(wrapped(ConnectionRefusedError(111, "refused"))) == "reach"
    unknown = paramiko.SSHException("Server '[h]:22' not found in known_hosts")
    assert connect_failure(wrapped(unknown)) == "host_key"
    assert connect_failure(wrapped(paramiko.AuthenticationException("denied"))) == "login"


def refusal(tmp_path: Path, known_line: str) -> BackendError:
    """What connecting raises when known_hosts.verify refuses the server's key."""
    from codeswarm.backends import known_hosts

    path = tmp_path / "known_hosts"
    path.write_text(known_line + "\n")
    server = paramiko.Ed25519Key.from_private_key_file(str(ed25519(tmp_path, "server")))
    try:
        known_hosts.verify(
            known_hosts.load((str(path),)), "[h]:2222", "ssh-ed25519", server.asbytes()
        )
    except BackendError as refused:
        return wrapped(refused)
    raise AssertionError("verify accepted the key")


def ed25519(tmp_path: Path, name: str) -> Path:
    key = tmp_path / name
    if key.exists():
        return key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_the_host_key_fix_follows_the_refusal(tmp_path):
    other = " ".join(Path(str(ed25519(tmp_path, "other")) + ".pub").read_text().split()[:2])
    changed = host_key_fix(refusal(tmp_path, f"[h]:2222 {other}"), "c", "K")
    assert "ssh-keygen -R '[h]:2222'" in changed and "accept" not in changed
    assert changed.endswith("codeswarm reads K.")
    ca_only = host_key_fix(refusal(tmp_path, f"@cert-authority * {other}"), "c", "K")
    assert "plain entry" in ca_only and "ssh-keyscan" in ca_only
    unknown = host_key_fix(refusal(tmp_path, f"other-host {other}"), "c", "K")
    assert "`ssh c true`" in unknown and "ssh-keygen -R" not in unknown
    assert "not in known_hosts" not in unknown  # the diagnosis is the detail; the fix is the action


def test_parse_probe_skips_what_srun_and_setup_print():
    out = b'srun: job 7 queued and waiting\nmodule loaded {x}\n{"codex": {"ok": true}}\n'
    assert parse_probe(out) == {"codex": {"ok": True}}
    with pytest.raises(BackendError, match="no result"):
        parse_probe(b"sh: python3: not found\n")


def test_srun_takes_the_jobs_options_and_setup():
    config = parse_config(
        {
            "ssh": {"login_alias": "c"},
            "cluster": {"workspace_root": "/w"},
            "slurm": {"partition": "gpu", "account": "a1", "setup": ["module load python"]},
        }
    )
    argv = srun_argv(config, ["python3", "-"], "codeswarm-doctor-1a", 300)
    assert argv[0] == "srun" and "--partition=gpu" in argv and "--account=a1" in argv
    assert "--job-name=codeswarm-doctor-1a" in argv and "--immediate=300" in argv
    assert not any(a.startswith("--qos") for a in argv)
    shell = argv.index("sh")
    assert argv[shell + 2] == 'module load python\nexec "$@"'
    assert argv[-2:] == ["python3", "-"]


def test_the_probe_reports_each_failure_and_the_report_says_what_to_fix(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text("written-by-someone-else")
    argv = probe_argv(
        sys.executable,
        str(token_file),
        "mine",
        str(tmp_path / "no-codex"),
        f"http://127.0.0.1:{port}/v1",
    )
    # From a directory with no hpc/ in sight, as on a node that does not mount the workspace.
    run = {"input": probe_source(), "capture_output": True, "timeout": 60, "cwd": tmp_path}
    done = subprocess.run(argv, **run, check=True)
    found = parse_probe(done.stdout)
    checks = {c.name: c for c in probe_checks(found, "a compute node", "http://x/v1", "cx", True)}
    assert {c.status for c in checks.values() if c.name != "python on a compute node"} == {"fail"}
    assert checks["python on a compute node"].status == "pass"
    assert "not what was written" in checks["workspace shared"].detail
    assert "cluster.workspace_root" in checks["workspace shared"].fix
    assert "agent.codex_path" in checks["codex on a compute node"].fix
    assert "refused" in checks["model endpoint"].detail.lower()

    token_file.unlink()  # the workspace is not shared: the token check says so, and the fix
    again = parse_probe(subprocess.run(argv, **run).stdout)
    assert not again["shared"]["ok"] and "cannot read" in again["shared"]["detail"]
    unshared = {c.name: c for c in probe_checks(again, "a compute node", None, "cx", True)}
    assert unshared["workspace shared"].status == "fail"
    assert "compute nodes mount" in unshared["workspace shared"].fix


def test_the_probe_reaches_the_model_through_the_proxy_agent_env_names(tmp_path):
    seen: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a proxy is asked for the whole URL
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    config = parse_config(
        {
            "backend": "local",
            "agent": {"env": {"HTTP_PROXY": "$SITE_PROXY", "OPENAI_API_KEY": "sk-x"}},
        }
    )
    source = probe_source(network_env(config.agent))
    assert b"sk-x" not in source  # only what routes the request goes to the node
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        argv = probe_argv(
            sys.executable, str(tmp_path / "t"), "t", "codex", "http://model.invalid/v1"
        )
        env = {"PATH": os.environ["PATH"], "SITE_PROXY": f"http://127.0.0.1:{proxy.server_port}"}
        done = subprocess.run(argv, input=source, capture_output=True, env=env, timeout=60)
        proxy.shutdown()
    found = parse_probe(done.stdout)
    assert found["endpoint"]["ok"], found
    assert seen == ["http://model.invalid/v1/models"]


def test_a_failed_check_prints_its_fix():
    from codeswarm.cli.doctor import line

    failed = line(Check("workspace", "fail", "/w is missing", "Create it."))
    assert failed == "FAIL workspace: /w is missing\n     fix: Create it."
    assert line(Check("login", "pass", "ok")) == "ok   login: ok"


def doctor(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["doctor", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


LOCAL_CHECKS = ["state dir", "workspace", "python", "codex", "model endpoint"]


def statuses(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


@pytest.mark.integration
def test_local_doctor_passes_with_codex_and_the_model_server(config_file, model_server):
    code, report = doctor("--config", str(config_file))
    assert code == 0, report
    assert report["ok"] and report["backend"] == "local"
    assert set(statuses(report).values()) == {"pass"}
    assert list(statuses(report)) == LOCAL_CHECKS
    endpoint = next(c for c in report["checks"] if c["name"] == "model endpoint")
    assert "HTTP 200" in endpoint["detail"]
    assert not list(
        Path(json.loads(config_file.read_text())["cluster"]["workspace_root"]).rglob(
            "doctor-*.token"
        )
    )


@pytest.mark.integration
def test_local_doctor_fails_an_unreachable_model_and_a_workspace_it_cannot_write(
    config_file, tmp_path
):
    data = json.loads(config_file.read_text())
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data["agent"]["config"] = provider(f"http://127.0.0.1:{port}/v1")
    config_file.write_text(json.dumps(data))
    code, report = doctor("--config", str(config_file))
    assert code == 1 and not report["ok"]
    endpoint = next(c for c in report["checks"] if c["name"] == "model endpoint")
    assert endpoint["status"] == "fail" and f"127.0.0.1:{port}" in endpoint["fix"]
    assert list(statuses(report)) == LOCAL_CHECKS

    data["agent"]["codex_path"] = str(tmp_path / "no-codex")
    config_file.write_text(json.dumps(data))
    code, report = doctor("--config", str(config_file))
    assert code == 1 and statuses(report)["codex"] == "fail", report
    assert sorted(statuses(report)) == sorted(LOCAL_CHECKS)

    (tmp_path / "a-file").write_text("")
    data["cluster"]["workspace_root"] = str(tmp_path / "a-file" / "ws")
    config_file.write_text(json.dumps(data))
    code, report = doctor("--config", str(config_file))
    assert code == 1
    assert statuses(report)["workspace"] == "fail"
    assert statuses(report)["model endpoint"] == "skip"
    assert sorted(statuses(report)) == sorted(LOCAL_CHECKS)  # one name a check, whatever failed

    human = CliRunner().invoke(main, ["doctor", "--config", str(config_file)])
    assert human.exit_code == 1
    assert "FAIL workspace" in human.stdout and "fix: Set cluster.workspace_root" in human.stdout


def write_slurm_config(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def doctor_config(slurm_config, cluster_codex, model_server):  # noqa: F811 (fixtures)
    def make(**extra):
        data = slurm_config(**extra)
        data["agent"] = {
            "codex_path": cluster_codex,
            "config": agent_settings(cluster_codex, model_server.url)["agent"]["config"],
        }
        return data

    return make


@pytest.mark.integration
def test_slurm_doctor_passes_on_the_test_cluster(doctor_config, tmp_path):
    code, report = doctor("--config", write_slurm_config(tmp_path, doctor_config()))
    assert code == 0, report
    found = statuses(report)
    for name in (
        "ssh alias",
        "host key",
        "login",
        "slurm",
        "python",
        "workspace",
        "compute node",
        "workspace shared",
        "codex on a compute node",
        "model endpoint",
    ):
        assert found[name] == "pass", (name, report)
    codex = next(c for c in report["checks"] if c["name"] == "codex on a compute node")
    assert codex["detail"].startswith("codex-cli")
    assert found["codex install"] == "skip"  # agent.codex_path names the binary


@pytest.mark.integration
def test_slurm_doctor_names_an_unknown_host_key(doctor_config, minicluster, tmp_path):
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    other_key = ssh_dir / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    known = ssh_dir / "known_hosts"
    kind, key = (ssh_dir / "other.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:2222 {kind} {key}\n")  # the host, with another key
    source = Path(minicluster["MINICLUSTER_SSH_CONFIG"]).read_text()
    config = ssh_dir / "config"
    config.write_text(source.replace(minicluster["MINICLUSTER_KNOWN_HOSTS"], str(known)))
    data = doctor_config()
    data["ssh"]["ssh_config"] = str(config)
    data["ssh"]["known_hosts"] = str(known)
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert found["ssh alias"] == "pass" and found["host key"] == "fail"
    assert found["login"] == "skip" and found["compute node"] == "skip"
    host_key = next(c for c in report["checks"] if c["name"] == "host key")
    assert "ssh-keygen -R" in host_key["fix"], host_key  # a changed key: not "accept it"

    known.write_text("")  # no entry at all: unknown, not changed
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1 and statuses(report)["host key"] == "fail"


@pytest.mark.integration
def test_slurm_doctor_names_a_refused_login_and_an_unknown_host(
    doctor_config, minicluster, tmp_path
):
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    stranger = ssh_dir / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    source = Path(minicluster["MINICLUSTER_SSH_CONFIG"]).read_text()
    config = ssh_dir / "config"
    config.write_text(source.replace(minicluster["MINICLUSTER_SSH_KEY"], str(stranger)))
    data = doctor_config()
    data["ssh"]["ssh_config"] = str(config)
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert (found["ssh alias"], found["host key"], found["login"]) == ("pass", "pass", "fail")
    login = next(c for c in report["checks"] if c["name"] == "login")
    assert "BatchMode=yes" in login["fix"]

    config.write_text(source.replace("HostName 127.0.0.1", "HostName no-such-host.invalid"))
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert (found["ssh alias"], found["host key"], found["login"]) == ("fail", "skip", "skip")
    alias = next(c for c in report["checks"] if c["name"] == "ssh alias")
    assert "HostName and Port" in alias["fix"]


@pytest.mark.integration
def test_slurm_doctor_names_a_missing_workspace(doctor_config, minicluster, tmp_path):
    data = doctor_config()
    missing = f"{minicluster['MINICLUSTER_HOME']}/no-such-workspace-{tmp_path.name}"
    data["cluster"]["workspace_root"] = missing
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert found["login"] == "pass" and found["slurm"] == "pass"
    assert found["workspace"] == "fail" and found["workspace shared"] == "skip"
    workspace = next(c for c in report["checks"] if c["name"] == "workspace")
    assert missing in workspace["detail"] and "mkdir -p" in workspace["fix"]
    assert not Path(missing).exists()


@pytest.mark.integration
def test_slurm_doctor_names_a_failed_codex_install_as_its_own_check(doctor_config, tmp_path):
    data = doctor_config()
    del data["agent"]["codex_path"]
    data["agent"]["codex_version"] = "0.0.0-no-such-version"
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert found["workspace"] == "pass" and found["codex install"] == "fail"
    assert found["compute node"] == "skip" and found["codex on a compute node"] == "skip"
    install = next(c for c in report["checks"] if c["name"] == "codex install")
    assert "0.0.0-no-such-version" in install["detail"]
    assert "npm" in install["fix"] and "agent.codex_path" in install["fix"]


@pytest.mark.integration
def test_slurm_doctor_names_an_srun_that_fails(doctor_config, tmp_path):
    data = doctor_config(slurm={"partition": "no-such-partition", "time": "00:05:00"})
    code, report = doctor("--config", write_slurm_config(tmp_path, data))
    assert code == 1
    found = statuses(report)
    assert found["workspace"] == "pass" and found["compute node"] == "fail"
    assert found["workspace shared"] == "skip" and found["model endpoint"] == "skip"
    srun = next(c for c in report["checks"] if c["name"] == "compute node")
    assert "partition" in srun["detail"].lower() and "slurm.partition" in srun["fix"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_slurm_doctor_gives_up_on_a_busy_queue_and_leaves_no_job_queued(
    doctor_config, minicluster, tmp_path
):
    data = doctor_config()
    connection = SSHConnection(parse_config(data).ssh)
    blocker = hold_every_node(connection, minicluster)
    try:
        for _ in range(500):  # the blocker must hold every node before doctor asks for one
            state = connection.run(["squeue", "-j", blocker, "-h", "-o", "%T"]).decode().strip()
            if state == "RUNNING":
                break
            time.sleep(1)
        assert state == "RUNNING", f"other jobs hold the test cluster's nodes: {state}"
        code, report = doctor("--srun-timeout", "3", "--config", write_slurm_config(tmp_path, data))
        assert code == 1
        srun = next(c for c in report["checks"] if c["name"] == "compute node")
        assert srun["status"] == "fail" and "--srun-timeout" in srun["fix"], srun["detail"]
        names = connection.run(["squeue", "--me", "-h", "-o", "%j"]).decode().split()
        assert not [n for n in names if n.startswith("codeswarm-doctor")], names
    finally:
        connection.run(["scancel", blocker])
        connection.close()


def test_srun_fix_tells_a_busy_queue_from_a_failed_step():
    try:
        raise BackendError("`srun ...` on c: timed out") from TimeoutError()
    except BackendError as exc:
        assert "--srun-timeout" in srun_fix(exc, 300)
    assert "cluster.python" in srun_fix(BackendError("`srun` exited 1: bad partition"), 300)
    gave_up = "srun: job 9 queued and waiting for resources\nsrun: error: Unable to allocate"
    assert "--srun-timeout" in srun_fix(BackendError("`srun` exited 1", stderr=gave_up), 300)
