"""Check a server's host key against known_hosts files as OpenSSH reads them.

paramiko's own store knows neither ``@cert-authority`` nor ``@revoked`` lines, and looks a
host up under one name only. Here the lines are read as sshd(8) describes them (hashed names,
wildcards, negation, ``[host]:port``), the key is looked up under the name ssh would use
(HostKeyAlias, or the host and port), and an unknown key is never accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from codeswarm.errors import BackendError
from codeswarm.protocol import errors

CERT_AUTHORITY = "@cert-authority"
REVOKED = "@revoked"


@dataclass(frozen=True)
class KnownKey:
    """One usable line of a known_hosts file."""

    marker: str | None
    patterns: str
    key_type: str
    blob: bytes
    source: str


def lookup_name(hostname: str, port: int, alias: str | None = None) -> str:
    """The name ssh looks a host key up under: HostKeyAlias as is, else ``[host]:port``."""
    if alias:
        return alias
    return hostname if port == 22 else f"[{hostname}]:{port}"


def parse_line(line: str, source: str) -> KnownKey | None:
    """One known_hosts line, or None for comments, blanks and lines ssh would skip."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
        if marker not in (CERT_AUTHORITY, REVOKED):
            return None
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    return KnownKey(marker, fields[0], fields[1], blob, source)


def matches(patterns: str, name: str) -> bool:
    """Whether ``name`` matches a known_hosts host field (hashed, or patterns with ``!``)."""
    if patterns.startswith("|1|"):
        salt, _, digest = patterns[3:].partition("|")
        try:
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except (binascii.Error, ValueError):
            return False
    found = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _glob(pattern.removeprefix("!")).fullmatch(name.lower()):
            if negated:
                return False
            found = True
    return found


def _glob(pattern: str) -> re.Pattern[str]:
    """ssh's wildcards, ``*`` and ``?`` only: ``[host]:port`` brackets are literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile("".join(parts))


def split_files(value: str, option: str) -> list[str]:
    """The files of a UserKnownHostsFile/GlobalKnownHostsFile value as ``ssh -G`` prints it.

    ssh -G prints the list unquoted, so a path with a space comes out as two words: words are
    joined again where the joined path exists; a word left that is not a path (it does not
    start with ``/`` or ``~``) is such a split, and is refused rather than read wrongly.
    """
    words, files = value.split(), []
    while words:
        take = next((n for n in range(len(words), 1, -1) if _exists(" ".join(words[:n]))), 1)
        path, words = " ".join(words[:take]), words[take:]
        if not path.startswith(("/", "~")):
            raise _refused(
                f"{option} {value!r}: {path!r} is not a path; a file name with a space in it "
                "cannot be told apart from two files here. Use a path without spaces (or "
                "create the file, so that codeswarm can find it)"
            )
        files.append(path)
    return files


def _exists(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))


def load(paths: tuple[str, ...]) -> list[KnownKey]:
    """Every usable line of the files that exist, in order."""
    keys = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                key = parse_line(line, path)
                if key is not None:
                    keys.append(key)
    return keys


def key_types(known: list[KnownKey], name: str) -> list[str]:
    """The host key algorithms to ask the server for, known ones first (as ssh orders them)."""
    wanted: list[str] = []
    for key in known:
        if key.marker is None and matches(key.patterns, name):
            rsa = key.key_type == "ssh-rsa"
            names = ["rsa-sha2-512", "rsa-sha2-256"] if rsa else [key.key_type]
            wanted += [n for n in names if n not in wanted]
    return wanted


def verify(known: list[KnownKey], name: str, key_type: str, blob: bytes) -> None:
    """Accept the server's key only if a plain known_hosts line for ``name`` has it."""
    mine = [k for k in known if matches(k.patterns, name)]
    if any(k.marker == REVOKED and k.blob == blob for k in known):
        raise _refused("the host key is marked @revoked in known_hosts")
    if any(k.marker is None and k.blob == blob for k in mine):
        return
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    files = sorted({k.source for k in mine if k.marker is None})
    if files:
        raise _refused(
            f"the host key ({key_type} {fingerprint}) does not match the one known "
            f"for {name} in {', '.join(files)}: the key changed, or this is not the host you "
            f"meant. If the change is expected, remove the old line (`ssh-keygen -R '{name}'`) "
            "and add the new key after checking its fingerprint"
        )
    if any(k.marker == CERT_AUTHORITY for k in mine):
        raise _refused(
            "the host is trusted in known_hosts only through a @cert-authority line, and "
            "codeswarm (paramiko) cannot verify host certificates. Add a plain entry for it, "
            f"after checking the fingerprint {fingerprint}: `ssh-keyscan -p PORT HOST` prints "
            f"its keys; put the {key_type} one in your known_hosts under the name {name!r}"
        )
    raise _refused(
        f"the host key ({key_type} {fingerprint}) is not in known_hosts under "
        f"{name!r}; codeswarm never accepts an unknown host key. Run `ssh <alias> true` once "
        "interactively and check the fingerprint, or add the key with `ssh-keyscan`"
    )


def _refused(message: str) -> BackendError:
    return BackendError(message, code=errors.SSH)
