"""What an identity file says without its passphrase: its public key and its certificates.

OpenSSH reads an encrypted key's public half from ``<file>.pub``, or else from the cleartext
header of the ``openssh-key-v1`` file itself, so the agent's copy of the key can be matched
to the file; and it offers each certificate of a key as well as the plain key.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os

import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
OPENSSH_MAGIC = b"openssh-key-v1\x00"
BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
END = "-----END OPENSSH PRIVATE KEY-----"


def public_blob(path: str) -> bytes | None:
    """An identity file's public key: from ``<file>.pub``, else from the file's own header."""
    try:
        return paramiko.PublicBlob.from_file(path + ".pub").key_blob
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read(1 << 20)
        body = text.split(BEGIN, 1)[1].split(END, 1)[0]
        data = base64.b64decode("".join(body.split()), validate=True)
    except (OSError, IndexError, binascii.Error, ValueError):
        return None
    if not data.startswith(OPENSSH_MAGIC):
        return None
    header = paramiko.Message(data[len(OPENSSH_MAGIC) :])
    try:
        for _ in range(3):  # cipher name, kdf name, kdf options
            header.get_string()
        if header.get_int() < 1:
            return None
        return header.get_string() or None
    except (IndexError, ValueError, paramiko.SSHException):
        return None


def certified_key(cert_blob: bytes) -> bytes:
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


def certificates(
    key: paramiko.PKey, path: str, certificate_files: tuple[str, ...]
) -> list[tuple[paramiko.PKey, str]]:
    """``key`` with each certificate that belongs to it (CertificateFile ones first, then
    ``<file>-cert.pub``), as (key carrying the certificate, certificate path)."""
    found = []
    for cert in dict.fromkeys((*certificate_files, path + "-cert.pub")):
        if not os.path.isfile(cert):
            continue
        try:
            blob = paramiko.PublicBlob.from_file(cert)
            if not blob.key_type.endswith(CERT_SUFFIX):
                continue
            if certified_key(blob.key_blob) != key.asbytes():
                continue
            certified = copy.copy(key)
            certified.load_certificate(cert)
        except (OSError, ValueError, IndexError, paramiko.SSHException):
            continue
        found.append((certified, cert))
    return found
