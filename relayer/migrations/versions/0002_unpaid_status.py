"""Message status ``unpaid`` (issue #11, paid delivery): ``schema_version`` 2.

Revision ID: 0002
Revises: 0001

A message whose route delivers only paid messages, and that is not paid enough yet, waits as
``unpaid`` (docs/relayer.md, "Statuses"). Statuses are VARCHAR columns with a CHECK listing the
allowed values (no native enum type), so this revision only widens three CHECK constraints:
``ck_messages_status``, ``ck_events_from`` and ``ck_events_to``. No row changes: every stored
value is allowed before and after.

PostgreSQL drops and re-adds each constraint (``NOT VALID`` is not needed: the check of the
existing rows is the proof that nothing was stored outside the list).

SQLite cannot alter a constraint, and its usual answer - build a copy of the table, copy the
rows, drop the original, rename the copy (Alembic's batch mode) - does not work inside this
migration's single transaction: ``foreign_keys`` is on and cannot be turned off in a
transaction, and dropping ``messages`` while ``transaction_messages`` references it fails the
commit. SQLite documents a second procedure for exactly this kind of change (loosening a CHECK
constraint, which leaves every stored row valid: https://sqlite.org/lang_altertable.html,
"Making Other Kinds Of Table Schema Changes"): rewrite the table's CREATE statement in
``sqlite_schema`` under ``PRAGMA writable_schema`` and bump ``schema_version`` so that every
connection reloads the schema. It runs inside the migration's transaction (all or nothing like
everything else here); each rewrite must replace exactly the one list it expects, or the
revision fails and changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BEFORE = ("discovered", "final", "attested", "submitted", "delivered", "failed", "skipped")
_AFTER = (*_BEFORE, "unpaid")
# (table, column, constraint) of every CHECK that lists message statuses.
_CHECKS = (
    ("messages", "status", "ck_messages_status"),
    ("status_events", "from_status", "ck_events_from"),
    ("status_events", "to_status", "ck_events_to"),
)


def _allowed(values: tuple[str, ...]) -> str:
    # Exactly how revision 0001 wrote the list (its _one_of), so that the SQLite text matches.
    return ", ".join(f"'{value}'" for value in values)


class UnexpectedSchema(RuntimeError):
    """The stored schema is not the one this revision rewrites (or is not sound after it)."""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _upgrade_sqlite(bind)
        return
    for table, column, name in _CHECKS:
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, f"{column} IN ({_allowed(_AFTER)})")


def _upgrade_sqlite(bind: sa.Connection) -> None:
    stored: dict[str, str] = {
        str(name): str(sql)
        for name, sql in bind.execute(
            sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('messages', 'status_events')"
            )
        ).all()
    }
    rewritten: dict[str, str] = {}
    for table, column, _ in _CHECKS:
        sql = rewritten.get(table, stored.get(table, ""))
        old = f"{column} IN ({_allowed(_BEFORE)})"
        if sql.count(old) != 1:
            raise UnexpectedSchema(
                f"table {table}: expected one CHECK ({old}) in its schema, found {sql.count(old)}"
            )
        rewritten[table] = sql.replace(old, f"{column} IN ({_allowed(_AFTER)})")
    version = int(bind.execute(sa.text("PRAGMA schema_version")).scalar_one())
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    try:
        for table, sql in rewritten.items():
            bind.execute(
                sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :n"),
                {"sql": sql, "n": table},
            )
        # Other connections (and this one) re-read the schema when its version changes.
        bind.execute(sa.text(f"PRAGMA schema_version = {version + 1}"))
    finally:
        bind.execute(sa.text("PRAGMA writable_schema = OFF"))
    # Never skip: a schema edited by hand is checked as the SQLite procedure says to.
    problems = [row[0] for row in bind.execute(sa.text("PRAGMA integrity_check")).all()]
    if problems != ["ok"]:
        raise UnexpectedSchema(f"integrity check after widening the status CHECKs: {problems[:3]}")
