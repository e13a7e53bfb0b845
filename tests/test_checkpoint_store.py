"""The checkpoint store is shared and writable by others: what an attester believes it signed
must carry its own signature (relayer.checkpoints.CheckpointStore).

The hostile cases run on both stores (the ``place`` fixture): a directory, where anyone with
access writes files, and a PostgreSQL table on the session's throwaway server (the ``postgres``
fixture, tests/conftest.py; one database per test), where anyone with the password writes rows
in plain SQL. The PostgreSQL store's own cases (SQL tampering, concurrency, the factory and the
config) are in tests/test_checkpoint_store_pg.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devnet.postgres import PostgresProcess
from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from relayer.checkpoints import (
    MAX_FILE_BYTES,
    CheckpointStore,
    CheckpointStoreError,
    DirectoryCheckpointStore,
    PostgresCheckpointStore,
    SignedCheckpoint,
    open_checkpoint_store,
)

KEY = bytes.fromhex("11" * 32)
OTHER = bytes.fromhex("22" * 32)
CP = Checkpoint(origin=1, outbox=b"\x0a" * 32, root=b"\x0b" * 32, index=4)


def signed(checkpoint: Checkpoint, *, by: bytes, claimed: bytes | None = None) -> SignedCheckpoint:
    return SignedCheckpoint(
        checkpoint=checkpoint,
        signer=address_of(by) if claimed is None else claimed,
        signature=sign_checkpoint(by, checkpoint),
        block_number=7,
        block_hash=b"\x0c" * 32,
    )


class Place:
    """A store, and a way to write into it behind its back: a file, or a row in plain SQL."""

    def __init__(
        self,
        store: CheckpointStore,
        plant: Callable[[int, bytes, str, str, str], None],
        clear: Callable[[], None],
    ) -> None:
        self.store = store
        self._plant = plant
        self.clear = clear  # empty the store (for one more hypothesis example)

    def plant(self, origin: int, outbox: bytes, slot: int | None, name: str, text: str) -> None:
        """Put ``text`` in the slot ``(origin, outbox, index or latest, name)``."""
        self._plant(origin, outbox, "latest" if slot is None else f"{slot:010d}", name, text)

    def forge(
        self, fake: SignedCheckpoint, name: bytes | None = None, at: Checkpoint | None = None
    ) -> None:
        """Put ``fake`` in the index and latest slots of ``at`` (default: its own checkpoint)
        under the signer name ``name`` (default: the signer it claims)."""
        where = at or fake.checkpoint
        signer = f"0x{(name or fake.signer).hex()}"
        for slot in (where.index, None):
            self.plant(where.origin, where.outbox, slot, signer, fake.to_json())


_databases = itertools.count()


@pytest.fixture(scope="module")
def pg_admin(postgres: PostgresProcess) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def fresh_database(admin: sa.Engine) -> str:
    """The URL of a new, empty database on the session's server."""
    name = f"checkpoints_{next(_databases)}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
    return admin.url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["directory", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """Each test that takes it runs on a directory store and on a PostgreSQL store."""
    if request.param == "directory":
        root = tmp_path / "store"
        store = open_checkpoint_store(root)
        assert isinstance(store, DirectoryCheckpointStore)

        def write_file(origin: int, outbox: bytes, slot: str, name: str, text: str) -> None:
            folder = root / str(origin) / ("0x" + outbox.hex()) / slot
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.json").write_text(text)

        yield Place(store, write_file, lambda: shutil.rmtree(root, ignore_errors=True))
        return
    url = fresh_database(request.getfixturevalue("pg_admin"))
    pg = open_checkpoint_store(url)
    assert isinstance(pg, PostgresCheckpointStore)
    assert pg.latest_indices(0, b"") == []  # opening connects to nothing; first use makes the table
    raw = sa.create_engine(url, poolclass=sa.NullPool)

    def write_row(origin: int, outbox: bytes, slot: str, name: str, text: str) -> None:
        with raw.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO checkpoint_store (origin, outbox, slot, signer, content) "
                    "VALUES (:o, :x, :s, :n, :t) ON CONFLICT (origin, outbox, slot, signer) "
                    "DO UPDATE SET content = EXCLUDED.content"
                ),
                {"o": origin, "x": "0x" + outbox.hex(), "s": slot, "n": name, "t": text},
            )

    def clear() -> None:
        with raw.begin() as connection:
            connection.exec_driver_sql("DELETE FROM checkpoint_store")

    try:
        yield Place(pg, write_row, clear)
    finally:
        pg.close()
        raw.dispose()


def test_own_signature_counts(place: Place) -> None:
    store = place.store
    store.publish(signed(CP, by=KEY))
    assert store.signed_by(CP, address_of(KEY))
    assert not store.signed_by(CP, address_of(OTHER))
    own = store.latest_own(CP.origin, CP.outbox, address_of(KEY))
    assert own is not None and own.checkpoint == CP


def test_a_second_root_at_one_index_is_refused_and_nothing_written(place: Place) -> None:
    store = place.store
    store.publish(signed(CP, by=KEY))
    store.publish(signed(CP, by=KEY))  # the same again: idempotent
    other_root = Checkpoint(CP.origin, CP.outbox, b"\x0d" * 32, CP.index)
    with pytest.raises(CheckpointStoreError, match="second root at index 4"):
        store.publish(signed(other_root, by=KEY))
    assert store.signed_by(CP, address_of(KEY)) and not store.signed_by(other_root, address_of(KEY))
    assert [s.checkpoint for s in store.signatures(CP.origin, CP.outbox, CP.index)] == [CP]


def test_misplaced_content_is_reported_once_per_slot(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """Readers poll: a planted copy is named in one warning, not one per poll."""
    moved = Checkpoint(CP.origin, CP.outbox, CP.root, CP.index + 1)
    place.forge(signed(CP, by=KEY), at=moved)
    with caplog.at_level(logging.WARNING, logger="passerelle.checkpoints"):
        for _ in range(3):
            assert place.store.signatures(moved.origin, moved.outbox, moved.index) == []
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignoring")]
    assert len(warnings) == 1 and "index 4, not of its place in the store" in warnings[0]


def test_a_forged_file_in_the_attesters_name_is_not_its_signature(place: Place) -> None:
    store = place.store
    forged_cp = Checkpoint(origin=1, outbox=CP.outbox, root=b"\xee" * 32, index=9)
    place.forge(signed(forged_cp, by=OTHER, claimed=address_of(KEY)))
    assert not store.signed_by(forged_cp, address_of(KEY))
    assert store.latest_own(CP.origin, CP.outbox, address_of(KEY)) is None  # no fake resume
    # Nor can a forged file block the attester from signing the real root at that index.
    real = Checkpoint(origin=1, outbox=CP.outbox, root=b"\x0b" * 32, index=9)
    store.publish(signed(real, by=KEY))
    assert store.signed_by(real, address_of(KEY))


def test_garbage_files_are_skipped(place: Place) -> None:
    store = place.store
    store.publish(signed(CP, by=KEY))
    padded = signed(CP, by=OTHER).to_json() + " " * (2 * MAX_FILE_BYTES)  # genuine, but huge
    for name, text in [
        ("0xinf", '{"checkpoint": {"index": Infinity}}'),
        ("0xdeep", "[" * 100_000 + "]" * 100_000),
        ("0xnot", "not json at all"),
        (f"0x{address_of(OTHER).hex()}", padded),
    ]:
        for slot in (CP.index, None):
            place.plant(CP.origin, CP.outbox, slot, name, text)
    assert [s.signer for s in store.signatures(CP.origin, CP.outbox, CP.index)] == [address_of(KEY)]
    assert store.latest_indices(CP.origin, CP.outbox) == [CP.index]
    assert store.latest_own(CP.origin, CP.outbox, address_of(OTHER)) is None


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    origin=st.integers(1, 3),
    index=st.integers(0, 3),
    moved=st.sampled_from(["origin", "outbox", "index", "name"]),
)
def test_a_genuine_file_counts_only_where_it_belongs(
    place: Place, origin: int, index: int, moved: str
) -> None:
    """A copy of a genuine signature moved to another origin, outbox, index or file name is
    not read there: not as a signature, not as "already signed", not as a resume point."""
    place.clear()
    store = place.store
    real = Checkpoint(origin=origin, outbox=CP.outbox, root=CP.root, index=index)
    genuine = signed(real, by=KEY)
    where = {
        "origin": Checkpoint(origin=origin + 1, outbox=CP.outbox, root=CP.root, index=index),
        "outbox": Checkpoint(origin=origin, outbox=b"\x0f" * 32, root=CP.root, index=index),
        "index": Checkpoint(origin=origin, outbox=CP.outbox, root=CP.root, index=index + 1),
        "name": real,
    }[moved]
    name = address_of(OTHER) if moved == "name" else address_of(KEY)
    place.forge(genuine, name=name, at=where)
    assert store.signatures(where.origin, where.outbox, where.index) == []
    assert store.latest_indices(where.origin, where.outbox) == ([index] if moved == "index" else [])
    if moved != "name":
        # A ``latest`` file names no index: an older own one of this lane is a fair resume point.
        resume = store.latest_own(where.origin, where.outbox, address_of(KEY))
        assert resume == (genuine if moved == "index" else None)
        other_root = Checkpoint(where.origin, where.outbox, b"\x0d" * 32, where.index)
        store.publish(signed(other_root, by=KEY))  # no "second root": the copy is not ours here
        assert store.signed_by(other_root, address_of(KEY))


def test_a_planted_fifo_or_oversized_file_cannot_hang_a_reader(tmp_path: Path) -> None:
    """Anyone who can write the store can plant a FIFO (opening it for reading blocks until
    someone writes) or a huge file (a symlink to /dev/zero never ends) where a reader looks:
    ``latest/`` is read by the relayer every poll and by an attester at start. Such a file is
    no signature file: it is skipped, at once and at bounded cost."""
    store = CheckpointStore(tmp_path)  # type: ignore[abstract]  # as existing code calls it
    lane = tmp_path / str(CP.origin) / ("0x" + CP.outbox.hex())
    latest = lane / "latest"
    latest.mkdir(parents=True)
    os.mkfifo(latest / f"0x{address_of(KEY).hex()}.json")
    # Genuine content, padded past any signature file's size with JSON whitespace.
    padded = signed(CP, by=OTHER).to_json() + " " * (2 * MAX_FILE_BYTES)
    (latest / f"0x{address_of(OTHER).hex()}.json").write_text(padded)

    answers: list[object] = []
    reader = threading.Thread(
        target=lambda: answers.extend(
            [
                store.latest_indices(CP.origin, CP.outbox),
                store.latest_own(CP.origin, CP.outbox, address_of(KEY)),
            ]
        ),
        daemon=True,  # on the old code it blocks in open() forever: do not hang the suite
    )
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "a reader blocked on a planted FIFO"
    assert answers == [[], None]
