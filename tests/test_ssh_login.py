"""Logging in through open_chain against real sshds: what a failure closes and says.

Run under `flock /tmp/slurm-tests.lock`: it starts sshds beside the test cluster's.
"""

import dataclasses
import threading

import paramiko
import pytest

from codeswarm.backends.ssh_config import from_options
from codeswarm.backends.ssh_hops import open_chain
from codeswarm.errors import BackendError

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
