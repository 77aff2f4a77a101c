"""Open the chain of SSH transports to the login node: each jump host, then the login node.

Each hop is reached over the previous hop's ``direct-tcpip`` channel (ProxyJump), through a
ProxyCommand, or over TCP; its host key is checked against known_hosts, then it logs in with
the keys ssh would offer. A failure names the hop, the address tried and the keys offered.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import paramiko

from codeswarm.backends import known_hosts, ssh_auth
from codeswarm.backends.ssh_config import HostOptions
from codeswarm.backends.ssh_proxy import ProxyProcess
from codeswarm.errors import BackendError
from codeswarm.protocol import errors

log = logging.getLogger(__name__)


class HopChain:
    """The open transports, first hop first; ``login`` is the last (the login node)."""

    def __init__(self) -> None:
        self.transports: list[paramiko.Transport] = []
        self.proxies: list[ProxyProcess] = []

    @property
    def login(self) -> paramiko.Transport:
        return self.transports[-1]

    def close(self) -> None:
        # The login node first: closing a jump host's transport first would cut the others.
        for transport in reversed(self.transports):
            transport.close()
        for proxy in self.proxies:
            proxy.close()
        self.transports, self.proxies = [], []


def open_chain(alias: str, hops: list[HostOptions], timeout: float, keepalive: float) -> HopChain:
    """Connect through every hop; on failure close what was opened and say which hop failed."""
    chain = HopChain()
    for number, hop in enumerate(hops, 1):
        where = _where(hop, number, len(hops))
        try:
            sock = _socket(chain, hop, hop.connect_timeout or timeout)
            chain.transports.append(_login(sock, hop, hop.connect_timeout or timeout, keepalive))
        except Exception as exc:  # whatever it is, the hops opened so far must be closed
            detail = chain.proxies[-1].failure() if hop.proxy_command and chain.proxies else ""
            chain.close()
            reason = exc.args[0] if isinstance(exc, BackendError) and exc.args else describe(exc)
            raise BackendError(
                f"cannot connect to {alias}: {where}: {reason}{detail}. The ssh options came "
                f"from {hop.source}; compare with `ssh -v {alias} true`, which must work "
                "without a password or prompt (BatchMode)",
                code=errors.SSH,
            ) from exc
        log.debug("connected to %s", where)
    return chain


def _where(hop: HostOptions, number: int, total: int) -> str:
    how = f" through ProxyCommand `{hop.proxy_command}`" if hop.proxy_command else ""
    if total == 1:
        return f"{hop.alias} ({hop.address}{how})"
    role = "the login node" if number == total else "jump host"
    return f"hop {number} of {total}, {role} {hop.alias} ({hop.address}{how})"


def _socket(chain: HopChain, hop: HostOptions, timeout: float) -> Any:
    """How to reach ``hop``: the previous hop's channel, its ProxyCommand, or plain TCP."""
    if chain.transports:
        return chain.login.open_channel(
            "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout
        )
    if hop.proxy_command:
        proxy = ProxyProcess(hop.proxy_command)
        chain.proxies.append(proxy)
        return proxy
    sock = socket.create_connection((hop.hostname, hop.port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _login(sock: Any, hop: HostOptions, timeout: float, keepalive: float) -> paramiko.Transport:
    """A started, host-key-checked, authenticated transport over ``sock``."""
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
    try:
        known = known_hosts.load(hop.known_hosts)
        name = known_hosts.lookup_name(hop.hostname, hop.port, hop.host_key_alias)
        options = transport.get_security_options()
        wanted = [t for t in known_hosts.key_types(known, name) if t in options.key_types]
        options.key_types = wanted + [t for t in options.key_types if t not in wanted]
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        known_hosts.verify(known, name, key.get_name(), key.asbytes())
        agent = ssh_auth.open_agent(hop)
        try:
            ssh_auth.authenticate(transport, hop.user, ssh_auth.identities(hop, agent))
        finally:
            if agent is not None:
                agent.close()
    except BaseException:
        # A refused host key or login leaves paramiko's thread and the socket open; retries
        # would pile up half-open sessions until sshd's MaxStartups drops logins.
        transport.close()
        sock.close()
        raise
    if keepalive:
        transport.set_keepalive(int(keepalive))
    return transport


def describe(exc: BaseException) -> str:
    """An exception as a reason a person can act on (timeouts have empty messages)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, paramiko.ChannelException):
        return f"the jump host could not open a connection onward ({exc.text})"
    return str(exc) or type(exc).__name__
