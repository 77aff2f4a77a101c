"""Extra sshd instances on loopback (jump hosts, a CA-trusting login), beside the minicluster's.

They run as root like the minicluster's sshd, log in the minicluster's user, and keep their
files in a world-readable directory, because sshd reads authorized_keys as the target user.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, *args: str) -> str:
    """A new ed25519 key at ``path``; its public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path), *args], check=True
    )
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sshd:
    """One sshd on 127.0.0.1:<port>; ``lines`` are added to its sshd_config."""

    def __init__(self, name: str, authorized: str = "", lines: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"codeswarm-sshd-{name}-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.name = name
        self.port = free_port()
        self.host_key = self.dir / "host_key"
        self.host_public = keygen(self.host_key, "-C", name)
        (self.dir / "authorized_keys").write_text(authorized)
        (self.dir / "authorized_keys").chmod(0o644)
        self.log = self.dir / "sshd.log"
        self.lines = lines
        self.process: subprocess.Popen | None = None

    def known_line(self, name: str | None = None) -> str:
        """A known_hosts line for this sshd, under ``name`` or ``[127.0.0.1]:port``."""
        key = " ".join(self.host_public.split()[:2])
        return f"{name or f'[127.0.0.1]:{self.port}'} {key}"

    def start(self) -> Sshd:
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir}/sshd.pid",
                    f"AuthorizedKeysFile {self.dir}/authorized_keys",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "LogLevel VERBOSE",
                    *self.lines,
                ]
            )
            + "\n"
        )
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return self
            except OSError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    log = self.log.read_text()
                    raise RuntimeError(f"sshd {self.name} did not start: {log}") from exc
                time.sleep(0.05)

    def logins(self) -> int:
        """How many logins this sshd accepted so far."""
        return self.log.read_text().count("Accepted publickey for ")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
