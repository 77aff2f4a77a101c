"""The ``codeswarm`` command line: thin shells over the router the daemon runs.

Each verb starts the router in-process on the same state directory as the daemon, so both see
the same swarms; only ``daemon`` and ``attach`` follow the workers' event streams. A
``CodeswarmError`` from any verb ends it with its message and exit status 1, no traceback.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from codeswarm import __version__
from codeswarm.answers import failed as answers_failed
from codeswarm.cli import history
from codeswarm.cli.render import EventRenderer, print_swarm
from codeswarm.config import Config, default_local_config, load_config
from codeswarm.errors import CodeswarmError, CommandError
from codeswarm.protocol.errors import INPUT_ERROR_CODES


class CodeswarmGroup(click.Group):
    """The root command: turns a CodeswarmError from any verb into a clean ClickException."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CommandError as exc:
            if exc.event["error"] in INPUT_ERROR_CODES:  # a value the router refused: usage
                raise click.UsageError(explain(exc)) from exc
            raise click.ClickException(explain(exc)) from exc
        except CodeswarmError as exc:
            raise click.ClickException(explain(exc)) from exc


def explain(exc: CodeswarmError) -> str:
    """The error's message for a person at a shell, with the next step where one helps."""
    if not isinstance(exc, CommandError):
        return str(exc)
    hint = " (`codeswarm list` shows the swarms)" if exc.event["error"] == "unknown_swarm" else ""
    return f"{exc.event['message']}{hint}"


def load(path: str | None) -> Config:
    return load_config(path) if path else default_local_config()


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--debug", is_flag=True, help="Verbose logs on stderr.")(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        envvar="CODESWARM_CONFIG",
        help="Config file (default: $CODESWARM_CONFIG, else the built-in local config).",
    )(command)


def swarms_for(config_path: str | None, debug: bool, follow: str | None = None):
    """The router in-process, as the library's Codeswarm."""
    from codeswarm.embed import Codeswarm

    setup_logging(debug)
    return Codeswarm(load(config_path), follow=follow)


EPILOG = """\b
Output: with --json (every verb; daemon speaks JSON lines always) stdout
carries only JSON: one document, or JSON lines for lists and streams;
messages and errors go to stderr.
Exit status: 0 ok; 1 failure (a codeswarm or cluster error, a node that
failed, a failed doctor check); 2 usage error (an unknown option, a bad value).
Shell completion (swarm ids too), in ~/.bashrc or ~/.zshrc:
  eval "$(_CODESWARM_COMPLETE=bash_source codeswarm)"    (zsh: zsh_source)
"""


@click.group(cls=CodeswarmGroup, epilog=EPILOG)
@click.version_option(__version__, prog_name="codeswarm")
def main() -> None:
    """Run swarms of Codex agents on Slurm clusters or on this machine.

    \b
    A first session, on this machine:
      codeswarm launch --nodes 2 --prompt "You are a distributed agent."
      codeswarm inject sw-1a2b3c4d5e --prompt "Optimize GEMM tiling."
      codeswarm attach sw-1a2b3c4d5e
      codeswarm diff sw-1a2b3c4d5e --stat      (with agent.repo in the config)
      codeswarm terminate sw-1a2b3c4d5e
    Add --config configs/<cluster>.json to run on a cluster.
    """


@main.command()
@config_option
def daemon(config_path: str | None, debug: bool) -> None:
    """Serve the JSON-lines protocol on stdin/stdout (the way OpenClaw runs codeswarm).

    Prints {"type":"ready",...} once it accepts commands. stdout carries protocol lines
    only; logs go to stderr. Exits 0 on EOF on stdin, on {"command":"shutdown"}, and on
    SIGTERM or SIGINT. Swarms keep running after the daemon exits. See docs/protocol.md.

    \b
    Example:
      $ codeswarm daemon --config configs/local.json
      {"command":"launch","nodes":2}
      {"command":"inject","swarm_id":"sw-...","nodes":"all","content":"Hello"}
    """
    from codeswarm.router import run_daemon

    setup_logging(debug)
    logging.getLogger().setLevel(logging.DEBUG if debug else logging.INFO)
    config = load(config_path)
    # `kill -USR1 <pid>` prints every thread's stack on stderr: for a daemon that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(run_daemon(config, sys.stdin.buffer, sys.stdout.buffer, stop_signals_fd()))


def stop_signals_fd() -> int:
    """A pipe's read end that becomes readable once SIGTERM or SIGINT arrives.

    A handler that set a threading.Event could hang the daemon: set() takes the Event's lock,
    which the interrupted main thread may hold inside its own wait. Python's C-level handler
    writes the signal number to the wakeup fd, taking no lock; our handlers do nothing.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    return read_fd


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the swarms as JSON lines.")
@config_option
def list_swarms(as_json: bool, config_path: str | None, debug: bool) -> None:
    """List the swarms this config's router knows, oldest first."""
    with swarms_for(config_path, debug) as swarms:
        listed = swarms.list()
    for swarm in listed:
        if as_json:
            click.echo(json.dumps(swarm))
        else:
            print_swarm(swarm, brief=True)
    if not listed and not as_json:
        click.echo("no swarms; start one with `codeswarm launch --nodes N`", err=True)


@main.command()
@click.argument("swarm_id")
@click.option("--json", "as_json", is_flag=True, help="Print the swarm as JSON.")
@config_option
def status(swarm_id: str, as_json: bool, config_path: str | None, debug: bool) -> None:
    """Show a swarm's state and each node's."""
    with swarms_for(config_path, debug) as swarms:
        swarm = swarms.status(swarm_id)
    if as_json:
        click.echo(json.dumps(swarm))
    else:
        print_swarm(swarm, brief=False)


def parse_nodes(value: str) -> int | list[int] | str:
    if value == "all":
        return "all"
    try:
        nodes = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter('give "all", a node index, or indexes like 0,2,3') from None
    return nodes[0] if len(nodes) == 1 else nodes


@main.command()
@click.argument("swarm_id")
@click.option("--prompt", required=True, help="The prompt; '-' reads it from stdin.")
@click.option("--nodes", default="all", show_default=True, help='"all", 0, or 0,2,3.')
@click.option("--injection-id", help="Your id for this prompt (a retry with it is harmless).")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the answers: print each node's final message (or why it failed); "
    "exit 1 if any node failed.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    help="With --wait: stop waiting after this many seconds (exit 1; the agents go on).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON lines: each node's ack; with --wait also every event of the injections as it "
    'comes, then one {"type": "answer", ...} line per node.',
)
@config_option
def inject(
    swarm_id: str,
    prompt: str,
    nodes: str,
    injection_id: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    config_path: str | None,
    debug: bool,
) -> None:
    """Send a prompt to a swarm's nodes; prints one injection id per node.

    The prompt is durably in each node's inbox when this returns. With --wait it prints each
    node's answer as it comes; without, follow them with `codeswarm attach SWARM_ID --since
    start` or read them later with `codeswarm logs SWARM_ID`.

    \b
    Examples:
      codeswarm inject sw-1a2b3c4d5e --prompt "Optimize GEMM tiling." --nodes 0,2
      codeswarm inject sw-1a2b3c4d5e --prompt "Summarise README.md" --wait
      echo "Review the diff" | codeswarm inject sw-1a2b3c4d5e --prompt - --wait --json
    """
    content = sys.stdin.read() if prompt == "-" else prompt
    if not content:
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    selected = parse_nodes(nodes)
    if not wait:
        with swarms_for(config_path, debug) as swarms:
            acks = swarms.inject_and_wait(swarm_id, content, selected, injection_id)
        sys.exit(1 if print_acks(acks, as_json) else 0)
    config = load(config_path)

    def show(answer: dict[str, Any]) -> None:
        line = json.dumps({"type": "answer", **answer}) if as_json else history.answer_line(answer)
        click.echo(line)

    with history.own_router(lambda follow: swarms_for(config_path, debug, follow)) as swarms:
        if swarms is None:  # a daemon follows the mailbox: read its log from here on
            since = history.log_end(config, swarm_id)
            with swarms_for(config_path, debug) as once:
                acks = once.inject_and_wait(swarm_id, content, selected, injection_id)
        else:
            acks = swarms.inject_and_wait(swarm_id, content, selected, injection_id)
            since = min((ack.get("cursor", 1) for ack in acks), default=1) - 1
        if injection_id is not None:
            since = 0  # a retry: its answer may have come long ago
        failed = print_acks(acks, as_json, answers_follow=True)
        ids = [ack["injection_id"] for ack in acks if ack["type"] == "inject_ack"]
        answers = history.wait_for_answers(
            swarms, config, swarm_id, ids, since, timeout, show, print_json if as_json else None
        )
    for answer in answers:
        if answer["status"] == "pending":
            show(answer)
    sys.exit(1 if failed or answers_failed(answers) else 0)


def print_json(event: dict[str, Any]) -> None:
    """An injection's event as a JSON line; its ack is printed once already."""
    if event["type"] != "inject_ack":
        click.echo(json.dumps(event))


def print_acks(acks: list[dict[str, Any]], as_json: bool, answers_follow: bool = False) -> bool:
    """Print each node's ack (failures on stderr; all of them there when answers follow on
    stdout); True if any node failed."""
    failed = False
    for ack in sorted(acks, key=lambda e: e["node_id"]):
        if as_json:
            click.echo(json.dumps(ack))
        elif ack["type"] == "inject_ack":
            held = " (node not started yet)" if ack.get("held") else ""
            line = f"node {ack['node_id']}: {ack['injection_id']}{held}"
            click.echo(line, err=answers_follow)
        else:
            click.echo(f"node {ack['node_id']}: failed: {ack['message']}", err=True)
        failed = failed or ack["type"] == "inject_failed"
    return failed


@main.command()
@click.argument("swarm_id")
@click.option("--json", "as_json", is_flag=True, help="Print every event as a JSON line.")
@click.option(
    "--events",
    "patterns",
    metavar="PATTERN,...",
    help="Only these event types or globs, e.g. 'item_*,turn_complete' or '*' for all "
    "(default: all but command_output_delta and reasoning_delta).",
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0.1),
    help="Exit after this many seconds without an event (default: run until Ctrl-C).",
)
@click.option("--since", "since_text", metavar="WHEN", help=history.SINCE_HELP)
@config_option
def attach(
    swarm_id: str,
    as_json: bool,
    patterns: str | None,
    idle_exit: float | None,
    since_text: str | None,
    config_path: str | None,
    debug: bool,
) -> None:
    """Stream a swarm's events from now on (or from --since): for a person, or as JSON.

    Each line starts with its node ([n3]); commands show as `$ command` with their exit
    code, file changes as `M src/x.py +12 -3`, approval requests with the command that
    answers them. Colours when stdout is a terminal (set NO_COLOR to turn them off).

    With --since it first prints what the swarm's event log holds from then on: what you
    missed since `inject`, or since the last event you saw (`--since CURSOR`, the `cursor` of
    that event), with nothing twice.

    \b
    Examples:
      codeswarm attach sw-1a2b3c4d5e
      codeswarm attach sw-1a2b3c4d5e --since start
      codeswarm attach sw-1a2b3c4d5e --since 10m --events 'item_*,turn_complete'
      codeswarm attach sw-1a2b3c4d5e --events '*' --json --config configs/hpcfund.json
    """
    types = history.event_patterns(patterns)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    renderer = EventRenderer(color=color)
    if since_text is not None:
        since = history.since_option(since_text)
        config = load(config_path)

        def show(event: dict[str, Any]) -> None:
            click.echo(renderer.render(event), nl=False, color=color)

        with history.own_router(lambda follow: swarms_for(config_path, debug, follow)) as swarms:
            check_swarm(swarms, config_path, debug, swarm_id)
            events = history.swarm_events(swarms, config, swarm_id, since, idle_exit, types)
            with contextlib.suppress(KeyboardInterrupt):
                history.print_events(events, as_json, show)
        click.echo(renderer.finish(), nl=False)
        return
    with swarms_for(config_path, debug, follow="end") as swarms:
        swarms.status(swarm_id)
        try:
            for event in swarms.events(timeout=idle_exit, types=types):
                if event.get("swarm_id") != swarm_id:
                    continue
                if as_json:
                    click.echo(json.dumps(event))
                else:
                    click.echo(renderer.render(event), nl=False, color=color)
        except KeyboardInterrupt:
            pass
        click.echo(renderer.finish(), nl=False)


@main.command()
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Only swarms that ended at least this long ago: 90s, 30m, 12h, 7d, or 0 for all.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line a swarm.")
@config_option
def prune(
    older_than: str, dry_run: bool, as_json: bool, config_path: str | None, debug: bool
) -> None:
    """Forget finished swarms and remove their files from the cluster.

    A swarm that has exited or been terminated stays in `codeswarm list` until pruned. This
    removes its registry record, its mailbox files (inbox, outbox, archives, state, logs)
    and each agent's working directory and CODEX_HOME. A node's git worktree (agent.repo)
    is committed first (what it left uncommitted goes onto its branch) and then removed;
    its branch codeswarm/SWARM_ID/N stays in the repository. Running swarms are never
    touched.

    \b
    Example:
      codeswarm prune --older-than 2d --dry-run --config configs/hpcfund.json
      codeswarm prune --older-than 2d --config configs/hpcfund.json
    """
    from codeswarm.prune import parse_age
    from codeswarm.prune import prune as prune_swarms
    from codeswarm.registry import SwarmRegistry
    from codeswarm.router import build_backend

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    setup_logging(debug)
    config = load(config_path)
    transport, _, _ = build_backend(config)
    try:
        registry = SwarmRegistry(config.router.state_dir, transport.mailbox)
        if not dry_run:
            transport.prepare()  # the cluster side runs hpc.prune from its copy
        pruned = prune_swarms(registry, transport, age, dry_run)
    finally:
        transport.close()
    verb = "would remove" if dry_run else "removed"
    kept = 0
    for swarm, result in pruned:
        if as_json:
            click.echo(json.dumps(prune_line(swarm, result, dry_run)))
        if result.error is not None:
            kept += 1
            click.echo(f"kept {swarm.swarm_id} (job {swarm.job_id}): {result.error}", err=True)
            continue
        files = "" if dry_run else f" ({len(result.removed)} paths)"
        if not as_json:
            click.echo(f"{verb} {swarm.swarm_id} (job {swarm.job_id}, {swarm.state}){files}")
    if not pruned:
        click.echo(f"no finished swarm ended more than {older_than} ago", err=True)
    if kept:
        raise click.ClickException(f"{kept} swarm(s) kept: a git worktree could not be retired")


def prune_line(swarm: Any, result: Any, dry_run: bool) -> dict[str, Any]:
    """What prune did to one swarm, for --json."""
    return {
        "swarm_id": swarm.swarm_id,
        "job_id": swarm.job_id,
        "state": swarm.state,
        "dry_run": dry_run,
        "removed": result.removed,
        "kept": result.error is not None,
        "error": result.error,
    }


def check_swarm(swarms: Any, config_path: str | None, debug: bool, swarm_id: str) -> None:
    """Fail with unknown_swarm now, not after waiting on a log that never comes."""
    if swarms is not None:
        swarms.status(swarm_id)
        return
    with swarms_for(config_path, debug) as once:
        once.status(swarm_id)


def _add_commands() -> None:
    from codeswarm.cli.diff import diff
    from codeswarm.cli.doctor import doctor
    from codeswarm.cli.launch import launch
    from codeswarm.cli.logs import logs
    from codeswarm.cli.mcp import mcp_command
    from codeswarm.cli.scale import scale

    main.add_command(diff)
    main.add_command(config_option(doctor))
    main.add_command(config_option(launch))
    main.add_command(logs)
    main.add_command(mcp_command)
    main.add_command(scale)


_add_commands()


@main.command()
@click.argument("swarm_id")
@click.option("--json", "as_json", is_flag=True, help="Print the router's answer as JSON.")
@config_option
def terminate(swarm_id: str, as_json: bool, config_path: str | None, debug: bool) -> None:
    """Stop every agent of a swarm (their running turns are interrupted, outboxes archived)."""
    with swarms_for(config_path, debug) as swarms:
        swarms.terminate(swarm_id)
    if as_json:
        click.echo(json.dumps({"type": "swarm_terminated", "swarm_id": swarm_id}))
    click.echo(f"terminating {swarm_id}", err=True)


@main.command()
@click.argument("swarm_id")
@click.option("--nodes", required=True, help='Agents whose tasks to resubmit: 3, 2,3 or "all".')
@click.option("--json", "as_json", is_flag=True, help="Print the swarm as JSON.")
@config_option
def restart(swarm_id: str, nodes: str, as_json: bool, config_path: str | None, debug: bool) -> None:
    """Resubmit, alone, the job-array tasks of agents that have exited (slurm.layout array).

    \b
    Examples:
      codeswarm restart sw-1a2b3c4d5e --nodes 3     # the task that runs agent 3
      codeswarm restart sw-1a2b3c4d5e --nodes all   # every task that has exited
    """
    with swarms_for(config_path, debug) as swarms:
        swarm = swarms.restart(swarm_id, parse_nodes(nodes))
    if as_json:
        click.echo(json.dumps(swarm))
    else:
        print_swarm(swarm, brief=False)


from codeswarm.cli.steering import COMMANDS  # noqa: E402 (its verbs use the helpers above)

for _verb in COMMANDS:
    main.add_command(_verb)

from codeswarm.cli.completion import complete_swarm_ids  # noqa: E402 (after every verb)

complete_swarm_ids(main)
