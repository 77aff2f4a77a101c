"""A ProxyCommand process whose stderr is always drained, and that leaves nothing behind.

paramiko's own ProxyCommand never reads the command's stderr: a chatty proxy (``ssh -v -W``,
cloudflared, SSM) fills the 64 KiB pipe, blocks, and the tunnel freezes while the transport
still looks active. Here a thread keeps reading stderr into a bounded tail (which also feeds
error messages, so no read ever blocks), the command runs in its own session so the whole
process group can be ended, and close() waits for it so no zombie is left.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time

import paramiko

TAIL_BYTES = 8192
EXIT_GRACE = 1.0
STOP_WAIT = 5.0


class ProxyProcess(paramiko.ProxyCommand):
    """``command`` run as ssh runs a ProxyCommand: under ``/bin/sh -c 'exec …'``."""

    def __init__(self, command: str) -> None:
        # paramiko's __init__ would start the process itself, with stderr left unread.
        self.command = command
        self.cmd = ["/bin/sh", "-c", f"exec {command}"]
        self.timeout: float | None = None
        self._tail = bytearray()
        self._tail_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed_already = False
        self._killed = False
        self.process = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self._drainer = threading.Thread(
            target=self._drain, name=f"proxy-stderr-{self.process.pid}", daemon=True
        )
        self._drainer.start()

    def _drain(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                with self._tail_lock:
                    self._tail += chunk
                    del self._tail[:-TAIL_BYTES]

    def stderr_tail(self) -> str:
        """The last few KiB the command wrote on stderr."""
        with self._tail_lock:
            return bytes(self._tail).decode("utf-8", "replace").strip()

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes of the command's stdout; b"" once it is closed (as a socket)."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if stdout.closed:
                return b""  # closed by close(): the transport reads that as the end
            try:
                ready, _, _ = select.select([stdout], [], [], wait)
                if ready:
                    return os.read(stdout.fileno(), size)
            except ValueError:
                return b""
            except OSError as exc:
                if stdout.closed:
                    return b""
                raise paramiko.ProxyCommandFailure(self.command, str(exc)) from exc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError()

    def failure(self) -> str:
        """Why the command failed, for an error message: how it ended and its stderr tail."""
        self.close()
        if self._killed:
            how = "the ProxyCommand did not exit on its own and was stopped"
        else:
            how = f"the ProxyCommand exited {self.process.returncode}"
        text = self.stderr_tail()
        return f" ({how}: {text[-300:]})" if text else f" ({how})"

    def _group_ended_after(self, sig: signal.Signals) -> bool:
        """Signal the command's process group and wait up to STOP_WAIT for all of it to end.

        The command itself is reaped here; a child it left behind is reaped by init, so the
        group is watched until no member (zombies included) remains.
        """
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return True
        deadline = time.monotonic() + STOP_WAIT
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_WAIT)
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """End the command and everything it started, and reap it (idempotent).

        A proxy that exits when its stdin closes (ssh -W, relays, wrapper scripts) is given a
        moment to, so its own exit status and last words reach the error message.
        """
        with self._close_lock:
            if self._closed_already:
                return
            self._closed_already = True
            for stream in (self.process.stdin, self.process.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            try:
                self.process.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                self._killed = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                # The group too: children the command started in the background.
                if self._group_ended_after(sig):
                    break
            # A process that left the group may still hold stderr open: the daemon thread
            # then ends when it does, and never holds up this close.
            self._drainer.join(1.0)
