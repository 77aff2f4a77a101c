"""Resolve an ssh_config alias the way ``ssh <alias>`` would, one hop at a time.

OpenSSH is the reference: where an ``ssh`` binary exists, ``ssh -G`` prints the options it
would use (Include, Match, wildcards, CanonicalizeHostname and most tokens already applied),
and we parse that. Without one, paramiko's own parser is the fallback; it cannot follow
Include, so a config that uses Include is refused with a message rather than half-read.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import paramiko

from codeswarm.backends.known_hosts import split_files
from codeswarm.config import SshConfig
from codeswarm.errors import BackendError
from codeswarm.protocol import errors

log = logging.getLogger(__name__)
DEFAULT_CONFIG = "~/.ssh/config"
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
SSH_G_TIMEOUT = 30.0
SSH_G = "ssh -G"
NO_AGENT = "none"


@dataclass(frozen=True)
class HostOptions:
    """What ssh would use to reach one host: the target or one jump host."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    identity_agent: str | None  # None: $SSH_AUTH_SOCK; "none": no agent at all
    certificate_files: tuple[str, ...]
    known_hosts: tuple[str, ...]
    host_key_alias: str | None
    proxy_jump: tuple[str, ...]
    proxy_command: str | None
    connect_timeout: float | None
    server_alive_interval: float
    source: str

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Jump:
    """One ``[user@]host[:port]`` (or ``ssh://`` URI) of a ProxyJump list."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_jumps(value: str | None) -> tuple[Jump, ...]:
    """The hops of a ProxyJump value, first hop first; ``none`` is no hop at all."""
    if not value or value.strip().lower() == "none":
        return ()
    hops = []
    for item in value.split(","):
        item = item.strip().removeprefix("ssh://")
        user, _, rest = item.rpartition("@")
        host, port = rest, None
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = tail[1:] if tail.startswith(":") else None
        elif rest.count(":") == 1:
            host, _, port = rest.partition(":")
        if not host or (port is not None and not port.isdigit()):
            raise BackendError(
                f"ProxyJump {value!r}: cannot read the hop {item!r}; each hop is "
                "[user@]host[:port] or ssh://[user@]host[:port]",
                code=errors.SSH,
            )
        hops.append(Jump(host, user or None, int(port) if port else None))
    return tuple(hops)


def parse_ssh_g(text: str) -> dict[str, list[str]]:
    """``ssh -G`` output as lower-case keyword -> values, in the order printed."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            options.setdefault(key.lower(), []).append(value.strip())
    return options


def expand_tokens(text: str, values: dict[str, str]) -> str:
    """ssh_config's ``%x`` tokens; an unknown token is an error, as it is for ssh."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        token = text[i + 1 : i + 2]
        if token == "%":
            out.append("%")
        elif token in values:
            out.append(values[token])
        else:
            raise BackendError(
                f"unknown token %{token} in ssh_config value {text!r}", code=errors.SSH
            )
        i += 2
    return "".join(out)


def token_values(
    alias: str, hostname: str, port: int, user: str, jump: str, key_alias: str | None = None
) -> dict[str, str]:
    """The ``%x`` tokens of ssh_config(5) for one host."""
    local = socket.gethostname()
    local_user = getpass.getuser()
    port_text = str(port)
    return {
        "h": hostname,
        "n": alias,
        "p": port_text,
        "r": user,
        "u": local_user,
        "d": str(Path.home()),
        "i": str(os.getuid()),
        "l": local,
        "L": local.split(".")[0],
        "j": jump,
        "k": key_alias or alias,
        "C": hashlib.sha1((local + hostname + port_text + user + jump).encode()).hexdigest(),
    }


def _path(value: str, tokens: dict[str, str]) -> str:
    return os.path.expanduser(expand_tokens(value, tokens))


def _seconds(value: str | None) -> float | None:
    if not value or value.lower() == "none":
        return None
    return float(value)


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def _agent(value: str | None, tokens: dict[str, str], source: str) -> str | None:
    """IdentityAgent: None for $SSH_AUTH_SOCK, "none" for no agent, else the socket path."""
    if value is None or value == "SSH_AUTH_SOCK":
        return None
    if value.lower() == NO_AGENT:
        return NO_AGENT
    if value.startswith("$"):
        return os.environ.get(value[1:], NO_AGENT)
    return value if source == SSH_G else _path(value, tokens)


def from_options(alias: str, found: dict[str, list[str]], source: str) -> HostOptions:
    """A HostOptions from resolved keyword -> values (ssh -G's, or paramiko's made alike).

    ssh -G has already expanded ``~`` and the tokens of UserKnownHostsFile and IdentityAgent
    (and only those): expanding them again would turn ``%%`` into an error.
    """

    def one(key: str, default: str | None = None) -> str | None:
        return found[key][0] if found.get(key) else default

    # ssh looks the host up lowercased (ssh -G prints it so): hashed known_hosts need that.
    hostname = (one("hostname", alias) or alias).lower()
    port = int(one("port", "22") or 22)
    user = one("user") or getpass.getuser()
    jump_text = _none(one("proxyjump")) or ""
    key_alias = _none(one("hostkeyalias"))
    tokens = token_values(alias, hostname, port, user, jump_text, key_alias)
    known = split_files(
        one("userknownhostsfile") or " ".join(DEFAULT_KNOWN_HOSTS), "UserKnownHostsFile"
    )
    known += split_files(
        one("globalknownhostsfile") or " ".join(GLOBAL_KNOWN_HOSTS), "GlobalKnownHostsFile"
    )
    agent = _agent(one("identityagent"), tokens, source)
    proxy_command = _none(one("proxycommand"))
    return HostOptions(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(_path(p, tokens) for p in found.get("identityfile", [])),
        identities_only=(one("identitiesonly", "no") or "").lower() == "yes",
        identity_agent=agent,
        certificate_files=tuple(_path(p, tokens) for p in found.get("certificatefile", [])),
        known_hosts=tuple(
            os.path.expanduser(p) if source == SSH_G else _path(p, tokens) for p in known
        ),
        host_key_alias=key_alias,
        proxy_jump=tuple(j.strip() for j in jump_text.split(",") if j.strip()),
        proxy_command=expand_tokens(proxy_command, tokens) if proxy_command else None,
        connect_timeout=_seconds(one("connecttimeout")),
        server_alive_interval=_seconds(one("serveraliveinterval")) or 0.0,
        source=source,
    )


def _config_path(settings: SshConfig) -> Path | None:
    """The -F file for ssh, or None when it is ssh's own default (so /etc/ssh counts too)."""
    path = Path(os.path.expanduser(settings.ssh_config))
    if path == Path(os.path.expanduser(DEFAULT_CONFIG)):
        return None
    if not path.exists():
        raise BackendError(
            f"ssh.ssh_config {settings.ssh_config!r} does not exist: fix the path in the "
            f"config, or leave it out to use {DEFAULT_CONFIG}",
            code=errors.SSH,
        )
    return path


def ssh_g(host: str, settings: SshConfig, jump: Jump | None = None) -> str:
    """What ``ssh -G`` prints for ``host`` (with a hop's own user and port, if it has them)."""
    argv = [shutil.which("ssh") or "ssh", "-G"]
    if (path := _config_path(settings)) is not None:
        argv += ["-F", str(path)]
    if jump is not None and jump.user:
        argv += ["-l", jump.user]
    if jump is not None and jump.port:
        argv += ["-p", str(jump.port)]
    argv += ["--", host]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SSH_G_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"`{' '.join(argv)}` failed: {exc}", code=errors.SSH) from exc
    if done.returncode != 0:
        raise BackendError(
            f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-500:]}. "
            "Fix the ssh config it names (codeswarm reads it with OpenSSH, as ssh does).",
            stderr=done.stderr,
            code=errors.SSH,
        )
    return done.stdout


def paramiko_options(host: str, settings: SshConfig, jump: Jump | None = None) -> dict:
    """paramiko's reading of the ssh config, shaped like :func:`parse_ssh_g`'s."""
    path = Path(os.path.expanduser(settings.ssh_config))
    parsed = paramiko.SSHConfig()
    if path.exists():
        text = path.read_text()
        if any(line.strip().lower().startswith("include") for line in text.splitlines()):
            raise BackendError(
                f"{path} uses Include, which codeswarm can only follow through OpenSSH: "
                "install the OpenSSH client (`ssh`) on this host, or copy the included "
                "Host blocks into the file",
                code=errors.SSH,
            )
        parsed = paramiko.SSHConfig.from_text(text)
    entry = parsed.lookup(host)
    found: dict[str, list[str]] = {}
    for key, value in entry.items():
        found[key] = list(value) if isinstance(value, list) else [str(value)]
    if jump is not None and jump.user:
        found["user"] = [jump.user]
    if jump is not None and jump.port:
        found["port"] = [str(jump.port)]
    found.setdefault("identityfile", list(DEFAULT_IDENTITIES))
    return found


def resolve_host(host: str, settings: SshConfig, jump: Jump | None = None) -> HostOptions:
    """One host's options: from ``ssh -G`` when ssh is installed, else from paramiko."""
    if shutil.which("ssh"):
        options = from_options(host, parse_ssh_g(ssh_g(host, settings, jump)), SSH_G)
    else:
        options = from_options(host, paramiko_options(host, settings, jump), "paramiko")
    log.debug("resolved %s with %s: %s", host, options.source, options)
    return options


def resolve_chain(alias: str, settings: SshConfig) -> list[HostOptions]:
    """Every host to connect through, first hop first, the login node last.

    ``ssh.known_hosts``, unless left at ssh's own default, is read for every hop besides the
    files ssh names; ``ssh.identity_file`` is offered first to the login node.

    As ssh does with ``ProxyJump a,b``: b is reached through a, and only the first hop's own
    ProxyJump or ProxyCommand applies (the later hops' are overridden by the chain).
    """
    hops = _chain(resolve_host(alias, settings), settings, seen=set())
    extra = os.path.expanduser(settings.known_hosts)
    if extra != os.path.expanduser(DEFAULT_KNOWN_HOSTS[0]):
        hops = [replace(h, known_hosts=(*h.known_hosts, extra)) for h in hops]
    if settings.identity_file:
        own = os.path.expanduser(settings.identity_file)
        hops[-1] = replace(hops[-1], identity_files=(own, *hops[-1].identity_files))
    return hops


def _chain(host: HostOptions, settings: SshConfig, seen: set[str]) -> list[HostOptions]:
    """``host`` preceded by whatever it is reached through."""
    if not host.proxy_jump:
        return [host]
    if host.alias in seen:
        raise BackendError(
            f"ProxyJump loops back to {host.alias!r}: fix the ssh config", code=errors.SSH
        )
    hops = [resolve_host(j.host, settings, j) for j in parse_jumps(",".join(host.proxy_jump))]
    first = _chain(hops[0], settings, seen | {host.alias})
    return [*first, *(_direct(h) for h in hops[1:]), _direct(host)]


def _direct(hop: HostOptions) -> HostOptions:
    """A hop reached through the one before it: its own ProxyJump/ProxyCommand do not apply."""
    return replace(hop, proxy_jump=(), proxy_command=None)


def resolved_options(alias: str, settings: SshConfig) -> dict[str, Any]:
    """The options used for each hop to ``alias``, as plain data (for ``codeswarm doctor``)."""
    return {
        "alias": alias,
        "hops": [{**asdict(h), "address": h.address} for h in resolve_chain(alias, settings)],
    }
