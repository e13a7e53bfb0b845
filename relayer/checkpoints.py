"""Where attesters publish signed checkpoints and relayers collect them.

A directory tree shared by the processes (a local disk on a devnet; any shared or synced
filesystem in production — the same shape as Hyperlane's checkpoint syncers)::

    <store>/<origin>/<outbox>/<index, 10 digits>/<signer>.json    one signature
    <store>/<origin>/<outbox>/latest/<signer>.json                 that signer's newest one

Files are written to a temporary name and renamed, so a reader never sees half a file. Nothing
read from the store is trusted: the relayer verifies every signature against the configured
committee (``light_clients.committee.verify_attestation``) and the root against its own copy of
the outbox tree before using a checkpoint.

A genuine signature is still no proof that a file is where it belongs: anyone who can write the
store (the relayer can) may copy an attester's file from index N to N+1, or from one lane to
another. Such a file would look like the attester contradicting itself — halting the attester
when it signs N+1, and the relayer when it counts "dissent" from a threshold of members. So
every reader checks that a file's content matches its path (origin, outbox, index folder and
signer file name); one that does not is ignored, with a warning naming it, and a publisher
overwrites it.

The block an attester signed from (``block_number``, ``block_hash``) is not covered by the
checkpoint signature, so it carries a second signature of its own (``block_signature``, over
:func:`attested_block_digest`): an attester that resumes trusts only a block it provably wrote
itself when it checks, before signing again, that this block is still canonical.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from light_clients.committee import EIP191_PREFIX, Checkpoint, recover_signer
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from relayer.signer import Signer, sign_digest_checked

# SQLAlchemy (and the ledger's helpers, which bring SQLModel) are imported by the PostgreSQL
# store's own code, on first use, not here: every attester and relayer imports this module, and
# with a directory store an attester needs neither (~0.5 CPU s of imports at each start).
if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("passerelle.checkpoints")

MAX_FILE_BYTES = 1 << 16
"""A signature file is under 1 KiB; a larger one is none (and is not read to its end)."""

ATTESTED_BLOCK_TAG = b"PASSERELLE/v1/attested-block"
"""Domain tag of :func:`attested_block_digest`: never equal to a checkpoint's preimage."""


MAX_WARNED_SLOTS = 1024
"""Misplaced slots remembered (to warn once each): anyone may plant new ones every poll."""

PG_LOCK_TIMEOUT_MS = 5_000
"""How long a PostgreSQL store transaction waits for a lock (a publisher's per-signer lock,
the table-creation lock) before giving up with :class:`CheckpointStoreBusy`. The lock ids are
public hashes, and anyone who can CONNECT can hold an advisory lock: a wait without a limit
would let them stop an attester for ever, silently."""
PG_STATEMENT_TIMEOUT_MS = 15_000
"""How long one statement of the PostgreSQL store may run (a hung or overloaded server)."""


class CheckpointStoreError(Exception):
    """The store cannot be written, or an attester would contradict itself."""


class CheckpointStoreBusy(CheckpointStoreError):
    """A lock or the server did not answer within its timeout: nothing was written, and the
    same call may succeed later (an attester tries again at its next poll)."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """One attester's signature over a checkpoint, and the block whose state it attests."""

    checkpoint: Checkpoint
    signer: bytes
    signature: bytes
    block_number: int
    block_hash: bytes
    block_signature: bytes = b""
    """The signer's signature over :func:`attested_block_digest` (empty in files written
    before it existed: their block is then unproven)."""

    def to_json(self) -> str:
        """The file contents."""
        cp = self.checkpoint
        return json.dumps(
            {
                "checkpoint": checkpoint_to_json(cp),
                "signer": "0x" + self.signer.hex(),
                "signature": "0x" + self.signature.hex(),
                "block_number": self.block_number,
                "block_hash": "0x" + self.block_hash.hex(),
                "block_signature": "0x" + self.block_signature.hex(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SignedCheckpoint:
        """Parse a file; ValueError/KeyError/TypeError on anything malformed."""
        obj = json.loads(text)
        return cls(
            checkpoint=checkpoint_from_json(obj["checkpoint"]),
            signer=parse_hex(obj["signer"]),
            signature=parse_hex(obj["signature"]),
            block_number=int(obj["block_number"]),
            block_hash=parse_hex(obj["block_hash"]),
            block_signature=parse_hex(obj.get("block_signature", "0x")),
        )

    @classmethod
    def create(
        cls, signer: Signer, checkpoint: Checkpoint, *, block_number: int, block_hash: bytes
    ) -> SignedCheckpoint:
        """``signer``'s signature over ``checkpoint``, and over the block it was read at, each
        checked to recover to ``signer.address`` (:func:`relayer.signer.sign_digest_checked`;
        SignerError otherwise): a signature by another key never reaches the store. Blocking
        (a remote signer waits on I/O): trio code calls it through
        ``adapters.signing.call_signer``."""
        block_digest = attested_block_digest(checkpoint, block_number, block_hash)
        return cls(
            checkpoint=checkpoint,
            signer=signer.address,
            signature=sign_digest_checked(signer, checkpoint.digest()),
            block_number=block_number,
            block_hash=block_hash,
            block_signature=sign_digest_checked(signer, block_digest),
        )

    def block_is_signed(self) -> bool:
        """Did ``signer`` itself vouch for ``block_number``/``block_hash``? (The checkpoint
        signature does not cover them: without this, anyone could edit them.)"""
        digest = attested_block_digest(self.checkpoint, self.block_number, self.block_hash)
        try:
            return recover_signer(digest, self.block_signature) == self.signer
        except VerificationError:
            return False


def attested_block_digest(checkpoint: Checkpoint, block_number: int, block_hash: bytes) -> bytes:
    """What ``block_signature`` signs: EIP-191 over ``keccak256(tag ‖ checkpoint inner hash ‖
    u64 block number ‖ block hash)``. The tag differs from the checkpoint's, so this signature
    can never pass as a checkpoint signature (nor the reverse)."""
    inner = keccak256(
        ATTESTED_BLOCK_TAG + checkpoint.inner_hash() + block_number.to_bytes(8, "big") + block_hash
    )
    return keccak256(EIP191_PREFIX + inner)


def parse_hex(value: object) -> bytes:
    """``0x``-hex text as bytes; ValueError otherwise."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x-hex: {value!r}")
    return bytes.fromhex(value[2:])


def checkpoint_to_json(cp: Checkpoint) -> dict[str, object]:
    """A checkpoint as the store's files (and proposals) write it."""
    return {
        "origin": cp.origin,
        "outbox": "0x" + cp.outbox.hex(),
        "root": "0x" + cp.root.hex(),
        "index": cp.index,
    }


def checkpoint_from_json(obj: Any) -> Checkpoint:
    """The inverse of :func:`checkpoint_to_json`; ValueError/KeyError/TypeError, or the light
    client's VerificationError for a checkpoint that cannot exist (zero root, …)."""
    return Checkpoint(
        origin=int(obj["origin"]),
        outbox=parse_hex(obj["outbox"]),
        root=parse_hex(obj["root"]),
        index=int(obj["index"]),
    )


class CheckpointStore(ABC):
    """Where attesters publish signed checkpoints and relayers collect them: the rules.

    Two places implement it — a directory tree (:class:`DirectoryCheckpointStore`) and a
    PostgreSQL table (:class:`PostgresCheckpointStore`) — and both are only a key/value layout:
    each slot is ``(origin, outbox, index or "latest", signer)`` and holds the JSON text of one
    :class:`SignedCheckpoint`. Every rule about what a slot's content is worth lives here, once:
    content that does not match its slot's key is ignored (with one warning per slot) and
    overwritten by a publisher; "already signed" needs the signer's own signature.

    ``CheckpointStore(location)`` opens the right one, as ``pathlib.Path(...)`` does (existing
    code names the class; :func:`open_checkpoint_store` is the same call).
    """

    def __new__(cls, location: str | Path | None = None) -> CheckpointStore:
        if cls is CheckpointStore:
            if location is None:
                raise CheckpointStoreError("a checkpoint store needs a directory or a URL")
            return super().__new__(_store_class(location))
        return super().__new__(cls)

    def __init__(self, location: str | Path | None = None) -> None:
        # Misplaced slots already reported (readers poll): bounded, oldest forgotten first.
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._warned_lock = threading.Lock()  # readers run in several worker threads

    # ---------------------------------------------------------------- the layout (per store)

    @abstractmethod
    def _slot(self, key: SlotKey) -> Slot | None:
        """The slot at ``key`` (its ``signer`` given), or None if it is empty."""

    @abstractmethod
    def _slots(self, key: SlotKey, signers: Collection[bytes] | None) -> list[Slot]:
        """The slots of ``key``'s lane and index (its ``signer`` ignored), by signer: only
        those named after one of ``signers`` (None: every slot, however many there are)."""

    @abstractmethod
    def _exclusive(self, key: SlotKey) -> AbstractContextManager[_Writer]:
        """A writer for ``key``'s signer in its lane; whoever else publishes for that signer
        waits until the block ends (where the store can promise that)."""

    # ---------------------------------------------------------------- the API

    def publish(self, signed: SignedCheckpoint) -> None:
        """Write one signature, refusing to sign two roots at the same index (equivocation).

        Only a slot that is this signer's, for this very origin, outbox and index, counts as
        "already signed": a genuine signature copied here from elsewhere is overwritten."""
        cp = signed.checkpoint
        key = SlotKey(cp.origin, cp.outbox, cp.index, signed.signer)
        with self._exclusive(key) as writer:
            previous = self._own(writer.slot(key), key)
            if previous is not None:
                if previous.checkpoint.root != cp.root:
                    raise CheckpointStoreError(
                        f"refusing to sign a second root at index {cp.index} of origin "
                        f"{cp.origin}: already signed 0x{previous.checkpoint.root.hex()} "
                        "(reorg below finality?)"
                    )
                return
            writer.write(signed)

    def latest_indices(
        self, origin: int, outbox: bytes, members: Collection[bytes] | None = None
    ) -> list[int]:
        """The newest index each signer has published, highest first.

        Pass the committee as ``members``: only their slots are read. Anyone who can write the
        store can add slots under invented signer names, as many as they like; a reader that
        read them all would spend memory and time in proportion, every poll (and a reader that
        verified none would chase invented indices)."""
        key = SlotKey(origin, outbox, None, b"")
        found = (self._matching(slot, key) for slot in self._slots(key, members))
        return sorted({s.checkpoint.index for s in found if s is not None}, reverse=True)

    def signatures(
        self, origin: int, outbox: bytes, index: int, members: Collection[bytes] | None = None
    ) -> list[SignedCheckpoint]:
        """Every readable signature published for ``index`` (unverified) whose content matches
        its slot: this origin, outbox and index, and the signer its slot is named after. Only
        ``members``' slots are read when given (pass the committee: see :meth:`latest_indices`;
        a non-member's signature counts for nothing anyway)."""
        key = SlotKey(origin, outbox, index, b"")
        found = (self._matching(slot, key) for slot in self._slots(key, members))
        return [s for s in found if s is not None]

    def latest_own(self, origin: int, outbox: bytes, signer: bytes) -> SignedCheckpoint | None:
        """The newest checkpoint ``signer`` published (an attester resumes from it), only if its
        signature is ``signer``'s and it is of this lane: others can write to the store too."""
        key = SlotKey(origin, outbox, None, signer)
        return self._own(self._slot(key), key)

    def signed_by(self, checkpoint: Checkpoint, signer: bytes) -> bool:
        """Did ``signer`` sign exactly ``checkpoint``? Its slot must hold a signature that
        recovers to ``signer`` (a slot name or field proves nothing: the store is shared)."""
        cp = checkpoint
        key = SlotKey(cp.origin, cp.outbox, cp.index, signer)
        own = self._own(self._slot(key), key)
        return own is not None and own.checkpoint == checkpoint

    # ---------------------------------------------------------------- the rules

    def _own(self, slot: Slot | None, key: SlotKey) -> SignedCheckpoint | None:
        """The slot's checkpoint if it belongs there and carries ``key.signer``'s signature."""
        signed = None if slot is None else self._matching(slot, key)
        if signed is None or signed.signer != key.signer:
            return None
        try:
            if recover_signer(signed.checkpoint.digest(), signed.signature) != key.signer:
                return None
        except VerificationError:
            return None
        return signed

    def _matching(self, slot: Slot, key: SlotKey) -> SignedCheckpoint | None:
        """The slot's content if it belongs there (``key.index`` None: a ``latest`` slot, of
        any index); a misplaced one is reported once and skipped."""
        signed = _parse(slot.text)
        if signed is None:
            return None
        cp = signed.checkpoint
        problems = []
        if (cp.origin, cp.outbox) != (key.origin, key.outbox):
            problems.append(f"origin {cp.origin} outbox 0x{cp.outbox.hex()}")
        if key.index is not None and cp.index != key.index:
            problems.append(f"index {cp.index}")
        if slot.signer_name != f"0x{signed.signer.hex()}":
            problems.append(f"signer 0x{signed.signer.hex()}")
        if not problems:
            return signed
        with self._warned_lock:
            known = slot.place in self._warned
            self._warned[slot.place] = None
            self._warned.move_to_end(slot.place)
            if len(self._warned) > MAX_WARNED_SLOTS:
                self._warned.popitem(last=False)
        if not known:
            log.warning(
                "ignoring %s: it holds a checkpoint of %s, not of its place in the store "
                "(copied or replayed?)",
                slot.place,
                ", ".join(problems),
            )
        return None


def open_checkpoint_store(location: str | Path) -> CheckpointStore:
    """The checkpoint store at ``location``: a ``postgresql+psycopg://`` URL, or a directory."""
    return _store_class(location)(location)


def is_database_url(location: str | Path) -> bool:
    """Does ``location`` name a database (``…://…``) rather than a directory? The one test
    every shared store (checkpoints, Substrate proposals) opens its location by."""
    return isinstance(location, str) and "://" in location


def _store_class(location: str | Path) -> type[CheckpointStore]:
    return PostgresCheckpointStore if is_database_url(location) else DirectoryCheckpointStore


@dataclass(frozen=True)
class SlotKey:
    """Where a signature belongs: its lane, its index (None: the signer's ``latest``), signer."""

    origin: int
    outbox: bytes
    index: int | None
    signer: bytes


@dataclass(frozen=True)
class Slot:
    """What a slot holds, as read: nothing in it is trusted yet."""

    place: str  # for warnings: a path, or a row's key
    signer_name: str  # the signer the slot is named after ("0x…", or whatever someone wrote)
    text: str | None  # None: not readable as a signature file (too big, not a regular file…)


class _Writer(Protocol):
    def slot(self, key: SlotKey) -> Slot | None: ...

    def write(self, signed: SignedCheckpoint) -> None: ...


def _parse(text: str | None) -> SignedCheckpoint | None:
    if text is None:
        return None
    try:
        return SignedCheckpoint.from_json(text)
    except Exception:  # anyone may write here: nothing read may stop a reader
        # Corrupt or foreign content is skipped: signatures are verified anyway.
        return None


class DirectoryCheckpointStore(CheckpointStore):
    """A directory tree of signed checkpoints (see the module docstring for its layout)."""

    def __init__(self, location: str | Path | None = None) -> None:
        super().__init__()
        if location is None:
            raise CheckpointStoreError("a checkpoint directory is needed")
        self.root = Path(location)

    def _folder(self, key: SlotKey) -> Path:
        lane = self.root / str(key.origin) / ("0x" + key.outbox.hex())
        return lane / ("latest" if key.index is None else f"{key.index:010d}")

    def _slot(self, key: SlotKey) -> Slot | None:
        return _read_slot(self._folder(key) / f"0x{key.signer.hex()}.json")

    def _slots(self, key: SlotKey, signers: Collection[bytes] | None) -> list[Slot]:
        folder = self._folder(key)
        if signers is None:
            paths = list(json_files(folder))
        else:  # by name: the folder may hold any number of other files
            paths = [folder / f"0x{signer.hex()}.json" for signer in sorted(set(signers))]
        found = (_read_slot(path) for path in paths)
        return [slot for slot in found if slot is not None]

    @contextmanager
    def _exclusive(self, key: SlotKey) -> Iterator[_Writer]:
        # A directory offers no lock that every filesystem honours: two publishers for one
        # signer can race (one attester key belongs to one process: see docs/relayer.md).
        yield _DirectoryWriter(self)


class _DirectoryWriter:
    def __init__(self, store: DirectoryCheckpointStore) -> None:
        self.store = store

    def slot(self, key: SlotKey) -> Slot | None:
        return self.store._slot(key)

    def write(self, signed: SignedCheckpoint) -> None:
        cp = signed.checkpoint
        name = f"0x{signed.signer.hex()}.json"
        for index in (cp.index, None):
            folder = self.store._folder(SlotKey(cp.origin, cp.outbox, index, signed.signer))
            atomic_write(folder / name, signed.to_json())


def _read_slot(path: Path) -> Slot | None:
    try:
        text = read_small_file(path)
    except (OSError, UnicodeDecodeError):  # missing, unreadable, not text
        return None
    return Slot(place=str(path), signer_name=path.stem, text=text)


class PostgresTable:
    """One table of a shared store on PostgreSQL: its engine, its bounded transactions and its
    creation on first use. The checkpoint store (:class:`PostgresCheckpointStore`) and the
    Substrate proposal store (:mod:`relayer.families.substrate.proposals`) both live on the
    ``[committee] checkpoint_store`` URL and use it, so that both wait on nothing for ever and
    fail with the same one-line errors (see :class:`PostgresCheckpointStore` for the rules).

    ``columns`` is the body of the table's ``CREATE TABLE`` (trusted text of ours, never
    input). Opening connects to nothing: the first transaction does.
    """

    def __init__(self, location: str, table: str, columns: str) -> None:
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        from relayer.ledger import PG_CONNECT_ARGS, shown_database_url  # noqa: PLC0415

        self.location = shown_database_url(location)
        self.table = table
        self._columns = columns
        try:
            url = sa.make_url(location)
        except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise CheckpointStoreError(
                f"checkpoint store {self.location} is not a database URL"
            ) from None
        if url.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2: not ours
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() != "postgresql":
            raise CheckpointStoreError(
                f"checkpoint store {self.location}: only postgresql:// URLs are supported "
                "(or give a directory)"
            )
        try:
            self._engine = sa.create_engine(
                url, pool_pre_ping=True, connect_args=dict(PG_CONNECT_ARGS)
            )
        except (sa.exc.ArgumentError, ImportError) as error:
            raise CheckpointStoreError(f"checkpoint store {self.location}: {error}") from None
        self._table_ready = False

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @contextmanager
    def transaction(self, waiting_for: str = "") -> Iterator[sa.Connection]:
        """One bounded transaction; ``waiting_for`` names the lock it takes, for the error."""
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        from relayer.ledger import set_local_timeouts  # noqa: PLC0415

        try:
            with self._engine.begin() as connection:
                set_local_timeouts(
                    connection, lock_ms=PG_LOCK_TIMEOUT_MS, statement_ms=PG_STATEMENT_TIMEOUT_MS
                )
                checked = not self._table_ready and self._create_table(connection)
                yield connection
            # Only now: a CREATE in a transaction that rolled back made no table.
            self._table_ready = self._table_ready or checked
        except sa.exc.DBAPIError as error:
            # One line, without the password: the server's text may span several lines.
            reason = " ".join(str(error.orig).split())
            state = getattr(error.orig, "sqlstate", None)
            if state == "55P03":  # lock_not_available: our lock_timeout
                held = waiting_for or "a lock this store needs"
                raise CheckpointStoreBusy(
                    f"checkpoint store {self.location}: {held} has been held by another "
                    f"session for over {PG_LOCK_TIMEOUT_MS / 1000:g} s; nothing written"
                ) from None
            if state == "57014":  # query_canceled: our statement_timeout
                raise CheckpointStoreBusy(
                    f"checkpoint store {self.location}: no answer within "
                    f"{PG_STATEMENT_TIMEOUT_MS / 1000:g} s ({reason})"
                ) from None
            raise CheckpointStoreError(f"checkpoint store {self.location}: {reason}") from None

    def _create_table(self, connection: sa.Connection) -> bool:
        """Make the table if it is missing (True: it is there once this transaction commits).
        Only then is the create lock taken, and CREATE
        issued: PostgreSQL checks the CREATE privilege before ``IF NOT EXISTS``, so a reader
        without it could not open an existing store otherwise, and a session holding the
        (public) create lock would stop every process from starting."""
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        exists = connection.execute(
            sa.text("SELECT to_regclass(:table) IS NOT NULL"), {"table": self.table}
        ).scalar_one()
        if not exists:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
            connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {self.table} ({self._columns})")
        return True


class PostgresCheckpointStore(CheckpointStore):
    """Signed checkpoints in a PostgreSQL table, for attesters and relayers on several machines.

    The table mirrors the directory: one row per slot, keyed ``(origin, outbox, slot, signer)``
    with ``slot`` the 10-digit index or ``latest`` and ``signer`` the ``0x`` address, holding
    the same JSON text as a file would (``content``). It may live in the ledger's database or
    another one. Anyone with write access to the table is as hostile as anyone with write
    access to the directory, and is handled by the same rules (:class:`CheckpointStore`): a row
    whose content does not match its key is ignored with a warning and overwritten by a
    publisher, and content over :data:`MAX_FILE_BYTES` is not even fetched.

    Unlike the directory, ``publish`` is atomic and exclusive per signer and lane: it runs in
    one transaction under an advisory lock, so two processes holding the same attester key
    cannot both pass the equivocation check and write two roots at one index.

    Nothing waits without a limit: connecting gives up after ``connect_timeout``, a dead server
    is noticed by TCP keepalives (:data:`~relayer.ledger.PG_CONNECT_ARGS`), and every
    transaction runs with ``lock_timeout`` (:data:`PG_LOCK_TIMEOUT_MS`) and
    ``statement_timeout`` (:data:`PG_STATEMENT_TIMEOUT_MS`). A lock held elsewhere — the lock
    ids are public hashes, and holding an advisory lock takes only the right to connect — or a
    server that does not answer raises :class:`CheckpointStoreBusy` with one line.

    Opening connects to nothing. The table is made on first use, and only if it is missing
    (``to_regclass``), under an advisory lock so two processes starting together do not race:
    a role with only SELECT on the table (a relayer's: it never writes signatures) can read.
    """

    TABLE = "checkpoint_store"

    def __init__(self, location: str | Path | None = None) -> None:
        super().__init__()
        if not isinstance(location, str):
            raise CheckpointStoreError("a PostgreSQL checkpoint store needs a database URL")
        self._table = PostgresTable(
            location,
            self.TABLE,
            "origin BIGINT NOT NULL, outbox TEXT NOT NULL, slot TEXT NOT NULL, "
            "signer TEXT NOT NULL, content TEXT NOT NULL, "
            "updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "PRIMARY KEY (origin, outbox, slot, signer)",
        )
        self.location = self._table.location

    def close(self) -> None:
        """Close the pooled connections."""
        self._table.close()

    def _transaction(self, waiting_for: str = "") -> AbstractContextManager[sa.Connection]:
        return self._table.transaction(waiting_for)

    def _select(
        self,
        connection: sa.Connection,
        key: SlotKey,
        one: bool,
        signers: Collection[bytes] | None = None,
    ) -> list[Slot]:
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        where = "origin = :origin AND outbox = :outbox AND slot = :slot"
        params: dict[str, object] = {
            "origin": key.origin,
            "outbox": "0x" + key.outbox.hex(),
            "slot": _slot_name(key.index),
            "limit": MAX_FILE_BYTES,
        }
        if one:
            where += " AND signer = :signer"
            params["signer"] = "0x" + key.signer.hex()
        elif signers is not None:
            # Only these rows leave the server, however many others someone inserted.
            where += " AND signer = ANY(:signers)"
            params["signers"] = sorted({"0x" + signer.hex() for signer in signers})
        rows = connection.execute(
            sa.text(
                # Oversized content stays on the server: a reader never pulls megabytes.
                "SELECT origin, outbox, slot, signer, CASE WHEN octet_length(content) <= :limit "
                f"THEN content END FROM {self.TABLE} WHERE {where} ORDER BY signer"
            ),
            params,
        )
        return [
            Slot(
                place=f"{self.TABLE} row ({origin}, {outbox}, {slot}, {signer})",
                signer_name=signer,
                text=text,
            )
            for origin, outbox, slot, signer, text in rows
        ]

    def _slot(self, key: SlotKey) -> Slot | None:
        with self._transaction() as connection:
            found = self._select(connection, key, one=True)
        return found[0] if found else None

    def _slots(self, key: SlotKey, signers: Collection[bytes] | None) -> list[Slot]:
        with self._transaction() as connection:
            return self._select(connection, key, one=False, signers=signers)

    @contextmanager
    def _exclusive(self, key: SlotKey) -> Iterator[_Writer]:
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        lock = publish_lock_id(key)
        held = (
            f"the publish lock of signer 0x{key.signer.hex()} on origin {key.origin} outbox "
            f"0x{key.outbox.hex()}"
        )
        with self._transaction(waiting_for=held) as connection:
            # Held until commit: the next publisher for this signer and lane reads our write.
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
            yield _PostgresWriter(self, connection)


class _PostgresWriter:
    def __init__(self, store: PostgresCheckpointStore, connection: sa.Connection) -> None:
        self.store = store
        self.connection = connection

    def slot(self, key: SlotKey) -> Slot | None:
        found = self.store._select(self.connection, key, one=True)
        return found[0] if found else None

    def write(self, signed: SignedCheckpoint) -> None:
        import sqlalchemy as sa  # noqa: PLC0415 (see the imports)

        cp = signed.checkpoint
        self.connection.execute(
            sa.text(
                f"INSERT INTO {self.store.TABLE} (origin, outbox, slot, signer, content) "
                "VALUES (:origin, :outbox, :slot, :signer, :content) "
                "ON CONFLICT (origin, outbox, slot, signer) "
                "DO UPDATE SET content = EXCLUDED.content, updated_at = now()"
            ),
            [
                {
                    "origin": cp.origin,
                    "outbox": "0x" + cp.outbox.hex(),
                    "slot": _slot_name(index),
                    "signer": "0x" + signed.signer.hex(),
                    "content": signed.to_json(),
                }
                for index in (cp.index, None)
            ],
        )


_CREATE_LOCK = int.from_bytes(
    keccak256(b"passerelle/checkpoint-store/create")[:8], "big", signed=True
)


def publish_lock_id(key: SlotKey) -> int:
    """The advisory lock a PostgreSQL ``publish`` for ``key``'s signer and lane takes: one per
    (signer, lane), so attesters never wait for each other, only for themselves. Anyone can
    compute it (hence the lock timeout)."""
    return int.from_bytes(
        keccak256(b"passerelle/checkpoint-store" + _lane_key(key) + key.signer)[:8],
        "big",
        signed=True,
    )


def _slot_name(index: int | None) -> str:
    return "latest" if index is None else f"{index:010d}"


def _lane_key(key: SlotKey) -> bytes:
    return key.origin.to_bytes(8, "big") + key.outbox


def read_small_file(path: Path, limit: int = MAX_FILE_BYTES) -> str | None:
    """The text of ``path`` if it is a regular file of at most ``limit`` bytes, else None.

    The store is writable by others, who may plant a FIFO (opening one for reading blocks until
    someone writes: hence ``O_NONBLOCK``, and nothing is read from anything but a regular file)
    or a symlink to ``/dev/zero`` or a huge file (hence at most ``limit`` + 1 bytes are read).
    OSError if it cannot be opened at all.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = file.read(limit + 1)
    return None if len(data) > limit else data.decode("utf-8")


def json_files(folder: Path) -> Iterable[Path]:
    """The ``.json`` files of ``folder``, sorted; none if it does not exist."""
    try:
        # Not ``.tmp-*`` files: those are being written, and are renamed when complete.
        return sorted(
            p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")
        )
    except FileNotFoundError:
        return []


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file, fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise CheckpointStoreError(f"cannot write {path}: {exc.strerror}") from None
