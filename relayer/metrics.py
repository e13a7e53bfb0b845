"""Prometheus metrics and health probes: ``passerelle relay --metrics-port N`` and
``passerelle attest --metrics-port N``.

Three endpoints, bound to 127.0.0.1 only (put a proxy in front to expose them):

* ``/metrics`` — the text exposition (format 0.0.4) produced by ``prometheus_client``: the
  numbers an operator pages on — the backlog by status, deliveries, replays skipped (wasted
  relays), recipient failures, dry-run failures, gas and fees, per-endpoint RPC health.
* ``/healthz`` — 200 while the process serves at all (liveness).
* ``/readyz`` — 200 once the relay loops run and the ledger answers; 503 with a one-line reason
  otherwise (see :func:`relay_readiness`).

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

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.rpc import EndpointHealth

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

Snapshot = Callable[[], Awaitable[str]]
"""Produces the exposition text (may raise: the server answers 500 and keeps serving)."""
Readiness = Callable[[], Awaitable[str | None]]
"""``None`` when ready, else a one-line reason why not."""


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
        lag = GaugeMetricFamily(
            "passerelle_scan_lag_blocks",
            "Final blocks of an origin the relayer has not scanned yet.",
            labels=["origin"],
        )
        for origin, blocks in sorted(self.scan_lag.items()):
            lag.add_metric([origin], blocks)
        yield lag
        delivered = GaugeMetricFamily(
            "passerelle_last_delivered_timestamp_seconds",
            "When deliveries to a destination were last recorded (Unix time).",
            labels=["destination"],
        )
        for destination, when in sorted(self.last_delivered.items()):
            delivered.add_metric([destination], when)
        yield delivered
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
) -> str:
    """The exposition text (format 0.0.4) of a relayer (:class:`RelayerCollector`), written by
    ``prometheus_client``."""
    return _exposition(
        RelayerCollector(
            counters, backlog, endpoints, routes, dict(scan_lag or {}), dict(last_delivered or {})
        )
    )


def render_attester(
    counters: Any, signed: Mapping[str, int], endpoints: Mapping[str, Sequence[EndpointHealth]]
) -> str:
    """The exposition text of an attester (:class:`AttesterCollector`)."""
    return _exposition(AttesterCollector(counters, signed, endpoints))


def _exposition(collector: RelayerCollector | AttesterCollector) -> str:
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
    nursery: trio.Nursery, ledger_probe: Callable[[], Awaitable[object]]
) -> str | None:
    """Whether a relayer is ready: ``None`` if so, else a one-line reason.

    Ready means (1) a relay loop runs in ``nursery`` — ``Relayer.run`` starts the metrics
    server first, then its ``*_loop`` tasks in the same nursery; a loop that dies takes the
    nursery, and the server with it, down, so a live server with loops is a relaying process —
    and (2) ``ledger_probe`` (a cheap ledger read) answers within :data:`LEDGER_PROBE_TIMEOUT`.
    It deliberately checks no chain: a chain outage is what ``passerelle_rpc_quarantined``
    reports, and a relayer that restarts because its RPC provider hiccups gains nothing.
    """
    not_running = loops_readiness(nursery)
    if not_running is not None:
        return f"relay {not_running}"
    with trio.move_on_after(LEDGER_PROBE_TIMEOUT):
        try:
            await ledger_probe()
        except Exception as error:  # any failure means "not ready", said in one line
            return f"ledger does not answer: {type(error).__name__}"
        return None
    return f"ledger did not answer within {LEDGER_PROBE_TIMEOUT:g} s"


async def serve_metrics(
    port: int,
    snapshot: Snapshot,
    ready: Readiness | None = None,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on 127.0.0.1:``port`` until cancelled.

    ``ready`` decides ``/readyz`` (``None``: ready whenever the server runs). At most
    ``max_connections`` connections are handled at once: one more is closed at once, unanswered,
    so a local process opening sockets in a loop holds no file descriptor or task for long.
    """
    slots = trio.CapacityLimiter(max_connections)

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
                await _answer(stream, snapshot, ready)
        except trio.BrokenResourceError:
            pass
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def _answer(stream: trio.SocketStream, snapshot: Snapshot, ready: Readiness | None) -> None:
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
            status, body = b"200 OK", (await snapshot()).encode()
            content_type = EXPOSITION_TYPE
        except Exception as error:  # one failed scrape must not stop the relayer
            log.warning("metrics snapshot failed", exc_info=True)
            status = b"500 Internal Server Error"
            body = f"metrics snapshot failed: {type(error).__name__}\n".encode()
    elif path == b"/healthz":
        status, body = b"200 OK", b"ok\n"
    elif path == b"/readyz":
        reason = None if ready is None else await _readiness(ready)
        if reason is None:
            status, body = b"200 OK", b"ready\n"
        else:
            status, body = b"503 Service Unavailable", f"not ready: {reason}\n".encode()
    else:
        status, body = b"404 Not Found", b"not found: try /metrics, /healthz or /readyz\n"
    head = (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head + body)


async def _readiness(ready: Readiness) -> str | None:
    """``ready()``, with its own failure turned into a reason rather than a dropped connection."""
    try:
        reason = await ready()
    except Exception as error:  # a broken probe means "not ready", in one line
        log.warning("readiness probe failed", exc_info=True)
        return f"readiness probe failed: {type(error).__name__}"
    # One line whatever the probe said: the reason goes into a status body, not a log.
    return None if reason is None else " ".join(reason.split())
