"""The measured relay runs: several routes at once on one devnet, with 1 relayer on SQLite and
1, 2 and 4 ``passerelle relay --index I`` processes sharing one PostgreSQL ledger, then one
relayer's memory while 10,000 messages wait.

The devnet (``devnet up --evm-chains 3 --postgres``, no Asset Hub) has alpha, beta and delta,
linked both ways: six routes, each chain the origin of two and the destination of two, so a
phase's work is nine leased tasks (scan, collect and deliver for each chain). Three attesters
run throughout. Each phase starts its relayers, waits until they have caught up with the
messages of the phases before it and (PostgreSQL) until every one holds a lease, reads the
counters, sends ``per_route`` pre-signed dispatches on every route at once, waits until each
has its ``Delivered`` on its destination, reads the counters again and stops the relayers.

The SQLite run is first, on a config that differs from the devnet's only in ``[ledger]
location`` (a file): a fresh ledger scans each origin from block 0, so it must not have other
phases' messages to catch up on; the PostgreSQL ledger catches up on them before its first
counters are read.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.evm.chain import DISPATCH_TOPIC
from benchmarks.bench_relay import host
from benchmarks.bench_relay.chains import EvmRpc
from benchmarks.bench_relay.load import SEND_BATCH, chunks, send_raw, sign_dispatches
from benchmarks.bench_scale import pgstats
from benchmarks.harness import HarnessError, Procs, delivered_blocks, wait_for
from relayer.config import Config

CHAINS = ("alpha", "beta", "delta")
ROUTES = tuple((a, b) for a in CHAINS for b in CHAINS if a != b)
STATS_FLUSH = 1.2  # s: a backend reports its counters at most once a second (pgstats)


@dataclass
class PhaseResult:
    """One phase, raw."""

    name: str
    relayers: int
    messages: int = 0
    delivered: int = 0
    sign_seconds: float = 0.0
    wall_seconds: float = 0.0  # first broadcast → every Delivered seen
    delivery_times: list[int] = field(default_factory=list)  # block timestamp per delivery
    db: pgstats.DbCounters | None = None
    server_cpu: float | None = None
    relayer_cpu: float = 0.0
    attester_cpu: float = 0.0  # the three attesters together, same window
    memory_kb: list[dict[str, int]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # step → median seconds
    load: str = ""

    @property
    def sustained(self) -> float | None:
        """Messages/s from the first to the last delivery block over all destinations (block
        timestamps; the messages of the first second not counted), as bench_relay's rate."""
        times = sorted(self.delivery_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - times.count(times[0])) / (times[-1] - times[0])

    @property
    def end_to_end(self) -> float | None:
        return self.delivered / self.wall_seconds if self.wall_seconds else None


class _NoncesAhead(EvmRpc):
    """An origin's RPC as :func:`sign_dispatches` sees it: the client's pending nonce counts
    the ``signed`` transactions of this burst not broadcast yet, so that several routes from
    one origin are signed before any is sent (all routes start at once)."""

    def __init__(self, rpc: EvmRpc, signed: int) -> None:
        super().__init__(rpc.url, rpc.http)
        self.signed = signed

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        answer = super().call(method, params)
        if method == "eth_getTransactionCount":
            return hex(int(answer, 16) + self.signed)
        return answer


class Devnet:
    """The running devnet as the phases use it: its config, chains and counters."""

    def __init__(self, config: Config, rpcs: dict[str, EvmRpc], postmaster: int | None) -> None:
        self.config, self.rpcs, self.postmaster = config, rpcs, postmaster
        self.attesters: list[int] = []  # pids of the attesters running throughout
        self.body = 0  # the next message body's number
        self.sent = 0

    def sign(self, per_route: Sequence[tuple[str, str, int]]) -> dict[str, list[str]]:
        """Pre-signed dispatches (origin → raw transactions, consecutive nonces from the
        client key's pending nonce) for each ``(origin, destination, count)``, to the
        destination's Ping (:func:`benchmarks.bench_relay.load.sign_dispatches`)."""
        raw: dict[str, list[str]] = {}
        for origin, destination, count in per_route:
            target = self.config.chain(destination)
            signed = raw.setdefault(origin, [])
            signed += sign_dispatches(
                self.config,
                self.config.chain(origin),
                _NoncesAhead(self.rpcs[origin], len(signed)),
                count,
                self.body,
                destination=target.domain,
                recipient=target.contract("ping").rjust(32, b"\0"),
            )
            self.body += count  # bodies are numbered across phases: each message is unique
        return raw

    def broadcast(self, raw: dict[str, list[str]]) -> None:
        """Every origin's transactions, the origins interleaved batch by batch."""
        pieces = {origin: chunks(txs, SEND_BATCH) for origin, txs in raw.items()}
        for k in range(max(len(p) for p in pieces.values())):
            for origin, parts in pieces.items():
                if k < len(parts):
                    send_raw(self.rpcs[origin], parts[k])
        self.sent += sum(len(txs) for txs in raw.values())

    def heads(self) -> dict[str, int]:
        return {name: rpc.block_number() + 1 for name, rpc in self.rpcs.items()}

    def dispatched(self, since: dict[str, int]) -> set[str]:
        """Ids of the messages dispatched on every chain from ``since``."""
        ids: set[str] = set()
        for name in CHAINS:
            outbox = self.config.chain(name).contract("outbox")
            for entry in self.rpcs[name].logs(outbox, DISPATCH_TOPIC, since[name]):
                ids.add(entry["topics"][1].lower())
        return ids

    def delivered(self, since: dict[str, int]) -> dict[str, int]:
        """Id → timestamp of its delivery block, on every chain from ``since``."""
        out: dict[str, int] = {}
        for name in CHAINS:
            rpc, inbox = self.rpcs[name], self.config.chain(name).contract("inbox")
            if since[name] > rpc.block_number():
                continue
            blocks = delivered_blocks(rpc.url, inbox, since[name])
            stamps = rpc.timestamps(set(blocks.values()))
            out.update({i: stamps[b] for i, b in blocks.items()})
        return out


def sqlite_config(config_path: Path, ledger_file: str) -> Path:
    """A copy of the devnet's config whose ``[ledger] location`` is ``ledger_file`` (beside
    it): the one difference between the SQLite run and the PostgreSQL ones."""
    text = config_path.read_text()
    changed, count = re.subn(
        r'(?m)^(\[ledger\]\nlocation = )"[^"\n]*"$', rf'\g<1>"{ledger_file}"', text
    )
    if count != 1:
        raise HarnessError(f"{config_path}: no [ledger] location line to replace")
    path = config_path.with_name("passerelle-sqlite.toml")
    path.write_text(changed)
    return path


def ledger_counts(location: str) -> tuple[int, int, int]:
    """(messages, delivered, final) in the ledger at ``location`` (a database URL or a SQLite
    file), read with plain SQL, not the code being measured."""
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT status, count(*) FROM messages GROUP BY status")
            ).all()
    except sa.exc.OperationalError:  # the relayer has not created the file or table yet
        return 0, 0, 0
    finally:
        engine.dispose()
    by = {str(status).lower(): int(n) for status, n in rows}
    return sum(by.values()), by.get("delivered", 0), by.get("final", 0)


STAGES = ("final", "attested", "submitted")
"""The ledger's steps timed per phase. Not ``delivered``: the ledger records it once the
delivery block is final on the destination (three blocks later), after the phase has ended on
the chain's ``Delivered`` event."""


def stage_medians(location: str, ids: set[str], since: float) -> dict[str, float]:
    """Median seconds of each step of this phase's messages, from its first broadcast
    (``since``, wall clock) to ``final``, then between the statuses, from the ledger's
    ``status_events`` (the first time each message reached each status), with plain SQL."""
    url = location if "://" in location else f"sqlite:///{location}"
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT message_id, to_status, min(at) FROM status_events WHERE at >= :t "
                    "GROUP BY message_id, to_status"
                ),
                {"t": since},
            ).all()
    finally:
        engine.dispose()
    reached: dict[str, dict[str, float]] = {}
    for message_id, status, at in rows:
        if message_id in ids and status is not None:
            reached.setdefault(message_id, {})[str(status).lower()] = float(at)
    steps: dict[str, list[float]] = {}
    for times in reached.values():
        previous, label = since, "sent"
        for status in STAGES:
            if status not in times:
                break
            steps.setdefault(f"{label} → {status}", []).append(times[status] - previous)
            previous, label = times[status], status
    return {step: statistics.median(values) for step, values in steps.items()}


def leases_spread(url: str, relayers: int) -> bool:
    """Every lease held, by ``relayers`` distinct holders (plain SQL)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            holders = [h for (h,) in connection.execute(sa.text("SELECT holder FROM leases"))]
    finally:
        engine.dispose()
    return bool(holders) and None not in holders and len(set(holders)) == relayers


def run_phase(
    net: Devnet,
    procs: Procs,
    name: str,
    relayers: int,
    ledger: str,
    per_route: int,
    *,
    poll: float | None,
) -> PhaseResult:
    """Start ``relayers`` relayers on ``procs``' config (ledger at ``ledger``), wait until they
    are caught up, send ``per_route`` messages on every route, measure until all are
    delivered, stop them."""
    result = PhaseResult(name, relayers)
    postgres = "://" in ledger
    names = [f"relayer-{name}-{k}" for k in range(relayers)]
    extra = () if poll is None else ("--poll", str(poll))
    try:
        for k, process in enumerate(names):
            procs.start(process, "relay", "--index", str(k), *extra)
        for process in names:
            procs.wait_relaying(process, timeout=60)
        wait_for(
            lambda: ledger_counts(ledger)[1] >= net.sent,
            f"{name}: the relayers to catch up with the {net.sent} earlier messages",
            timeout=120,
            poll=0.5,
            alive=lambda: procs.check_running(*names),
        )
        if postgres:
            wait_for(
                lambda: leases_spread(ledger, relayers),
                f"{name}: the leases spread over {relayers} relayers",
                timeout=60,
                poll=0.3,
                alive=lambda: procs.check_running(*names),
            )
        pids = [procs.running[p].pid for p in names]
        since = net.heads()
        signing = time.monotonic()
        raw = net.sign([(a, b, per_route) for a, b in ROUTES])
        result.sign_seconds = time.monotonic() - signing
        result.messages = sum(len(txs) for txs in raw.values())
        cpu_before = sum(host.cpu_seconds(pid) or 0.0 for pid in pids)
        attesters_before = sum(host.cpu_seconds(pid) or 0.0 for pid in net.attesters)
        db_before = pgstats.counters(ledger) if postgres else None
        server_before = pgstats.server_times(net.postmaster) if postgres else None
        started, sent_at = time.monotonic(), time.time()
        net.broadcast(raw)
        ids: set[str] = set()
        seen: dict[str, int] = {}

        def all_delivered() -> bool:
            nonlocal ids, seen
            if len(ids) < result.messages:
                ids = net.dispatched(since)
            seen = {i: t for i, t in net.delivered(since).items() if i in ids}
            return len(ids) >= result.messages and len(seen) >= len(ids)

        try:
            wait_for(
                all_delivered,
                f"{name}: {result.messages} deliveries",
                timeout=90 + result.messages / 10,
                poll=0.3,
                alive=lambda: procs.check_running(*names),
            )
        except HarnessError as error:
            print(f"  {error}")
        result.wall_seconds = time.monotonic() - started
        result.delivered, result.delivery_times = len(seen), list(seen.values())
        time.sleep(STATS_FLUSH)  # the backends' last counters reach pg_stat_database
        result.relayer_cpu = sum(host.cpu_seconds(pid) or 0.0 for pid in pids) - cpu_before
        attesters_after = sum(host.cpu_seconds(pid) or 0.0 for pid in net.attesters)
        result.attester_cpu = attesters_after - attesters_before
        if db_before is not None and server_before is not None:
            result.db = pgstats.counters(ledger) - db_before
            result.server_cpu = pgstats.server_cpu_between(
                server_before, pgstats.server_times(net.postmaster)
            )
        result.memory_kb = [host.proc_status(pid) for pid in pids]
        result.stages = stage_medians(ledger, ids, sent_at)
        result.load = host.load_average()
    finally:
        for process in names:
            if process in procs.running:
                procs.stop(process)
    return result


@dataclass
class MemoryResult:
    """The relayer's memory with ``pending`` messages recorded and waiting."""

    pending: int
    sign_seconds: float = 0.0
    scan_seconds: float = 0.0  # relayer start → every message recorded in its ledger
    memory_kb: dict[str, int] = field(default_factory=dict)
    samples_kb: list[int] = field(default_factory=list)  # VmRSS while they wait


def run_pending(
    net: Devnet, procs: Procs, ledger: str, pending: int, *, poll: float | None
) -> MemoryResult:
    """Attesters stopped (nothing new can be attested, so nothing can be delivered), send
    ``pending`` messages spread over the routes, start one relayer: once it has recorded all
    of them (``final``, waiting for a checkpoint), sample its memory."""
    result = MemoryResult(pending)
    for process in [p for p in procs.running if p.startswith("attester")]:
        procs.stop(process)
    _, _, final_before = ledger_counts(ledger)
    share, extra_one = divmod(pending, len(ROUTES))
    plan = [(a, b, share + (k < extra_one)) for k, (a, b) in enumerate(ROUTES)]
    signing = time.monotonic()
    raw = net.sign(plan)
    result.sign_seconds = time.monotonic() - signing
    net.broadcast(raw)
    name = "relayer-pending"
    extra = () if poll is None else ("--poll", str(poll))
    started = time.monotonic()
    relayer = procs.start(name, "relay", "--index", "0", *extra)
    try:
        wait_for(
            lambda: ledger_counts(ledger)[2] - final_before >= pending,
            f"the relayer to record the {pending} pending messages",
            timeout=180,
            poll=0.5,
            alive=lambda: procs.check_running(name),
        )
        result.scan_seconds = time.monotonic() - started
        for _ in range(5):  # a few seconds of it holding them (its polls go on)
            result.samples_kb.append(host.proc_status(relayer.pid).get("VmRSS", 0))
            time.sleep(1.0)
        result.memory_kb = host.proc_status(relayer.pid)
    finally:
        procs.stop(name)
    return result
