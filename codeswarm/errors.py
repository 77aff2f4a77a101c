"""Every error codeswarm raises to its callers, under one base class.

Catch ``CodeswarmError`` to catch them all; the message always says what to do next. Below it,
the split follows who can fix the problem::

    CodeswarmError
    +-- UserError                 the user's to fix, on this machine
    |   +-- ConfigError           a config file or value that cannot be used
    |   +-- RegistryError         a damaged swarm registry file
    |   +-- CodexNotFoundError    no codex binary to run
    +-- BackendError              the cluster or the way there failed: SSH, Slurm, processes
    +-- CommandError              the router answered a command with an ``error`` event
    +-- NoAnswerError             the router did not answer a command in time

The cluster-side code (``hpc/``, standard library only) has errors of its own; they stay on
the cluster side or are turned into events, and never reach a caller.
"""

from __future__ import annotations

from typing import Any

from codeswarm.protocol.errors import BACKEND


class CodeswarmError(Exception):
    """Anything codeswarm raises on purpose."""


class UserError(CodeswarmError):
    """A problem the user fixes on this machine: a config, a file, an installation."""


class MailboxBusyError(UserError):
    """Another router (a daemon) follows this mailbox: read its event log instead."""


class ConfigError(UserError):
    """A config that cannot be used. `errors` holds (dotted field path, message) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source, self.errors = source, errors
        super().__init__(
            "\n".join(f"{source}: {p}: {m}" if p else f"{source}: {m}" for p, m in errors)
        )


class RegistryError(UserError):
    """The registry file cannot be read; the message says which file and what to do."""


class CodexNotFoundError(UserError):
    """No codex binary where codeswarm looks; the message says how to install one."""


class BackendError(CodeswarmError):
    """A transport or scheduler operation failed; the message says what to fix.

    ``code`` is the protocol's error code for it (``backend``, or ``ssh`` when the connection
    failed), and ``stderr`` what the failed command printed, if anything.
    """

    def __init__(self, message: str, stderr: str = "", code: str = BACKEND) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.code = code


class CommandError(CodeswarmError):
    """The router answered a command with an ``error`` event, kept in ``event``."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(f"{event['error']}: {event['message']}")
        self.event = event


class NoAnswerError(CodeswarmError):
    """The router did not answer a command within the timeout; it may still take effect."""
