"""The relayer's ledger (SQLite), read only: when each message reached each status, where the
relayer's scan of an origin is, the next nonce of an origin."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Rows of ``sql`` on the ledger at ``path``, opened read-only; none if it cannot be read."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return []
    try:
        return connection.execute(sql, list(params)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        connection.close()


def stages(path: Path, ids: set[str]) -> dict[str, dict[str, float]]:
    """id → {status: first time the relayer's ledger recorded it} (wall clock, seconds)."""
    rows = query(path, "SELECT message_id, to_status, at FROM status_events ORDER BY id")
    if not rows:
        print("  (ledger unreadable or empty, no stage breakdown)")
    out: dict[str, dict[str, float]] = {}
    for message_id, status, at in rows:
        if message_id in ids and status is not None:
            out.setdefault(message_id, {}).setdefault(str(status).lower(), float(at))
    return out


def next_nonce(path: Path, domain: int) -> int:
    """The next canonical nonce of origin ``domain``, from the relayer's ledger."""
    rows = query(path, "SELECT MAX(nonce) FROM messages WHERE origin = ?", [domain])
    return 0 if not rows or rows[0][0] is None else int(rows[0][0]) + 1


def scan_cursor(path: Path, domain: int) -> int | None:
    """The next block the relayer will scan on origin ``domain``, None if not recorded yet."""
    rows = query(path, "SELECT next_block FROM scan_cursors WHERE domain = ?", [domain])
    return int(rows[0][0]) if rows else None
