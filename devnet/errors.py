"""The devnet's one error for its callers: :class:`DevnetError`, whose ``str()`` is one line."""

from __future__ import annotations

__all__ = ["DevnetError"]


class DevnetError(RuntimeError):
    """The devnet could not be started or inspected; ``str()`` is one line saying why.

    ``passerelle devnet …`` prints it as one line and exits 1. Lower-level failures (a tool
    missing, a busy port, a reverted deployment) arrive wrapped in it, cut to their first line.
    """
