"""Prometheus metrics and health probes: ``passerelle relay --metrics-port N`` and
``passerelle attest --metrics-port N``.

Three endpoints, bound to 127.0.0.1 only (put a proxy in front to expose them):

* ``/metrics`` — the text exposition (format 0.0.4) produced by ``prometheus_client``: the
  numbers an operator pages on — the backlog by status, deliveries, replays skipped (wasted
  relays), recipient failures, dry-run failures, gas and fees, per-endpoint RPC health.
* ``/healthz`` — liveness: 200 and ``{"status": "ok", "loop_lag_seconds": …}`` while the
  process's trio loop is responsive, 503 ``"stalled"`` when it woke a sleeping task more than
  :data:`LOOP_STALL_LIMIT` seconds late within the last :data:`LOOP_WINDOW` seconds
  (:class:`Heartbeat`: something blocked the loop). A loop blocked for good cannot answer at
  all: the probe's own timeout is then the signal.
* ``/readyz`` — readiness: 200 and ``{"ready": true, …}`` once the relay loops run, the ledger
  answers, and every route is within its :class:`ReadyLimits` (last scan recent, lag in blocks
  and in seconds); else 503 ``{"ready": false, "reasons": [one line each], …}`` (see
  :func:`relay_readiness`, and docs/relayer.md "Health, readiness and alerts").

Both bodies are JSON (``application/json``); ``reasons`` are single lines, and what they quote
(chain names) is escaped by the JSON encoder, so a hostile name cannot forge another field.

The exposition is not hand-written: a :class:`RelayerCollector` turns one snapshot into metric
families and ``prometheus_client`` writes them, so every family is emitted as one group under its
``# HELP``/``# TYPE`` lines and every label value is escaped by the library (a chain name with a
quote or a newline cannot forge another series). Each rendering uses its own
``CollectorRegistry``: the process-wide default registry is never touched, so two relayers in one
process (the tests run many) cannot mix their numbers. Endpoints appear only in their redacted
form: provider URLs carry API keys, and whoever scrapes or stores the metrics must not learn them.

The server is a few lines of trio rather than ``prometheus_client``'s threaded HTTP server: it
runs in the relayer's own nursery (cancelled with it) and every way a client can misbehave is
bounded — request head size, 5 s per connection, a cap on concurrent connections — and costs
only that client's connection, never the relayer.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.rpc import EndpointHealth
from adapters.signing import signer_health

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
"""Largest request head read; a longer one is answered from what was read (or dropped)."""
CONNECTION_TIMEOUT = 5.0
"""Seconds one connection may take, request to answer: a slow client cannot pin a slot."""
MAX_CONNECTIONS = 16
"""Connections handled at once; more are closed unanswered (a scraper retries next interval)."""
EXPOSITION_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""What ``generate_latest`` writes: the classic text format every Prometheus scrapes."""
LEDGER_PROBE_TIMEOUT = 2.0
"""Seconds the ledger has to answer a readiness probe before ``/readyz`` says it does not."""
JSON_TYPE = b"application/json"
LOOP_BEAT = 0.5
"""Seconds the :class:`Heartbeat` sleeps between two beats."""
LOOP_STALL_LIMIT = 5.0
"""Lateness (seconds) of a beat past which ``/healthz`` says the loop stalled. A blocked trio
loop stops every task at once — scans, deliveries, lease renewals to come — so five seconds of
it is a bug (a blocking call outside ``trio.to_thread``), not load."""
LOOP_WINDOW = 10.0
"""Seconds a late beat is remembered: a stall between two probes is still reported."""


@dataclass(frozen=True)
class ReadyReport:
    """What ``/readyz`` answers: ready when ``reasons`` is empty; ``details`` (JSON-ready) say
    what was checked."""

    reasons: tuple[str, ...] = ()
    details: Mapping[str, object] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """All reasons on one line, None when ready."""
        return "; ".join(self.reasons) or None

    def as_json(self) -> dict[str, object]:
        """``{"ready", "reasons", **details}``."""
        return {"ready": not self.reasons, "reasons": list(self.reasons), **self.details}


Snapshot = Callable[[], Awaitable[str]]
"""Produces the exposition text (may raise: the server answers 500 and keeps serving)."""
Readiness = Callable[[], Awaitable[ReadyReport | str | None]]
"""A :class:`ReadyReport`, or just ``None`` when ready / a one-line reason why not."""


@dataclass(frozen=True)
class ReadyLimits:
    """How far behind a relayer's routes may be while ``/readyz`` still says ready
    (``passerelle relay --ready-max-*``); 0 turns a check off.

    The defaults suit the devnet and public chains alike: a scan runs every poll (0.2 s by
    default) even when nothing is new, so a minute without one means the origin's nodes fail
    or the loop is stuck; 1,000 final blocks unscanned is a backlog, not a poll's worth; and a
    message that has waited 10 minutes since it became final has met something (no quorum of
    attesters, a destination refusing, no gas) that a person should look at."""

    max_scan_age: float = 60.0
    """Seconds since an origin's last successful scan (since the start, before the first)."""
    max_lag_blocks: int = 1_000
    """Final blocks of an origin not scanned yet, at its last scan."""
    max_lag_seconds: float = 600.0
    """Age of a route's oldest message not delivered yet (nor set aside): this includes a
    message left ``failed`` after its last attempt, until an operator retries or skips it."""

    def __post_init__(self) -> None:
        """Refuse a limit that is negative or not finite: every comparison with ``nan`` is
        false, so it would turn its check off without saying so (0 is the way to)."""
        for name in ("max_scan_age", "max_lag_blocks", "max_lag_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ReadyLimits.{name} must be finite and >= 0, not {value!r}")


@dataclass(frozen=True)
class RouteProgress:
    """One route as ``/readyz`` shows it."""

    origin: str
    destination: str
    pending: int
    """Messages not delivered yet (nor set aside)."""
    lag_blocks: int | None
    """The origin's final blocks not scanned yet at its last scan; None before the first."""
    lag_seconds: float
    """Age of the route's oldest pending message (0 when none waits)."""
    last_scan_seconds_ago: float | None
    """Since the origin's last successful scan; None before the first."""
    scanned_here: bool = True
    """Does this relayer scan the origin? With leases (relayer/leases.py) only while it holds the
    origin's ``scan`` lease: another relayer's scan is not this one's readiness."""
    delivered_here: bool = True
    """Does this relayer deliver to the destination (with leases: holds its ``deliver``
    lease)? Only then is the route's waiting time this relayer's readiness."""


def route_progress(
    chains: Sequence[Any],
    pending: Sequence[tuple[int, int, int, float]],
    scan_lag: Mapping[str, int],
    last_scan: Mapping[str, float],
    *,
    now: float,
    scans: Collection[int] | None = None,
    delivers: Collection[int] | None = None,
) -> list[RouteProgress]:
    """Every route of ``chains`` (each origin to each other destination, as the config's
    ``ChainConfig`` rows say) with its progress: ``pending`` is the ledger's
    ``(origin, destination, count, oldest created_at)`` per route
    (:meth:`relayer.ledger.Ledger.pending_by_route`), ``scan_lag`` and ``last_scan`` (Unix
    time) are by origin name, as the relayer keeps them. ``scans`` and ``delivers``: the origin
    and destination domains this relayer works on (its leases), None for all."""
    waiting = {(o, d): (count, oldest) for o, d, count, oldest in pending}
    routes: list[RouteProgress] = []
    for origin in (c for c in chains if c.is_origin):
        scanned = last_scan.get(origin.name)
        for destination in (c for c in chains if c.is_destination):
            if destination.domain == origin.domain:
                continue
            count, oldest = waiting.get((origin.domain, destination.domain), (0, now))
            routes.append(
                RouteProgress(
                    origin=origin.name,
                    destination=destination.name,
                    pending=count,
                    lag_blocks=scan_lag.get(origin.name) if scanned is not None else None,
                    lag_seconds=round(max(0.0, now - oldest), 3),
                    last_scan_seconds_ago=None if scanned is None else round(now - scanned, 3),
                    scanned_here=scans is None or origin.domain in scans,
                    delivered_here=delivers is None or destination.domain in delivers,
                )
            )
    return routes


def route_reasons(
    routes: Sequence[RouteProgress], limits: ReadyLimits, *, running_for: float
) -> list[str]:
    """One line per route or origin past ``limits`` (an origin's scan once, not per route).
    ``running_for``: seconds since the relayer started, the scan age of an origin never
    scanned yet (so a relayer starting up is ready until a first scan is overdue)."""
    reasons: list[str] = []
    seen: set[str] = set()
    for route in routes:
        if route.origin not in seen and route.scanned_here:
            seen.add(route.origin)
            age = route.last_scan_seconds_ago
            waited = running_for if age is None else age
            if limits.max_scan_age and waited > limits.max_scan_age:
                last = "no scan yet" if age is None else f"last scan {age:.0f} s ago"
                reasons.append(f"origin {route.origin}: {last} (limit {limits.max_scan_age:g} s)")
            if limits.max_lag_blocks and (route.lag_blocks or 0) > limits.max_lag_blocks:
                reasons.append(
                    f"origin {route.origin}: {route.lag_blocks} final blocks not scanned "
                    f"(limit {limits.max_lag_blocks})"
                )
        if (
            route.delivered_here
            and limits.max_lag_seconds
            and route.lag_seconds > limits.max_lag_seconds
        ):
            reasons.append(
                f"route {route.origin} → {route.destination}: oldest of {route.pending} "
                f"message(s) waiting {route.lag_seconds:.0f} s (limit {limits.max_lag_seconds:g} s)"
            )
    return reasons


def _counter_families(prefix: str, counters: Any) -> Iterator[Metric]:
    """One counter family ``{prefix}_{field}`` per int field of the dataclass ``counters``."""
    for item in fields(counters):
        # The library appends `_total` to a counter family's samples.
        yield CounterMetricFamily(
            f"{prefix}_{item.name}",
            f"{type(counters).__name__}.{item.name} since the process started.",
            value=getattr(counters, item.name),
        )


def _endpoint_families(endpoints: Mapping[str, Sequence[EndpointHealth]]) -> Iterator[Metric]:
    """RPC health per endpoint: requests by outcome, and whether it is quarantined."""
    requests = CounterMetricFamily(
        "passerelle_rpc_requests",
        "RPC requests per endpoint by outcome.",
        labels=["chain", "endpoint", "outcome"],
    )
    quarantined = GaugeMetricFamily(
        "passerelle_rpc_quarantined",
        "1 while an endpoint rests after failures or is refused (it serves another chain).",
        labels=["chain", "endpoint"],
    )
    for chain, health in sorted(endpoints.items()):
        for endpoint in health:
            url = endpoint.url  # already redacted (EndpointHealth)
            requests.add_metric([chain, url, "ok"], endpoint.successes)
            requests.add_metric([chain, url, "error"], endpoint.failures)
            # A refused endpoint is out for good: quarantined too, or it would look healthy
            # (no errors) while failover is one endpoint short.
            resting = endpoint.consecutive_failures > 0 or bool(endpoint.refused)
            quarantined.add_metric([chain, url], int(resting))
    yield requests
    yield quarantined


def _gauge_by(name: str, documentation: str, label: str, values: Mapping[str, float]) -> Metric:
    """A gauge family with one sample per ``values`` key, as the label ``label``."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


@dataclass(frozen=True, eq=False)  # hashed by identity: the registry keys collectors
class RelayerCollector:
    """A ``prometheus_client`` collector over one snapshot of the relayer's numbers.

    ``counters`` is a dataclass of ints (``RelayerMetrics``): each field ``f`` becomes the
    counter ``passerelle_f_total``. ``backlog`` maps a message status to its count,
    ``endpoints`` a chain/role name (``"beta/deliver"``) to its RPC endpoints' health.
    """

    counters: Any
    backlog: Mapping[str, int]
    endpoints: Mapping[str, Sequence[EndpointHealth]]
    routes: Sequence[tuple[str, str, int, float]] = ()
    """(origin, destination, messages waiting, age of the oldest in seconds) per route."""
    scan_lag: Mapping[str, int] = field(default_factory=dict)
    """Origin → final blocks not scanned yet (at the last scan)."""
    last_delivered: Mapping[str, float] = field(default_factory=dict)
    """Destination → Unix time deliveries were last recorded there."""
    last_scan: Mapping[str, float] = field(default_factory=dict)
    """Origin → Unix time of its last successful scan."""
    leases_held: Mapping[str, int] = field(default_factory=dict)
    """Lease kind (scan, collect, deliver, unpaid) → leases this relayer holds
    (relayer/leases.py); empty when it does not lease."""

    def collect(self) -> Iterator[Metric]:
        """Counters, the backlog, the routes' lag, then RPC health (each family grouped)."""
        yield from _counter_families("passerelle", self.counters)
        messages = GaugeMetricFamily(
            "passerelle_messages", "Messages in the ledger by status.", labels=["status"]
        )
        for status, count in sorted(self.backlog.items()):
            messages.add_metric([status], count)
        yield messages
        waiting = GaugeMetricFamily(
            "passerelle_route_pending",
            "Messages of a route not yet delivered or set aside.",
            labels=["origin", "destination"],
        )
        oldest = GaugeMetricFamily(
            "passerelle_route_oldest_pending_seconds",
            "Age of a route's oldest message not yet delivered: alert when it keeps growing.",
            labels=["origin", "destination"],
        )
        for origin, destination, count, age in sorted(self.routes):
            waiting.add_metric([origin, destination], count)
            oldest.add_metric([origin, destination], age)
        yield waiting
        yield oldest
        yield _gauge_by(
            "passerelle_scan_lag_blocks",
            "Final blocks of an origin the relayer has not scanned yet.",
            "origin",
            self.scan_lag,
        )
        yield _gauge_by(
            "passerelle_last_delivered_timestamp_seconds",
            "When deliveries to a destination were last recorded (Unix time).",
            "destination",
            self.last_delivered,
        )
        yield _gauge_by(
            "passerelle_last_scan_timestamp_seconds",
            "When an origin was last scanned successfully (Unix time): alert when it stops.",
            "origin",
            self.last_scan,
        )
        if self.leases_held:
            leases = GaugeMetricFamily(
                "passerelle_leases_held",
                "Leases this relayer holds, by task kind: relayers sharing one ledger divide them.",
                labels=["kind"],
            )
            for kind, count in sorted(self.leases_held.items()):
                leases.add_metric([kind], count)
            yield leases
        yield from _endpoint_families(self.endpoints)


@dataclass(frozen=True, eq=False)  # hashed by identity: the registry keys collectors
class AttesterCollector:
    """The attester's numbers: its counters (``passerelle_attester_<field>_total``), the newest
    index it signed per origin (``passerelle_attester_signed_index{origin}``: a stalled origin
    shows as a flat line) and its RPC endpoints' health."""

    counters: Any
    signed: Mapping[str, int]
    endpoints: Mapping[str, Sequence[EndpointHealth]]

    def collect(self) -> Iterator[Metric]:
        """Counters, then the signed indices, then RPC health (each family grouped)."""
        yield from _counter_families("passerelle_attester", self.counters)
        signed = GaugeMetricFamily(
            "passerelle_attester_signed_index",
            "Newest checkpoint index this attester signed, by origin chain.",
            labels=["origin"],
        )
        for origin, index in sorted(self.signed.items()):
            signed.add_metric([origin], index)
        yield signed
        yield from _endpoint_families(self.endpoints)


def render(
    counters: Any,
    backlog: Mapping[str, int],
    endpoints: Mapping[str, Sequence[EndpointHealth]],
    *,
    routes: Sequence[tuple[str, str, int, float]] = (),
    scan_lag: Mapping[str, int] | None = None,
    last_delivered: Mapping[str, float] | None = None,
    last_scan: Mapping[str, float] | None = None,
    leases_held: Mapping[str, int] | None = None,
) -> str:
    """The exposition text (format 0.0.4) of a relayer (:class:`RelayerCollector`), written by
    ``prometheus_client``."""
    return _exposition(
        RelayerCollector(
            counters,
            backlog,
            endpoints,
            routes,
            dict(scan_lag or {}),
            dict(last_delivered or {}),
            dict(last_scan or {}),
            dict(leases_held or {}),
        )
    )


def render_attester(
    counters: Any, signed: Mapping[str, int], endpoints: Mapping[str, Sequence[EndpointHealth]]
) -> str:
    """The exposition text of an attester (:class:`AttesterCollector`)."""
    return _exposition(AttesterCollector(counters, signed, endpoints))


def _exposition(collector: RelayerCollector | AttesterCollector | _Families) -> str:
    """Written by ``prometheus_client`` in a registry of its own (never the process-wide one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def loops_readiness(nursery: trio.Nursery) -> str | None:
    """``None`` if a ``*_loop`` task runs in ``nursery`` (the process's work started), else the
    reason. A loop that dies takes the nursery, and the server with it, down."""
    if not any(task.name.endswith("_loop") for task in nursery.child_tasks):
        return "loops not started yet"
    return None


async def relay_readiness(
    nursery: trio.Nursery,
    ledger_probe: Callable[[], Awaitable[object]],
    *,
    progress: Callable[[], Awaitable[Sequence[RouteProgress]]] | None = None,
    limits: ReadyLimits | None = None,
    started: float | None = None,
) -> ReadyReport:
    """Whether a relayer is ready, and why not (every failed check, one line each).

    Ready means (1) a relay loop runs in ``nursery`` — ``Relayer.run`` starts the metrics
    server first, then its ``*_loop`` tasks in the same nursery; a loop that dies takes the
    nursery, and the server with it, down, so a live server with loops is a relaying process —
    (2) ``ledger_probe`` (a cheap ledger read) answers within :data:`LEDGER_PROBE_TIMEOUT`, and
    (3) with ``progress`` (each route's :class:`RouteProgress`, read from the ledger and the
    relayer), every route is within ``limits`` (:func:`route_reasons`; ``started``, the Unix
    time the relayer started, gives an origin not scanned yet its grace).

    No chain is asked anything here: a chain outage shows as scans that stop (the scan age),
    and in ``passerelle_rpc_quarantined``. Readiness is for alerting and dashboards; restart a
    relayer on ``/healthz`` only, never on this (a restart fixes no chain outage).
    """
    reasons: list[str] = []
    not_running = loops_readiness(nursery)
    if not_running is not None:
        reasons.append(f"relay {not_running}")
    ledger = await _answers_in_time("ledger", ledger_probe)
    if ledger is not None:
        reasons.append(ledger)
    details: dict[str, object] = {
        "loops": not_running or "running",
        "ledger": ledger or "answers",
    }
    if progress is not None and ledger is None:
        limits = limits or ReadyLimits()
        routes: list[RouteProgress] = []

        async def read() -> None:
            routes.extend(await progress())

        unread = await _answers_in_time("route progress", read)
        if unread is not None:
            reasons.append(unread)
        else:
            running_for = 0.0 if started is None else max(0.0, time.time() - started)
            reasons += route_reasons(routes, limits, running_for=running_for)
            details["routes"] = [asdict(route) for route in routes]
        details["limits"] = asdict(limits)
    return ReadyReport(tuple(reasons), details)


async def _answers_in_time(what: str, probe: Callable[[], Awaitable[object]]) -> str | None:
    """None if ``probe()`` returns within :data:`LEDGER_PROBE_TIMEOUT`, else one line why not."""
    with trio.move_on_after(LEDGER_PROBE_TIMEOUT):
        try:
            await probe()
        except Exception as error:  # any failure means "not ready", said in one line
            return f"{what} does not answer: {type(error).__name__}"
        return None
    return f"{what} did not answer within {LEDGER_PROBE_TIMEOUT:g} s"


class Heartbeat:
    """How late the trio loop wakes a task that sleeps :data:`LOOP_BEAT` seconds: the loop's
    responsiveness, for ``/healthz`` and ``passerelle_event_loop_lag_seconds``.

    Every task of the process shares the one loop; a blocking call made on it (a database or
    RPC call outside ``trio.to_thread``) stops them all, and shows here as a late beat. The
    worst lateness within :data:`LOOP_WINDOW` seconds is kept, so a stall that ended between
    two probes is still reported; a beat overdue right now counts too."""

    def __init__(self, *, beat: float = LOOP_BEAT, window: float = LOOP_WINDOW) -> None:
        """Not beating until :meth:`run` runs."""
        self.beat = beat
        self.window = window
        self.started = trio.current_time()
        self._last = self.started
        self._late: deque[tuple[float, float]] = deque()  # (when, seconds late), oldest first

    async def run(self) -> None:
        """Beat until cancelled."""
        self.started = self._last = trio.current_time()
        while True:
            before = trio.current_time()
            await trio.sleep(self.beat)
            now = trio.current_time()
            self._late.append((now, max(0.0, now - before - self.beat)))
            while self._late and self._late[0][0] < now - self.window:
                self._late.popleft()
            self._last = now

    def lag(self) -> float:
        """The worst lateness (seconds) in the window, the current beat's included."""
        now = trio.current_time()
        overdue = max(0.0, now - self._last - self.beat)
        recent = (late for when, late in self._late if when >= now - self.window)
        return max([overdue, *recent])

    def uptime(self) -> float:
        """Seconds since the heartbeat started."""
        return trio.current_time() - self.started


async def serve_metrics(
    port: int,
    snapshot: Snapshot,
    ready: Readiness | None = None,
    *,
    max_connections: int = MAX_CONNECTIONS,
    stall_limit: float = LOOP_STALL_LIMIT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on 127.0.0.1:``port`` until cancelled.

    ``ready`` decides ``/readyz`` (``None``: ready whenever the server runs); a
    :class:`Heartbeat` beats beside the server and decides ``/healthz`` (``stall_limit``). At
    most ``max_connections`` connections are handled at once: one more is closed at once,
    unanswered, so a local process opening sockets in a loop holds no file descriptor or task
    for long.
    """
    slots = trio.CapacityLimiter(max_connections)
    heartbeat = Heartbeat()

    async def handle(stream: trio.SocketStream) -> None:
        # A handler's exception would end serve_listeners and with it the nursery that runs
        # it — the relayer's: a client that resets its connection (any local process can) must
        # cost only that connection.
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.move_on_after(CONNECTION_TIMEOUT):
                await _answer(stream, snapshot, ready, heartbeat, stall_limit)
        except trio.BrokenResourceError:
            pass
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat.run)
        task_status.started()
        await trio.serve_listeners(handle, listeners)


def _loop_exposition(heartbeat: Heartbeat) -> str:
    """The server's own families, appended to every snapshot (their names are the server's:
    no snapshot emits them)."""
    lag = GaugeMetricFamily(
        "passerelle_event_loop_lag_seconds",
        f"Worst lateness of the trio loop over the last {LOOP_WINDOW:g} s (see /healthz).",
        value=heartbeat.lag(),
    )
    signers = signer_health()  # this process's signer calls (adapters/signing.py)
    stuck = GaugeMetricFamily(
        "passerelle_signer_stuck_calls",
        f"Signer calls abandoned after their timeout that never returned (of {signers.threads}).",
        value=signers.stuck,
    )
    errors = CounterMetricFamily(
        "passerelle_signing_errors",
        "Signer calls that failed: refused, timed out, wrong answer, or no thread left.",
        value=signers.errors,
    )
    return _exposition(_Families([lag, stuck, errors]))


@dataclass(frozen=True, eq=False)  # hashed by identity: the registry keys collectors
class _Families:
    """Ready-made metric families as a collector."""

    families: Sequence[Metric]

    def collect(self) -> Iterator[Metric]:
        """The families, as given."""
        yield from self.families


async def _answer(
    stream: trio.SocketStream,
    snapshot: Snapshot,
    ready: Readiness | None,
    heartbeat: Heartbeat,
    stall_limit: float,
) -> None:
    """Read one request (at most :data:`MAX_REQUEST_BYTES` of head) and answer it."""
    request = b""
    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
        chunk = await stream.receive_some(1024)
        if not chunk:
            return
        request += chunk
    parts = request.split(b"\r\n", 1)[0].split(b" ")
    method, target = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
    path = target.split(b"?", 1)[0]
    content_type = b"text/plain; charset=utf-8"
    if not method:
        status, body = b"400 Bad Request", b"bad request line\n"
    elif method != b"GET":
        status, body = b"405 Method Not Allowed", b"only GET is served\n"
    elif path == b"/metrics":
        try:
            text = await snapshot() + _loop_exposition(heartbeat)
            status, body = b"200 OK", text.encode()
            content_type = EXPOSITION_TYPE
        except Exception as error:  # one failed scrape must not stop the relayer
            log.warning("metrics snapshot failed", exc_info=True)
            status = b"500 Internal Server Error"
            body = f"metrics snapshot failed: {type(error).__name__}\n".encode()
    elif path == b"/healthz":
        lag = heartbeat.lag()
        alive = lag <= stall_limit
        status = b"200 OK" if alive else b"503 Service Unavailable"
        body = _json(
            {
                "status": "ok" if alive else "stalled",
                "loop_lag_seconds": round(lag, 3),
                "loop_stall_limit_seconds": stall_limit,
                "uptime_seconds": round(heartbeat.uptime(), 1),
            }
        )
        content_type = JSON_TYPE
    elif path == b"/readyz":
        report = ReadyReport() if ready is None else await _readiness(ready)
        try:
            body = _json(report.as_json())
        except ValueError:  # a non-finite number in the details: not JSON, so not ready
            report = ReadyReport(("readiness report holds a non-finite number",))
            body = _json(report.as_json())
        status = b"503 Service Unavailable" if report.reasons else b"200 OK"
        content_type = JSON_TYPE
    else:
        status, body = b"404 Not Found", b"not found: try /metrics, /healthz or /readyz\n"
    head = (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head + body)


def _json(value: object) -> bytes:
    """One line of JSON and a newline (ASCII: a hostile name cannot smuggle raw bytes; strict:
    ``NaN`` and ``Infinity`` are not JSON, and a probe's parser would reject the body, so they
    raise ValueError instead of being sent)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode() + b"\n"


async def _readiness(ready: Readiness) -> ReadyReport:
    """``ready()`` as a :class:`ReadyReport` whose every reason is one line; its own failure
    is a reason too, rather than a dropped connection."""
    try:
        answer = await ready()
    except Exception as error:  # a broken probe means "not ready", in one line
        log.warning("readiness probe failed", exc_info=True)
        answer = f"readiness probe failed: {type(error).__name__}"
    if answer is None:
        answer = ReadyReport()
    if isinstance(answer, str):
        answer = ReadyReport((answer,))
    wedged = signer_health().wedged  # no signature can be asked until a stuck call returns
    if wedged is not None:
        answer = ReadyReport((*answer.reasons, wedged), answer.details)
    # One line each whatever the probe said (a chain name may hold a newline).
    return ReadyReport(tuple(" ".join(r.split()) for r in answer.reasons), answer.details)
