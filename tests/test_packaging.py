"""What users install: the sdist, the wheel built from it, and that wheel in a fresh venv.

Both are built once, from a copy of the files git knows (a clean clone's view), so that build/
or *.egg-info left in the working tree cannot hide a missing file. The installed venv runs with
its cwd outside the source tree and no PYTHONPATH, as a user's does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.demo import check_demo_answered

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    """Run to completion; on failure, say which command and show the end of its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@dataclass(frozen=True)
class Dists:
    source: Path
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    """The wheel installed in a fresh venv, and a working directory outside the source tree."""

    prefix: Path
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, **extra}

    def run(self, argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        options.setdefault("env", self.env())
        return subprocess.run(
            [str(self.prefix / "bin" / argv[0]), *argv[1:]],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=180,
            **options,
        )


def copy_source(dest: Path) -> None:
    """The files a clean clone has, plus new unignored ones; symlinks stay symlinks."""
    listed = run(["git", "-C", ROOT, "ls-files", "-z", "-co", "--exclude-standard"])
    for name in filter(None, listed.stdout.split("\0")):
        source, target = ROOT / name, dest / name
        if os.path.lexists(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            else:
                target.write_bytes(source.read_bytes())
                target.chmod(source.stat().st_mode)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Dists:
    """The sdist, and the wheel that `python -m build` builds from that sdist."""
    source = tmp_path_factory.mktemp("source")
    copy_source(source)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source])
    (sdist,) = out.glob("codeswarm-*.tar.gz")
    (wheel,) = out.glob("codeswarm-*.whl")
    return Dists(source, sdist, wheel)


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> Installed:
    """A fresh venv with the wheel, its dependencies and its ``mcp`` extra (codeswarm.mcp needs
    it to import), from the package index or pip's cache."""
    prefix = tmp_path_factory.mktemp("venv")
    venv.create(prefix, with_pip=True)
    run([prefix / "bin" / "python", "-m", "pip", "install", "-q", f"{dists.wheel}[mcp]"])
    return Installed(prefix, tmp_path_factory.mktemp("user"))


def modules_under(root: Path) -> set[str]:
    """Every .py file under root/codeswarm, following the codeswarm/hpc symlink."""
    base = root / "codeswarm"
    return {
        str(Path(top, name).relative_to(root))
        for top, _, files in os.walk(base, followlinks=True)
        for name in files
        if name.endswith(".py")
    }


def test_sdist_and_wheel_carry_every_module_of_the_source_tree(dists):
    expected = modules_under(dists.source)
    assert "codeswarm/hpc/records.py" in expected
    assert "codeswarm/backends/local.py" in expected
    with zipfile.ZipFile(dists.wheel) as wheel:
        in_wheel = {n for n in wheel.namelist() if n.startswith("codeswarm/")}
    with tarfile.open(dists.sdist) as sdist:
        prefix = f"{dists.sdist.name.removesuffix('.tar.gz')}/"
        in_sdist = {m.name.removeprefix(prefix) for m in sdist.getmembers() if m.isfile()}
    assert in_wheel == expected
    assert {n for n in in_sdist if n.startswith("codeswarm/")} == expected
    assert {"pyproject.toml", "README.md"} <= in_sdist


def test_installed_wheel_prints_help_and_imports_every_module_from_the_venv(installed):
    shown = installed.run(["codeswarm", "--help"])
    assert shown.returncode == 0, shown.stderr
    assert "daemon" in shown.stdout
    # __main__ would run the CLI; every other module must import from the wheel alone.
    probe = (
        "import importlib, json, pkgutil, codeswarm\n"
        "names = [m.name for m in pkgutil.walk_packages(codeswarm.__path__, 'codeswarm.')]\n"
        "mods = [importlib.import_module(n) for n in names if n != 'codeswarm.__main__']\n"
        "print(json.dumps({m.__name__: m.__file__ for m in [codeswarm, *mods]}))\n"
    )
    probed = installed.run(["python", "-c", probe])
    assert probed.returncode == 0, probed.stderr[-3000:]
    imported = json.loads(probed.stdout)
    assert {
        "codeswarm.backends.local",
        "codeswarm.hpc.codex_worker",
        "codeswarm.mcp.server",
    } <= set(imported)
    site = str(installed.prefix / "lib")
    assert [f for f in imported.values() if not f.startswith(site)] == []


def test_installed_daemon_answers_ping_then_exits_on_eof(installed, codex_bin, tmp_path):
    # HOME keeps the default config's state out of the user's ~/.codeswarm
    env = installed.env(CODESWARM_CODEX=codex_bin, HOME=str(tmp_path))
    done = installed.run(
        ["codeswarm", "daemon"], input='{"command":"ping","request_id":"p"}\n', env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["ready", "pong"]
    assert events[1]["request_id"] == "p"


def test_installed_daemon_without_codex_says_how_to_get_it(installed, tmp_path):
    env = installed.env(PATH=str(installed.prefix / "bin"), HOME=str(tmp_path))
    env.pop("CODESWARM_CODEX", None)
    done = installed.run(["codeswarm", "daemon"], input="", env=env)
    assert done.returncode == 1
    assert "npm install -g @openai/codex" in done.stderr
    assert "CODESWARM_CODEX" in done.stderr
    assert "site-packages" not in done.stderr


def test_installed_wheel_runs_the_demo(installed, codex_bin):
    # The user's own HOME: the demo keeps codex homes under ~/.codeswarm, off /tmp.
    done = installed.run(
        ["python", "-m", "codeswarm.demo", "Say hello"],
        env=installed.env(CODESWARM_CODEX=codex_bin),
    )
    check_demo_answered(done, "Say hello")
