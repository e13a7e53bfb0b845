"""The lifecycle every devnet node process shares: own process group, stop by PID, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
from types import TracebackType
from typing import Self

STOP_TIMEOUT = 5.0


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
