"""Logging in through open_chain against real sshds: what a failure closes and says.

Run under `flock /tmp/slurm-tests.lock`: it starts sshds beside the test cluster's.
"""

import dataclasses
import shutil
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from codeswarm.backends.ssh_config import from_options
from codeswarm.backends.ssh_hops import open_chain
from codeswarm.errors import BackendError
from tests.support.sshd import Sshd, keygen

pytestmark = pytest.mark.integration


def hop(root_sshd, alias, **values):
    options = {
        "hostname": ["127.0.0.1"],
        "port": [str(root_sshd.sshd.port)],
        "user": ["root"],
        "identityfile": [str(root_sshd.key)],
        "identitiesonly": ["yes"],
        "identityagent": ["none"],
        "userknownhostsfile": [str(root_sshd.known)],
        "globalknownhostsfile": ["/dev/null"],
    }
    return dataclasses.replace(from_options(alias, options, "test"), **values)


def transports() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)]


def test_any_failure_past_the_first_hop_closes_the_chain_and_names_the_hop(root_sshd):
    before = transports()
    # A port no packet can carry: paramiko fails with a struct.error, not an ssh error.
    hops = [hop(root_sshd, "bastion"), hop(root_sshd, "login", port=2**32)]
    with pytest.raises(BackendError) as failed:
        open_chain("login", hops, 10, 0)
    assert "hop 2 of 2, the login node login (root@127.0.0.1:4294967296)" in str(failed.value)
    for thread in transports():
        if thread not in before:
            thread.join(10)
    assert [t for t in transports() if t not in before] == []


def test_a_stale_certificate_beside_the_key_does_not_hide_the_key(root_sshd, tmp_path):
    key = tmp_path / "id"
    shutil.copy(root_sshd.key, key)
    key.chmod(0o600)
    shutil.copy(f"{root_sshd.key}.pub", f"{key}.pub")
    ca = tmp_path / "ca"
    keygen(ca)
    expired = ["-V", "20000101:20000102"]
    sign = ["ssh-keygen", "-q", "-s", str(ca), "-I", "old", "-n", "root", *expired, f"{key}.pub"]
    subprocess.run(sign, check=True)
    chain = open_chain("login", [hop(root_sshd, "login", identity_files=(str(key),))], 10, 0)
    try:
        assert chain.login.is_authenticated()
    finally:
        chain.close()


@pytest.fixture
def strict_sshd(root_sshd, tmp_path):
    """start(*lines, extra=another public key) -> the login hop of a new sshd for root that
    takes root_sshd's key, with ``lines`` in a Match block."""
    started = []

    def start(*lines, extra=""):
        authorized = Path(f"{root_sshd.key}.pub").read_text() + extra + "\n"
        sshd = Sshd("strict", authorized, lines=("Match User root", *lines)).start()
        started.append(sshd)
        known = tmp_path / f"known_{sshd.port}"
        known.write_text(sshd.known_line() + "\n")
        return hop(root_sshd, "login", port=sshd.port, known_hosts=(str(known),))

    yield start
    for sshd in started:
        sshd.stop()


def test_a_key_accepted_with_more_required_says_so(root_sshd, strict_sshd):
    login = strict_sshd(
        "  KbdInteractiveAuthentication yes",
        "  AuthenticationMethods publickey,keyboard-interactive",
    )
    with pytest.raises(BackendError) as failed:
        open_chain("login", [login], 10, 0)
    assert (
        f"key {root_sshd.key} accepted for root; the server also requires keyboard-interactive, "
        "which codeswarm cannot answer"
    ) in str(failed.value)


def test_two_keys_required_are_both_offered(root_sshd, strict_sshd, tmp_path):
    second = tmp_path / "second"
    login = strict_sshd("  AuthenticationMethods publickey,publickey", extra=keygen(second))
    chain = open_chain(
        "login",
        [dataclasses.replace(login, identity_files=(str(root_sshd.key), str(second)))],
        10,
        0,
    )
    try:
        assert chain.login.is_authenticated()
    finally:
        chain.close()


def test_a_server_that_takes_no_key_lists_what_it_allows(strict_sshd):
    login = strict_sshd("  PubkeyAuthentication no", "  PasswordAuthentication yes")
    with pytest.raises(BackendError) as failed:
        open_chain("login", [login], 10, 0)
    assert "the server takes no public key for root: it allows only password" in str(failed.value)
