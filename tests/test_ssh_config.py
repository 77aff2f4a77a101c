"""Resolving an ssh_config alias as OpenSSH does, with no server: real ``ssh -G``, parsers."""

import getpass
import os
from pathlib import Path

import pytest

from codeswarm.backends.ssh_config import (
    Jump,
    expand_tokens,
    parse_jumps,
    parse_ssh_g,
    resolve_chain,
    resolve_host,
    resolved_options,
)
from codeswarm.config import parse_config
from codeswarm.errors import BackendError


def settings(ssh_config: Path, **extra):
    data = {"login_alias": "hpc", "ssh_config": str(ssh_config), **extra}
    return parse_config({"ssh": data, "cluster": {"workspace_root": "/w"}}).ssh


@pytest.fixture
def without_ssh(monkeypatch, tmp_path):
    """No ``ssh`` on PATH: the paramiko fallback is what resolves."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("bastion", (Jump("bastion"),)),
        ("admin@jump.example.org:2200", (Jump("jump.example.org", "admin", 2200),)),
        ("a,me@b:23", (Jump("a"), Jump("b", "me", 23))),
        ("ssh://me@b:23", (Jump("b", "me", 23),)),
        ("[::1]:2200", (Jump("::1", None, 2200),)),
        ("none", ()),
    ],
)
def test_proxy_jump_forms(value, hops):
    assert parse_jumps(value) == hops


def test_an_unreadable_hop_is_named():
    with pytest.raises(BackendError, match="cannot read the hop 'b:port'"):
        parse_jumps("a,b:port")


def test_ssh_g_output_keeps_every_value_of_repeated_options():
    text = "user bob\nIdentityFile ~/.ssh/a\nidentityfile ~/.ssh/b\nproxyjump a,b\n"
    assert parse_ssh_g(text) == {
        "user": ["bob"],
        "identityfile": ["~/.ssh/a", "~/.ssh/b"],
        "proxyjump": ["a,b"],
    }


def test_tokens_expand_and_an_unknown_one_is_an_error():
    assert expand_tokens("%r@%h:%p %%", {"r": "me", "h": "x", "p": "22"}) == "me@x:22 %"
    with pytest.raises(BackendError, match="unknown token %Q"):
        expand_tokens("%Q", {})


def test_include_glob_match_block_and_tokens_resolve_as_ssh_resolves_them(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "10-hpc.conf").write_text(
        "Host login*.hpc\n  HostName 10.1.2.3\n  User klowery\n"
        "  IdentityFile ~/.ssh/id_%r_%h\n  CertificateFile /certs/%r-cert.pub\n"
        "  UserKnownHostsFile /kh/%h\n"
    )
    (conf_d / "20-match.conf").write_text("Match host 10.1.2.3\n  Port 2200\n")
    config = tmp_path / "config"
    config.write_text(f"Include {conf_d}/*.conf\n")
    hop = resolve_host("login1.hpc", settings(config))
    assert hop.source == "ssh -G"
    assert (hop.hostname, hop.port, hop.user) == ("10.1.2.3", 2200, "klowery")
    assert hop.identity_files == (str(Path.home() / ".ssh/id_klowery_10.1.2.3"),)
    assert hop.certificate_files == ("/certs/klowery-cert.pub",)
    assert hop.known_hosts[0] == "/kh/10.1.2.3"


def test_a_two_hop_chain_resolves_each_hop_and_only_the_first_keeps_its_own_proxy(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host hpc\n  HostName login.internal\n  ProxyJump bastion,me@hop2:2022\n"
        "Host bastion\n  HostName bastion.example.org\n  ProxyCommand nc -X 5 -x socks %h %p\n"
        "Host hop2\n  HostName hop2.internal\n  ProxyJump elsewhere\n"
    )
    chain = resolve_chain(
        "hpc", settings(config, identity_file="~/own_key", known_hosts="/site/known_hosts")
    )
    assert [h.address for h in chain] == [
        f"{getpass.getuser()}@bastion.example.org:22",
        "me@hop2.internal:2022",
        f"{getpass.getuser()}@login.internal:22",
    ]
    assert chain[0].proxy_command == "nc -X 5 -x socks bastion.example.org 22"
    assert (chain[1].proxy_jump, chain[1].proxy_command) == ((), None)
    assert chain[2].identity_files[0] == os.path.expanduser("~/own_key")
    assert chain[0].identity_files[0] != os.path.expanduser("~/own_key")
    assert all(h.known_hosts[-1] == "/site/known_hosts" for h in chain)
    # Left at its default, ssh.known_hosts adds nothing to what ssh itself reads.
    default = resolve_chain("hpc", settings(config))[-1].known_hosts
    assert default == (
        *(os.path.expanduser(p) for p in ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")),
        "/etc/ssh/ssh_known_hosts",
        "/etc/ssh/ssh_known_hosts2",
    )
    assert [h["alias"] for h in resolved_options("hpc", settings(config))["hops"]] == [
        "bastion",
        "hop2",
        "hpc",
    ]


def test_a_jump_host_reached_through_its_own_jump_host(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host hpc\n  ProxyJump gate\nHost gate\n  ProxyJump outer\n")
    assert [h.alias for h in resolve_chain("hpc", settings(config))] == ["outer", "gate", "hpc"]


def test_a_proxy_jump_loop_is_refused(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host hpc\n  ProxyJump gate\nHost gate\n  ProxyJump hpc\n")
    with pytest.raises(BackendError, match="loops back to 'hpc'"):
        resolve_chain("hpc", settings(config))


def test_a_bad_ssh_config_is_quoted_from_ssh(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host hpc\n  NoSuchOption yes\n")
    with pytest.raises(BackendError, match="line 2: Bad configuration option: nosuchoption"):
        resolve_host("hpc", settings(config))


def test_a_missing_ssh_config_file_names_the_setting(tmp_path):
    with pytest.raises(BackendError, match=r"ssh\.ssh_config .* does not exist"):
        resolve_host("hpc", settings(tmp_path / "nope"))


def test_without_ssh_paramiko_resolves_the_same_options(tmp_path, without_ssh):
    config = tmp_path / "config"
    config.write_text(
        "Host hpc\n  HostName Login.Cluster.EDU\n  User klowery\n  Port 2200\n"
        "  IdentityFile ~/.ssh/id_%r\n  ProxyJump bastion\n  HostKeyAlias hpc-login\n"
        "  UserKnownHostsFile /etc/hpc_known_hosts\n  ConnectTimeout 9\n"
    )
    hop = resolve_host("hpc", settings(config))
    assert hop.source == "paramiko"
    assert hop.address == "klowery@login.cluster.edu:2200"
    assert hop.identity_files == (str(Path.home() / ".ssh/id_klowery"),)
    assert (hop.proxy_jump, hop.host_key_alias, hop.connect_timeout) == (
        ("bastion",),
        "hpc-login",
        9.0,
    )
    assert hop.known_hosts[0] == "/etc/hpc_known_hosts"


def test_without_ssh_an_include_is_refused_by_name(tmp_path, without_ssh):
    config = tmp_path / "config"
    config.write_text("Include conf.d/*.conf\n")
    with pytest.raises(BackendError, match=r"uses Include.*install the OpenSSH client"):
        resolve_host("login1.hpc", settings(config))


def test_a_literal_percent_is_expanded_once(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host hpc\n  IdentityFile /keys/k%%\n  UserKnownHostsFile /kh/%%%h\n"
        "  ProxyCommand nc %h %p # 100%%\n  IdentityAgent /tmp/agent%%d.sock\n"
    )
    hop = resolve_host("hpc", settings(config))
    assert hop.identity_agent == "/tmp/agent%d.sock"
    assert hop.identity_files == ("/keys/k%",)
    assert hop.known_hosts[0] == "/kh/%hpc"
    assert hop.proxy_command == "nc hpc 22 # 100%"


def test_identity_agent_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_AGENT", "/run/agent.sock")
    config = tmp_path / "config"
    config.write_text(
        "Host off\n  IdentityAgent none\nHost env\n  IdentityAgent $MY_AGENT\n"
        "Host path\n  IdentityAgent ~/%r.sock\n  User me\nHost default\n"
    )
    agents = {a: resolve_host(a, settings(config)).identity_agent for a in ("off", "env", "path")}
    assert agents == {"off": "none", "env": "/run/agent.sock", "path": str(Path.home() / "me.sock")}
    assert resolve_host("default", settings(config)).identity_agent is None


def test_a_known_hosts_path_with_a_space_is_read_whole(tmp_path):
    spaced = tmp_path / "My Files" / "known hosts"
    spaced.parent.mkdir()
    spaced.write_text("")
    config = tmp_path / "config"
    config.write_text(f'Host hpc\n  UserKnownHostsFile "{spaced}" /kh/other\n')
    assert resolve_host("hpc", settings(config)).known_hosts[:2] == (str(spaced), "/kh/other")
    config.write_text(f'Host hpc\n  UserKnownHostsFile "{tmp_path}/no such/file"\n')
    with pytest.raises(BackendError, match=r"'such/file' is not a path; a file name with a space"):
        resolve_host("hpc", settings(config))
