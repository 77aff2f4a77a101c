"""ProxyCommands that talk on stderr, run wrapper scripts or start children, against a real sshd.

Run under `flock /tmp/slurm-tests.lock`: it starts an sshd beside the test cluster's.
"""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from codeswarm.backends.ssh import SSHConnection
from codeswarm.config import parse_config
from codeswarm.errors import BackendError

pytestmark = pytest.mark.integration

# A relay like `ssh -v -W`: one line of log on stderr for every chunk it passes on, and its
# pid and process group in a file. Optionally it leaves a child running in its group.
RELAY = """
import os, select, socket, subprocess, sys
host, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if len(sys.argv) > 4:
    subprocess.Popen(["sleep", "600"])
with open(record, "w") as out:
    out.write(f"{os.getpid()} {os.getpgid(0)}")
conn = socket.create_connection((host, port))
sys.stderr.write("relay: connected\\n")
sys.stderr.flush()
while True:
    ready, _, _ = select.select([0, conn], [], [])
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            break
        conn.sendall(data)
    if conn in ready:
        data = conn.recv(65536)
        if not data:
            break
        os.write(1, data)
    sys.stderr.write("relayed " + "x" * 1000 + "\\n")
    sys.stderr.flush()
"""


@pytest.fixture
def box(root_sshd, tmp_path):
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    return SimpleNamespace(**vars(root_sshd), relay=relay)


def connect(box, tmp_path, proxy, known=None):
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host t\n  HostName 127.0.0.1\n  Port {box.sshd.port}\n  User root\n"
        f"  IdentityFile {box.key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
        f"  UserKnownHostsFile {known or box.known}\n  GlobalKnownHostsFile /dev/null\n"
        f"  ProxyCommand {proxy}\n"
    )
    data = {"login_alias": "t", "ssh_config": str(config), "known_hosts": "/dev/null"}
    return SSHConnection(parse_config({"ssh": data, "cluster": {"workspace_root": "/w"}}).ssh)


def gone(record: Path) -> bool:
    """Whether the relay's process group has ended: no live member, and none left unreaped
    by us (a killed child of the relay is reaped by init, in its own time)."""
    group = int(record.read_text().split()[1])
    assert group != os.getpgid(0), "the ProxyCommand must run in a session of its own"
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, member_group = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:
            continue
        if int(member_group) == group and (state != "Z" or int(parent) == os.getpid()):
            return False
    return True


def test_a_proxy_that_logs_every_packet_keeps_the_tunnel_open(box, tmp_path):
    record = tmp_path / "relay.pid"
    connection = connect(box, tmp_path, f"{sys.executable} {box.relay} %h %p {record} child")
    try:
        # Far more than the 64 KiB a stderr pipe holds, were it never read.
        for _ in range(120):
            assert connection.run(["echo", "ok"], timeout=60) == b"ok\n"
    finally:
        connection.close()
    assert gone(record)


def test_a_failing_wrapper_script_is_reported_with_its_stderr(box, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    record = tmp_path / "relay.pid"
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(
        f'#!/bin/sh\n{sys.executable} {box.relay} "$1" "$2" {record}\necho wrapper done >&2\n'
    )
    wrapper.chmod(0o755)
    connection = connect(box, tmp_path, f"{wrapper} %h %p", known=empty)
    with pytest.raises(BackendError) as failed:
        connection.run(["true"], timeout=60)
    message = str(failed.value)
    assert "never accepts an unknown host key" in message
    assert "(the ProxyCommand exited 0: " in message
    assert "wrapper done)" in message
    connection.close()
    assert gone(record)
