"""Alembic's environment for the ledger: run the revisions on the caller's connection.

Alembic executes this file for every command. Passerelle never runs Alembic's own CLI: the
ledger (``relayer.ledger.migrate_ledger``) opens the database, takes its write lock, begins a
transaction and hands that connection over in ``config.attributes["connection"]``. Running
inside the caller's transaction is what makes a migration all-or-nothing: PostgreSQL has
transactional DDL, and SQLite does too as long as nothing commits behind our back (the ledger's
engine emits ``BEGIN IMMEDIATE`` itself, so the sqlite3 module's implicit commits never fire).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError(
            "the ledger migrations run through `passerelle ledger migrate`, not alembic's CLI"
        )
    context.configure(
        connection=connection,
        # Only the ledger's tables: a checkpoint store may share the database.
        include_name=lambda name, type_, _parents: type_ != "table" or name in _ledger_tables(),
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        # Not Alembic's default table: another application in this database may use that.
        version_table=_version_table(),
    )
    with context.begin_transaction():
        context.run_migrations()


def _version_table() -> str:
    from relayer.ledger import VERSION_TABLE  # noqa: PLC0415 - only when a migration runs

    return VERSION_TABLE


def _ledger_tables() -> frozenset[str]:
    from relayer.ledger import LEDGER_TABLES  # noqa: PLC0415 - only when a migration runs

    return LEDGER_TABLES


_run()
