"""``python -m codeswarm`` is the ``codeswarm`` command, by that name (in help and completion)."""

from codeswarm.cli import main

main(prog_name="codeswarm")
