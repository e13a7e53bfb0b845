"""The PostgreSQL checkpoint store's own cases (relayer/checkpoints.py): a row tampered in
plain SQL, attesters publishing at once, one key running twice, the factory and the config. The
rules it shares with the directory store run on both in tests/test_checkpoint_store.py.

The session's throwaway server (the ``postgres`` fixture, tests/conftest.py), one database per
test; the tampering is done with plain SQL, the way anyone holding the password could. The
devnet's attesters and relayer sharing signatures through the table end to end:
tests/test_devnet_scale.py (``devnet up --postgres``).
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_checkpoint_store import CP, KEY, OTHER, fresh_database, signed
from test_checkpoint_store import pg_admin as pg_admin  # noqa: PLC0414 - a fixture
from test_substrate_route import config_toml

from devnet.postgres import PostgresProcess
from light_clients.committee import Checkpoint, address_of
from relayer import checkpoints
from relayer.checkpoints import (
    CheckpointStore,
    CheckpointStoreError,
    DirectoryCheckpointStore,
    PostgresCheckpointStore,
    SlotKey,
    open_checkpoint_store,
    publish_lock_id,
)
from relayer.config import ConfigError, load_config

OUTBOX = CP.outbox


def test_the_factory_picks_the_store_and_refuses_bad_locations(tmp_path: Path) -> None:
    assert isinstance(CheckpointStore(tmp_path), DirectoryCheckpointStore)  # type: ignore[abstract]
    assert isinstance(open_checkpoint_store(str(tmp_path)), DirectoryCheckpointStore)
    with pytest.raises(CheckpointStoreError, match="only postgresql:// URLs") as refused:
        open_checkpoint_store("mysql://user:hunter2@db.example/x")
    assert "hunter2" not in str(refused.value)
    # A server that does not answer: one line, password hidden.
    down_store = open_checkpoint_store("postgresql+psycopg://user:hunter2@127.0.0.1:1/x")
    with pytest.raises(CheckpointStoreError) as down:  # opening connects to nothing: first use
        down_store.latest_indices(1, OUTBOX)
    assert "hunter2" not in str(down.value) and "\n" not in str(down.value)
    assert "127.0.0.1:1" in str(down.value)


# --------------------------------------------------------------------------------------------
# PostgreSQL only: SQL tampering and concurrency


def test_a_row_tampered_in_sql_is_ignored_and_overwritten_by_its_publisher(
    pg_admin: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    url = fresh_database(pg_admin)
    store = PostgresCheckpointStore(url)
    try:
        store.publish(signed(CP, by=KEY))
        later = Checkpoint(CP.origin, CP.outbox, b"\x0e" * 32, CP.index + 1)
        store.publish(signed(later, by=KEY))
        # Someone with the password copies the attester's genuine index-5 content over its
        # index-4 row: a real signature, in a place it does not belong.
        raw = sa.create_engine(url, poolclass=sa.NullPool)
        with raw.begin() as connection:
            changed = connection.exec_driver_sql(
                "UPDATE checkpoint_store SET content = (SELECT content FROM checkpoint_store "
                "WHERE slot = '0000000005') WHERE slot = '0000000004'"
            )
            assert changed.rowcount == 1
        raw.dispose()
        with caplog.at_level(logging.WARNING, logger="passerelle.checkpoints"):
            assert store.signatures(CP.origin, CP.outbox, CP.index) == []
            assert not store.signed_by(CP, address_of(KEY))
        assert any("checkpoint_store row (1, 0x0a" in r.getMessage() for r in caplog.records)
        # The attester re-publishing index 4 is not "signing a second root": it restores it.
        store.publish(signed(CP, by=KEY))
        assert store.signed_by(CP, address_of(KEY))
        assert [s.checkpoint for s in store.signatures(CP.origin, CP.outbox, CP.index)] == [CP]
    finally:
        store.close()


def test_two_attesters_publish_concurrently(
    pg_admin: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attesters on "different machines" (separate stores, separate connections) publish
    the same lane at once, and never wait for each other: the publish lock is per signer and
    lane. While one attester's lock is held elsewhere (a stuck publisher of the same key), its
    own publish waits, and the other attester's lands meanwhile — a lock shared by signers
    (one per lane, or one for the table) would stall it too, and fail this test. Then both
    publish 40 indices concurrently: every signature of both is there, each latest is
    right."""
    monkeypatch.setattr(checkpoints, "PG_LOCK_TIMEOUT_MS", 60_000)  # waits, never times out
    url = fresh_database(pg_admin)
    stores = [PostgresCheckpointStore(url) for _ in range(2)]
    start = threading.Barrier(2)
    count = 40

    def attester(store: CheckpointStore, key: bytes) -> None:
        start.wait()
        for index in range(count):
            store.publish(signed(Checkpoint(1, OUTBOX, b"\x0b" * 32, index), by=key))

    stuck = sa.create_engine(url, poolclass=sa.NullPool).connect()
    try:
        first = Checkpoint(1, OUTBOX, b"\x0b" * 32, 0)
        stores[0].latest_indices(1, OUTBOX)  # the table exists
        lock = publish_lock_id(SlotKey(1, OUTBOX, 0, address_of(KEY)))
        stuck.execute(sa.select(sa.func.pg_advisory_lock(lock)))
        stuck.commit()
        with ThreadPoolExecutor(2) as pool:
            blocked = pool.submit(stores[0].publish, signed(first, by=KEY))
            free = pool.submit(stores[1].publish, signed(first, by=OTHER))
            free.result(timeout=20)  # while KEY's lock is still held (next line)
            assert not blocked.done()
            stuck.close()  # the stuck publisher goes away: KEY's publish proceeds
            blocked.result(timeout=20)
        assert stores[1].signed_by(first, address_of(OTHER))
        assert stores[1].signed_by(first, address_of(KEY))
        with ThreadPoolExecutor(2) as pool:
            for done in [
                pool.submit(attester, s, k) for s, k in zip(stores, (KEY, OTHER), strict=True)
            ]:
                done.result(timeout=60)
        reader = stores[0]
        for index in range(count):
            signers = {s.signer for s in reader.signatures(1, OUTBOX, index)}
            assert signers == {address_of(KEY), address_of(OTHER)}
        assert reader.latest_indices(1, OUTBOX) == [count - 1]
        for key in (KEY, OTHER):
            own = reader.latest_own(1, OUTBOX, address_of(key))
            assert own is not None and own.checkpoint.index == count - 1
    finally:
        stuck.close()
        for store in stores:
            store.close()


def test_one_key_in_two_processes_cannot_sign_two_roots_at_one_index(pg_admin: sa.Engine) -> None:
    """The same attester key running twice (a misconfigured failover) races to sign different
    roots at the same index: publish is exclusive per signer and lane, so exactly one wins and
    the other is refused; the store never holds a root the loser was told it signed."""
    url = fresh_database(pg_admin)
    stores = [PostgresCheckpointStore(url) for _ in range(2)]
    try:
        for index in range(15):
            roots = [bytes([0x20 + index]) * 32, bytes([0x60 + index]) * 32]
            barrier = threading.Barrier(2)

            def race(
                store: CheckpointStore,
                root: bytes,
                index: int = index,
                start: threading.Barrier = barrier,
            ) -> bytes | None:
                start.wait()
                try:
                    store.publish(signed(Checkpoint(1, OUTBOX, root, index), by=KEY))
                except CheckpointStoreError:
                    return None
                return root

            with ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(race, stores, roots))
            winners = [root for root in outcomes if root is not None]
            assert len(winners) == 1, f"index {index}: {outcomes}"
            (stored,) = stores[0].signatures(1, OUTBOX, index)
            assert stored.checkpoint.root == winners[0]
    finally:
        for store in stores:
            store.close()


def test_the_config_takes_a_url_or_a_directory(tmp_path: Path, postgres: PostgresProcess) -> None:
    def load(store: str) -> object:
        committee = "[committee]\n"
        text = config_toml().replace(
            committee, f"{committee}checkpoint_store = {json.dumps(store)}\n"
        )
        assert text.count("checkpoint_store") == 1
        path = tmp_path / "passerelle.toml"
        path.write_text(text)
        return load_config(path)

    url = postgres.url
    config = load(url)
    assert config.checkpoint_location == url  # type: ignore[attr-defined]
    assert config.checkpoint_store == tmp_path / "checkpoints"  # type: ignore[attr-defined]
    assert load("shared").checkpoint_location == tmp_path / "shared"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="neither a directory nor a postgresql") as refused:
        load("sqlite://user:hunter2@host/x")
    assert "hunter2" not in str(refused.value)
