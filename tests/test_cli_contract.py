"""What every verb promises: --json, exit statuses 0/1/2, swarm ids completed by the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from codeswarm.cli import main
from codeswarm.config import load_config
from codeswarm.registry import SwarmRecord, SwarmRegistry, peek


def local_config(tmp_path) -> str:
    path = tmp_path / "config.json"
    config = {
        "backend": "local",
        "cluster": {"workspace_root": str(tmp_path / "ws")},
        "router": {"state_dir": str(tmp_path / "state")},
    }
    path.write_text(json.dumps(config))
    return str(path)


SERVERS = {"daemon", "mcp"}  # their stdout is their protocol: JSON lines, MCP


def test_every_verb_but_the_servers_takes_json():
    missing = [
        name
        for name, command in main.commands.items()
        if name not in SERVERS and "--json" not in {o for p in command.params for o in p.opts}
    ]
    assert missing == []


def test_help_documents_exit_statuses_and_completion():
    text = CliRunner().invoke(main, ["--help"]).output
    assert "0 ok; 1 failure" in text and "2 usage error" in text
    assert "_CODESWARM_COMPLETE=bash_source codeswarm" in text


def test_usage_errors_exit_2_and_failures_exit_1(tmp_path):
    config = local_config(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["launch"]).exit_code == 2  # --nodes missing
    assert runner.invoke(main, ["launch", "--nodes", "0"]).exit_code == 2
    assert (
        runner.invoke(main, ["status", "sw-1", "--config", str(tmp_path / "no.json")]).exit_code
        == 2
    )
    bad_nodes = runner.invoke(main, ["inject", "sw-1", "--prompt", "x", "--nodes", "a,b"])
    assert bad_nodes.exit_code == 2 and "node index" in bad_nodes.output
    # a value only the router judges is still a usage error
    bad_time = runner.invoke(main, ["launch", "--nodes", "1", "--time", "soon", "--config", config])
    assert bad_time.exit_code == 2 and "Slurm time limit" in bad_time.output
    for scale in (["--add", "1", "--remove", "2"], [], ["--remove", "a"], ["--add", "0"]):
        refused = runner.invoke(main, ["scale", "sw-1", *scale, "--config", config])
        assert refused.exit_code == 2, (scale, refused.output)
    unknown = runner.invoke(main, ["status", "sw-0000000000", "--config", config])
    assert unknown.exit_code == 1 and "codeswarm list" in unknown.output


def record(swarm_id: str, mailbox: str, created: float, state: str = "running") -> SwarmRecord:
    return SwarmRecord(swarm_id, f"j{created:.0f}", "local", mailbox, 2, created, state)


def test_peek_reads_the_registry_without_creating_anything(tmp_path):
    assert peek(tmp_path / "none", "/m") == [] and not (tmp_path / "none").exists()
    registry = SwarmRegistry(tmp_path / "state", "/m")
    registry.put(record("sw-b", "/m", 2.0))
    registry.put(record("sw-a", "/m", 1.0))
    registry.put(record("sw-other", "/elsewhere", 3.0))
    assert [r.swarm_id for r in peek(tmp_path / "state", "/m")] == ["sw-a", "sw-b"]
    (tmp_path / "state" / "swarms.json").write_text("{not json")
    assert peek(tmp_path / "state", "/m") == []


def complete(words: str, env_config: str | None = None) -> list[str]:
    """What bash completion would offer for the last word of ``words``, asked as bash asks."""
    env = dict(
        os.environ,
        _CODESWARM_COMPLETE="bash_complete",
        COMP_WORDS=words,
        COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    )
    done = subprocess.run(
        [sys.executable, "-m", "codeswarm"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()]


def test_swarm_ids_complete_from_the_registry_for_every_swarm_verb(tmp_path):
    config_path = local_config(tmp_path)
    config = load_config(config_path)
    registry = SwarmRegistry(config.router.state_dir, config.mailbox_root)
    registry.put(record("sw-aaaa000001", config.mailbox_root, 1.0))
    registry.put(record("sw-aaaa000002", config.mailbox_root, 2.0, "exited"))
    registry.put(record("sw-bbbb000003", config.mailbox_root, 3.0))
    registry.put(record("sw-aaaa000004", "/another/mailbox", 4.0))
    verbs = ("status", "terminate", "inject", "attach", "logs", "diff", "interrupt", "approvals")
    verbs += ("scale",)
    for verb in verbs:
        assert complete(f"codeswarm {verb} --config {config_path} sw-a") == [
            "sw-aaaa000001",
            "sw-aaaa000002",
        ], verb
    assert complete(f"codeswarm status --config {config_path} ") == [
        "sw-aaaa000001",
        "sw-aaaa000002",
        "sw-bbbb000003",
    ]
    script = subprocess.run(
        [sys.executable, "-m", "codeswarm"],
        env=dict(os.environ, _CODESWARM_COMPLETE="bash_source"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "complete -o nosort -F _codeswarm_completion codeswarm" in script.stdout


def test_prune_json_is_one_line_a_swarm(tmp_path):
    config_path = local_config(tmp_path)
    config = load_config(config_path)
    registry = SwarmRegistry(config.router.state_dir, config.mailbox_root)
    ended = SwarmRecord(
        "sw-old0000001",
        "j1",
        "local",
        config.mailbox_root,
        1,
        1.0,
        "exited",
        node_states={"0": "exited"},
        ended=2.0,
    )
    registry.put(ended)
    registry.put(record("sw-live000002", config.mailbox_root, 3.0))
    runner = CliRunner()
    dry = runner.invoke(
        main, ["prune", "--older-than", "0", "--dry-run", "--json", "--config", config_path]
    )
    assert dry.exit_code == 0, dry.output
    assert [json.loads(line) for line in dry.stdout.splitlines()] == [
        {
            "swarm_id": "sw-old0000001",
            "job_id": "j1",
            "state": "exited",
            "dry_run": True,
            "removed": [],
            "kept": False,
            "error": None,
        }
    ]
    done = runner.invoke(main, ["prune", "--older-than", "0", "--json", "--config", config_path])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["dry_run"] is False
    assert [r.swarm_id for r in registry.all()] == ["sw-live000002"]
