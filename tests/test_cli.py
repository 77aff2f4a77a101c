"""The CLI verbs, as a user runs them, against a local swarm of real codex agents."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from codeswarm.cli import main
from tests.support.cli import run_cli as run


@pytest.mark.integration
def test_launch_inject_attach_status_terminate(config_file):
    launched = run(config_file, "launch", "--nodes", "2", "--prompt", "first words")
    assert launched.returncode == 0, launched.stderr
    swarm_id = launched.stdout.strip()
    try:
        listed = run(config_file, "list", "--json")
        assert swarm_id in [json.loads(line)["swarm_id"] for line in listed.stdout.splitlines()]

        attach = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codeswarm",
                "attach",
                swarm_id,
                "--json",
                "--idle-exit",
                "5",
                "--config",
                str(config_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codeswarm",
                "attach",
                swarm_id,
                "--events",
                "assistant,turn_complete",
                "--idle-exit",
                "5",
                "--config",
                str(config_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        injected = run(config_file, "inject", swarm_id, "--prompt", "second", "--nodes", "0,1")
        assert injected.returncode == 0, injected.stderr
        ids = [line.split(": ")[1] for line in injected.stdout.splitlines()]
        assert len(ids) == 2
        out, err = attach.communicate(timeout=60)
        assert attach.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        for injection_id in ids:
            mine = [e["type"] for e in events if e.get("injection_id") == injection_id]
            assert mine[0] == "inject_delivered" and mine[-1] == "usage", mine
        assert all(e["swarm_id"] == swarm_id for e in events)
        shown, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        lines = shown.splitlines()
        for node in ("[n0]", "[n1]"):  # piped: plain text, each line its node's
            assert f"{node} turn completed" in lines, shown
        assert "\x1b" not in shown
        assert all(line.startswith(("[n0] ", "[n1] ")) for line in lines), shown
        left_out = ("tokens:", "prompt ", "turn started")  # usage, inject_*, turn_started
        assert not [line for line in lines if line[5:].startswith(left_out)], shown

        status = json.loads(run(config_file, "status", swarm_id, "--json").stdout)
        assert [n["state"] for n in status["nodes"]] == ["running", "running"]
    finally:
        assert run(config_file, "terminate", swarm_id).returncode == 0


def test_unknown_swarm_says_what_to_do(config_file):
    result = run(config_file, "status", "sw-nope")
    assert result.returncode == 1
    assert "no swarm sw-nope" in result.stderr and "codeswarm list" in result.stderr


def test_attach_refuses_an_event_pattern_that_matches_nothing():
    result = CliRunner().invoke(main, ["attach", "sw-any", "--events", "assistant,tool_*"])
    assert result.exit_code == 2
    assert "--events" in result.output and "'tool_*' matches no event type" in result.output


def test_bad_config_names_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"agent": {"sandbox": "yolo"}}')
    result = CliRunner().invoke(main, ["list", "--config", str(bad)])
    assert result.exit_code == 1
    assert "agent.sandbox" in result.output


def test_help_shows_examples():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "codeswarm launch --nodes 2" in result.output
    verbs = ("daemon", "launch", "list", "status", "inject", "attach", "terminate", "prune")
    steering = ("approvals", "approve", "steer", "interrupt", "review", "compact")
    for verb in verbs + steering:
        assert verb in result.output
    for verb in ("inject", *steering):
        assert "Example" in CliRunner().invoke(main, [verb, "--help"]).output


@pytest.mark.integration
def test_steering_verbs_answer_per_node_and_fail_per_node(config_file):
    launched = run(config_file, "launch", "--nodes", "1")
    assert launched.returncode == 0, launched.stderr
    swarm_id = launched.stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while json.loads(run(config_file, "status", swarm_id, "--json").stdout)["state"] != (
            "running"
        ):
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.2)
        reviewed = run(config_file, "review", swarm_id, "--nodes", "0")
        compacted = run(config_file, "compact", swarm_id, "--json")
        steered = run(config_file, "steer", swarm_id, "--prompt", "left", "--steer-id", "s1")
        stray = run(config_file, "interrupt", swarm_id, "--nodes", "0,3")
        listed = run(config_file, "approvals", swarm_id)

        assert reviewed.returncode == 0, reviewed.stderr
        assert reviewed.stdout.startswith("node 0: inj-")
        assert json.loads(compacted.stdout)["type"] == "inject_ack"
        assert (steered.returncode, steered.stdout) == (0, "node 0: s1\n"), steered.stderr
        assert stray.returncode == 1
        assert stray.stdout == "node 0: sent\n"
        assert f"node 3: failed: swarm {swarm_id} has no node 3 (it has 1)" in stray.stderr
        assert (listed.returncode, listed.stdout) == (0, "")
        assert f"no pending approvals in {swarm_id}" in listed.stderr
        refused = run(config_file, "approve", swarm_id, "ap-1", "--decision", "maybe")
        assert refused.returncode == 2 and "maybe" in refused.stderr
    finally:
        run(config_file, "terminate", swarm_id)


@pytest.mark.integration
def test_a_running_daemon_serves_a_swarm_the_cli_launched(config_file, tmp_path):
    from tests.support.daemon import Daemon

    d = Daemon(config_file, tmp_path / "daemon.stderr")
    swarm_id = None
    try:
        d.wait_event("ready", timeout=60)
        launched = run(config_file, "launch", "--nodes", "2", "--json")
        assert launched.returncode == 0, launched.stderr
        swarm = json.loads(launched.stdout)
        swarm_id = swarm["swarm_id"]
        for n in range(5):
            d.send(
                {
                    "command": "inject",
                    "swarm_id": swarm_id,
                    "nodes": "all",
                    "content": f"prompt {n}",
                    "request_id": f"r{n}",
                }
            )
        events = d.wait_for(lambda evs: sum(e["type"] == "usage" for e in evs) == 10, timeout=180)
        assert not [e for e in events if e["type"] in ("error", "inject_failed")]
        assert sorted(e["node_id"] for e in events if e["type"] == "node_started") == [0, 1]
        for n in range(5):
            mine = [e for e in events if e.get("request_id") == f"r{n}"]
            for node_id in (0, 1):
                types = [e["type"] for e in mine if e["node_id"] == node_id]
                assert types[:2] == ["inject_ack", "inject_delivered"], types
                assert types[-3:] == ["assistant", "turn_complete", "usage"], types
        for node_id in (0, 1):
            seqs = [e["seq"] for e in events if e.get("node_id") == node_id and "seq" in e]
            assert seqs == list(range(len(seqs)))
        d.send({"command": "terminate", "swarm_id": swarm_id, "request_id": "t"})
        d.wait_event("swarm_terminated", request_id="t")
        swarm_id = None
    finally:
        d.close()
        if swarm_id is not None:
            run(config_file, "terminate", swarm_id)
