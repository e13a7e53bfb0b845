"""The ledger's schema migrations (relayer/migrations, Alembic) and what opening a ledger at
another version does, on SQLite and PostgreSQL (the ``backend`` fixture of tests/test_ledger.py).

"Today's schema" is frozen in tests/vectors/ledger/schema_v1.json: the statements that
``open_ledger`` ran at commit c5d2dfb, before migrations existed, captured from that commit's
code with ``sqlalchemy.create_mock_engine``. Revision 0001 must build exactly that, and a ledger
built from it must open with every row intact.

The "older" and "failing" cases need a revision this Passerelle does not ship: they run against
a copy of relayer/migrations with one more revision, by pointing ``MIGRATIONS_DIR`` at it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from test_ledger import ORIGIN, Backend, disc
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_substrate_route import config_toml

from relayer import cli
from relayer import ledger as ledger_module
from relayer.leases import LeaseBoard
from relayer.ledger import (
    LEDGER_TABLES,
    MIGRATIONS_DIR,
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    LedgerSchemaError,
    MessageStatus,
    count_slot,
    fenced_by,
    ledger_schema,
    migrate_ledger,
    open_ledger,
)
from relayer.relay import OPERATOR_RETRY

FROZEN_V1 = json.loads((Path(__file__).parent / "vectors/ledger/schema_v1.json").read_text())

HEAD = f"{SCHEMA_VERSION:04d}"
"""The newest revision this Passerelle ships."""
NEXT = f"{SCHEMA_VERSION + 1:04d}"
"""The revision of "a newer Passerelle" (``with_next``)."""

# A revision after HEAD that the tests add to a copy of the scripts: one new index, on both
# databases.
REVISION_NEXT = f'''
"""Test only: an index on scan_cursors.updated_at."""
from alembic import op

revision = "{NEXT}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_test_cursors_updated", "scan_cursors", ["updated_at"])
    {{tail}}
'''


# --------------------------------------------------------------------------------------------
# Helpers


def run_statements(backend: Backend, location: str, statements: list[str]) -> None:
    """Execute ``statements`` on a plain DB-API connection (not through the code under test)."""
    raw = backend.raw(location)
    try:
        for statement in statements:
            raw.execute(statement)
        raw.commit()
    finally:
        raw.close()


def query(backend: Backend, location: str, sql: str) -> list[tuple[Any, ...]]:
    raw = backend.raw(location)
    try:
        return [tuple(row) for row in raw.execute(sql).fetchall()]
    finally:
        raw.close()


def schema_of(backend: Backend, location: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the database says about its schema, alembic's own table left out: on SQLite
    the stored CREATE statements; on PostgreSQL the columns, constraints, indexes, triggers and
    the trigger function, as the server prints them."""
    if backend.admin is None:
        rows = query(
            backend,
            location,
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name != 'passerelle_alembic_version' ORDER BY type, name",
        )
        return {"sqlite_master": rows}
    public = "table_schema = 'public' AND table_name != 'passerelle_alembic_version'"
    return {
        "columns": query(
            backend,
            location,
            "SELECT table_name, column_name, ordinal_position, data_type, "
            "character_maximum_length, is_nullable, column_default "
            f"FROM information_schema.columns WHERE {public} ORDER BY 1, 3",
        ),
        "constraints": query(
            backend,
            location,
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "AND conrelid::regclass::text != 'passerelle_alembic_version' ORDER BY 1, 2",
        ),
        "indexes": query(
            backend,
            location,
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename != 'passerelle_alembic_version' "
            "ORDER BY 1, 2",
        ),
        "triggers": query(
            backend,
            location,
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
            "ORDER BY 1",
        ),
        "functions": query(
            backend,
            location,
            "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
        ),
    }


def all_rows(backend: Backend, location: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, in primary-key order, read with plain DB-API."""
    tables = {
        "messages": "id",
        "scan_cursors": "domain, stream",
        "checkpoints": "id",
        "checkpoint_signatures": "id",
        "transactions": "id",
        "transaction_messages": "transaction_id, message_id",
        "status_events": "id",
        "ledger_meta": "key",
    }
    # Every table but revision 0003's leases, which a legacy ledger does not have yet (and
    # which stay empty until relayers lease: test_leases.py), and revision 0005's counters,
    # derived from messages (filled by the migration: test_ledger_queries.py).
    assert set(tables) == LEDGER_TABLES - {"leases", "lease_holders", "message_counts"}
    return {
        t: query(backend, location, f"SELECT * FROM {t} ORDER BY {key}")
        for t, key in tables.items()
    }


def upgrade_to(location: str, revision: str) -> None:
    """Build an empty database up to ``revision`` (not the newest), as the ledger runs Alembic:
    on one connection, in one transaction."""
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            config = AlembicConfig()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, revision)
    finally:
        engine.dispose()


def revision_in_db(backend: Backend, location: str) -> list[tuple[Any, ...]]:
    return query(backend, location, "SELECT version_num FROM passerelle_alembic_version")


def legacy_ledger(backend: Backend) -> str:
    """A ledger as Passerelle c5d2dfb left it: its schema, no alembic_version, and traffic
    (messages at every stage, a checkpoint with a signature, a transaction, the audit trail)
    written through the unchanged data API on a bare engine (no open_ledger: no migration)."""
    location = backend.fresh("legacy")
    run_statements(backend, location, FROZEN_V1[backend.name])
    url = location if "://" in location else f"sqlite:///{location}"
    ledger = Ledger(sa.create_engine(url))
    try:
        ledger.record_discovered([disc(ORIGIN, n) for n in range(4)])
        ids = [m.id for m in ledger.messages()]
        ledger.transition(ids[:3], MessageStatus.FINAL)
        checkpoint = ledger.save_checkpoint(
            ORIGIN, b"\x0b" * 32, b"\x0c" * 32, 3, block_number=9, block_hash=b"\x0d" * 32
        )
        ledger.add_signature(checkpoint, b"\x01" * 20, b"\x02" * 65)
        ledger.transition(ids[:2], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        ledger.transition(ids[2:3], MessageStatus.SKIPPED, reason="spam")
        ledger.set_cursor(ORIGIN, 12, b"\x0e" * 32)
    finally:
        ledger.close()
    return location


@pytest.fixture
def with_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Call it to switch to "a newer Passerelle": a copy of the shipped revisions plus a NEXT
    (ending with ``tail``), used in place of relayer/migrations."""

    def switch(tail: str = "pass") -> None:
        copy = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "versions" / f"{NEXT}_test.py").write_text(REVISION_NEXT.replace("{tail}", tail))
        monkeypatch.setattr(ledger_module, "MIGRATIONS_DIR", copy)

    return switch


def passerelle(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process as its console entry point does; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def config_for(tmp_path: Path, location: str) -> Path:
    path = tmp_path / "passerelle.toml"
    path.write_text(
        config_toml().replace('location = "ledger.db"', f"location = {json.dumps(location)}")
    )
    return path


# --------------------------------------------------------------------------------------------
# The revisions themselves


def test_revisions_are_one_line_of_ordinals_ending_at_schema_version() -> None:
    scripts = ledger_module._scripts()
    revisions = list(reversed(list(scripts.walk_revisions())))
    assert [r.revision for r in revisions] == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert [r.down_revision for r in revisions] == [None] + [r.revision for r in revisions[:-1]]
    assert scripts.get_heads() == [f"{SCHEMA_VERSION:04d}"]


def test_revision_0001_builds_exactly_the_schema_of_the_code_before_migrations(
    backend: Backend,
) -> None:
    frozen = backend.fresh("frozen")
    run_statements(backend, frozen, FROZEN_V1[backend.name])
    migrated = backend.fresh("migrated")
    upgrade_to(migrated, "0001")
    assert schema_of(backend, migrated) == schema_of(backend, frozen)
    assert revision_in_db(backend, migrated) == [("0001",)]
    assert query(backend, migrated, "SELECT key, value FROM ledger_meta") == [
        ("schema_version", "1")
    ]


def test_a_model_changed_without_a_revision_fails_here(backend: Backend) -> None:
    """Alembic's autogenerate compares the models with a database built by the revisions: any
    difference means someone changed a table and forgot its migration (the diff is printed)."""
    location = backend.fresh("compare")
    open_ledger(location).close()
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url)

    def diff(metadata: sa.MetaData) -> list[Any]:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, _p: (
                        type_ != "table" or name in LEDGER_TABLES
                    ),
                },
            )
            return list(compare_metadata(context, metadata))

    try:
        assert diff(ledger_module._METADATA) == [], "add a revision to relayer/migrations"
        # ... and the check has teeth: a column added to a model (on a copy) is reported.
        changed = sa.MetaData()
        for table in ledger_module._METADATA.sorted_tables:
            table.to_metadata(changed)
        changed.tables["messages"].append_column(sa.Column("priority", sa.Integer()))
        assert [d[0] for d in diff(changed)] == ["add_column"]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# Opening at each version


def test_a_ledger_made_before_migrations_opens_with_every_row_intact(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    location = legacy_ledger(backend)
    assert revision_in_db_or_none(backend, location) is None
    before = all_rows(backend, location)
    assert len(before["messages"]) == 4 and len(before["status_events"]) > 4

    found = ledger_schema(location)
    assert (found.current, found.legacy, found.state) == ("0001", True, "behind")
    code, out, err = passerelle(
        capsys, "ledger", "migrate", "--config", str(config_for(tmp_path, location)), "--json"
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["before"] == "0001" and json.loads(out)["after"] == HEAD
    assert revision_in_db(backend, location) == [(HEAD,)]  # stamped and upgraded, not recreated
    after = all_rows(backend, location)
    assert after.pop("ledger_meta") == [("schema_version", str(SCHEMA_VERSION))]
    assert after == {k: v for k, v in before.items() if k != "ledger_meta"}
    with open_ledger(location) as ledger:
        assert len(ledger.messages()) == 4
        ledger.record_discovered([disc(ORIGIN, 9)])  # and it is a working ledger
    # The append-only triggers came with the old schema and are still there.
    with pytest.raises(Exception, match="append-only"):
        run_statements(backend, location, ["DELETE FROM status_events"])


def test_opening_a_ledger_made_before_migrations_asks_for_a_migration(backend: Backend) -> None:
    """Its tables are revision 0001's: behind this Passerelle's, so opening refuses (one line
    naming ``passerelle ledger migrate``) and changes nothing, not even a stamp."""
    location = legacy_ledger(backend)
    before = all_rows(backend, location)
    with pytest.raises(LedgerSchemaError, match="passerelle ledger migrate") as refused:
        open_ledger(location)
    assert "\n" not in str(refused.value)
    assert revision_in_db_or_none(backend, location) is None
    assert all_rows(backend, location) == before


def revision_in_db_or_none(backend: Backend, location: str) -> str | None:
    try:
        rows = revision_in_db(backend, location)
    except Exception:  # no version table at all
        return None
    return rows[0][0] if rows else None


def test_an_older_ledger_is_refused_until_migrated(
    backend: Backend,
    with_next: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    location = backend.fresh("older")
    open_ledger(location).close()  # at HEAD, with the shipped scripts
    with_next("pass")
    config = str(config_for(tmp_path, location))

    with pytest.raises(LedgerSchemaError) as refused:
        open_ledger(location)
    line = str(refused.value)
    assert "\n" not in line and f"{HEAD} is older" in line and f"({NEXT})" in line
    assert "passerelle ledger migrate" in line
    assert revision_in_db(backend, location) == [(HEAD,)]  # refusing changed nothing

    code, out, _ = passerelle(capsys, "ledger", "version", "--config", config, "--json")
    assert code == 1
    assert json.loads(out) | {"location": None} == {
        "location": None,
        "current": HEAD,
        "head": NEXT,
        "state": "behind",
        "legacy": False,
    }
    code, out, err = passerelle(capsys, "ledger", "migrate", "--config", config)
    assert (code, err) == (0, "")
    assert out.endswith(f": schema version {HEAD} → {NEXT}\n")
    assert revision_in_db(backend, location) == [(NEXT,)]
    assert query(backend, location, "SELECT value FROM ledger_meta") == [(str(int(NEXT)),)]
    open_ledger(location).close()
    code, out, _ = passerelle(capsys, "ledger", "migrate", "--config", config)
    assert (code, out.endswith(f": already at schema version {NEXT}\n")) == (0, True)


def test_a_newer_ledger_is_refused_and_left_alone(
    backend: Backend,
    with_next: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    location = backend.fresh("newer")
    with_next("pass")
    assert migrate_ledger(location).after == NEXT  # written by a "newer Passerelle"
    monkeypatch.setattr(ledger_module, "MIGRATIONS_DIR", MIGRATIONS_DIR)  # back to this one
    before = all_rows(backend, location)

    for attempt in (open_ledger, migrate_ledger):
        with pytest.raises(LedgerSchemaError) as refused:
            attempt(location)
        assert "\n" not in str(refused.value)
        assert f"{NEXT} is newer than this Passerelle's ({HEAD})" in str(refused.value)
    code, out, err = passerelle(
        capsys, "ledger", "migrate", "--config", str(config_for(tmp_path, location))
    )
    assert code == 1 and out == "" and err.count("\n") == 1 and "upgrade Passerelle" in err
    assert all_rows(backend, location) == before
    assert revision_in_db(backend, location) == [(NEXT,)]


@pytest.mark.parametrize("stored", ["0099", "00", "bogus"])
def test_an_unknown_revision_is_refused(backend: Backend, stored: str) -> None:
    """Alembic resolves unique prefixes ("00" finds "0001"): only an exact id is ours."""
    location = backend.fresh("unknown")
    open_ledger(location).close()
    run_statements(
        backend, location, [f"UPDATE passerelle_alembic_version SET version_num = '{stored}'"]
    )
    with pytest.raises(LedgerSchemaError, match=f"{stored} is newer"):
        open_ledger(location)
    assert ledger_schema(location).state == "ahead"


def test_a_failing_migration_leaves_the_database_as_it_was(
    backend: Backend, with_next: Callable[[str], None]
) -> None:
    location = backend.fresh("failing")
    with open_ledger(location) as ledger:
        ledger.record_discovered([disc(ORIGIN, 1)])
    before = all_rows(backend, location)
    schema = schema_of(backend, location)
    # The new index is created, then a statement fails: the index must not survive.
    with_next('op.execute("SELECT no_such_function()")')
    with pytest.raises(LedgerError) as failed:
        migrate_ledger(location)
    assert "\n" not in str(failed.value).strip()
    assert schema_of(backend, location) == schema
    assert all_rows(backend, location) == before
    assert revision_in_db(backend, location) == [(HEAD,)]


def test_tables_that_are_not_a_ledger_are_refused_and_other_stores_tables_ignored(
    backend: Backend,
) -> None:
    half = backend.fresh("half")
    run_statements(backend, half, ["CREATE TABLE messages (id TEXT PRIMARY KEY)"])
    with pytest.raises(LedgerSchemaError, match=r"no schema version .* recognise"):
        open_ledger(half)
    assert query(backend, half, "SELECT count(*) FROM messages") == [(0,)]
    # A database shared with another store (its own tables) is empty as far as the ledger goes.
    shared = backend.fresh("shared")
    run_statements(backend, shared, ["CREATE TABLE someone_elses (x INTEGER)"])
    open_ledger(shared).close()
    assert revision_in_db(backend, shared) == [(HEAD,)]


def test_version_reads_without_creating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "absent.db"
    config = str(config_for(tmp_path, str(location)))
    code, out, err = passerelle(capsys, "ledger", "version", "--config", config)
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf".*absent\.db: schema version none \(this Passerelle: {HEAD}; empty\)\n", out
    )
    assert not location.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(config_toml().replace('location = "ledger.db"', 'location = "nowhere/x.db"'))
    code, out, err = passerelle(capsys, "ledger", "migrate", "--config", str(bad))
    assert code != 0 and out == "" and err.count("\n") == 1 and "does not exist" in err


def test_an_unreachable_database_is_one_line_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_for(tmp_path, "postgresql+psycopg://op:hunter2@127.0.0.1:1/ledger"))
    for command in ("version", "migrate"):
        code, out, err = passerelle(capsys, "ledger", command, "--config", config)
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert err.startswith("passerelle: ledger") and "hunter2" not in err


def test_two_versions_at_once_are_refused(backend: Backend) -> None:
    """The version table with two rows (branches, or a hand edit) is no linear history."""
    location = backend.fresh("branches")
    open_ledger(location).close()
    run_statements(backend, location, ["INSERT INTO passerelle_alembic_version VALUES ('0000')"])
    with pytest.raises(LedgerSchemaError, match="unusable schema version") as refused:
        open_ledger(location)
    assert "\n" not in str(refused.value)


def test_revision_0006_keeps_the_counts_and_counts_each_writer_domain_apart(
    backend: Backend,
) -> None:
    """Revision 0006 adds ``slot`` to the counters' key (review RL, M2): a 0005 ledger's counts
    become slot 0's, unchanged; afterwards the triggers count a fenced write in its domain's
    slot on PostgreSQL (so writers of different domains never share a counter row) and in
    slot 0 on SQLite (one writer at a time), and ``counts_by_status`` sums the slots."""
    location = backend.fresh("slots")
    upgrade_to(location, "0005")
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url)
    old = Ledger(engine)  # the data API on the 0005 schema, as a relayer of that release wrote
    try:
        old.record_discovered([disc(ORIGIN, n) for n in range(4)])
        ids = [m.id for m in old.messages()]
        old.transition(ids[:3], MessageStatus.FINAL)
        old.transition(ids[2:3], MessageStatus.SKIPPED, reason="spam")
    finally:
        old.close()
        engine.dispose()
    counted = "SELECT origin, destination, status, {} FROM message_counts ORDER BY 1, 2, 3, 4"
    before = query(backend, location, counted.format("count"))
    upgrade_to(location, HEAD)
    assert query(backend, location, counted.format("slot, count")) == [
        (*row[:3], 0, row[3]) for row in before
    ]
    with open_ledger(location) as ledger:
        board = LeaseBoard(ledger, ("scan:1",), holder="a", lease_seconds=600)
        with fenced_by(board.round({}).claimed[0].fence):
            ledger.transition(ids[3:], MessageStatus.FINAL)
        counts = ledger.counts_by_status()
    assert (counts[MessageStatus.DISCOVERED], counts[MessageStatus.FINAL]) == (0, 3)
    assert counts[MessageStatus.SKIPPED] == 1
    slot = count_slot("scan:1") if backend.admin is not None else 0
    finals = "SELECT slot, count FROM message_counts WHERE status = 'final' ORDER BY 1"
    discovered = "SELECT slot, count FROM message_counts WHERE status = 'discovered' ORDER BY 1"
    if slot:
        assert query(backend, location, finals) == [(0, 2), (slot, 1)]
        assert query(backend, location, discovered) == [(0, 1), (slot, -1)]
    else:
        assert query(backend, location, finals) == [(0, 3)]
        assert query(backend, location, discovered) == [(0, 0)]


def test_revision_0007_reads_a_stuck_messages_newest_failures_from_its_own_index(
    backend: Backend,
) -> None:
    """Revision 0007 replaces the index on ``status_events (message_id)`` by one on
    ``(message_id, id)`` (review of FSEAM, L4): a 0006 ledger's events stay as they were,
    and the backoff's read (``Ledger.backoff_trail``: one message's newest counted events)
    walks that message's index entries newest first. With ``message_id`` alone, PostgreSQL
    walked the primary key backwards through every other message's events instead
    ("Rows Removed by Filter": one per event written since the message's counted ones)."""
    location = backend.fresh("events")
    upgrade_to(location, "0006")
    stuck = "0x" + "ab" * 32

    def events(message: str, count: int, reason: str) -> str:
        series = (
            f"generate_series(1, {count}) AS g(k)"
            if backend.admin is not None
            else f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {count}) SELECT i AS k FROM n) AS g"
        )
        return (
            "INSERT INTO status_events (message_id, from_status, to_status, reason, at) "
            f"SELECT {message}, 'attested', 'failed', {reason}, 1.0 FROM {series}"
        )

    # The reviewer's probe, halved: the events of 20,000 other messages, then one message failed
    # every 2 s by the old code (10,000 events), then every few minutes, 2,500 others' between.
    # A tenth of it on SQLite, whose plan does not depend on statistics (and is slower here).
    scale = 2 if backend.admin is not None else 10
    statements = [
        events(f"'0x{'0' * 58}' || CAST(100000 + k / 5 AS TEXT)", 200_000 // scale, "NULL"),
        events(f"'{stuck}'", 20_000 // scale, "'dry run reverted: old'"),
    ]
    for cycle in range(32):
        others = f"'0x{'0' * 57}' || CAST({1_000_000 + cycle * 5000} + k AS TEXT)"
        statements += [
            events(others, 5000 // scale, "NULL"),
            events(f"'{stuck}'", 1, "'dry run reverted'"),
        ]
    run_statements(backend, location, statements)
    before = all_rows(backend, location)["status_events"]
    upgrade_to(location, HEAD)
    assert all_rows(backend, location)["status_events"] == before
    run_statements(backend, location, ["ANALYZE"])
    read = (  # the shape of backoff_trail's page (its real statements: test_seam_leftovers)
        f"SELECT * FROM status_events WHERE message_id BETWEEN '{stuck}' AND '{stuck}' "
        "ORDER BY message_id DESC, id DESC LIMIT 64"
    )
    if backend.admin is None:
        indexes = query(
            backend, location, "SELECT name FROM sqlite_master WHERE tbl_name = 'status_events' "
            "AND type = 'index' AND sql IS NOT NULL",
        )  # fmt: skip
        plan = " ".join(str(row) for row in query(backend, location, f"EXPLAIN QUERY PLAN {read}"))
        assert "ix_status_events_message_id_id" in plan and "TEMP B-TREE" not in plan, plan
    else:
        indexes = query(
            backend, location, "SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'status_events' AND indexname != 'status_events_pkey'",
        )  # fmt: skip
        plan = " ".join(
            row[0] for row in query(backend, location, f"EXPLAIN (ANALYZE, COSTS OFF) {read}")
        )
        # No walk of the primary key through the others' events (0006: 155,000 of them), no
        # sort of the message's whole trail: a walk of its index entries, newest first.
        assert "ix_status_events_message_id_id" in plan and "Sort" not in plan, plan
        assert "Rows Removed" not in plan, plan
    assert indexes == [("ix_status_events_message_id_id",)]
    with open_ledger(location) as ledger:
        trail = ledger.backoff_trail(stuck, "dry run reverted", reset=OPERATOR_RETRY, newest=17)
    newest = [row[0] for row in before if row[1] == stuck][-17:]
    assert [e.id for e in trail] == newest
