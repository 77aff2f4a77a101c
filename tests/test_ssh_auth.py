"""Which keys a login offers, and in what order, with real ssh-keygen keys and a real ssh-agent."""

import base64
import dataclasses
import os
import shutil
import subprocess

import paramiko
import pytest

from codeswarm.backends import ssh_auth
from codeswarm.backends.ssh_config import from_options
from codeswarm.backends.ssh_keyfiles import CERT_SUFFIX


def keygen(path, key_type="ed25519", passphrase=""):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True,
    )
    return str(path)


def certify(ca, key, name="swarm"):
    subprocess.run(
        ["ssh-keygen", "-q", "-s", ca, "-I", "t", "-n", name, "-V", "+1h", f"{key}.pub"],
        check=True,
    )
    return f"{key}-cert.pub"


def host(**values):
    return dataclasses.replace(from_options("hpc", {}, "test"), **values)


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa"])
def test_a_key_is_offered_as_its_certificate(tmp_path, key_type):
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "id", key_type)
    moved = tmp_path / "elsewhere.cert"
    os.rename(certify(ca, key), moved)
    found = ssh_auth.identities(host(identity_files=(key,), certificate_files=(str(moved),)), None)
    certified, plain = found.keys
    assert certified.label == f"{key} with certificate {moved}"
    assert certified.key.public_blob.key_type.endswith(CERT_SUFFIX)
    assert (plain.label, plain.key.public_blob) == (key, None)


def test_certificate_files_come_before_the_cert_pub_beside_the_key(tmp_path):
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "id")
    beside = certify(ca, key)
    named = tmp_path / "named.cert"
    shutil.copy(beside, named)
    found = ssh_auth.identities(host(identity_files=(key,), certificate_files=(str(named),)), None)
    assert [i.label for i in found.keys] == [
        f"{key} with certificate {named}",
        f"{key} with certificate {beside}",
        key,
    ]
    assert found.keys[-1].key.public_blob is None


def test_another_keys_certificate_is_not_attached(tmp_path):
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "id")
    other = certify(ca, keygen(tmp_path / "other"))
    found = ssh_auth.identities(host(identity_files=(key,), certificate_files=(other,)), None)
    assert [(i.label, i.key.public_blob) for i in found.keys] == [(key, None)]


def test_an_encrypted_key_is_skipped_and_named(tmp_path):
    key = keygen(tmp_path / "locked", passphrase="secret")
    found = ssh_auth.identities(host(identity_files=(key, str(tmp_path / "missing"))), None)
    assert found.keys == []
    assert found.skipped == [f"{key} (encrypted, and not in the ssh-agent: add it there)"]


def test_agent_keys_matching_an_identity_file_come_first(tmp_path, ssh_agent):
    sock, env = ssh_agent
    loose = keygen(tmp_path / "loose")
    named = keygen(tmp_path / "named")
    for key in (loose, named):
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
    connection = ssh_auth.SocketAgent(str(sock))
    try:
        found = ssh_auth.identities(host(identity_files=(named,)), connection)
        assert [i.key.comment for i in found.keys] == ["named", "loose"]
        assert [i.label for i in found.keys] == [
            "agent key ssh-ed25519 named",
            "agent key ssh-ed25519 loose",
        ]
        only = ssh_auth.identities(host(identity_files=(named,), identities_only=True), connection)
        assert [i.key.comment for i in only.keys] == ["named"]
    finally:
        connection.close()


def test_identity_agent_none_turns_the_agent_off(ssh_agent, monkeypatch):
    sock, _ = ssh_agent
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    agent = ssh_auth.open_agent(host())
    assert agent is not None
    agent.close()
    assert ssh_auth.open_agent(host(identity_agent="none")) is None


def fido_key(path):
    """An id_ed25519_sk file as ssh-keygen writes it for a FIDO token (none needed here)."""
    public = paramiko.Message()
    public.add_string("sk-ssh-ed25519@openssh.com")
    public.add_string(bytes(32))
    public.add_string("ssh:")
    private = paramiko.Message()
    private.add_int(7)
    private.add_int(7)
    private.add_string("sk-ssh-ed25519@openssh.com")
    private.add_string(bytes(32))
    private.add_string("ssh:")
    private.add_byte(b"\x01")
    private.add_string(b"handle")
    private.add_string(b"")
    private.add_string(path.name)
    body = private.asbytes()
    body += bytes(range(1, 1 + (-len(body)) % 8))
    data = paramiko.Message()
    data.add_bytes(b"openssh-key-v1\x00")
    for text in ("none", "none", ""):
        data.add_string(text)
    data.add_int(1)
    data.add_string(public.asbytes())
    data.add_string(body)
    encoded = base64.encodebytes(data.asbytes()).decode()
    path.write_text(
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{encoded}-----END OPENSSH PRIVATE KEY-----\n"
    )
    return str(path)


def test_a_key_paramiko_cannot_load_is_skipped_and_the_next_one_offered(tmp_path):
    fido = fido_key(tmp_path / "id_ed25519_sk")
    good = keygen(tmp_path / "id_ed25519")
    found = ssh_auth.identities(host(identity_files=(fido, good)), None)
    assert [i.label for i in found.keys] == [good]
    [skipped] = found.skipped
    assert skipped.startswith(f"{fido} (paramiko cannot use it: UnsupportedAlgorithm")


def test_an_encrypted_key_without_pub_is_matched_to_the_agent_by_its_header(tmp_path, ssh_agent):
    sock, env = ssh_agent
    key = keygen(tmp_path / "locked")
    subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret", "-P", "", "-f", key], check=True)
    os.remove(f"{key}.pub")
    other = keygen(tmp_path / "other")
    subprocess.run(["ssh-add", "-q", other], env=env, check=True, capture_output=True)
    connection = ssh_auth.SocketAgent(str(sock))
    try:
        only = host(identity_files=(key,), identities_only=True)
        found = ssh_auth.identities(only, connection)
        assert [i.label for i in found.keys] == ["agent key ssh-ed25519 locked"]
        missing = host(identity_files=(str(tmp_path / "absent"),), identities_only=True)
        none = ssh_auth.identities(missing, connection)
        assert none.keys == []
        assert none.why_none == (
            f"no identity file exists of {tmp_path / 'absent'}; the ssh-agent's 2 key(s) "
            "match no IdentityFile, and IdentitiesOnly is yes"
        )
    finally:
        connection.close()


def test_with_nothing_at_all_the_reason_names_what_was_looked_at(tmp_path):
    found = ssh_auth.identities(host(identity_files=(str(tmp_path / "id"),)), None)
    assert found.why_none == (
        f"no identity file exists of {tmp_path / 'id'}; no ssh-agent is reachable "
        "(SSH_AUTH_SOCK or IdentityAgent)"
    )


@pytest.mark.parametrize("attempt", range(30))
def test_the_agent_answers_as_soon_as_the_fixture_yields(ssh_agent, attempt):
    # The agent's socket appears a moment before it accepts: a few in a hundred connects
    # were refused when the fixture waited for the socket alone.
    sock, _ = ssh_agent
    connection = ssh_auth.SocketAgent(str(sock))
    try:
        assert connection.get_keys() == ()
    finally:
        connection.close()
