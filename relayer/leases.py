"""Leases: several relayers share the routes of one ledger, each share worked by one of them.

The relaying work is cut as Hermes cuts its workers, per task and chain: one lease for each
``scan:<origin domain>``, ``collect:<origin domain>`` and ``deliver:<destination domain>``, and
``unpaid`` when some route delivers paid messages only (the task kinds of
:mod:`relayer.relay`). A relayer runs a task only while it holds that task's lease; the rows
live in the ledger's database (table ``leases``), beside the work they guard.

One round every :attr:`LeaseBoard.round_seconds` (a quarter of the lease), in ONE transaction
(:meth:`relayer.ledger.Ledger.lease_transaction`):

1. heartbeat: this relayer's row in ``lease_holders`` says it is alive now;
2. renew: each lease it holds is extended to ``now + lease_seconds`` — if it still has this
   holder and token and has not expired; otherwise it is lost and its task stops;
3. balance: with ``live`` relayers seen within a lease period, a relayer holds at most
   ``ceil(leases / live)`` of them (its share). Above it, it gives the surplus back (stops the
   task, then frees the row), so a relayer that starts late still gets work; below it,
4. claim: it takes free or expired leases up to its share. On PostgreSQL the candidate rows
   are read ``FOR UPDATE SKIP LOCKED``: two relayers claiming at the same instant lock
   different rows and never both get one; on SQLite the file's write lock serialises claims.
   Each claim hands out the next fencing token (the row's ``token + 1``).

Fencing. The task of a lease runs under :func:`relayer.ledger.fenced_by` its holder and token:
every ledger write it makes (the families' too) checks, in the write's own transaction, that the
lease row still has them, else :class:`relayer.ledger.LeaseLost` and nothing is written. A
relayer that stopped for a while (SIGSTOP, a stalled VM, a partition) and comes back after its
lease expired and another relayer took it cannot record over its successor: its token is stale.
On PostgreSQL the fenced writes of different origins and destinations also run side by side:
each takes its own domain's lock, not the ledger's (:func:`relayer.ledger.write_domain`; the
``unpaid`` sweep, which spans routes, still writes alone).

Stopping in time. A task runs in a cancel scope whose deadline is ``lease_seconds - round``
after the start of the round that last renewed it (trio's monotonic clock; the renewal set the
expiry at least ``lease_seconds`` after that start on the database's clock). A relayer that
cannot renew — its database connection hangs, its rounds are late — therefore stops the task
itself a round before its lease can expire; fencing covers what a clock cannot (a write already
in flight when the process froze).

Takeover. A killed relayer renews nothing: its leases expire at most ``lease_seconds`` after its
last renewal, and the other relayers' next round (at most a round later) takes them. Work left
half done is picked up from the ledger: a delivery transaction recorded but never mined is
settled by the new holder (dropped → delivered again; the inbox makes a replay a no-op, and
counts it as ``AlreadyDelivered``).

Clocks. Expiry times are the database's clock (``clock_timestamp()`` on PostgreSQL, the SQLite
file's machine otherwise), never the relayers', so relayers on machines whose clocks disagree
still agree on when a lease expires.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import sqlalchemy as sa
import trio
from sqlalchemy.dialects import postgresql, sqlite

from relayer.config import MAX_LEASE_SECONDS
from relayer.ledger import (
    Fence,
    LeaseHolderRecord,
    LeaseLost,
    LeaseRecord,
    Ledger,
    LedgerBusy,
    LedgerDeadlock,
    LedgerError,
    WriteOutsideDomain,
    _one_line,
    fenced_by,
)

log = logging.getLogger("passerelle.relayer.leases")


def _first_line(errors: Sequence[BaseException]) -> str:
    """The first of a task's errors, on one line (the rest are the same failure, or noise)."""
    return _one_line(errors[0]) if errors else "no detail"


DEFAULT_LEASE_SECONDS = 15.0
"""``[relayer] lease_seconds`` when not configured: a killed relayer's work waits at most about
this long (plus a round) before another relayer takes it over."""
ROUNDS_PER_LEASE = 4
"""Rounds (heartbeat, renew, claim) per lease period: a lease is renewed three times before it
could expire, so one slow round costs nothing."""
MIN_WRITE_TIMEOUT_SECONDS = 2.0
"""Floor of a leasing relayer's write statement timeout (a quarter lease otherwise) and of its
idle-transaction bound (a lease otherwise): under it a busy database on a loaded machine would
fail ordinary writes and churn leases for nothing (:func:`leasing`)."""
FORGET_AFTER = 20
"""Lease periods after which a silent relayer's ``lease_holders`` row is deleted (a relayer that
restarts comes back under a new name: the table must not grow with every restart)."""
NAME_LIMIT = 64
HOLDER_LIMIT = 128
TOKEN_LIMIT = 2**53 - 1
"""Fencing tokens stay below this (migration 0004's CHECK ``token < TOKEN_LIMIT``: a row at
BIGINT's end would make every ``token + 1`` fail, so nobody could ever take the lease again;
2**53 - 1 also survives a float on the way). The largest token a claim hands out is therefore
``TOKEN_LIMIT - 1``, and a row must be below ``TOKEN_LIMIT - 1`` to be taken at all
(:meth:`LeaseBoard._bad_token`)."""
FROM_THE_FUTURE = MAX_LEASE_SECONDS
"""A lease row that expires more than this after the database's now was not written by a
relayer (none renews for longer than the longest configurable lease): a database member's
garbage, taken as expired (with one WARNING line) rather than held for ever."""

_L = LeaseRecord.__table__.c  # type: ignore[attr-defined]
_H = LeaseHolderRecord.__table__.c  # type: ignore[attr-defined]
_LEASE_TABLE: sa.Table = LeaseRecord.__table__  # type: ignore[attr-defined]
_HOLDER_TABLE: sa.Table = LeaseHolderRecord.__table__  # type: ignore[attr-defined]


class LeaseSetupError(ValueError):
    """Lease names, holder or period that cannot work (a programming or configuration error)."""


class KeyInUse(LedgerError):
    """Another live relayer holds this relayer's key lease (``key:<address>``): two processes
    sending with one key take each other's nonces and replace each other's transactions.
    Nothing was started."""


class KeyHeld(KeyInUse):
    """The key lease is held by another holder, unexpired, and was not seen renewed yet: that
    holder may have died a moment ago (:func:`pin_key` waits to find out). ``seen`` is the row
    as read (holder, token, expiry), ``wait`` the seconds until it expires."""

    def __init__(self, message: str, seen: tuple[str, int, float], wait: float) -> None:
        super().__init__(message)
        self.seen = seen
        self.wait = wait


class KeyLeaseLost(LedgerError):
    """This relayer's key lease was taken by another process (this one paused past it, then
    another relayer started with the same key): it must stop at once, sending nothing more."""


def shown_holder(holder: object) -> str:
    """A holder name as it may be logged. The name comes from a database row any member can
    write: control characters (a forged log line, a terminal escape) become ``?`` and the name
    is cut to :data:`HOLDER_LIMIT` characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(holder)[: HOLDER_LIMIT + 1])
    return text if len(text) <= HOLDER_LIMIT else text[:HOLDER_LIMIT] + "…"


@contextmanager
def leasing(ledger: Ledger, lease_seconds: float) -> Iterator[None]:
    """The ledger of a relayer that shares its routes through leases of ``lease_seconds``,
    inside the block; every setting is put back on the way out.

    - every write must be fenced (:attr:`Ledger.require_fence`): one from outside a lease could
      record over another relayer's work;
    - on PostgreSQL a write statement or lease round waits at most a quarter lease
      (:attr:`Ledger.write_timeout`, at least :data:`MIN_WRITE_TIMEOUT_SECONDS`): a write stuck
      behind a frozen writer fails as ``LedgerBusy`` and its task gives the lease up;
    - and a transaction left idle a lease period is ended by the server
      (:attr:`Ledger.idle_timeout`, at least that floor, never above its own setting). A
      relayer frozen inside a fenced write holds its lease row's lock (the fence check is an
      UPDATE): its successor's claim skips locked rows, so the takeover waited for the server
      to end that session (10 s by default, long after short leases expired). A transaction
      idle a whole lease has lost its lease anyway: its own keeper's renewal waits behind the
      same row lock."""
    saved = (ledger.require_fence, ledger.write_timeout, ledger.idle_timeout)
    ledger.write_timeout = max(lease_seconds / ROUNDS_PER_LEASE, MIN_WRITE_TIMEOUT_SECONDS)
    ledger.idle_timeout = min(ledger.idle_timeout, max(lease_seconds, MIN_WRITE_TIMEOUT_SECONDS))
    ledger.require_fence = True
    try:
        yield
    finally:
        ledger.require_fence, ledger.write_timeout, ledger.idle_timeout = saved


def key_lease_name(address: bytes) -> str:
    """The lease a relayer holds for its whole life for the key it sends with (20-byte EVM
    address): one key, one relay process."""
    return "key:0x" + address.hex()


def lease_period(configured: float | None, ledger: Ledger) -> float | None:
    """How long ``passerelle relay``'s leases are, or None when it does not lease.

    On when ``[relayer] lease_seconds`` is set, or when the ledger is on PostgreSQL (with
    :data:`DEFAULT_LEASE_SECONDS`): a database several machines reach is there to be shared, and
    a relayer alone on it simply holds every lease. A SQLite ledger without the setting is one
    relayer's, exactly as before leases existed (the demo, every single-machine setup): no
    lease rows, no fencing, no rounds."""
    if configured is not None:
        return configured
    return DEFAULT_LEASE_SECONDS if ledger.engine.dialect.name == "postgresql" else None


def new_holder_name() -> str:
    """A name for this relayer process, unique across machines and restarts: host, pid and
    random bits (a restarted process must not pass for the one that held a lease before)."""
    return f"{socket.gethostname()[:80]}/{os.getpid()}/{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease taken in a round; ``previous`` is the holder whose expired lease it was, None
    when the lease was free (never held, or given back)."""

    fence: Fence
    previous: str | None = None
    expired_for: float = 0.0
    """Seconds the lease had been expired when it was taken (0 when it was free)."""


@dataclass(frozen=True, slots=True)
class Round:
    """What one :meth:`LeaseBoard.round` did, at ``now`` (the database's clock)."""

    now: float
    renewed: tuple[Fence, ...] = ()
    lost: tuple[Fence, ...] = ()
    claimed: tuple[Claim, ...] = ()
    surplus: tuple[Fence, ...] = ()
    """Held leases beyond this relayer's share: stop their tasks, then release them."""
    live: int = 1
    share: int = 0
    pinned_lost: tuple[Fence, ...] = ()
    """Pinned leases (:meth:`LeaseBoard.pin`) that could not be renewed: the relayer stops."""


class LeaseBoard:
    """The lease rows of one relayer process: blocking calls (run them in a worker thread).

    ``names`` are the leases this relayer can work (its configuration's tasks), ``holder`` its
    unique name (:func:`new_holder_name`), ``lease_seconds`` how long a claim or renewal holds.
    ``clock`` replaces the database's clock (tests); leave it None otherwise.
    """

    def __init__(
        self,
        ledger: Ledger,
        names: Sequence[str],
        *,
        holder: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not names or len(set(names)) != len(names):
            raise LeaseSetupError(f"lease names must be distinct, and at least one: {list(names)}")
        too_long = [name for name in names if not 0 < len(name) <= NAME_LIMIT]
        if too_long:
            raise LeaseSetupError(f"lease names must have 1 to {NAME_LIMIT} characters: {too_long}")
        if not 0 < len(holder) <= HOLDER_LIMIT:
            raise LeaseSetupError(f"a holder name has 1 to {HOLDER_LIMIT} characters")
        if not (math.isfinite(lease_seconds) and lease_seconds > 0):
            raise LeaseSetupError(f"lease_seconds must be a positive number, not {lease_seconds}")
        self.ledger = ledger
        self.names = tuple(names)
        self.holder = holder
        self.lease_seconds = float(lease_seconds)
        self._clock = clock
        self._postgres = ledger.engine.dialect.name == "postgresql"
        self.pinned: dict[str, Fence] = {}
        """Leases held for the relayer's whole life (:meth:`pin`), renewed every round, never
        balanced nor given back before :meth:`leave`."""
        self._reported: set[tuple[str, str]] = set()
        # (lease or holder, problem) already logged: a bad row is reported once, not per round.

    @property
    def round_seconds(self) -> float:
        """Time between two rounds: a quarter of the lease."""
        return self.lease_seconds / ROUNDS_PER_LEASE

    # ---- the round -------------------------------------------------------------------------

    def round(self, held: Mapping[str, Fence], avoid: Collection[str] = ()) -> Round:
        """Heartbeat, renew ``held``, balance and claim, in one transaction (module docstring).

        ``held`` is what the caller believes it holds; the answer says which of those are
        renewed and which are lost, what was claimed, and what is beyond this relayer's share.
        Leases in ``avoid`` are not claimed (the keeper's backoff after LedgerBusy)."""
        with self.ledger.lease_transaction() as connection:
            now = self._now(connection)
            self._create_rows(connection, now)
            self._heartbeat(connection, now)
            # A pinned lease is renewed even past its expiry while its row still has this
            # holder and token: it fences no ledger write, it only says whose key this is, and
            # an unchanged token proves nobody pinned it meanwhile (a relayer frozen for a
            # while goes on; one whose key another process took stops).
            pinned_lost = tuple(
                fence
                for fence in self.pinned.values()
                if not self._renew(connection, fence, now, expired_too=True)
            )
            if pinned_lost:
                # This relayer is about to stop (LeaseKeeper raises KeyLeaseLost): it renews
                # and claims nothing more, so it leaves no lease behind that nobody runs; what
                # it held its keeper gives back on the way out (leave()).
                return Round(now, pinned_lost=pinned_lost)
            renewed: list[Fence] = []
            lost: list[Fence] = []
            for fence in sorted(held.values(), key=lambda f: f.name):
                (renewed if self._renew(connection, fence, now) else lost).append(fence)
            live = self._live(connection, now)
            share = math.ceil(len(self.names) / live)
            surplus = tuple(renewed[share:]) if len(renewed) > share else ()
            claimed: tuple[Claim, ...] = ()
            if len(renewed) < share:
                skip = {fence.name for fence in renewed} | set(avoid)
                claimed = self._claim(connection, now, share - len(renewed), skip)
            return Round(
                now, tuple(renewed), tuple(lost), claimed, surplus, live, share, pinned_lost
            )

    def pin(self, name: str, *, seen: tuple[str, int, float] | None = None) -> Fence:
        """Take lease ``name`` for this relayer's whole life (its key's: :func:`key_lease_name`)
        and renew it every round from now on. One attempt; nothing is taken when it raises:

        - :class:`KeyHeld` while another holder has it unexpired (a holder that died frees it
          when it expires, at most a lease period after its last round: :func:`pin_key` waits
          for that, passing the row it saw back as ``seen``);
        - :class:`KeyInUse` (one line) if the row differs from ``seen``: its holder renewed it
          meanwhile, so it is alive and sends with this key; or if the row is unusable."""
        if not 0 < len(name) <= NAME_LIMIT or name in self.names:
            raise LeaseSetupError(
                f"a pinned lease needs its own name of 1 to {NAME_LIMIT} characters"
            )
        with self.ledger.lease_transaction() as connection:
            now = self._now(connection)
            self._create(connection, now, [name])
            row = sa.select(_L.holder, _L.token, _L.expires_at).where(_L.name == name)
            if self._postgres:
                row = row.with_for_update()  # two starting at once: the second sees the first
            holder, token, expires_at = connection.execute(row).one()
            if self._bad_token(name, token):
                raise KeyInUse(f"lease {name}: its row is unusable (token {token}); see the log")
            if holder not in (None, self.holder) and now < expires_at <= now + FROM_THE_FUTURE:
                current = (holder, token, expires_at)
                if seen is not None and current != seen:
                    raise KeyInUse(
                        f"another relayer ({shown_holder(holder)}) is running with this key "
                        f"({name}, renewed while this one waited): stop it first, or give "
                        "each relayer its own key (--index)"
                    )
                raise KeyHeld(
                    f"lease {name} is held by {shown_holder(holder)} for "
                    f"{expires_at - now:.1f} s more",
                    current,
                    expires_at - now,
                )
            if not self._take(connection, name, token, now):  # pragma: no cover - the row is
                # locked (FOR UPDATE on PG, the file on SQLite): nobody can have moved it
                raise KeyInUse(f"lease {name} moved while this relayer took it; start it again")
        fence = Fence(name, self.holder, token + 1)
        self.pinned[name] = fence
        return fence

    def release(self, fences: Sequence[Fence]) -> int:
        """Give leases back (their tasks have stopped): free at once for any relayer, and any
        write still fenced by them fails. Returns how many were still held."""
        if not fences:
            return 0
        with self.ledger.lease_transaction() as connection:
            now = self._now(connection)
            freed = 0
            for fence in fences:
                freed += connection.execute(
                    sa.update(_LEASE_TABLE)
                    .where(
                        _L.name == fence.name,
                        _L.holder == fence.holder,
                        _L.token == fence.token,
                    )
                    .values(holder=None, expires_at=now, updated_at=now)
                ).rowcount
            return freed

    def leave(self, fences: Sequence[Fence]) -> None:
        """On a clean stop: release ``fences`` and remove this relayer from the live ones, so
        that the others take its share at their next round instead of a lease period later.
        The pinned leases (:meth:`pin`) are released too: the key is free for a new process."""
        self.release([*fences, *self.pinned.values()])
        self.pinned.clear()
        with self.ledger.lease_transaction() as connection:
            connection.execute(sa.delete(_HOLDER_TABLE).where(_H.holder == self.holder))

    def holdings(self) -> list[LeaseRecord]:
        """Every lease row (for ``status`` and the tests), by name."""
        with self.ledger.engine.connect() as connection:
            rows = connection.execute(sa.select(_LEASE_TABLE).order_by(_L.name)).all()
        return [LeaseRecord(**row._mapping) for row in rows]

    # ---- the steps -------------------------------------------------------------------------

    def _now(self, connection: sa.Connection) -> float:
        if self._clock is not None:
            return self._clock()
        dialect = connection.dialect.name
        if dialect == "postgresql":
            query = "SELECT extract(epoch FROM clock_timestamp())"
        elif dialect == "sqlite":
            query = "SELECT (julianday('now') - 2440587.5) * 86400.0"
        else:  # pragma: no cover - open_ledger makes SQLite and PostgreSQL ledgers only
            return time.time()
        return float(connection.execute(sa.text(query)).scalar_one())

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    def _create_rows(self, connection: sa.Connection, now: float) -> None:
        """The rows of this relayer's leases, free, where no relayer made them yet.

        Only the missing ones are inserted: on PostgreSQL an ``INSERT … ON CONFLICT`` meeting a
        row that another transaction has locked waits for it, and a fenced write holds its
        lease row until it commits — a claim must skip that row, not queue behind it."""
        self._create(connection, now, self.names)

    def _create(self, connection: sa.Connection, now: float, names: Sequence[str]) -> None:
        existing = set(connection.execute(sa.select(_L.name).where(_L.name.in_(names))).scalars())
        rows = [
            {
                "name": name,
                "holder": None,
                "token": 0,
                "expires_at": now,
                "claimed_at": now,
                "updated_at": now,
            }
            for name in names
            if name not in existing
        ]
        if rows:
            connection.execute(self._insert(_LEASE_TABLE).on_conflict_do_nothing(), rows)

    def _heartbeat(self, connection: sa.Connection, now: float) -> None:
        insert = self._insert(_HOLDER_TABLE).values(holder=self.holder, seen_at=now, started_at=now)
        connection.execute(
            insert.on_conflict_do_update(index_elements=["holder"], set_={"seen_at": now})
        )
        # Long-silent relayers, and rows "seen" in the future (no relayer writes those: a
        # database member's garbage, which would count as live and shrink every share).
        stale = sa.select(_H.holder).where(
            sa.or_(
                _H.seen_at < now - FORGET_AFTER * self.lease_seconds,
                _H.seen_at > now + self.lease_seconds,
            )
        )
        if self._postgres:
            # A row another transaction holds (a relayer frozen mid-round, until the server
            # ends its session) is skipped, not waited for: the next round deletes it.
            stale = stale.with_for_update(skip_locked=True)
        doomed = list(connection.execute(stale).scalars())
        if doomed:
            connection.execute(sa.delete(_HOLDER_TABLE).where(_H.holder.in_(doomed)))

    def _renew(
        self, connection: sa.Connection, fence: Fence, now: float, *, expired_too: bool = False
    ) -> bool:
        # Only an unexpired lease: once expired it may have been taken (or be taken next), and
        # a task must never believe it holds a lease across a gap.
        unexpired = sa.true() if expired_too else _L.expires_at > now
        return (
            connection.execute(
                sa.update(_LEASE_TABLE)
                .where(
                    _L.name == fence.name,
                    _L.holder == fence.holder,
                    _L.token == fence.token,
                    unexpired,
                )
                .values(expires_at=now + self.lease_seconds, updated_at=now)
            ).rowcount
            == 1
        )

    def _live(self, connection: sa.Connection, now: float) -> int:
        """Relayers seen within a lease period, this one included (it just beat)."""
        count = connection.execute(
            sa.select(sa.func.count()).where(
                _H.seen_at >= now - self.lease_seconds, _H.seen_at <= now + self.lease_seconds
            )
        ).scalar_one()
        return max(1, int(count))

    def _claim(
        self, connection: sa.Connection, now: float, wanted: int, skip: set[str]
    ) -> tuple[Claim, ...]:
        """Take up to ``wanted`` free or expired leases of this relayer's ``names`` but
        ``skip`` (those renewed this round, and those avoided).

        A row this relayer holds but is not renewing (its task stopped on its own) counts as
        free too: it is taken again under the next token."""
        candidates = (
            sa.select(_L.name, _L.holder, _L.token, _L.expires_at)
            .where(
                _L.name.in_([name for name in self.names if name not in skip]),
                sa.or_(
                    _L.holder.is_(None),
                    _L.expires_at <= now,
                    _L.expires_at > now + FROM_THE_FUTURE,  # garbage: see FROM_THE_FUTURE
                    _L.holder == self.holder,
                ),
            )
            .order_by(_L.name)
            .limit(wanted)
        )
        if self._postgres:
            # Rows another relayer is claiming right now are skipped, not waited for: it gets
            # them, this one takes the next ones (or nothing, and tries again next round).
            candidates = candidates.with_for_update(skip_locked=True)
        claims: list[Claim] = []
        for name, holder, token, expires_at in connection.execute(candidates).all():
            if self._bad_token(name, token):
                continue
            if expires_at > now + FROM_THE_FUTURE:
                self._report(
                    name,
                    "expiry",
                    f"leases: {name} claims to be held by {shown_holder(holder)} until "
                    f"{expires_at!r}, beyond any lease: taken as expired",
                )
            try:
                # Its own SAVEPOINT: a row the database refuses to hand over (a constraint or a
                # trigger this code does not know) costs that one claim, never the round's
                # renewals of every other lease in the same transaction.
                with connection.begin_nested():
                    taken = self._take(connection, name, token, now)
            except sa.exc.IntegrityError as refused:
                self._report(
                    name,
                    "refused",
                    f"leases: {name} cannot be taken, the database refuses it: "
                    f"{shown_holder(_one_line(refused.orig))}",
                )
                continue
            if not taken:  # pragma: no cover - the row is locked (PG) or the file is (SQLite):
                continue  # nobody can have moved it
            previous = shown_holder(holder) if holder not in (None, self.holder) else None
            claims.append(
                Claim(
                    Fence(name, self.holder, token + 1),
                    previous,
                    min(max(0.0, now - expires_at), FROM_THE_FUTURE)
                    if previous is not None
                    else 0.0,
                )
            )
        return tuple(claims)

    def _take(self, connection: sa.Connection, name: str, token: int, now: float) -> bool:
        """Hand lease ``name`` (at ``token``) to this relayer under the next token."""
        return (
            connection.execute(
                sa.update(_LEASE_TABLE)
                .where(_L.name == name, _L.token == token)
                .values(
                    holder=self.holder,
                    token=token + 1,
                    expires_at=now + self.lease_seconds,
                    claimed_at=now,
                    updated_at=now,
                )
            ).rowcount
            == 1
        )

    def _bad_token(self, name: str, token: int) -> bool:
        """A token that cannot be taken: negative (no relayer hands one out), or so large that
        ``token + 1`` would break the CHECK (``TOKEN_LIMIT - 2`` is the last one that can be
        taken: the CHECK itself admits ``TOKEN_LIMIT - 1``, a row a member can plant). Reported
        once, in one line, and the row left alone; on a database without migration 0004's
        CHECK it also keeps tokens exact as floats."""
        if 0 <= token < TOKEN_LIMIT - 1:
            return False
        self._report(
            name, "token", f"leases: {name} has token {token}, outside 0..{TOKEN_LIMIT - 2}"
        )
        return True

    def _report(self, subject: str, problem: str, line: str) -> None:
        if (subject, problem) not in self._reported:
            self._reported.add((subject, problem))
            log.warning("%s (a row no relayer wrote; check who writes this database)", line)


async def pin_key(board: LeaseBoard, name: str, limiter: trio.CapacityLimiter) -> Fence:
    """:meth:`LeaseBoard.pin` ``name``, waiting for a holder that may have died.

    A relayer restarted right after it was killed (a supervisor restarts it within
    milliseconds) finds its own dead process's key lease, unexpired for up to a lease period.
    Refusing at once would fail the restart, and a supervisor that gives up after a few quick
    failures would leave the relay stopped for good. So this polls once a round, saying so in
    one line: if the row expires unchanged, the holder is dead and the lease is taken (next
    token); if the holder renews it (the row changes), it is alive and this raises
    :class:`KeyInUse`. At most the holder's remaining lease plus a round. Cancellable between
    attempts (each attempt is one short transaction in a worker thread)."""
    seen: tuple[str, int, float] | None = None
    while True:
        try:
            return await trio.to_thread.run_sync(
                partial(board.pin, name, seen=seen), limiter=limiter
            )
        except KeyHeld as held:
            if seen is None:
                log.warning(
                    "%s: waiting up to %.1f s to see whether it is alive (it renews: this "
                    "relayer stops) or died (it expires: this relayer takes it)",
                    held,
                    held.wait + board.round_seconds,
                )
            seen = held.seen
            # Wake just past its expiry when that comes before the next round.
            await trio.sleep(min(board.round_seconds, held.wait + 0.05))


# --------------------------------------------------------------------------------------------
# Running tasks under their leases


class LeaseCounters(Protocol):
    """Where the keeper counts (``RelayerMetrics`` has these fields)."""

    leases_claimed: int
    lease_takeovers: int
    leases_lost: int


@dataclass
class _Running:
    fence: Fence
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)
    stopping: bool = False  # cancelled by the keeper (lost, surplus), not by its deadline


class LeaseKeeper:
    """Runs ``tasks[name]()`` exactly while this relayer holds lease ``name``.

    Each task runs in a cancel scope with a deadline (the module docstring, "Stopping in
    time") and under :func:`relayer.ledger.fenced_by` its lease. A task that ends with
    :class:`LeaseLost` (its fenced write was refused), with :class:`LedgerBusy` (a write that
    waited longer than its bound: a frozen writer holds the database; or one the database
    cancelled to break a deadlock between relayers on crossing routes) or at its deadline gives
    the lease up, and a later round claims it again (this relayer or another; after LedgerBusy
    the lease is released at once and this relayer leaves it to the others for a lease
    period); any other
    exception a task raises ends the keeper and the relayer, as without leases. A pinned lease
    (:meth:`LeaseBoard.pin`, the relayer's key) that cannot be renewed ends the relayer with
    :class:`KeyLeaseLost`: another process now sends with its key.
    """

    def __init__(
        self,
        board: LeaseBoard,
        tasks: Mapping[str, Callable[[], Awaitable[None]]],
        counters: LeaseCounters,
    ) -> None:
        missing = set(board.names) ^ set(tasks)
        if missing:
            raise LeaseSetupError(f"leases and tasks differ: {sorted(missing)}")
        self.board = board
        self.tasks = dict(tasks)
        self.counters = counters
        self.held: dict[str, Fence] = {}
        """Leases held (claimed or renewed, not lost nor given back), by name."""
        self._running: dict[str, _Running] = {}
        self._cooling: dict[str, float] = {}
        # Lease name -> trio time until which it is not claimed again (its task met LedgerBusy:
        # give a relayer whose database path is quicker a lease period to take it).
        # Rounds never queue behind the relayer's own ledger calls (its limiter of one).
        self._limiter = trio.CapacityLimiter(1)

    @property
    def margin(self) -> float:
        """How long before its lease could expire a task stops when renewals fail: a round."""
        return self.board.round_seconds

    def holding(self) -> dict[str, int]:
        """Leases held by kind (``scan``, ``collect``, ``deliver``, ``unpaid``), for metrics."""
        kinds: dict[str, int] = {}
        for name in self.held:
            kind = name.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def held_domains(self, kind: str) -> set[int]:
        """The chain domains of the ``<kind>:<domain>`` leases held (``scan``: the origins this
        relayer scans now, ``deliver``: the destinations it delivers to), for readiness."""
        return {
            int(domain)
            for held_kind, _, domain in (name.partition(":") for name in self.held)
            if held_kind == kind and domain.isdigit()
        }

    async def run(self) -> None:
        """Rounds until cancelled; then every task has stopped and the leases are given back."""
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    began = trio.current_time()
                    avoid = {name for name, until in self._cooling.items() if until > began}
                    self._cooling = {name: self._cooling[name] for name in avoid}
                    try:
                        result = await trio.to_thread.run_sync(
                            self.board.round, dict(self.held), avoid, limiter=self._limiter
                        )
                    except LedgerError as exc:
                        # The tasks stop at their deadlines if this goes on: nothing else to do.
                        log.warning("leases: round failed: %s", exc)
                    else:
                        if result.pinned_lost:
                            # Tasks are cancelled by the nursery on the way out; the pinned
                            # lease is not ours, so leave() must not touch it.
                            lost = result.pinned_lost[0]
                            self.board.pinned.pop(lost.name, None)
                            raise KeyLeaseLost(
                                f"lease {lost.name} was taken by another relayer (this one "
                                "paused past it?): stopping, it sends with the same key"
                            )
                        await self._apply(result, began, nursery)
                    await trio.sleep_until(began + self.board.round_seconds)
        finally:
            held = list(self.held.values())
            self.held.clear()
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self.board.leave, held, limiter=self._limiter)
                except LedgerError as exc:
                    log.warning("leases: could not give back %d lease(s): %s", len(held), exc)

    async def _apply(self, result: Round, began: float, nursery: trio.Nursery) -> None:
        deadline = began + self.board.lease_seconds - self.margin
        for fence in result.lost:
            self._lost(fence, "not renewed in time (expired or taken over)")
            await self._stop(fence.name)
        for fence in result.renewed:
            running = self._running.get(fence.name)
            if running is not None and running.fence == fence:
                running.scope.deadline = deadline
        for fence in result.surplus:
            log.info(
                "leases: giving %s back (%d relayers share %d leases: %d each)",
                fence.name,
                result.live,
                len(self.board.names),
                result.share,
            )
            self.held.pop(fence.name, None)
            await self._stop(fence.name)
            try:
                await trio.to_thread.run_sync(self.board.release, [fence], limiter=self._limiter)
            except LedgerError as exc:  # then it is free once it expires: later, not never
                log.warning("leases: could not give %s back: %s", fence.name, exc)
        for claim in result.claimed:
            await self._stop(claim.fence.name)  # a task that stopped itself, held again
            self.held[claim.fence.name] = claim.fence
            self.counters.leases_claimed += 1
            if claim.previous is not None:
                self.counters.lease_takeovers += 1
                log.warning(
                    "leases: took %s over from %s (expired %.1f s ago)",
                    claim.fence.name,
                    claim.previous,
                    claim.expired_for,
                )
            else:
                log.info("leases: holding %s (token %d)", claim.fence.name, claim.fence.token)
            running = _Running(claim.fence, trio.CancelScope(deadline=deadline))
            self._running[claim.fence.name] = running
            nursery.start_soon(self._hold, running, name=f"{claim.fence.name}_loop")

    def _lost(self, fence: Fence, why: str) -> None:
        if self.held.get(fence.name) == fence:
            del self.held[fence.name]
            self.counters.leases_lost += 1
            log.warning("leases: lost %s (token %d): %s", fence.name, fence.token, why)

    async def _give_back(self, fence: Fence) -> None:
        """Release ``fence``'s lease, best effort: the lease transaction takes no write lock,
        but the database may still be too slow; then the lease expires."""
        try:
            await trio.to_thread.run_sync(self.board.release, [fence], limiter=self._limiter)
        except LedgerError as exc:
            log.warning("leases: could not give %s back: %s", fence.name, exc)

    async def _stop(self, name: str) -> None:
        running = self._running.get(name)
        if running is not None:
            running.stopping = True
            running.scope.cancel()
            await running.done.wait()

    async def _hold(self, running: _Running) -> None:
        fence = running.fence
        try:
            with running.scope, fenced_by(fence):
                await self.tasks[fence.name]()
            # Here only when the task returned or its own scope stopped it (the keeper's
            # cancellation, a shutdown, passes through to the finally below instead).
            if running.scope.cancelled_caught:
                if not running.stopping:
                    # Its deadline: renewals were late. Stopped before the lease can expire;
                    # the next round takes it again (next token) if nobody else has.
                    self._lost(fence, "renewals late; stopped before the lease could expire")
            else:
                # The task returned: it has nothing left to do (the unpaid re-check once no
                # message can be unpaid). The lease stays held, idle, so that no other relayer
                # starts it again only to see it return; a successor runs it once if this one
                # dies.
                log.info("leases: %s has nothing left to do; holding it idle", fence.name)
        except* LeaseLost:
            self._lost(fence, "a fenced write found another holder")
        except* WriteOutsideDomain as outside:
            # This relayer's configuration disagrees with the chains (a domain id that is not
            # the chain's own): its task writes rows another lease's lock covers. Stopped, one
            # line, and never taken again by this relayer (it would do the same); given back,
            # so that a relayer configured right can take it. The other leases go on.
            log.error(
                "leases: stopped %s for good: %s", fence.name, _first_line(outside.exceptions)
            )
            self._cooling[fence.name] = math.inf
            # Out of `held` before the give-back, and not through `_lost` (this is no loss:
            # the one error line above says why). Left in `held`, every round would renew it
            # with no task behind it, so a failed give-back (a lease-transaction timeout, a
            # dropped connection) would keep the route from every relayer for good; and even a
            # give-back that works would show up at the next round as a false "lost" warning.
            if self.held.get(fence.name) == fence:
                del self.held[fence.name]
            await self._give_back(fence)
        except* LedgerBusy as busy:
            # The relayer lives on and gives the lease back at once. After a lock or statement
            # timeout it does not claim it again for a lease period: re-claimed at the next
            # round it would flap for ever on a slow database path (each time a new
            # connection, signer, settle), while a relayer that writes in time never got it.
            # A deadlock (LedgerDeadlock) says nothing about a slow path: the server failed one
            # writer of a cycle, so the lease is free to be claimed at the next round.
            first = _first_line(busy.exceptions)
            if all(isinstance(error, LedgerDeadlock) for error in busy.exceptions):
                self._lost(fence, f"the ledger broke a deadlock with this write ({first})")
            else:
                self._lost(fence, f"the ledger did not take a write in time ({first}); given up")
                self._cooling[fence.name] = trio.current_time() + self.board.lease_seconds
            await self._give_back(fence)
        finally:
            if self._running.get(fence.name) is running:
                del self._running[fence.name]
            running.done.set()
