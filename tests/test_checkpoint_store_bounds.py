"""The checkpoint store under someone who wants to stop it rather than fool it (review rev-ops).

* A held lock: the PostgreSQL lock ids are public hashes and holding an advisory lock takes
  only the right to connect. ``publish`` gives up after the lock timeout with one line
  (:class:`CheckpointStoreBusy`), instead of waiting for ever in a thread trio cannot cancel;
  opening an existing store takes no lock at all.
* A read-only role (a relayer's) can read an existing store: nothing is created unless missing.
* Thousands of planted slots: readers given the committee read only its members' slots, and
  the memory of misplaced slots already warned about is bounded.
* Bad URLs: a non-numeric port, a password in the query string: one line, no password.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from test_checkpoint_store import CP, KEY, OTHER, Place, fresh_database, signed
from test_checkpoint_store import pg_admin as pg_admin  # noqa: PLC0414 - a fixture
from test_checkpoint_store import place as place  # noqa: PLC0414 - a fixture

from light_clients.committee import address_of
from relayer import checkpoints
from relayer.checkpoints import (
    _CREATE_LOCK,
    MAX_WARNED_SLOTS,
    CheckpointStoreBusy,
    CheckpointStoreError,
    PostgresCheckpointStore,
    SlotKey,
    open_checkpoint_store,
    publish_lock_id,
)

SIGNER = address_of(KEY)
_roles = itertools.count()


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> int:
    """A lock timeout of 0.5 s, so a test of it does not wait the real 5 s."""
    monkeypatch.setattr(checkpoints, "PG_LOCK_TIMEOUT_MS", 500)
    return 500


@pytest.fixture
def hostile(pg_admin: sa.Engine) -> Iterator[tuple[str, sa.Connection]]:
    """A store's URL, and a session on its database held by someone else."""
    url = fresh_database(pg_admin)
    PostgresCheckpointStore(url).latest_indices(CP.origin, CP.outbox)  # the table exists
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    connection = engine.connect()
    yield url, connection
    connection.close()  # releases every lock it held: a worker still waiting (old code) ends
    engine.dispose()


def finishes(call: Callable[[], object], within: float) -> tuple[bool, BaseException | None, float]:
    """Run ``call`` in a daemon thread: did it return or raise within ``within`` seconds?"""
    outcome: list[BaseException | None] = []
    started = time.monotonic()

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    return (not thread.is_alive(), outcome[0] if outcome else None, time.monotonic() - started)


def test_a_held_publish_lock_fails_publish_in_one_line_within_the_lock_timeout(
    hostile: tuple[str, sa.Connection], short_lock_timeout: int
) -> None:
    url, holder = hostile
    lock = publish_lock_id(SlotKey(CP.origin, CP.outbox, CP.index, SIGNER))
    holder.execute(sa.select(sa.func.pg_advisory_lock(lock)))  # a session lock: held
    holder.commit()
    store = PostgresCheckpointStore(url)
    done, error, took = finishes(lambda: store.publish(signed(CP, by=KEY)), within=10)
    assert done, "publish waited on a held lock without a limit"
    assert isinstance(error, CheckpointStoreBusy), error
    text = str(error)
    assert "\n" not in text and f"signer 0x{SIGNER.hex()}" in text and "nothing written" in text
    assert took < 5
    assert store.signatures(CP.origin, CP.outbox, CP.index) == []
    holder.execute(sa.select(sa.func.pg_advisory_unlock(lock)))
    holder.commit()
    store.publish(signed(CP, by=KEY))  # the next poll's try lands
    assert store.signed_by(CP, SIGNER)


def test_a_first_use_that_fails_leaves_the_store_usable(
    pg_admin: sa.Engine, short_lock_timeout: int
) -> None:
    """The table is made in the first transaction; if that one fails (here: a held publish
    lock), the CREATE is rolled back with it, and the next use must make it again."""
    url = fresh_database(pg_admin)
    holder_engine = sa.create_engine(url, poolclass=sa.NullPool)
    lock = publish_lock_id(SlotKey(CP.origin, CP.outbox, CP.index, SIGNER))
    store = PostgresCheckpointStore(url)
    with holder_engine.connect() as holder:
        holder.execute(sa.select(sa.func.pg_advisory_lock(lock)))
        holder.commit()
        with pytest.raises(CheckpointStoreBusy):
            store.publish(signed(CP, by=KEY))
    holder_engine.dispose()
    store.publish(signed(CP, by=KEY))
    assert store.signed_by(CP, SIGNER)


def test_a_held_create_lock_does_not_stop_opening_an_existing_store(
    hostile: tuple[str, sa.Connection], short_lock_timeout: int
) -> None:
    url, holder = hostile
    holder.execute(sa.select(sa.func.pg_advisory_lock(_CREATE_LOCK)))
    holder.commit()

    def open_and_use() -> None:
        store = PostgresCheckpointStore(url)
        store.publish(signed(CP, by=KEY))
        assert store.signed_by(CP, SIGNER)

    done, error, _ = finishes(open_and_use, within=10)
    assert done and error is None, error


def test_a_role_that_may_only_read_the_table_reads_the_store(pg_admin: sa.Engine) -> None:
    """The relayer needs SELECT only; CREATE TABLE IF NOT EXISTS would need CREATE on the
    schema (PostgreSQL checks it before IF NOT EXISTS)."""
    url = fresh_database(pg_admin)
    writer = PostgresCheckpointStore(url)
    writer.publish(signed(CP, by=KEY))
    role = f"reader_{next(_roles)}_{int(time.time())}"
    owner = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with owner.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        connection.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        connection.exec_driver_sql(f"GRANT SELECT ON checkpoint_store TO {role}")
    owner.dispose()
    reader_url = sa.make_url(url).set(username=role, password=None)
    reader = PostgresCheckpointStore(reader_url.render_as_string(hide_password=False))
    assert [s.signer for s in reader.signatures(CP.origin, CP.outbox, CP.index)] == [SIGNER]
    with pytest.raises(CheckpointStoreError, match="permission denied"):
        reader.publish(signed(CP, by=OTHER))  # and it cannot write signatures: one line


def test_readers_given_the_committee_read_only_its_members_slots(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of slots planted under invented signer names cost a reader given the
    committee nothing: they are not even fetched (a misplaced slot that was read would be
    warned about: none is)."""
    genuine = signed(CP, by=KEY)
    place.store.publish(genuine)
    for n in range(40):  # each a genuine signature under a name that is not its signer's
        place.forge(genuine, name=(n + 1).to_bytes(20, "big"))
    members = [SIGNER, address_of(OTHER)]
    with caplog.at_level(logging.WARNING, logger="passerelle.checkpoints"):
        found = place.store.signatures(CP.origin, CP.outbox, CP.index, members)
        indices = place.store.latest_indices(CP.origin, CP.outbox, members)
    assert [s.signer for s in found] == [SIGNER]
    assert indices == [CP.index]
    assert not [r for r in caplog.records if "ignoring" in r.getMessage()]


def test_the_memory_of_warned_slots_is_bounded(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_WARNED_SLOTS == 1024
    monkeypatch.setattr(checkpoints, "MAX_WARNED_SLOTS", 16)  # the same code, fewer rows
    genuine = signed(CP, by=KEY)
    for n in range(16 + 10):
        place.plant(
            CP.origin,
            CP.outbox,
            CP.index,
            f"0x{(n + 1).to_bytes(20, 'big').hex()}",
            genuine.to_json(),
        )
    assert place.store.signatures(CP.origin, CP.outbox, CP.index) == []  # all misplaced
    assert len(place.store._warned) == 16


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://relayer:hunter2@db.example:54x2/x",  # not a port: ValueError
        "postgresql+psycopg://relayer@127.0.0.1:1/x?password=hunter2",  # libpq takes it there
        "postgresql+psycopg://relayer@127.0.0.1:1/x?sslpassword=hunter2&sslmode=require",
    ],
)
def test_a_bad_or_unreachable_url_is_one_line_without_its_password(url: str) -> None:
    with pytest.raises(CheckpointStoreError) as refused:
        open_checkpoint_store(url).latest_indices(CP.origin, CP.outbox)
    text = str(refused.value)
    assert "hunter2" not in text and "\n" not in text and text.startswith("checkpoint store ")
