"""``/healthz`` and ``/readyz`` (relayer/metrics.py): the loop's heartbeat, and each route's
progress against the readiness limits, served as JSON over a real socket.

Unit level: the server runs in the test's own trio loop, the relayer's part is the real ledger
(SQLite) and the pure functions the relayer feeds (:func:`route_progress`,
:func:`route_reasons`), so no chain is needed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from test_substrate_route import config_toml, load, message

from adapters.rpc import EndpointHealth
from devnet.anvil import free_port
from light_clients.hashing import keccak256
from relayer.attester import AttesterCounters
from relayer.cli import cli as passerelle_cli
from relayer.cli import main as passerelle_main
from relayer.ledger import DiscoveredMessage, Ledger, MessageStatus, open_ledger
from relayer.metrics import (
    LOOP_WINDOW,
    Heartbeat,
    ReadyLimits,
    ReadyReport,
    RouteProgress,
    relay_readiness,
    render,
    render_attester,
    route_progress,
    route_reasons,
    serve_metrics,
)
from relayer.relay import RelayerMetrics

ALERTS = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"

JSON = "application/json"


async def snapshot() -> str:
    return "passerelle_up 1\n"


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def relay_loop_stub() -> None:
    """Stands in for a relay loop: readiness goes by the ``*_loop`` task name."""
    await trio.sleep_forever()


def serve(
    scenario: Callable[[int, trio.Nursery], Awaitable[None]],
    ready: Callable[[trio.Nursery], Any] | None = None,
    *,
    stall_limit: float = 5.0,
) -> None:
    """Run ``scenario(port, nursery)`` against a live server whose ``/readyz`` is
    ``ready(nursery)`` (the nursery the loops run in), then stop everything."""
    port = free_port()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            probe = None if ready is None else ready(nursery)
            await nursery.start(
                partial(serve_metrics, port, snapshot, probe, stall_limit=stall_limit)
            )
            await scenario(port, nursery)
            nursery.cancel_scope.cancel()

    trio.run(main)


# --------------------------------------------------------------------------- /healthz


def test_healthz_is_json_while_the_loop_is_responsive() -> None:
    async def scenario(port: int, _: trio.Nursery) -> None:
        await trio.sleep(0.6)  # one beat at least
        answer = await get(port, "/healthz")
        assert answer.status_code == 200 and answer.headers["content-type"] == JSON
        body = answer.json()
        assert body["status"] == "ok" and body["loop_stall_limit_seconds"] == 5.0
        assert 0 <= body["loop_lag_seconds"] < 5.0 and body["uptime_seconds"] >= 0.5

    serve(scenario)


def test_healthz_says_stalled_after_a_blocking_call_on_the_loop() -> None:
    """A synchronous call made on the trio thread (the bug class this catches) stops every
    task: the next beat comes late, and ``/healthz`` and the metric say so."""

    async def scenario(port: int, _: trio.Nursery) -> None:
        await trio.sleep(0.6)
        time.sleep(1.2)  # the point: block the loop, as a buggy synchronous call would
        stalled = await get(port, "/healthz")
        assert stalled.status_code == 503, stalled.text
        assert stalled.json()["status"] == "stalled"
        assert stalled.json()["loop_lag_seconds"] >= 0.6
        scraped = (await get(port, "/metrics")).text
        (lag,) = [
            s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
            if s.name == "passerelle_event_loop_lag_seconds"
        ]
        assert lag >= 0.6

    serve(scenario, stall_limit=0.3)


def test_a_stall_is_remembered_for_the_window_then_forgotten() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> list[float]:
        heartbeat = Heartbeat()
        seen: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat.run)
            await trio.sleep(2)
            seen.append(heartbeat.lag())
            clock.jump(3.0)  # three seconds pass and no task runs: a stalled loop
            seen.append(heartbeat.lag())  # overdue right now
            await trio.sleep(1)
            seen.append(heartbeat.lag())  # the late beat, remembered
            await trio.sleep(LOOP_WINDOW + 1)
            seen.append(heartbeat.lag())  # forgotten
            nursery.cancel_scope.cancel()
        return seen

    before, overdue, remembered, after = trio.run(main, clock=clock)
    assert before == 0.0 and after == 0.0
    assert overdue >= 2.5 and remembered >= 2.5


# --------------------------------------------------------------------------- route progress


def _record(ledger: Ledger, nonces: Sequence[int], **fields: Any) -> list[str]:
    raws = [message(nonce=n, **fields).encode() for n in nonces]
    ledger.record_discovered(
        [
            DiscoveredMessage(raw, 1, b"\x01" * 32, bytes([n]) * 32, 0)
            for n, raw in zip(nonces, raws, strict=True)
        ]
    )
    return ["0x" + keccak256(raw).hex() for raw in raws]


def test_route_progress_reads_the_ledger_and_the_scans(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    with open_ledger(config.ledger) as ledger:
        ids = _record(ledger, [0, 1, 2])
        ledger.transition(ids[:1], MessageStatus.DELIVERED)  # no longer pending
        now = time.time()
        routes = route_progress(
            config.chains,
            ledger.pending_by_route(),
            {"alpha": 3, "beta": 0},
            {"alpha": now - 2, "beta": now - 1},
            now=now + 30,
        )
    origins = [c.name for c in config.chains if c.is_origin]
    destinations = [c.name for c in config.chains if c.is_destination]
    expected = {(o, d) for o in origins for d in destinations if o != d}
    assert {(r.origin, r.destination) for r in routes} == expected
    by_route = {(r.origin, r.destination): r for r in routes}
    busy = by_route[("alpha", "assethub")]
    assert (busy.pending, busy.lag_blocks, busy.last_scan_seconds_ago) == (2, 3, 32.0)
    assert 30 <= busy.lag_seconds < 35
    idle = by_route[("beta", "alpha")]
    assert (idle.pending, idle.lag_blocks, idle.lag_seconds) == (0, 0, 0.0)
    never = by_route[("gamma", "alpha")]  # gamma was never scanned
    assert (never.lag_blocks, never.last_scan_seconds_ago) == (None, None)


def _route(origin: str = "alpha", **changes: Any) -> RouteProgress:
    fields: dict[str, Any] = {
        "origin": origin,
        "destination": "beta",
        "pending": 0,
        "lag_blocks": 0,
        "lag_seconds": 0.0,
        "last_scan_seconds_ago": 0.5,
    }
    return RouteProgress(**(fields | changes))


def test_each_limit_is_one_reason_and_zero_turns_it_off() -> None:
    limits = ReadyLimits(max_scan_age=60, max_lag_blocks=100, max_lag_seconds=300)
    assert route_reasons([_route()], limits, running_for=1_000) == []
    late = [
        _route("alpha", last_scan_seconds_ago=61.0),
        _route("alpha", destination="gamma", last_scan_seconds_ago=61.0),  # one line per origin
        _route("beta", lag_blocks=101),
        _route("gamma", pending=4, lag_seconds=301.0),
        _route("delta", lag_blocks=None, last_scan_seconds_ago=None),  # never scanned
    ]
    assert route_reasons(late, limits, running_for=90) == [
        "origin alpha: last scan 61 s ago (limit 60 s)",
        "origin beta: 101 final blocks not scanned (limit 100)",
        "route gamma → beta: oldest of 4 message(s) waiting 301 s (limit 300 s)",
        "origin delta: no scan yet (limit 60 s)",
    ]
    # A relayer that started 10 s ago has not missed its first scan yet.
    assert route_reasons(late[-1:], limits, running_for=10) == []
    assert route_reasons(late, ReadyLimits(0, 0, 0), running_for=90) == []


def test_a_leasing_relayer_is_judged_on_its_own_share_only(tmp_path: Path) -> None:
    """Relayers sharing the routes (relayer/leases.py): one that does not hold an origin's scan
    lease never scans it, and one without a destination's deliver lease does not deliver there;
    neither is its readiness. What it holds is judged as before."""
    config = load(tmp_path, config_toml())
    domain = {c.name: c.domain for c in config.chains}
    with open_ledger(config.ledger) as ledger:
        _record(ledger, [0, 1, 2])  # alpha → assethub, waiting
        now = time.time()
        pending = ledger.pending_by_route()
    stale = {"alpha": now - 3_600, "beta": now - 3_600}  # no scan for an hour
    limits = ReadyLimits(max_scan_age=60, max_lag_blocks=100, max_lag_seconds=300)

    def reasons(scans: set[int] | None, delivers: set[int] | None) -> list[str]:
        routes = route_progress(
            config.chains, pending, {}, stale, now=now + 600, scans=scans, delivers=delivers
        )
        return route_reasons(routes, limits, running_for=3_600)

    everything = reasons(None, None)  # alone: every origin and route is its own
    assert any(r.startswith("origin alpha: last scan") for r in everything)
    assert any(r.startswith("route alpha → assethub") for r in everything)
    assert reasons(set(), set()) == []  # holds nothing: nothing of this is its readiness
    mine = reasons({domain["alpha"]}, {domain["assethub"]})
    assert [r.split(":")[0] for r in mine if r.startswith("origin")] == ["origin alpha"]
    assert any(r.startswith("route alpha → assethub") for r in mine)


# --------------------------------------------------------------------------- /readyz


def test_readyz_on_a_relayer_with_a_ledger(tmp_path: Path) -> None:
    """The relayer's readiness over its real ledger: not ready while a route's oldest message
    has waited past the limit (the clock of the progress read runs a minute ahead), ready once
    it is delivered; when the ledger stops answering, that is the reason and no route is read."""
    config = load(tmp_path, config_toml())
    limits = ReadyLimits(max_scan_age=60, max_lag_blocks=100, max_lag_seconds=30)
    origins = [c.name for c in config.chains if c.is_origin]
    with open_ledger(config.ledger) as ledger:
        ids = _record(ledger, [0, 1])

        async def progress() -> list[RouteProgress]:
            now = time.time() + 60
            scanned = dict.fromkeys(origins, now - 1)
            pending = await trio.to_thread.run_sync(ledger.pending_by_route)
            return route_progress(config.chains, pending, {}, scanned, now=now)

        async def ledger_probe() -> object:
            return await trio.to_thread.run_sync(ledger.get_cursor, 0)

        def ready(nursery: trio.Nursery) -> Any:
            return partial(
                relay_readiness,
                nursery,
                ledger_probe,
                progress=progress,
                limits=limits,
                started=time.time(),
            )

        answers: list[httpx.Response] = []

        async def scenario(port: int, nursery: trio.Nursery) -> None:
            nursery.start_soon(relay_loop_stub, name="alpha_scan_loop")
            answers.append(await get(port, "/readyz"))
            await trio.to_thread.run_sync(partial(ledger.transition, ids, MessageStatus.DELIVERED))
            answers.append(await get(port, "/readyz"))
            with ledger.engine.begin() as connection:  # the probe's read now fails
                connection.exec_driver_sql("DROP TABLE scan_cursors")
            answers.append(await get(port, "/readyz"))

        serve(scenario, ready)

    waiting, delivered, broken = answers
    assert waiting.status_code == 503 and waiting.headers["content-type"] == JSON
    body = waiting.json()
    assert body["ready"] is False and body["loops"] == "running" and body["ledger"] == "answers"
    (reason,) = body["reasons"]
    assert reason.startswith("route alpha → assethub: oldest of 2 message(s) waiting 6")
    assert reason.endswith(" s (limit 30 s)")
    assert body["limits"] == {"max_scan_age": 60, "max_lag_blocks": 100, "max_lag_seconds": 30}
    route = next(
        r for r in body["routes"] if (r["origin"], r["destination"]) == ("alpha", "assethub")
    )
    assert route["pending"] == 2 and route["last_scan_seconds_ago"] == 1.0

    assert delivered.status_code == 200
    assert delivered.json()["ready"] is True and delivered.json()["reasons"] == []

    assert broken.status_code == 503
    assert [r.split(":")[0] for r in broken.json()["reasons"]] == ["ledger does not answer"]
    assert "routes" not in broken.json()


def test_a_hostile_chain_name_is_one_line_and_round_trips() -> None:
    """A chain name is the operator's text: a newline or a quote in it must neither split a
    reason nor forge a JSON field."""
    name = 'al"pha\n"ready": true,'
    chains = [
        SimpleNamespace(name=name, domain=1, is_origin=True, is_destination=True),
        SimpleNamespace(name="beta", domain=2, is_origin=True, is_destination=True),
    ]

    async def progress() -> list[RouteProgress]:
        now = time.time()
        return route_progress(chains, [(1, 2, 1, now - 999)], {}, {}, now=now)

    async def answers() -> object:
        return None

    def ready(nursery: trio.Nursery) -> Any:
        nursery.start_soon(relay_loop_stub, name="x_loop")
        return partial(
            relay_readiness, nursery, answers, progress=progress, started=time.time() - 999
        )

    seen: list[httpx.Response] = []

    async def scenario(port: int, _: trio.Nursery) -> None:
        seen.append(await get(port, "/readyz"))

    serve(scenario, ready)
    (answer,) = seen
    assert answer.status_code == 503
    assert answer.text.count("\n") == 1 and answer.text.endswith("}\n")
    body = json.loads(answer.text)
    assert body["ready"] is False
    assert all("\n" not in reason for reason in body["reasons"])
    assert {r["origin"] for r in body["routes"]} == {name, "beta"}


def test_route_progress_that_fails_or_hangs_is_a_reason() -> None:
    async def answers() -> object:
        return None

    async def fails() -> list[RouteProgress]:
        raise ConnectionResetError("gone")

    async def hangs() -> list[RouteProgress]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def main() -> list[tuple[str, ...]]:
        seen: list[tuple[str, ...]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_loop_stub, name="x_loop")
            await trio.sleep(0)
            for progress in (fails, hangs):
                report = await relay_readiness(nursery, answers, progress=progress)
                seen.append(report.reasons)
                assert "routes" not in report.details
            nursery.cancel_scope.cancel()
        return seen

    clock = trio.testing.MockClock(autojump_threshold=0)  # the 2 s timeout, instantly
    assert trio.run(main, clock=clock) == [
        ("route progress does not answer: ConnectionResetError",),
        ("route progress did not answer within 2 s",),
    ]


# --------------------------------------------------------------------------- the alert set


def test_every_metric_the_sample_alerts_name_is_exported() -> None:
    """docs/alerts.md may only name metrics a relayer or an attester exports (with a route, an
    endpoint and a delivery to show, as in production): an alert on a misspelt name never
    fires, and nothing says so."""
    endpoints = {"alpha/scan": [EndpointHealth("http://a")]}
    relayer = render(
        RelayerMetrics(),
        {"failed": 1, "unpaid": 2},
        endpoints,
        routes=[("alpha", "beta", 1, 2.0)],
        scan_lag={"alpha": 1},
        last_delivered={"beta": 1.0},
        last_scan={"alpha": 1.0},
    )
    attester = render_attester(AttesterCounters(), {"alpha": 3}, endpoints)
    scraped: list[str] = []

    async def relayer_snapshot() -> str:
        return relayer

    async def main() -> None:
        port = free_port()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_metrics, port, relayer_snapshot)
            scraped.append((await get(port, "/metrics")).text)
            nursery.cancel_scope.cancel()

    trio.run(main)
    exported = {
        sample.name
        for text in (scraped[0], attester)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    rules = ALERTS.read_text().split("```yaml", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"\bpasserelle_[a-z_]+", rules))
    assert len(named) >= 10
    assert sorted(named - exported) == []
    statuses = set(re.findall(r'status="([a-z]+)"', rules))
    assert statuses <= {str(status) for status in MessageStatus}


# --------------------------------------------------------------------------- non-finite limits


def test_a_non_finite_ready_limit_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nan`` passes ``FloatRange(min=0)`` and fails every comparison: the check would be
    off without a word, a stuck route reported ready. ``inf`` is "off" under another name. Both
    are one line and exit 2, before the config is read; 0 stays "off"."""
    for flag in ("--ready-max-scan-age", "--ready-max-lag-seconds"):
        for value in ("nan", "NaN", "inf", "Infinity"):  # -inf: below the range already
            with pytest.raises(SystemExit) as exited:
                passerelle_main(["relay", "--config", str(tmp_path / "absent.toml"), flag, value])
            assert exited.value.code == 2, (flag, value)
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and flag in lines[0], lines
            assert "not a finite number of seconds" in lines[0], lines
    assert not list(tmp_path.iterdir())
    for name in ("max_scan_age", "max_lag_blocks", "max_lag_seconds"):
        one_nan: dict[str, Any] = {name: float("nan")}
        with pytest.raises(ValueError, match=name):
            ReadyLimits(**one_nan)
    relay = passerelle_cli.commands["relay"]
    seconds = [p.type for p in relay.params if p.name == "ready_max_scan_age"]
    assert seconds[0].convert("0", None, None) == 0.0  # still "off"


def test_readyz_never_sends_nan() -> None:
    """A report whose details hold a non-finite number is not JSON (``NaN`` is JavaScript):
    ``/readyz`` says so in strict JSON, and not ready."""

    async def probe() -> ReadyReport:
        return ReadyReport((), {"limits": {"max_scan_age": float("nan")}})

    seen: list[httpx.Response] = []

    async def scenario(port: int, _: trio.Nursery) -> None:
        seen.append(await get(port, "/readyz"))

    serve(scenario, lambda _: probe)
    (answer,) = seen

    def strict(constant: str) -> None:
        raise AssertionError(f"/readyz sent {constant}, which is not JSON")

    body = json.loads(answer.text, parse_constant=strict)
    assert answer.status_code == 503
    assert body == {"ready": False, "reasons": ["readiness report holds a non-finite number"]}
