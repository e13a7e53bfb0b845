"""The ledger's database under operators' mistakes and hostile neighbours (review rev-ops).

* Who may use a ledger at once (:meth:`Ledger.in_use`): relayers share it; a rebuild and a
  migration need it alone. A second rebuild, a relayer during a rebuild, a migration under a
  relayer: each refused in one line, on SQLite and PostgreSQL.
* A rebuild's "unfinished" marker is not an invitation once a relayer has delivered from that
  ledger.
* Bad locations (a port that is not a number, a password in the query string) and a schema
  version written with non-ASCII digits: one line, no password, never "internal error".
* The database may be shared with another application that uses Alembic: its
  ``alembic_version`` is not ours.
* PostgreSQL reads are bounded (``statement_timeout``), connections too (``connect_timeout``,
  keepalives).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from test_ledger import Backend, tx_for
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_substrate_route import config_toml

from relayer import rebuild as rebuild_module
from relayer.config import Config, load_config
from relayer.ledger import (
    LedgerError,
    LedgerInUse,
    LedgerSchemaError,
    ledger_schema,
    migrate_ledger,
    open_ledger,
    shown_database_url,
)
from relayer.rebuild import RebuildRefused, _claim, _write_marker, rebuild
from relayer.relay import Relayer


def config_for(location: str, tmp_path: Path) -> Config:
    """The three-EVM-chain test config (no chain runs: nothing here gets that far), its ledger
    at ``location``."""
    text = config_toml().replace('location = "ledger.db"', f'location = "{location}"')
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    return load_config(path)


# --------------------------------------------------------------------------------------------
# Exclusion


def test_a_second_rebuild_or_a_relayer_is_refused_while_a_rebuild_runs(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first rebuild is held inside its scan; a second one on the same ledger (another
    terminal, a systemd restart) and a relayer are refused at once — without the lock, the
    second took the first's "incomplete" marker for an unfinished run and scanned alongside."""
    location = backend.fresh("rebuild")
    config = config_for(location, tmp_path)
    handles = [open_ledger(location) for _ in range(3)]  # three processes' connections
    scanning = trio.Event()
    release = trio.Event()
    entered: list[str] = []

    async def held_scan(_relayer: Relayer, lane: Any, _timeout: float, _progress: Any) -> None:
        entered.append(lane.chain.name)
        scanning.set()
        await release.wait()

    monkeypatch.setattr(rebuild_module, "_scan_origin", held_scan)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rebuild, config, handles[0])
            with trio.fail_after(20):
                await scanning.wait()
            with trio.fail_after(10), pytest.raises(LedgerInUse) as second:
                await rebuild(config, handles[1])
            assert "\n" not in str(second.value) and "a ledger rebuild" in str(second.value)
            with trio.fail_after(10), pytest.raises(LedgerInUse, match="a relayer needs it"):
                await Relayer(config, handles[2]).run()
            assert len(entered) == 1  # only the first rebuild ever scanned
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        for handle in handles:
            handle.close()


def test_relayers_share_the_ledger_and_exclude_a_rebuild_or_a_migration(
    backend: Backend, tmp_path: Path
) -> None:
    location = backend.fresh("shared")
    config = config_for(location, tmp_path)
    first, second, third = (open_ledger(location) for _ in range(3))
    try:
        with first.in_use(exclusive=False, by="a relayer"):
            with second.in_use(exclusive=False, by="a relayer"):  # two relayers: fine
                pass
            with pytest.raises(LedgerInUse, match="a migration needs it exclusive"):
                migrate_ledger(location)
            with pytest.raises(LedgerInUse, match="a ledger rebuild needs it exclusive"):
                trio.run(rebuild, config, third)
            assert third.messages(limit=1) == [] and third.get_cursor(1) is None
        # The relayer stopped: the lock went with it.
        assert migrate_ledger(location).after == ledger_schema(location).head
        with (
            second.in_use(exclusive=True, by="a migration"),
            pytest.raises(LedgerInUse),
            first.in_use(exclusive=False, by="a relayer"),
        ):
            pass
    finally:
        for handle in (first, second, third):
            handle.close()


def test_an_unfinished_rebuild_is_not_resumed_once_a_relayer_delivered_from_it(
    backend: Backend, tmp_path: Path
) -> None:
    """A partial rebuild is safe to relay from; but once a relayer has sent transactions from
    it, the ledger holds history no chain can give back, and a rebuild "resuming" into it
    would mix two pasts."""
    location = backend.fresh("resume")
    config = config_for(location, tmp_path)
    with open_ledger(location) as ledger:
        _write_marker(ledger, {"state": "incomplete", "started_at": 1.0})
        assert _claim(ledger, config) is True  # untouched since: resumed
        ledger.record_transaction(tx_for())
        with pytest.raises(RebuildRefused, match="a relayer has delivered from it"):
            _claim(ledger, config)


# --------------------------------------------------------------------------------------------
# Bad locations and versions


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://relayer:hunter2@db.example:54x2/ledger",  # ValueError in make_url
        "postgresql+psycopg://relayer@127.0.0.1:1/ledger?password=hunter2",
        "postgresql+psycopg://relayer@127.0.0.1:1/ledger?sslpassword=hunter2&sslmode=require",
    ],
)
def test_a_bad_or_unreachable_location_is_one_line_without_its_password(url: str) -> None:
    for call in (ledger_schema, open_ledger, migrate_ledger):
        with pytest.raises(LedgerError) as refused:
            call(url)
        text = str(refused.value)
        assert "hunter2" not in text and "\n" not in text, (call.__name__, text)


def test_a_password_in_the_query_string_is_never_shown(backend: Backend) -> None:
    if backend.admin is None:
        pytest.skip("a PostgreSQL URL")
    location = backend.fresh("querypw") + "?password=hunter2&application_name=passerelle"
    with open_ledger(location) as ledger:
        assert "hunter2" not in ledger.location
    found = ledger_schema(location)
    assert "hunter2" not in found.location and "hunter2" not in str(found.as_json())
    assert "hunter2" not in str(migrate_ledger(location).as_json())
    assert shown_database_url("postgresql://u:pw@h/d?password=x") == (
        "postgresql://u:***@h/d?password=***"
    )


def test_a_schema_version_in_non_ascii_digits_is_refused_in_one_line(tmp_path: Path) -> None:
    """``'²'.isdigit()`` is True and ``int('²')`` raises: a ledger_meta version written with
    such digits must be "not recognised", not an internal error."""
    location = str(tmp_path / "legacy.db")
    open_ledger(location).close()
    with sqlite3.connect(location) as raw:
        for table in ("alembic_version", "passerelle_alembic_version"):
            raw.execute(f"DROP TABLE IF EXISTS {table}")
        raw.execute("UPDATE ledger_meta SET value = '²' WHERE key = 'schema_version'")
    for call in (ledger_schema, open_ledger, migrate_ledger):
        with pytest.raises(LedgerSchemaError, match="no schema version Passerelle can recognise"):
            call(location)


# --------------------------------------------------------------------------------------------
# A database shared with another Alembic application


def test_another_applications_alembic_version_is_neither_read_nor_written(
    backend: Backend,
) -> None:
    location = backend.fresh("neighbour")
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
        )
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('9f3c2a7b1d04')")
    with open_ledger(location) as ledger:  # an empty ledger: created, not "newer"
        assert ledger.messages() == []
    assert ledger_schema(location).state == "current"
    with engine.connect() as connection:
        theirs = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert theirs == [("9f3c2a7b1d04",)]
    engine.dispose()


# --------------------------------------------------------------------------------------------
# Timeouts (PostgreSQL)


def test_postgresql_reads_and_connections_are_bounded(backend: Backend) -> None:
    if backend.admin is None:
        pytest.skip("PostgreSQL settings")
    with open_ledger(backend.fresh("bounded")) as ledger, ledger._reading() as session:
        connection = session.connection()
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
        raw = connection.connection.dbapi_connection
        assert raw is not None
        parameters = raw.info.get_parameters()
        assert parameters.get("connect_timeout") == "10"
        assert parameters.get("keepalives") == "1"
