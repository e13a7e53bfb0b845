"""Delivery proposals: the entries through which the relayer asks the committee's multisig to
deliver a batch (the checkpoint, the messages and their branches).

The store lives beside the checkpoint store, in the same place (:func:`open_proposal_store`): a
directory (``<checkpoint store>/proposals/``) or, when ``[committee] checkpoint_store`` is a
PostgreSQL URL, a table in that database, so that attesters on other machines see the
relayer's proposals. Anyone may write either: a proposal is only a request. Each attester
verifies every message of it against a root that it and a quorum signed before approving, and
the relayer counts only the entries it wrote itself (:meth:`ProposalStore.ours`).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from light_clients.merkle import TREE_DEPTH
from light_clients.message import decode_message
from relayer.checkpoints import (
    CheckpointStoreError,
    PostgresTable,
    atomic_write,
    checkpoint_from_json,
    checkpoint_to_json,
    is_database_url,
    json_files,
    parse_hex,
    read_small_file,
)


@dataclass(frozen=True)
class Proposal:
    """A batch of messages for a Substrate destination, proven against one checkpoint."""

    destination: int
    checkpoint: Checkpoint
    messages: tuple[bytes, ...]
    branches: tuple[tuple[bytes, ...], ...]
    created: float = 0.0

    @property
    def name(self) -> str:
        """The file name: origin, first and last nonce, and the checkpoint index."""
        nonces = [decode_message(m).nonce for m in self.messages]
        cp = self.checkpoint
        return f"{cp.origin:010d}-{min(nonces):010d}-{max(nonces):010d}-{cp.index:010d}.json"

    def to_json(self) -> str:
        """The file contents."""
        cp = self.checkpoint
        return json.dumps(
            {
                "destination": self.destination,
                "checkpoint": checkpoint_to_json(cp),
                "messages": ["0x" + m.hex() for m in self.messages],
                "branches": [["0x" + h.hex() for h in b] for b in self.branches],
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Proposal:
        """Parse a file; ValueError/KeyError/TypeError on anything malformed (a bad checkpoint
        or message included: nothing in a proposal is trusted, but it must at least parse)."""
        obj = json.loads(text)
        cp = obj["checkpoint"]
        branches = tuple(tuple(parse_hex(h) for h in b) for b in obj["branches"])
        if any(len(b) != TREE_DEPTH or any(len(h) != 32 for h in b) for b in branches):
            raise ValueError("a branch is not 32 hashes of 32 bytes")
        messages = tuple(parse_hex(m) for m in obj["messages"])
        if not messages or len(messages) != len(branches):
            raise ValueError("messages and branches do not pair up")
        try:
            for message in messages:
                decode_message(message)
            checkpoint = checkpoint_from_json(cp)
        except VerificationError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            destination=int(obj["destination"]),
            checkpoint=checkpoint,
            messages=messages,
            branches=branches,
            created=float(obj.get("created", 0.0)),
        )


MAX_PROPOSAL_BYTES = 4 * 1024 * 1024
"""The largest proposal the relayer writes and anyone reads (4 MiB, about 30 messages of the
largest size or a thousand small ones): every reader fetches at most this much per entry,
whoever wrote it, so it bounds what a planted proposal costs each attester; the relayer's
batches are planned to stay under it (:func:`relayer.families.substrate.batching.plan_batches`)."""


MAX_NAME_BYTES = 128
"""A proposal's name is 48 characters (:attr:`Proposal.name`); a key longer than this is no
proposal's, and a PostgreSQL store does not even fetch it (anyone may insert a huge one)."""


@dataclass(frozen=True)
class ProposalKey:
    """Where a proposal is in a store: its destination and its name (:attr:`Proposal.name`).
    Opaque to the callers, who only hand it back: a file in a directory store, a row in a
    PostgreSQL one. Nothing about it is trusted: anyone may write any key."""

    destination: int
    name: str

    def __str__(self) -> str:
        return f"{self.destination}/{self.name}"


class ProposalStore(ABC):
    """Batches the relayer asks the committee to deliver, shared with the attesters: the rules.

    Two places implement it, chosen from the config by :func:`open_proposal_store` — a
    directory (:class:`DirectoryProposalStore`) and a PostgreSQL table
    (:class:`PostgresProposalStore`) — and both are only a key/value layout: each
    :class:`ProposalKey` holds the JSON text of one :class:`Proposal`. Every rule about what
    that text is worth lives here, once. Anyone may write the store, so nothing read is
    trusted: an entry that is too large, does not parse, or whose content is not the proposal
    its key names (another destination, another name: a copy of a genuine proposal made to be
    acted on twice) is skipped — never a crash, never a wait. Attesters then verify every
    message of what is left; the relayer counts only what this very object wrote
    (:meth:`ours`) and times everything else by its own clock (:meth:`first_seen`).
    """

    def __init__(self) -> None:
        # What this object wrote, and when it first listed each key: only for keys still in
        # the store (pending() forgets the rest), so memory is bounded by the store's contents.
        self._published: dict[ProposalKey, str] = {}
        self._first_seen: dict[ProposalKey, float] = {}
        # Each entry's last text and what it parsed to (None: not a proposal for its key), so
        # an unchanged entry is not parsed again: every attester reads every pending proposal
        # each poll (0.25 s), and parsing one of 500 messages (hex, a Checkpoint, each
        # message decoded for its name) cost about 10 ms — with eight pending, a third of a
        # core per attester, the largest CPU cost of a burst (issue #12). Keyed by the whole
        # text: an entry rewritten in any byte is parsed afresh.
        self._parsed: dict[ProposalKey, tuple[str, Proposal | None]] = {}

    # ---------------------------------------------------------------- the layout (per store)

    @abstractmethod
    def _write(self, key: ProposalKey, text: str) -> None:
        """Store ``text`` at ``key``, replacing what was there (readers never see half of it);
        CheckpointStoreError if it cannot be written."""

    @abstractmethod
    def _entries(self, destination: int) -> list[tuple[str, str | None]]:
        """Every ``(name, text)`` stored for ``destination``: ``text`` None when it cannot be
        a proposal (unreadable, not a regular file, over :data:`MAX_PROPOSAL_BYTES`), which is
        found out without reading it whole. CheckpointStoreError if the store cannot be read."""

    @abstractmethod
    def _delete(self, key: ProposalKey) -> None:
        """Remove ``key`` (no error if it is gone); CheckpointStoreError if it cannot be."""

    def close(self) -> None:  # noqa: B027 - a directory holds nothing open
        """Release what the store holds open (a connection pool)."""

    # ---------------------------------------------------------------- the API

    def publish(self, proposal: Proposal) -> ProposalKey:
        """Write ``proposal`` under its destination and name (replacing an earlier proposal of
        the same batch); returns its key."""
        key = ProposalKey(proposal.destination, proposal.name)
        text = proposal.to_json()
        self._write(key, text)
        self._published[key] = text
        return key

    def ours(self, key: ProposalKey, proposal: Proposal) -> bool:
        """Is ``proposal`` (read at ``key``) exactly what this object published there? Only
        such a proposal's ``created`` is ours, and only its timing out says the committee did
        not execute what we asked: an entry anyone else wrote (or rewrote; or ours from before
        a restart) must not count as a failed attempt of its messages.

        Compared as text: the text :meth:`pending` read at ``key``, when ``proposal`` is what
        it parsed from it, else ``proposal`` serialised again. Serialising was a quarter of the
        relayer's CPU in a burst (a 494-message proposal is about 1 MB of JSON, asked for each
        live proposal every round). Text, not content: an entry someone rewrote, even with
        the same content differently spaced, is no longer ours."""
        published = self._published.get(key)
        if published is None:
            return False
        cached = self._parsed.get(key)
        if cached is not None and cached[1] is proposal:
            return cached[0] == published
        return published == proposal.to_json()

    def first_seen(self, key: ProposalKey, now: float) -> float:
        """When this object first listed ``key`` (``now`` if never): a clock for entries that
        are not :meth:`ours`, whose ``created`` is anyone's to write."""
        return self._first_seen.setdefault(key, now)

    def pending(self, destination: int) -> list[tuple[ProposalKey, Proposal]]:
        """Every readable proposal for ``destination`` that is what its key names, oldest name
        first. CheckpointStoreError (one line) if the store cannot be read at all."""
        found = []
        listed = set()
        for name, text in self._entries(destination):
            key = ProposalKey(destination, name)
            listed.add(key)
            if text is None:
                continue  # not a regular file, or larger than any proposal we write
            cached = self._parsed.get(key)
            if cached is not None and cached[0] == text:
                proposal = cached[1]
            else:
                proposal = _parsed_for(key, text)
                self._parsed[key] = (text, proposal)
            if proposal is not None:
                found.append((key, proposal))
        # Entries someone else removed are forgotten (memory stays bounded by what is there).
        memories: tuple[dict[ProposalKey, Any], ...] = (
            self._published,
            self._first_seen,
            self._parsed,
        )
        for memory in memories:
            for gone in [k for k in memory if k.destination == destination and k not in listed]:
                del memory[gone]
        return sorted(found, key=lambda pair: pair[0].name)

    def remove(self, key: ProposalKey) -> None:
        """Forget a proposal (delivered, or superseded)."""
        self._delete(key)
        self._published.pop(key, None)
        self._first_seen.pop(key, None)
        self._parsed.pop(key, None)


def _parsed_for(key: ProposalKey, text: str) -> Proposal | None:
    """``text`` as the proposal ``key`` names; None if it is not one (it does not parse, or it
    is another destination's or another name's: a genuine proposal copied under another key
    would be acted on twice)."""
    try:
        proposal = Proposal.from_json(text)
        if (proposal.destination, proposal.name) != (key.destination, key.name):
            return None
    except Exception:  # anyone may write here: nothing read may stop us
        return None  # half-deleted or foreign: ignored, like unreadable checkpoints
    return proposal


class DirectoryProposalStore(ProposalStore):
    """``<checkpoint store>/proposals/<destination>/<proposal name>``: one file per proposal,
    written atomically (a temporary file renamed). Files are read with
    :func:`~relayer.checkpoints.read_small_file`: a FIFO planted here would block a plain read
    for ever, and a symlink to ``/dev/zero`` would fill the memory (relayer and attesters
    alike)."""

    def __init__(self, checkpoint_store: Path) -> None:
        super().__init__()
        self.root = checkpoint_store / "proposals"

    def path(self, key: ProposalKey) -> Path:
        """The file of ``key``."""
        return self.root / str(key.destination) / key.name

    def _write(self, key: ProposalKey, text: str) -> None:
        try:
            atomic_write(self.path(key), text)
        except OSError as exc:  # its folder cannot be made (a file planted in its place…)
            raise CheckpointStoreError(f"cannot write {self.path(key)}: {exc.strerror}") from None

    def _entries(self, destination: int) -> list[tuple[str, str | None]]:
        folder = self.root / str(destination)
        try:
            paths = json_files(folder)
        except OSError as exc:  # a folder we may not list: as good as a server that is down
            raise CheckpointStoreError(f"cannot list {folder}: {exc.strerror}") from None
        entries: list[tuple[str, str | None]] = []
        for path in paths:
            try:
                text = read_small_file(path, MAX_PROPOSAL_BYTES)
            except (OSError, UnicodeDecodeError):  # half-deleted, unreadable, not text
                text = None
            entries.append((path.name, text))
        return entries

    def _delete(self, key: ProposalKey) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointStoreError(f"cannot remove {self.path(key)}: {exc.strerror}") from None


class PostgresProposalStore(ProposalStore):
    """Proposals in a PostgreSQL table, so that attesters on other machines see the relayer's
    when ``[committee] checkpoint_store`` is a database URL: one row per proposal, keyed
    ``(destination, name)``, holding the same JSON text as a file would (``content``).

    The rows are as hostile as the files (anyone with the password writes them in plain SQL)
    and go through the same rules (:class:`ProposalStore`); content over
    :data:`MAX_PROPOSAL_BYTES` and names over :data:`MAX_NAME_BYTES` stay on the server. The
    connection, its timeouts and the table's creation on first use are the checkpoint
    store's (:class:`~relayer.checkpoints.PostgresTable`): a held lock or a server that does
    not answer is :class:`~relayer.checkpoints.CheckpointStoreBusy` or
    :class:`~relayer.checkpoints.CheckpointStoreError` with one line, never a wait without
    limit. Writing takes no advisory lock: a proposal is one row, replaced whole.
    """

    TABLE = "substrate_proposals"

    def __init__(self, location: str) -> None:
        super().__init__()
        self._table = PostgresTable(
            location,
            self.TABLE,
            "destination BIGINT NOT NULL, name TEXT NOT NULL, content TEXT NOT NULL, "
            "updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (destination, name)",
        )
        self.location = self._table.location

    def close(self) -> None:
        self._table.close()

    def _write(self, key: ProposalKey, text: str) -> None:
        with self._table.transaction() as connection:
            connection.execute(
                sa.text(
                    f"INSERT INTO {self.TABLE} (destination, name, content) "
                    "VALUES (:destination, :name, :content) ON CONFLICT (destination, name) "
                    "DO UPDATE SET content = EXCLUDED.content, updated_at = now()"
                ),
                {"destination": key.destination, "name": key.name, "content": text},
            )

    def _entries(self, destination: int) -> list[tuple[str, str | None]]:
        with self._table.transaction() as connection:
            rows = connection.execute(
                sa.text(
                    # Oversized content stays on the server: a reader never pulls megabytes.
                    "SELECT name, CASE WHEN octet_length(content) <= :limit THEN content END "
                    f"FROM {self.TABLE} WHERE destination = :destination "
                    "AND octet_length(name) <= :name_limit"
                ),
                {
                    "destination": destination,
                    "limit": MAX_PROPOSAL_BYTES,
                    "name_limit": MAX_NAME_BYTES,
                },
            )
            return [(name, text) for name, text in rows]

    def _delete(self, key: ProposalKey) -> None:
        with self._table.transaction() as connection:
            connection.execute(
                sa.text(
                    f"DELETE FROM {self.TABLE} WHERE destination = :destination AND name = :name"
                ),
                {"destination": key.destination, "name": key.name},
            )


def open_proposal_store(location: str | Path) -> ProposalStore:
    """The proposal store beside the checkpoint store at ``location`` (pass
    ``Config.checkpoint_location``): a PostgreSQL URL — the same database and rules as the
    signatures — or the directory ``<location>/proposals``. The one place that chooses."""
    if is_database_url(location):
        return PostgresProposalStore(str(location))
    return DirectoryProposalStore(Path(location))


def new_proposal(
    destination: int, checkpoint: Checkpoint, messages: Sequence[bytes], branches: Sequence[Any]
) -> Proposal:
    """A :class:`Proposal` stamped with the current time."""
    return Proposal(
        destination=destination,
        checkpoint=checkpoint,
        messages=tuple(messages),
        branches=tuple(tuple(b) for b in branches),
        created=time.time(),
    )
