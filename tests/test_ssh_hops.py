"""Connecting the way `ssh <alias> true` does, against real sshds: the minicluster's login
node and jump hosts started beside it. Each shape is also checked with OpenSSH itself, so a
test config that OpenSSH would refuse cannot pass here by accident.

Run under `flock /tmp/slurm-tests.lock`: the minicluster's sshd is the login node.
"""

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from codeswarm.backends.ssh import SSHConnection
from codeswarm.config import parse_config
from codeswarm.errors import BackendError
from tests.support.sshd import Sshd, keygen

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def net(minicluster, tmp_path_factory):
    """The login node (127.0.0.1:2222), two jump hosts, and a known_hosts that has all three."""
    key = minicluster["MINICLUSTER_SSH_KEY"]
    public = Path(key + ".pub").read_text()
    bastion = Sshd("bastion", public).start()
    hop2 = Sshd("hop2", public).start()
    files = tmp_path_factory.mktemp("ssh")
    login_line = Path(minicluster["MINICLUSTER_KNOWN_HOSTS"]).read_text().strip()
    known = files / "known_hosts"
    known.write_text(f"{login_line}\n{bastion.known_line()}\n{hop2.known_line()}\n")
    yield SimpleNamespace(
        key=key, bastion=bastion, hop2=hop2, known=known, login_line=login_line, files=files
    )
    bastion.stop()
    hop2.stop()


HOSTS = """
Host bastion
  HostName 127.0.0.1
  Port {bastion}
Host hop2
  HostName 127.0.0.1
  Port {hop2}
Host login
  HostName 127.0.0.1
  Port 2222
Host *
  User swarm
  BatchMode yes
  StrictHostKeyChecking yes
  GlobalKnownHostsFile /dev/null
  UserKnownHostsFile {known}
  ConnectTimeout 5
"""


def write_config(net, tmp_path, body, key=True):
    """An ssh config: ``body`` first (so its values win, as in ssh), then the hosts."""
    text = body + HOSTS + (f"  IdentityFile {net.key}\n  IdentitiesOnly yes\n" if key else "")
    path = tmp_path / "ssh_config"
    values = {"bastion": net.bastion.port, "hop2": net.hop2.port, "known": net.known}
    path.write_text(text.format(config=path, tmp=tmp_path, **values))
    return path


def openssh(config, alias, env=None):
    """What OpenSSH itself makes of the same config: `ssh -F config alias true`."""
    done = subprocess.run(
        ["ssh", "-F", str(config), alias, "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode


def codeswarm_user(config, alias):
    """The login node's user for codeswarm's connection through ``config``."""
    data = {"login_alias": alias, "ssh_config": str(config), "known_hosts": "/dev/null"}
    settings = parse_config({"ssh": data, "cluster": {"workspace_root": "/w"}}).ssh
    connection = SSHConnection(settings)
    try:
        return connection.run(["id", "-un"]).decode().strip()
    finally:
        connection.close()


def test_one_hop_proxy_jump(net, tmp_path):
    config = write_config(net, tmp_path, "Host login\n  ProxyJump bastion\n")
    before = net.bastion.logins()
    assert openssh(config, "login") == 0
    assert codeswarm_user(config, "login") == "swarm"
    assert net.bastion.logins() == before + 2


def test_proxy_command_through_ssh_w(net, tmp_path):
    config = write_config(
        net, tmp_path, "Host login\n  ProxyCommand ssh -F {config} -W %h:%p bastion\n"
    )
    before = net.bastion.logins()
    assert openssh(config, "login") == 0
    assert codeswarm_user(config, "login") == "swarm"
    assert net.bastion.logins() == before + 2


def test_a_failing_proxy_command_is_quoted(net, tmp_path):
    config = write_config(
        net, tmp_path, "Host login\n  ProxyCommand ssh -F {config} -W %h:%p nosuchhost.invalid\n"
    )
    assert openssh(config, "login") != 0
    with pytest.raises(BackendError) as failed:
        codeswarm_user(config, "login")
    message = str(failed.value)
    assert "through ProxyCommand `ssh -F" in message
    assert (
        "the ProxyCommand exited 255: ssh: Could not resolve hostname nosuchhost.invalid" in message
    )


def test_two_hops_each_log_in(net, tmp_path):
    config = write_config(net, tmp_path, "Host login\n  ProxyJump bastion,hop2\n")
    before = (net.bastion.logins(), net.hop2.logins())
    assert openssh(config, "login") == 0
    assert codeswarm_user(config, "login") == "swarm"
    assert (net.bastion.logins(), net.hop2.logins()) == (before[0] + 2, before[1] + 2)


def test_a_failing_hop_is_named_with_its_address_and_ssh_v(net, tmp_path):
    config = write_config(net, tmp_path, "Host login\n  ProxyJump bastion,hop2\n")
    known = tmp_path / "known_hosts"
    known.write_text(f"{net.login_line}\n{net.bastion.known_line()}\n")
    config.write_text(config.read_text().replace(str(net.known), str(known)))
    assert openssh(config, "login") != 0
    with pytest.raises(BackendError) as failed:
        codeswarm_user(config, "login")
    message = str(failed.value)
    assert f"hop 2 of 3, jump host hop2 (swarm@127.0.0.1:{net.hop2.port})" in message
    assert f"not in known_hosts under '[127.0.0.1]:{net.hop2.port}'" in message
    assert "`ssh -v login true`" in message


def test_include_with_a_glob_of_host_patterns(net, tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "hpc.conf").write_text(
        f"Host login*.hpc\n  HostName 127.0.0.1\n  Port 2222\n  IdentityFile {net.key}\n"
    )
    config = write_config(net, tmp_path, "Include {tmp}/conf.d/*.conf\n", key=False)
    assert openssh(config, "login1.hpc") == 0
    assert codeswarm_user(config, "login1.hpc") == "swarm"


def test_match_host_block_and_user_host_tokens(net, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(net.key, keys / "swarm@127.0.0.1")
    body = (
        "Host tokens\n  HostName 127.0.0.1\n"
        "Match host 127.0.0.1 originalhost tokens\n  Port 2222\n"
        "  IdentityFile {tmp}/keys/%r@%h\n"
    )
    config = write_config(net, tmp_path, body, key=False)
    assert openssh(config, "tokens") == 0
    assert codeswarm_user(config, "tokens") == "swarm"


def test_a_key_only_in_the_agent(net, tmp_path, ssh_agent, monkeypatch):
    sock, env = ssh_agent
    subprocess.run(["ssh-add", "-q", net.key], env=env, check=True, capture_output=True)
    config = write_config(net, tmp_path, "Host login\n  ProxyJump bastion\n", key=False)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    assert openssh(config, "login", env) == 0
    assert codeswarm_user(config, "login") == "swarm"
    # The same agent named by IdentityAgent rather than $SSH_AUTH_SOCK.
    monkeypatch.delenv("SSH_AUTH_SOCK")
    config.write_text(f"Host *\n  IdentityAgent {sock}\n" + config.read_text())
    assert codeswarm_user(config, "login") == "swarm"


def test_hashed_known_hosts_and_host_key_alias(net, tmp_path):
    hashed = tmp_path / "hashed"
    shutil.copy(net.known, hashed)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True)
    assert "[127.0.0.1]" not in hashed.read_text()
    config = write_config(net, tmp_path, "Host login\n  ProxyJump bastion\n")
    config.write_text(config.read_text().replace(str(net.known), str(hashed)))
    assert openssh(config, "login") == 0
    assert codeswarm_user(config, "login") == "swarm"
    aliased = tmp_path / "aliased"
    aliased.write_text(f"cluster-login {net.login_line.split(' ', 1)[1]}\n")
    config = write_config(
        net, tmp_path, f"Host login\n  HostKeyAlias cluster-login\n  UserKnownHostsFile {aliased}\n"
    )
    assert openssh(config, "login") == 0
    assert codeswarm_user(config, "login") == "swarm"


def test_an_unknown_host_key_is_refused(net, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    config = write_config(net, tmp_path, f"Host login\n  UserKnownHostsFile {empty}\n")
    assert openssh(config, "login") != 0
    with pytest.raises(BackendError) as refused:
        codeswarm_user(config, "login")
    message = str(refused.value)
    assert "login (swarm@127.0.0.1:2222)" in message
    assert "is not in known_hosts under '[127.0.0.1]:2222'" in message
    assert "never accepts an unknown host key" in message
    assert empty.read_text() == ""


@pytest.fixture(scope="module")
def ca_login(net):
    """An sshd that trusts a user CA only, and presents a host certificate from a host CA."""
    ca = net.files / "user_ca"
    keygen(ca, "-C", "user-ca")
    host_ca = net.files / "host_ca"
    keygen(host_ca, "-C", "host-ca")
    sshd = Sshd("ca", lines=(f"TrustedUserCAKeys {ca}.pub",))
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(host_ca),
            "-I",
            "host",
            "-h",
            "-n",
            "127.0.0.1",
            str(sshd.host_key) + ".pub",
        ],
        check=True,
    )
    sshd.lines += (f"HostCertificate {sshd.host_key}-cert.pub",)
    sshd.start()
    user_key = net.files / "user_key"
    keygen(user_key, "-C", "user")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(ca),
            "-I",
            "tests",
            "-n",
            "swarm",
            "-V",
            "+1h",
            str(user_key) + ".pub",
        ],
        check=True,
    )
    yield SimpleNamespace(sshd=sshd, user_key=user_key, host_ca=Path(f"{host_ca}.pub"))
    sshd.stop()


def ca_config(net, tmp_path, ca_login, identity):
    body = (
        f"Host calogin\n  HostName 127.0.0.1\n  Port {ca_login.sshd.port}\n"
        f"  UserKnownHostsFile {tmp_path}/ca_known_hosts\n{identity}"
    )
    (tmp_path / "ca_known_hosts").write_text(ca_login.sshd.known_line() + "\n")
    return write_config(net, tmp_path, body, key=False)


def test_a_user_certificate_from_certificate_file(net, tmp_path, ca_login):
    certs = tmp_path / "certs"
    certs.mkdir()
    bare = tmp_path / "bare_key"
    shutil.copy(ca_login.user_key, bare)
    shutil.copy(f"{ca_login.user_key}-cert.pub", certs / "swarm.cert")
    identity = f"  IdentityFile {bare}\n  CertificateFile {{tmp}}/certs/%r.cert\n"
    config = ca_config(net, tmp_path, ca_login, identity)
    assert openssh(config, "calogin") == 0
    assert codeswarm_user(config, "calogin") == "swarm"


def test_without_its_certificate_the_key_is_refused_and_named(net, tmp_path, ca_login):
    bare = tmp_path / "bare_key"
    shutil.copy(ca_login.user_key, bare)
    config = ca_config(net, tmp_path, ca_login, f"  IdentityFile {bare}\n")
    assert openssh(config, "calogin") != 0
    with pytest.raises(BackendError) as refused:
        codeswarm_user(config, "calogin")
    assert f"public key login as swarm refused; offered: {bare}" in str(refused.value)


def test_a_user_certificate_held_by_the_agent(net, tmp_path, ca_login, ssh_agent, monkeypatch):
    sock, env = ssh_agent
    subprocess.run(
        ["ssh-add", "-q", str(ca_login.user_key)], env=env, check=True, capture_output=True
    )
    listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
    assert "CERT" in listed
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    config = ca_config(net, tmp_path, ca_login, "")
    assert openssh(config, "calogin", env) == 0
    assert codeswarm_user(config, "calogin") == "swarm"


def test_a_host_trusted_only_by_cert_authority_is_refused_with_the_fix(net, tmp_path, ca_login):
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(f"{ca_login.user_key}-cert.pub", certs / "swarm.cert")
    identity = f"  IdentityFile {ca_login.user_key}\n"
    config = ca_config(net, tmp_path, ca_login, identity)
    ca_key = " ".join(ca_login.host_ca.read_text().split()[:2])
    (tmp_path / "ca_known_hosts").write_text(f"@cert-authority * {ca_key}\n")
    assert openssh(config, "calogin") == 0
    with pytest.raises(BackendError) as refused:
        codeswarm_user(config, "calogin")
    message = str(refused.value)
    assert "only through a @cert-authority line" in message
    assert f"under the name '[127.0.0.1]:{ca_login.sshd.port}'" in message
