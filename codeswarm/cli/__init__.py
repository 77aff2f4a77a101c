"""The ``codeswarm`` command line: thin shells over the router the daemon runs."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from codeswarm import __version__
from codeswarm.config import Config, ConfigError, default_local_config, load_config


def load(path: str | None) -> Config:
    try:
        return load_config(path) if path else default_local_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot read config {path}: {exc.strerror}") from exc


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(__version__, prog_name="codeswarm")
def main() -> None:
    """Run swarms of Codex agents on Slurm clusters or on this machine."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: the built-in local config).",
)
@click.option("--debug", is_flag=True, help="Verbose logs on stderr.")
def daemon(config_path: str | None, debug: bool) -> None:
    """Serve the JSON-lines protocol on stdin/stdout (the way OpenClaw runs codeswarm).

    Prints {"type":"ready",...} once it accepts commands. stdout carries protocol lines
    only; logs go to stderr. Exits 0 on EOF on stdin, on {"command":"shutdown"}, and on
    SIGTERM or SIGINT. Swarms keep running after the daemon exits.

    \b
    Example:
      $ codeswarm daemon --config configs/local.json
      {"command":"launch","nodes":2}
      {"command":"inject","swarm_id":"sw-...","nodes":"all","content":"Hello"}
    """
    from codeswarm.router import run_daemon

    setup_logging(debug)
    config = load(config_path)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        code = run_daemon(config, sys.stdin.buffer, sys.stdout.buffer, stop)
    except (NotImplementedError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
