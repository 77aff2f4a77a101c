"""One error hierarchy: callers catch CodeswarmError, and the CLI turns it into a clean message."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from click.testing import CliRunner

from codeswarm import errors
from codeswarm.cli import main

PACKAGE = Path(errors.__file__).parent


def test_user_errors_stand_apart_from_backend_errors():
    for user in (errors.ConfigError, errors.RegistryError, errors.CodexNotFoundError):
        assert issubclass(user, errors.UserError)
    for other in (errors.BackendError, errors.CommandError, errors.NoAnswerError):
        assert issubclass(other, errors.CodeswarmError)
        assert not issubclass(other, errors.UserError)
    assert issubclass(errors.UserError, errors.CodeswarmError)


def test_codeswarm_defines_its_exceptions_in_one_module():
    """hpc/ is left out: it runs on clusters without codeswarm, and its errors stay there."""
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                elsewhere.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert elsewhere == []


def local_config(tmp_path: Path) -> Path:
    config = {
        "backend": "local",
        "cluster": {"workspace_root": str(tmp_path / "ws")},
        "router": {"state_dir": str(tmp_path / "state")},
        "agent": {"codex_path": "/bin/true"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_a_damaged_registry_is_a_clean_cli_error(tmp_path):
    config = local_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "swarms.json").write_text("{half a file")
    result = CliRunner().invoke(main, ["list", "--config", str(config)])
    assert result.exit_code == 1
    assert "swarms.json is damaged" in result.output and "move it aside" in result.output
    assert "Traceback" not in result.output


def test_a_missing_codex_is_a_clean_cli_error(tmp_path):
    config = local_config(tmp_path)
    data = json.loads(config.read_text())
    del data["agent"]
    config.write_text(json.dumps(data))
    env = {"CODESWARM_CODEX": str(tmp_path / "no-codex")}
    result = CliRunner().invoke(main, ["list", "--config", str(config)], env=env)
    assert result.exit_code == 1
    assert "codex binary from CODESWARM_CODEX is not executable" in result.output


def test_an_error_event_is_a_clean_cli_error_with_the_next_step(tmp_path):
    config = local_config(tmp_path)
    result = CliRunner().invoke(main, ["status", "sw-nope", "--config", str(config)])
    assert result.exit_code == 1
    assert "no swarm sw-nope" in result.output and "`codeswarm list`" in result.output
