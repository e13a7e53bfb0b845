"""The devnet's state directory on disk: the ``devnet.json`` record, its lock, atomic writes, and
moving an old run's ledger aside.

``devnet.json`` is the record of every process ``up`` started (pid, port, binary, log, start
time; :mod:`devnet.manager` writes the entries), rewritten after each start so a crash halfway
leaves a record ``down`` can act on. Readers never see half a file: every write goes through
:func:`write_atomic`. ``up`` and ``down`` hold :func:`locked` so two of them never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devnet.errors import DevnetError

__all__ = [
    "ARCHIVE_DIR",
    "BEACON_STORE_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LEDGER_FILE",
    "LOCK_FILE",
    "POSTGRES_DIR",
    "STATE_FILE",
    "STATE_VERSION",
    "archive_previous_run",
    "locked",
    "new_state",
    "postgres_entry",
    "processes",
    "read_state",
    "write_atomic",
    "write_state",
]

CONFIG_FILE = "passerelle.toml"
STATE_FILE = "devnet.json"
LOCK_FILE = ".devnet.lock"
LEDGER_FILE = "ledger.db"
CHECKPOINT_DIR = "checkpoints"
BEACON_STORE_DIR = "beacon"  # the attesters' light-client store of the PoS chain (up --pos)
POSTGRES_DIR = "postgres"  # `up --postgres`: the server's data directory and log
ARCHIVE_DIR = "previous"
STATE_VERSION = 1


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialize up/down on one state directory, so two `up`s never start two devnets."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_state(state_dir: Path) -> dict[str, Any]:
    """The record of a devnet being started: no process yet, not complete."""
    return {
        "version": STATE_VERSION,
        "complete": False,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": str(state_dir / CONFIG_FILE),
        "processes": [],
    }


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The record in ``state_dir``, None when there is none; :class:`DevnetError` when it is
    unreadable or not a record (a person should look before anything is signalled)."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DevnetError(f"{path} is unreadable ({error}); remove it after checking") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise DevnetError(f"{path} is not a devnet record; remove it after checking")
    return data


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace ``state_dir/devnet.json`` with ``state``."""
    write_atomic(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")


def processes(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The chains' process entries of a record (anything that is not an object is skipped)."""
    return [p for p in state["processes"] if isinstance(p, dict)]


def postgres_entry(state: dict[str, Any]) -> dict[str, Any] | None:
    """The record's PostgreSQL server (``up --postgres``), None without one. Kept apart from
    the chains' :func:`processes`: it is no chain (``status`` lists chains, and every chain
    entry has a kind that answers chain RPC), and it stops differently."""
    entry = state.get("postgres")
    return entry if isinstance(entry, dict) else None


def archive_previous_run(state_dir: Path) -> Path | None:
    """Move an old ledger, checkpoint store, beacon light-client store and PostgreSQL data
    directory into ``previous/<UTC time>/``; return that folder, or None when there was
    nothing to move. ``up`` calls it before it starts anything, when the old run's processes
    are stopped: a new server's data directory must be empty.

    A fresh ``up`` starts new chains, on which an old ledger's cursors and delivered ids mean
    nothing (the fresh chains even reuse the same contract addresses), and chopsticks' block
    hashes are new on every start: a relayer resuming from the old ledger would ask chopsticks
    for a block hash it never had, which breaks that chopsticks for good
    (``docs/substrate-devnet.md``). The PoS chain's beacon genesis is new on every start too:
    a light-client store of the old chain would follow a committee that no longer exists.
    Moving the old files aside is what prevents it. (A PostgreSQL ledger, ``up --postgres``,
    lives in ``postgres/``, the server's data directory, and is moved aside the same way.)
    """
    stale = [
        path
        for path in (
            state_dir / LEDGER_FILE,
            state_dir / f"{LEDGER_FILE}-wal",
            state_dir / f"{LEDGER_FILE}-shm",
            state_dir / CHECKPOINT_DIR,
            state_dir / BEACON_STORE_DIR,
            state_dir / POSTGRES_DIR,
        )
        if path.exists()
    ]
    if not stale:
        return None
    target = state_dir / ARCHIVE_DIR / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target.mkdir(parents=True)
    for path in stale:
        shutil.move(str(path), str(target / path.name))
    return target
