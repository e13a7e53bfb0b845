"""The lifecycle every devnet node process shares: own process group, stop by PID, cleanup."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"  # every devnet node binds loopback only
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 20
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # colour codes some nodes write even to files


def port_is_free(port: int) -> bool:
    """True if ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now (the OS picks them;
    all are held open together while picking, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((HOST, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a node's log, colour codes removed, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = "\n".join(ANSI_CODES.sub("", text).splitlines()[-lines:]).strip()
    return tail or "(empty log)"


class NodeProcess:
    """A node started in its own process group (``start_new_session``): :meth:`stop` signals
    exactly what was started here, the group whose id is :attr:`pid`; a context manager."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid: int = process.pid

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self._process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL and wait; then
        :meth:`_cleanup`. Idempotent."""
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait(timeout=timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        """Remove what this object created for the process (subclasses decide what)."""

    def _signal(self, signum: signal.Signals) -> None:
        try:
            os.killpg(self.pid, signum)  # our own group: pgid == pid (start_new_session)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group gone and id reused: fall back
            self._process.send_signal(signum)

    def __enter__(self) -> Self:
        """Return self; the node is already up."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the node."""
        self.stop()
