"""The OpenClaw skill and an OpenClaw agent driving a swarm, with the real OpenClaw CLI.

OpenClaw (npm `openclaw`, pinned in tests/clients/package.json with the Node >= 24.16 it needs;
`scripts/bootstrap --test-clients` installs both) keeps everything under `$HOME/.openclaw`, so
each test gets a throwaway HOME. What these tests rely on, learned from OpenClaw 2026.9.6:
- `openclaw skills install DIR --global` copies a skill to `~/.openclaw/skills/<name>`;
  `skills info NAME --json` reports `eligible`, `requirements` and `missing` (bins are looked up
  on PATH), and `install` (the installer specs).
- `openclaw mcp add NAME --command CMD --arg A ...` starts the server, lists its tools (named
  `NAME__tool`), and saves it under `mcp.servers` in `~/.openclaw/openclaw.json`.
- `openclaw agent exec --config FILE --model mock/mock-model --json PROMPT` runs one headless
  turn without a gateway and prints `{"ok", "status", "final", "toolSummary", ...}`; the config's
  `models.providers.mock` points at our model server with `"api": "openai-responses"`.
  OpenClaw's own prompt is the second-to-last user message (the last is its internal context),
  and its tools are `exec` (`command`, `yieldMs`: backgrounding after 10 s by default), `read`,
  `process`, `tool_search`, `tool_call` (`id`, `args`: any tool by name, MCP ones included), ...
  An MCP server's tools come back to the model wrapped in a security notice; a request to an
  MCP server times out after `requestTimeoutMs` (60 s unless configured).
  The model server's scripts (codeswarm/model_script.py) play the model's side of such a turn,
  while the swarm's codex agents get the server's default echo answer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from codeswarm.cli import main
from codeswarm.model_script import Script, Step
from codeswarm.model_server import ModelServer
from codeswarm.protocol.codec import decode_line
from codeswarm.protocol.commands import Command

ROOT = Path(__file__).resolve().parent.parent
CLIENT_BIN = ROOT / "tests" / "clients" / "node_modules" / ".bin"
SKILL = ROOT / "integrations" / "openclaw" / "codeswarm"
VENV_BIN = Path(sys.executable).parent  # where `codeswarm` is installed
QUESTION = "What is six times seven?"
ANSWER = f"echo: {QUESTION}"  # what the model server's default reply makes each codex agent say


@pytest.fixture(scope="session")
def openclaw_bin() -> Path:
    if not (CLIENT_BIN / "openclaw").exists() or not (CLIENT_BIN / "node").exists():
        message = "OpenClaw is not installed: run scripts/bootstrap --test-clients"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CLIENT_BIN


def openclaw_env(home: Path, *path: Path) -> dict[str, str]:
    """A throwaway HOME and TMPDIR (OpenClaw's log still goes to /tmp/openclaw), and PATH:
    OpenClaw's Node first, then `path`, then the system's.

    Only `path` may provide `codeswarm`: system directories that hold one are left out.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    dirs = [Path(p) for p in env.get("PATH", "").split(os.pathsep) if p]
    system = [p for p in dirs if not (p / "codeswarm").exists()]
    env.update(HOME=str(home), PATH=os.pathsep.join(map(str, [CLIENT_BIN, *path, *system])))
    env.update(TMPDIR=str(home / "tmp"), NO_COLOR="1")
    return env


def openclaw(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openclaw", *args],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def install_skill(env: dict[str, str]) -> Path:
    done = openclaw(env, "skills", "install", str(SKILL), "--global")
    assert done.returncode == 0, done.stderr
    return Path(env["HOME"]) / ".openclaw" / "skills" / "codeswarm" / "SKILL.md"


def skill_info(env: dict[str, str]) -> dict[str, Any]:
    done = openclaw(env, "skills", "info", "codeswarm", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def skill_commands() -> list[list[str]]:
    """Every `codeswarm ...` command the skill shows in a code span, split as a shell would."""
    text = (SKILL / "SKILL.md").read_text()
    return [shlex.split(found) for found in re.findall(r"`(codeswarm [^`]+)`", text)]


def test_the_skill_shows_only_verbs_and_options_the_cli_has():
    commands = skill_commands()
    assert {"launch", "inject", "status", "terminate"} <= {argv[1] for argv in commands}
    for argv in commands:
        verb = main.commands.get(argv[1])
        assert verb is not None, f"the skill shows `codeswarm {argv[1]}`, which the CLI lacks"
        known = {opt for param in verb.params for opt in [*param.opts, *param.secondary_opts]}
        unknown = [arg for arg in argv[2:] if arg.startswith("--") and arg not in known]
        assert not unknown, f"codeswarm {argv[1]} has no {unknown}"


def test_the_skills_daemon_lines_are_commands_the_router_takes():
    text = (SKILL / "SKILL.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith('{"command"')]
    assert len(lines) >= 3
    for line in lines:
        assert isinstance(decode_line(line), Command), (line, decode_line(line))


@pytest.mark.integration
def test_skill_is_eligible_once_codeswarm_is_on_path(openclaw_bin, tmp_path):
    without = openclaw_env(tmp_path / "home")
    assert shutil.which("codeswarm", path=without["PATH"]) is None
    install_skill(without)
    info = skill_info(without)
    assert info["eligible"] is False and info["missing"]["bins"] == ["codeswarm"]

    info = skill_info(openclaw_env(tmp_path / "home", VENV_BIN))
    assert info["name"] == "codeswarm" and info["source"] == "openclaw-managed"
    assert info["eligible"] is True and info["modelVisible"] is True
    assert info["requirements"]["bins"] == ["codeswarm"]
    assert info["missing"] == {"bins": [], "anyBins": [], "env": [], "config": [], "os": []}
    # No installer: PyPI's "codeswarm" is another project, and OpenClaw installs only by a
    # registry name. The skill's body says how to install it instead.
    assert info["install"] == []


MCP_TOOLS = ["events", "inject", "interrupt", "launch", "list", "status", "terminate", "wait"]


@pytest.mark.integration
def test_mcp_add_probes_codeswarm_mcp_and_lists_its_tools(openclaw_bin, tmp_path, config_file):
    env = openclaw_env(tmp_path / "home", VENV_BIN)
    added = openclaw(
        env,
        *("mcp", "add", "codeswarm", "--command", str(VENV_BIN / "codeswarm")),
        *("--arg", "mcp", "--arg", "--config", "--arg", str(config_file), "--timeout", "900"),
    )
    assert added.returncode == 0, added.stdout + added.stderr
    probed = openclaw(env, "mcp", "probe", "codeswarm", "--json")
    assert probed.returncode == 0, probed.stdout + probed.stderr
    result = json.loads(probed.stdout)
    assert not result["diagnostics"], result
    # OpenClaw lists the server's tools, plus its own resources_* and prompts_* bridges.
    tools = sorted(t.removeprefix("codeswarm__") for t in result["tools"])
    assert set(MCP_TOOLS) <= set(tools), tools
    server = result["servers"]["codeswarm"]
    assert server["tools"] >= len(MCP_TOOLS) and server["resources"] is True, server
    saved = json.loads((Path(env["HOME"]) / ".openclaw" / "openclaw.json").read_text())
    server = saved["mcp"]["servers"]["codeswarm"]
    assert server["command"] == str(VENV_BIN / "codeswarm")
    assert server["args"] == ["mcp", "--config", str(config_file)]
    assert server["requestTimeoutMs"] == 900_000


def agent_config(path: Path, model_server: ModelServer, **extra: Any) -> Path:
    """An OpenClaw config whose only model is the model server (OpenClaw's local-models page)."""
    model = {
        "id": "mock-model",
        "name": "Scripted model",
        "reasoning": False,
        "input": ["text"],
        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
        "contextWindow": 200000,
        "maxTokens": 8192,
    }
    provider = {
        "baseUrl": model_server.url,
        "apiKey": "offline",
        "api": "openai-responses",
        "models": [model],
    }
    path.write_text(
        json.dumps({"models": {"mode": "merge", "providers": {"mock": provider}}, **extra})
    )
    return path


def agent_exec(env: dict[str, str], config: Path, prompt: str) -> dict[str, Any]:
    workdir = Path(env["HOME"]) / "work"
    workdir.mkdir(exist_ok=True)
    done = openclaw(
        env,
        *("agent", "exec", "--config", str(config), "--model", "mock/mock-model"),
        *("--cwd", str(workdir), "--timeout", "240", "--json", prompt),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return json.loads(done.stdout)


def shell(command: str, **capture: str) -> Step:
    """An `exec` call that OpenClaw lets run for up to two minutes before backgrounding it."""
    return Step(tool="exec", arguments={"command": command, "yieldMs": 120000}, capture=capture)


def codeswarm(config_file: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "codeswarm"), *args, "--config", str(config_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def swarm_state(config_file: Path, swarm_id: str) -> str:
    status = codeswarm(config_file, "status", swarm_id, "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["state"]


@pytest.fixture
def swarms(config_file):
    """The test's config; afterwards every swarm the agent left running is terminated."""
    yield config_file
    listed = codeswarm(config_file, "list", "--json")
    for swarm in map(json.loads, listed.stdout.splitlines()):
        if swarm["state"] not in ("exited", "terminated", "failed"):
            codeswarm(config_file, "terminate", swarm["swarm_id"])


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_agent_drives_a_swarm_with_codeswarm_commands(openclaw_bin, tmp_path, model_server, swarms):
    config_file = swarms
    env = openclaw_env(tmp_path / "home", VENV_BIN)
    skill = install_skill(env)
    cfg = f"--config {config_file}"
    marker = f"OPENCLAW-{uuid.uuid4().hex[:8]}"
    script = [
        Step(
            tool="read", arguments={"path": str(skill)}, capture={"taught": r"inject \S+ .*--wait"}
        ),
        shell(f"codeswarm launch --nodes 2 {cfg}", swarm=r"(sw-[0-9a-f]+)"),
        shell(
            f"codeswarm inject {{{{swarm}}}} --prompt '{QUESTION}' --wait {cfg}",
            answer=re.escape(ANSWER),
        ),
        shell(f"codeswarm terminate {{{{swarm}}}} {cfg}"),
        Step(text="Swarm {{swarm}} answered: {{answer}}"),
    ]
    model_server.add_script(Script(marker, tuple(script)))

    result = agent_exec(env, agent_config(tmp_path / "openclaw.json", model_server), marker)

    assert result["ok"] is True and result["status"] == "ok", result
    swarm_id = result["final"].split()[1]
    assert result["final"] == f"Swarm {swarm_id} answered: {ANSWER}"
    assert result["toolSummary"]["calls"] == 4 and result["toolSummary"]["failures"] == 0
    assert swarm_state(config_file, swarm_id) in ("terminated", "exited")
    prompts = [b for b in model_server.requests if marker in json.dumps(b["input"])]
    assert "<name>codeswarm</name>" in json.dumps(prompts[0]["input"]), "the skill was not offered"


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_agent_drives_a_swarm_through_the_mcp_server(openclaw_bin, tmp_path, model_server, swarms):
    config_file = swarms
    env = openclaw_env(tmp_path / "home", VENV_BIN)
    server = {
        "command": str(VENV_BIN / "codeswarm"),
        "args": ["mcp", "--config", str(config_file)],
        "requestTimeoutMs": 300_000,  # OpenClaw's default, 60 s, would cut a long `wait`
    }
    config = agent_config(
        tmp_path / "openclaw.json", model_server, mcp={"servers": {"codeswarm": server}}
    )
    marker = f"OPENCLAW-{uuid.uuid4().hex[:8]}"

    def mcp(tool: str, args: dict[str, Any], **capture: str) -> Step:
        return Step(
            tool="tool_call", arguments={"id": f"codeswarm__{tool}", "args": args}, capture=capture
        )

    script = [
        mcp("launch", {"nodes": 1}, swarm=r"(sw-[0-9a-f]+)"),
        mcp(
            "inject",
            {"swarm_id": "{{swarm}}", "content": QUESTION, "nodes": "all"},
            injection=r'"injection_id"\s*:\s*"([^"]+)"',
        ),
        mcp(
            "wait",
            {"swarm_id": "{{swarm}}", "injection_ids": ["{{injection}}"], "timeout": 180},
            answer=re.escape(ANSWER),
        ),
        mcp("terminate", {"swarm_id": "{{swarm}}"}),
        Step(text="Swarm {{swarm}} answered: {{answer}}"),
    ]
    model_server.add_script(Script(marker, tuple(script)))

    result = agent_exec(env, config, marker)

    assert result["ok"] is True and result["status"] == "ok", result
    swarm_id = result["final"].split()[1]
    assert result["final"] == f"Swarm {swarm_id} answered: {ANSWER}"
    assert result["toolSummary"]["failures"] == 0, result
    assert swarm_state(config_file, swarm_id) in ("terminated", "exited")
