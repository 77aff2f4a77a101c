"""known_hosts read as OpenSSH reads it, on files written by the real ssh-keygen."""

import base64
import subprocess

import pytest

from codeswarm.backends import known_hosts
from codeswarm.errors import BackendError


def keygen(path, *args):
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-f", str(path), *args], check=True)
    key_type, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return key_type, blob


@pytest.fixture
def host_key(tmp_path):
    return keygen(tmp_path / "host.key", "-t", "ed25519")


def verify(lines, name, key, tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{line}\n" for line in lines))
    known = known_hosts.load((str(tmp_path / "missing"), str(path)))
    known_hosts.verify(known, name, key[0], base64.b64decode(key[1]))


def test_lookup_names_follow_ssh():
    assert known_hosts.lookup_name("login", 22) == "login"
    assert known_hosts.lookup_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"
    assert known_hosts.lookup_name("127.0.0.1", 2222, "hpc-login") == "hpc-login"


@pytest.mark.parametrize(
    ("patterns", "name", "found"),
    [
        ("login1,login2", "login2", True),
        ("login*.hpc,!login9.hpc", "login3.hpc", True),
        ("login*.hpc,!login9.hpc", "login9.hpc", False),
        ("[127.0.0.1]:2222", "[127.0.0.1]:2222", True),
        ("[127.0.0.1]:2222", "127.0.0.1", False),
        ("log?n", "LOGIN", True),
    ],
)
def test_host_patterns(patterns, name, found):
    assert known_hosts.matches(patterns, name) is found


def test_a_hashed_entry_written_by_ssh_keygen_matches_its_name_only(tmp_path, host_key):
    path = tmp_path / "known_hosts"
    path.write_text(f"[10.0.0.5]:2200 {host_key[0]} {host_key[1]}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True)
    assert path.read_text().startswith("|1|")
    known = known_hosts.load((str(path),))
    blob = base64.b64decode(host_key[1])
    known_hosts.verify(known, "[10.0.0.5]:2200", host_key[0], blob)
    with pytest.raises(BackendError, match="not in known_hosts"):
        known_hosts.verify(known, "10.0.0.5", host_key[0], blob)


def test_an_unknown_host_key_is_refused_with_its_fingerprint(tmp_path, host_key):
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "host.key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    other = keygen(tmp_path / "other.key", "-t", "ed25519")
    with pytest.raises(BackendError) as refused:
        verify([f"other {other[0]} {other[1]}"], "login", host_key, tmp_path)
    assert fingerprint in str(refused.value)
    assert "never accepts an unknown host key" in str(refused.value)


def test_a_changed_host_key_is_refused_as_changed(tmp_path, host_key):
    other = keygen(tmp_path / "other.key", "-t", "ed25519")
    changed = r"does not match the one known for login.*ssh-keygen -R"
    with pytest.raises(BackendError, match=changed):
        verify([f"login {other[0]} {other[1]}"], "login", host_key, tmp_path)


def test_a_host_trusted_only_through_a_cert_authority_says_how_to_add_a_plain_entry(
    tmp_path, host_key
):
    ca = keygen(tmp_path / "ca.key", "-t", "ed25519")
    with pytest.raises(BackendError, match=r"only through a @cert-authority line.*ssh-keyscan"):
        verify([f"@cert-authority *.hpc {ca[0]} {ca[1]}"], "login1.hpc", host_key, tmp_path)


def test_a_revoked_key_is_refused_even_when_also_listed(tmp_path, host_key):
    line = f"{host_key[0]} {host_key[1]}"
    with pytest.raises(BackendError, match="@revoked"):
        verify([f"login {line}", f"@revoked * {line}"], "login", host_key, tmp_path)


def test_known_key_types_are_asked_for_first(tmp_path, host_key):
    rsa = keygen(tmp_path / "rsa.key", "-t", "rsa", "-b", "2048")
    path = tmp_path / "known_hosts"
    path.write_text(
        f"login {rsa[0]} {rsa[1]}\nother {host_key[0]} {host_key[1]}\n# a comment\n\nbroken\n"
    )
    known = known_hosts.load((str(path),))
    assert known_hosts.key_types(known, "login") == ["rsa-sha2-512", "rsa-sha2-256"]
    assert known_hosts.key_types(known, "other") == ["ssh-ed25519"]
