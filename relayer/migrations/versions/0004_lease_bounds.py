"""Bounds on the lease rows (review of the leases, hostile database member): ``schema_version`` 4.

Revision ID: 0004
Revises: 0003

Any role that can write the ledger's database can write the lease tables, and every relayer
reads them each round. Rows that no relayer writes are refused by CHECK constraints:

- ``leases.token`` between 0 and 2**53 - 2: a token at BIGINT's end made every claim's
  ``token + 1`` fail, so nobody could ever take that lease again (and a float on the way
  keeps every value exactly);
- ``leases.expires_at`` / ``claimed_at`` / ``updated_at`` and ``lease_holders.seen_at`` /
  ``started_at``: finite seconds since 1970 below 10**11 (the year 5138). ``Infinity`` (a lease
  held for ever) and ``NaN`` (which PostgreSQL orders above every number) are out;
- names: a lease name of 1 to 64 characters, a holder of 1 to 128 (SQLite does not enforce a
  VARCHAR's length; PostgreSQL did already for the upper bound).

What a CHECK cannot say (a heartbeat in the future, an expiry far beyond any lease: they depend
on the clock) the relayers bound themselves (relayer/leases.py, ``FROM_THE_FUTURE``).

Rows that do not pass are garbage by the definition above and are deleted (a relayer
re-creates a lease row it needs); the others keep their tokens (fencing goes on from where it
was). PostgreSQL adds the constraints in place. SQLite cannot add a constraint to a table; as
both tables hold only what relayers re-create as they run and nothing references them, the
revision rebuilds them inside the migration's one transaction: the old table renamed, the new
one created with its constraints, the rows that pass copied over, the old one dropped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_HOLDER = sa.String(length=128)
_TIME_LIMIT = "100000000000"  # 10**11 seconds: literal, as the constraint's text must stay
_TOKEN_LIMIT = "9007199254740991"  # 2**53 - 1, relayer.leases.TOKEN_LIMIT at this revision


def _time(column: str) -> str:
    # NaN fails "< limit" on PostgreSQL (NaN sorts above everything); SQLite stores NaN as NULL,
    # which NOT NULL refuses.
    return f"{column} >= 0 AND {column} < {_TIME_LIMIT}"


_LEASE_CHECKS = (
    ("ck_leases_token", f"token >= 0 AND token < {_TOKEN_LIMIT}"),
    ("ck_leases_name", "length(name) BETWEEN 1 AND 64"),
    ("ck_leases_holder", "holder IS NULL OR length(holder) BETWEEN 1 AND 128"),
    (
        "ck_leases_times",
        f"{_time('expires_at')} AND {_time('claimed_at')} AND {_time('updated_at')}",
    ),
)
_HOLDER_CHECKS = (
    ("ck_lease_holders_holder", "length(holder) BETWEEN 1 AND 128"),
    ("ck_lease_holders_times", f"{_time('seen_at')} AND {_time('started_at')}"),
)


def _rebuild(
    table: str, columns: list[sa.Column[object]], checks: tuple[tuple[str, str], ...]
) -> None:
    passing = " AND ".join(f"({condition})" for _, condition in checks)
    if op.get_bind().dialect.name == "postgresql":
        # PostgreSQL adds a CHECK in place (and checks the rows left: none can fail it).
        op.execute(f"DELETE FROM {table} WHERE NOT ({passing})")
        for name, condition in checks:
            op.create_check_constraint(name, table, condition)
        return
    # SQLite cannot add a constraint to a table: a new table, the rows that pass, the old
    # one dropped (nothing references these tables, so foreign_keys does not get in the way).
    names = ", ".join(column.name for column in columns)
    op.rename_table(table, f"{table}_0003")
    op.create_table(
        table,
        *columns,
        *(sa.CheckConstraint(condition, name=name) for name, condition in checks),
    )
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_0003 WHERE {passing}")
    op.drop_table(f"{table}_0003")


def upgrade() -> None:
    # Every name and type is a literal (as in 0001 and 0003): this revision must build the same
    # tables for as long as it exists, whatever the models become.
    _rebuild(
        "leases",
        [
            sa.Column("name", sa.String(length=64), primary_key=True),
            sa.Column("holder", _HOLDER, nullable=True),
            sa.Column("token", sa.BigInteger(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.Column("claimed_at", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
        ],
        _LEASE_CHECKS,
    )
    _rebuild(
        "lease_holders",
        [
            sa.Column("holder", _HOLDER, primary_key=True),
            sa.Column("seen_at", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=False),
        ],
        _HOLDER_CHECKS,
    )
