"""Public-key login as OpenSSH does it: identity files, their certificates, the agent.

The order follows ssh: keys held by the agent that match an IdentityFile first, then the other
agent keys (unless IdentitiesOnly), then the files themselves; a key with certificates
(CertificateFile, or ``<file>-cert.pub``) is offered as each certificate, then as itself.
Nothing ever prompts: an encrypted key that is not in the agent is skipped and named.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import paramiko
from paramiko.agent import AgentKey, AgentSSH

from codeswarm.backends import ssh_keyfiles as keyfiles
from codeswarm.backends.ssh_config import NO_AGENT, HostOptions
from codeswarm.backends.ssh_keyfiles import CERT_SUFFIX

log = logging.getLogger(__name__)


@dataclass
class Identity:
    """A key to offer, and how to name it in a message."""

    key: paramiko.PKey
    label: str


@dataclass
class Identities:
    """The keys one login offers, and the files that could not be used (with why)."""

    keys: list[Identity] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    why_none: str = ""


class SocketAgent(AgentSSH):
    """The ssh-agent at a given socket (IdentityAgent), not only at ``$SSH_AUTH_SOCK``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        try:
            conn.connect(path)
            self._connect(conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self._close()


def open_agent(options: HostOptions) -> SocketAgent | None:
    """The agent this host's login may use, or None when there is none to reach."""
    path = options.identity_agent or os.environ.get("SSH_AUTH_SOCK")
    if not path or path.lower() == NO_AGENT:
        return None
    try:
        return SocketAgent(path)
    except (OSError, paramiko.SSHException) as exc:
        log.debug("ssh-agent at %s not usable: %s", path, exc)
        return None


def identities(options: HostOptions, agent: AgentSSH | None) -> Identities:
    """The keys to offer to ``options``' host, in ssh's order."""
    found = Identities()
    files = [p for p in options.identity_files if os.path.isfile(p)]
    agent_keys: list[AgentKey] = list(agent.get_keys()) if agent is not None else []
    wanted = {b for b in (keyfiles.public_blob(p) for p in files) if b is not None}
    for key in sorted(agent_keys, key=lambda k: _plain_blob(k) not in wanted):
        if options.identities_only and _plain_blob(key) not in wanted:
            continue
        if key.get_name().endswith(CERT_SUFFIX):
            # Offer the certificate itself, not the plain key paramiko derives from it.
            key.public_blob = paramiko.PublicBlob(key.get_name(), key.blob)
        found.keys.append(Identity(key, f"agent key {key.get_name()} {key.comment or ''}".strip()))
    offered = {_plain_blob(i.key) for i in found.keys}
    for path in files:
        try:
            key = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):
            # cryptography says "password-protected" with a TypeError, paramiko with its own.
            found.skipped.append(f"{path} (encrypted, and not in the ssh-agent: add it there)")
            continue
        except Exception as exc:
            # Any key paramiko cannot read (FIDO, DSA): one unusable key must not stop the
            # login another key would make, as it does not in ssh.
            found.skipped.append(f"{path} (paramiko cannot use it: {type(exc).__name__}: {exc})")
            continue
        # As ssh: the key's certificates first, then the plain key (a stale certificate
        # must not hide a key the server takes as it is). from_path attaches -cert.pub itself.
        key.public_blob = None
        for certified, cert in keyfiles.certificates(key, path, options.certificate_files):
            found.keys.append(Identity(certified, f"{path} with certificate {cert}"))
        if key.asbytes() not in offered:
            found.keys.append(Identity(key, path))
    if not found.keys:
        found.why_none = _why_none(options, files, agent, agent_keys)
    return found


def _why_none(
    options: HostOptions, files: list[str], agent: AgentSSH | None, agent_keys: list[AgentKey]
) -> str:
    """What was looked at when there is no key to offer at all."""
    missing = [p for p in options.identity_files if p not in files]
    parts = [f"no identity file exists of {', '.join(missing)}"] if missing and not files else []
    if agent is None:
        parts.append("no ssh-agent is reachable (SSH_AUTH_SOCK or IdentityAgent)")
    elif not agent_keys:
        parts.append("the ssh-agent holds no key")
    elif options.identities_only:
        parts.append(
            f"the ssh-agent's {len(agent_keys)} key(s) match no IdentityFile, and "
            "IdentitiesOnly is yes"
        )
    return "; ".join(parts)


def _plain_blob(key: paramiko.PKey) -> bytes:
    """A key's plain public blob, even when it is an agent's certificate."""
    blob = key.blob if isinstance(key, AgentKey) else key.asbytes()
    return keyfiles.certified_key(blob) if key.get_name().endswith(CERT_SUFFIX) else blob


def authenticate(transport: paramiko.Transport, user: str, found: Identities) -> list[str]:
    """Log in with the first key the server takes; the labels of the keys it refused.

    Raises paramiko.AuthenticationException naming every key offered when none is taken, and
    saying what the server asks for when it wants more than a key (or takes no key at all).
    """
    refused: list[str] = []
    accepted: list[str] = []
    remaining: list[str] = []
    for identity in found.keys:
        try:
            remaining = transport.auth_publickey(user, identity.key)
        except paramiko.BadAuthenticationType as exc:
            raise paramiko.AuthenticationException(
                f"the server takes no public key for {user}: it allows only "
                f"{', '.join(exc.allowed_types) or 'nothing'}, which codeswarm cannot answer "
                "(it never prompts); ask the site for key login"
            ) from exc
        except paramiko.AuthenticationException:
            refused.append(identity.label)
            continue
        if transport.is_authenticated():
            log.debug("logged in as %s with %s", user, identity.label)
            return refused
        # Partial success (AuthenticationMethods): ssh goes on with the methods still wanted.
        accepted.append(identity.label)
        if "publickey" not in remaining:
            break
    if accepted:
        raise paramiko.AuthenticationException(
            f"key {' and '.join(accepted)} accepted for {user}; the server also requires "
            f"{' or '.join(remaining) or 'more'}, which codeswarm cannot answer (it never "
            "prompts): ask the site for key-only login for this account"
        )
    offered = "; ".join(refused) or f"none ({found.why_none or 'no usable key'})"
    skipped = f"; not usable: {'; '.join(found.skipped)}" if found.skipped else ""
    raise paramiko.AuthenticationException(
        f"public key login as {user} refused; offered: {offered}{skipped}"
    )
