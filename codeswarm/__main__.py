"""``python -m codeswarm`` is the ``codeswarm`` command."""

from codeswarm.cli import main

main()
