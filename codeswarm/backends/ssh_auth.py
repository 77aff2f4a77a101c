"""Public-key login as OpenSSH does it: identity files, their certificates, the agent.

The order follows ssh: keys held by the agent that match an IdentityFile first, then the other
agent keys (unless IdentitiesOnly), then the files themselves; each key with a certificate
(CertificateFile, or ``<file>-cert.pub``) is offered as that certificate. Nothing ever
prompts: an encrypted key that is not in the agent is skipped and named in the error.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import paramiko
from paramiko.agent import AgentKey, AgentSSH

from codeswarm.backends.ssh_config import NO_AGENT, HostOptions

log = logging.getLogger(__name__)
CERT_SUFFIX = "-cert-v01@openssh.com"


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


def _public_blob(path: str) -> bytes | None:
    """The public key of an identity file, from ``<file>.pub`` (readable without a password)."""
    try:
        return paramiko.PublicBlob.from_file(path + ".pub").key_blob
    except (OSError, ValueError, IndexError):
        return None


def _with_certificate(key: paramiko.PKey, path: str, certificates: tuple[str, ...]) -> str:
    """Attach the first certificate that belongs to ``key``; the label names it."""
    for cert in (*certificates, path + "-cert.pub"):
        if not os.path.isfile(cert):
            continue
        try:
            blob = paramiko.PublicBlob.from_file(cert)
        except (OSError, ValueError, IndexError):
            continue
        if not blob.key_type.endswith(CERT_SUFFIX):
            continue
        try:
            key.load_certificate(cert)
        except ValueError:
            continue
        if _certified_key(blob.key_blob) == key.asbytes():
            return f"{path} with certificate {cert}"
        key.public_blob = None
    return path


def _certified_key(cert_blob: bytes) -> bytes:
    """The plain public key a certificate blob certifies (its type, then the key fields)."""
    msg = paramiko.Message(cert_blob)
    cert_type = msg.get_text()
    msg.get_string()  # nonce
    plain = paramiko.Message()
    plain.add_string(cert_type.removesuffix(CERT_SUFFIX))
    if cert_type.startswith("ssh-ed25519"):
        plain.add_string(msg.get_string())
    elif cert_type.startswith("ssh-rsa"):
        plain.add_mpint(msg.get_mpint())
        plain.add_mpint(msg.get_mpint())
    elif cert_type.startswith("ecdsa-"):
        plain.add_string(msg.get_string())
        plain.add_string(msg.get_string())
    return plain.asbytes()


def identities(options: HostOptions, agent: AgentSSH | None) -> Identities:
    """The keys to offer to ``options``' host, in ssh's order."""
    found = Identities()
    files = [p for p in options.identity_files if os.path.isfile(p)]
    agent_keys: list[AgentKey] = list(agent.get_keys()) if agent is not None else []
    wanted = {b for b in (_public_blob(p) for p in files) if b is not None}
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
            found.skipped.append(f"{path} (encrypted: add it to ssh-agent)")
            continue
        except Exception as exc:
            # Any key paramiko cannot read (FIDO, DSA): one unusable key must not stop the
            # login another key would make, as it does not in ssh.
            found.skipped.append(f"{path} (paramiko cannot use it: {type(exc).__name__}: {exc})")
            continue
        label = _with_certificate(key, path, options.certificate_files)
        if key.public_blob is None and key.asbytes() in offered:
            continue
        found.keys.append(Identity(key, label))
    return found


def _plain_blob(key: paramiko.PKey) -> bytes:
    """A key's plain public blob, even when it is an agent's certificate."""
    blob = key.blob if isinstance(key, AgentKey) else key.asbytes()
    return _certified_key(blob) if key.get_name().endswith(CERT_SUFFIX) else blob


def authenticate(transport: paramiko.Transport, user: str, found: Identities) -> list[str]:
    """Log in with the first key the server takes; the labels of the keys it refused.

    Raises paramiko.AuthenticationException naming every key offered when none is taken.
    """
    refused: list[str] = []
    for identity in found.keys:
        try:
            transport.auth_publickey(user, identity.key)
        except paramiko.AuthenticationException:
            refused.append(identity.label)
            continue
        if transport.is_authenticated():
            log.debug("logged in as %s with %s", user, identity.label)
            return refused
    offered = "; ".join(refused) or "none (no identity file exists and no agent holds a key)"
    skipped = f"; not usable: {'; '.join(found.skipped)}" if found.skipped else ""
    raise paramiko.AuthenticationException(
        f"public key login as {user} refused; offered: {offered}{skipped}"
    )
