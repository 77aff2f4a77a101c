"""The ``codeswarm`` command line."""

import click

from codeswarm import __version__


@click.group()
@click.version_option(__version__, prog_name="codeswarm")
def main() -> None:
    """Run swarms of Codex agents on Slurm clusters or on this machine."""
