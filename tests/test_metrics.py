"""The relayer's Prometheus endpoint: the exposition (parsed back with prometheus_client's own
parser, as a scraper would read it) and the tiny trio HTTP server over a real socket."""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from test_substrate_route import KEYS, config_toml, load, message

from adapters.rpc import EndpointHealth
from devnet.anvil import free_port
from light_clients.hashing import keccak256
from relayer.attester import AttesterState, run_attester
from relayer.config import Config
from relayer.ledger import DiscoveredMessage, MessageStatus, open_ledger
from relayer.metrics import relay_readiness, render, serve_metrics
from relayer.relay import Relayer


@dataclass
class Counters:
    delivered: int = 7
    rpc_errors: int = 1


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition as (name, sorted labels, value), via the library parser."""
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_render_exposes_counters_backlog_and_endpoints() -> None:
    healthy, broken = EndpointHealth("http://a"), EndpointHealth("http://b")
    healthy.record_success(0.01)
    broken.record_failure(0.0, "refused", 0.5, 30)
    found = samples(
        render(Counters(), {"attested": 3, "delivered": 9}, {"beta/deliver": [healthy, broken]})
    )
    b = (("chain", "beta/deliver"), ("endpoint", "http://b"))
    a = (("chain", "beta/deliver"), ("endpoint", "http://a"))
    assert ("passerelle_delivered_total", (), 7.0) in found
    assert ("passerelle_rpc_errors_total", (), 1.0) in found
    assert ("passerelle_messages", (("status", "attested"),), 3.0) in found
    assert ("passerelle_rpc_requests_total", (*b, ("outcome", "error")), 1.0) in found
    assert ("passerelle_rpc_requests_total", (*a, ("outcome", "ok")), 1.0) in found
    assert ("passerelle_rpc_quarantined", b, 1.0) in found
    assert ("passerelle_rpc_quarantined", a, 0.0) in found


def test_every_metric_family_is_one_contiguous_group() -> None:
    # The old exporter wrote both RPC `# TYPE` lines first and then interleaved their samples:
    # a strict parser (Prometheus' own) rejects a family that reappears after another.
    endpoints = {"alpha/scan": [EndpointHealth("http://a")], "beta/deliver": [EndpointHealth("b")]}
    text = render(Counters(), {"attested": 1, "failed": 2}, endpoints)
    order: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not order or order[-1] != name:
            order.append(name)
    assert len(order) == len(set(order)), f"a family is split: {order}"
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["passerelle_rpc_requests"] == "counter"
    assert families["passerelle_rpc_quarantined"] == "gauge"
    assert families["passerelle_messages"] == "gauge"


def test_an_endpoint_refused_for_another_chain_shows_as_quarantined() -> None:
    # Refused endpoints are skipped without a transport failure: without this they would look
    # healthy (quarantined 0, no errors) while failover is one endpoint short.
    refused = EndpointHealth("http://c")
    refused.refused = "http://c: serves chain id 5, but chain 'beta' has chain_id 1"
    found = samples(render(Counters(), {}, {"beta/deliver": [refused]}))
    labels = (("chain", "beta/deliver"), ("endpoint", "http://c"))
    assert ("passerelle_rpc_quarantined", labels, 1.0) in found


def test_endpoint_labels_never_carry_the_provider_key() -> None:
    key = "q8ZxW2mN5vB7cD1fG3hJ"
    endpoints = [
        EndpointHealth(f"https://eth-mainnet.g.alchemy.com/v2/{key}"),
        EndpointHealth(f"https://user:{key}@node.example:8545/rpc"),
        EndpointHealth(f"wss://polkadot.api.onfinality.io/ws?apikey={key}"),
    ]
    text = render(Counters(), {}, {"alpha/scan": endpoints})
    assert key not in text
    shown = {
        dict(labels)["endpoint"]
        for name, labels, _ in samples(text)
        if name == "passerelle_rpc_quarantined"
    }
    assert shown == {
        "https://eth-mainnet.g.alchemy.com/v2/***",
        "https://***@node.example:8545/rpc",
        "wss://polkadot.api.onfinality.io/ws?***",
    }


@pytest.mark.parametrize(
    "hostile",
    [
        'x"} 1\npasserelle_delivered_total{a="\\',
        "back\\slash",
        'a "quoted" name',
        "two\nlines",
        "trailing\\",
        "ünïcødé ✓",
    ],
)
def test_label_values_round_trip_so_no_series_can_be_forged(hostile: str) -> None:
    # A chain name (from the config) or a status with a quote, a backslash or a newline must
    # stay inside its own label value: unescaped, `"` would end it and `\n` start a new sample.
    text = render(Counters(), {hostile: 1}, {hostile: [EndpointHealth("http://a")]})
    found = samples(text)
    assert ("passerelle_messages", (("status", hostile),), 1.0) in found
    labels = (("chain", hostile), ("endpoint", "http://a"))
    assert ("passerelle_rpc_quarantined", labels, 0.0) in found
    # Nothing but what we emitted: one delivered sample, without labels.
    assert [s for s in found if s[0] == "passerelle_delivered_total"] == [
        ("passerelle_delivered_total", (), 7.0)
    ]


# --------------------------------------------------------------------------- the server


async def fixed_snapshot() -> str:
    return "passerelle_up 1\n"


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


def serve(
    scenario: Callable[[int], Awaitable[None]],
    snapshot: Callable[[], Awaitable[str]] = fixed_snapshot,
    ready: Callable[[], Awaitable[str | None]] | None = None,
    max_connections: int = 16,
) -> None:
    """Run ``scenario(port)`` against a live server, then stop the server."""
    port = free_port()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_metrics, port, snapshot, ready, max_connections=max_connections)
            )
            await scenario(port)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_metrics_health_and_readiness_answer_on_loopback() -> None:
    async def scenario(port: int) -> None:
        ok, health = await get(port, "/metrics"), await get(port, "/healthz")
        ready = await get(port, "/readyz")
        missing = await get(port, "/")
        assert ok.status_code == 200 and ok.text.startswith("passerelle_up 1\n")
        assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})
        assert missing.status_code == 404
        async with httpx.AsyncClient() as client:
            posted = await client.post(f"http://127.0.0.1:{port}/metrics", content=b"x")
        assert posted.status_code == 405
        garbled = await trio.open_tcp_stream("127.0.0.1", port)
        await garbled.send_all(b"GET /a b c HTTP/1.1\r\n\r\n")
        assert (await garbled.receive_some(1024)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        await garbled.aclose()

    serve(scenario)


def test_readyz_answers_503_with_a_one_line_reason() -> None:
    async def not_yet() -> str | None:
        return "ledger did not answer\nwithin 2 s"

    async def scenario(port: int) -> None:
        answer = await get(port, "/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"ready": False, "reasons": ["ledger did not answer within 2 s"]}
        assert (await get(port, "/healthz")).status_code == 200  # alive, just not ready

    serve(scenario, ready=not_yet)


def test_a_failing_snapshot_answers_500_and_the_server_keeps_serving() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is locked\nsecret detail")
        return "passerelle_up 1\n"

    async def broken_probe() -> str | None:
        raise OSError("probe exploded")

    async def scenario(port: int) -> None:
        failed = await get(port, "/metrics")
        assert failed.status_code == 500
        assert failed.text == "metrics snapshot failed: RuntimeError\n"  # one line, no detail
        assert (await get(port, "/metrics")).text.startswith("passerelle_up 1\n")
        probe = await get(port, "/readyz")
        assert (probe.status_code, probe.json()["reasons"]) == (
            503,
            ["readiness probe failed: OSError"],
        )
        assert (await get(port, "/healthz")).status_code == 200

    serve(scenario, snapshot=flaky, ready=broken_probe)


def test_a_client_that_resets_its_connection_does_not_stop_the_server() -> None:
    """Any local process may connect and reset (RST) mid-request: that one connection fails,
    the server — and the relayer whose nursery runs it — carries on."""

    def reset_midway(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as rude:
            rude.sendall(b"GET /metr")
            # Linger 0: close() sends a RST, so the server's next read fails with ECONNRESET.
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def scenario(port: int) -> None:
        for _ in range(3):
            await trio.to_thread.run_sync(reset_midway, port)
            assert (await get(port, "/metrics")).text.startswith("passerelle_up 1\n")

    serve(scenario)


def test_connections_beyond_the_cap_are_closed_unanswered() -> None:
    """Two connections held inside the snapshot fill a cap of two: a third is closed at once
    with no answer (it costs no task for 5 s); once they finish, the server answers again."""
    inside, release = 0, trio.Event()
    full = trio.Event()

    async def slow() -> str:
        nonlocal inside
        inside += 1
        if inside == 2:
            full.set()
        await release.wait()
        return "passerelle_up 1\n"

    async def scenario(port: int) -> None:
        answers: list[httpx.Response] = []

        async def hold() -> None:
            answers.append(await get(port, "/metrics"))

        async with trio.open_nursery() as holders:
            holders.start_soon(hold)
            holders.start_soon(hold)
            await full.wait()
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            await extra.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(2):
                assert await extra.receive_some(1024) == b""  # closed, nothing said
            await extra.aclose()
            release.set()
        assert [a.status_code for a in answers] == [200, 200]
        assert (await get(port, "/healthz")).status_code == 200

    serve(scenario, snapshot=slow, max_connections=2)


# --------------------------------------------------------------------------- readiness rule


async def relay_loop_stub() -> None:
    """Stands in for ``Relayer._scan_loop``: readiness goes by the ``*_loop`` task name."""
    await trio.sleep_forever()


def test_readiness_needs_a_running_loop_and_an_answering_ledger() -> None:
    async def answers() -> object:
        return None

    async def refuses() -> object:
        raise ConnectionRefusedError("no database")

    async def hangs() -> object:
        await trio.sleep_forever()

    async def main() -> list[str | None]:
        seen: list[str | None] = []
        async with trio.open_nursery() as nursery:
            seen.append((await relay_readiness(nursery, answers)).reason)
            nursery.start_soon(relay_loop_stub, name="relayer.relay.Relayer._scan_loop")
            seen.append((await relay_readiness(nursery, answers)).reason)
            seen.append((await relay_readiness(nursery, refuses)).reason)
            seen.append((await relay_readiness(nursery, hangs)).reason)
            nursery.cancel_scope.cancel()
        return seen

    clock = trio.testing.MockClock(autojump_threshold=0)  # the 2 s probe timeout, instantly
    assert trio.run(main, clock=clock) == [
        "relay loops not started yet",
        None,
        "ledger does not answer: ConnectionRefusedError",
        "ledger did not answer within 2 s",
    ]


# --------------------------------------------------------------------------- wired into run()


class IdleRelayer(Relayer):
    """A real ``Relayer.run`` (ledger, lanes, signal watcher, metrics server) whose relay loops
    wait instead of talking to chains: what is under test is the wiring of ``/readyz``."""

    async def _scan_loop(self, lane: Any) -> None:
        await trio.sleep_forever()

    async def _collect_loop(self, lane: Any) -> None:
        await trio.sleep_forever()

    async def _deliver_loop(self, chain: Any) -> None:
        await trio.sleep_forever()


def test_a_running_relayer_is_ready_until_its_ledger_stops_answering(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    port = free_port()

    async def until(path: str, status: int) -> httpx.Response:
        with trio.fail_after(10):  # the server starts before the loops: poll, bounded
            while (answer := await get_or_none(port, path)) is None or answer.status_code != status:
                await trio.sleep(0.05)
        return answer

    with open_ledger(config.ledger) as ledger:
        relayer = IdleRelayer(config, ledger, metrics_port=port)

        async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                ready = await until("/readyz", 200)
                scraped = await until("/metrics", 200)
                # The probe's read now fails (as on a damaged or vanished database).
                with ledger.engine.begin() as connection:
                    connection.exec_driver_sql("DROP TABLE scan_cursors")
                unready = await until("/readyz", 503)
                nursery.cancel_scope.cancel()
            return ready, scraped, unready

        ready, scraped, unready = trio.run(main)
    assert ready.json()["ready"] is True
    assert any(
        f.name == "passerelle_messages" for f in text_string_to_metric_families(scraped.text)
    )
    (reason,) = unready.json()["reasons"]
    assert reason.startswith("ledger does not answer: ")


async def get_or_none(port: int, path: str) -> httpx.Response | None:
    """``GET path``, or None while nothing listens yet."""
    try:
        return await get(port, path)
    except httpx.ConnectError:
        return None


# --------------------------------------------------------------------------- the attester


def test_render_attester_exposes_counters_signed_indices_and_endpoints() -> None:
    state = AttesterState()
    state.signatures, state.errors = 3, 2
    state.signed = {1: 41, 3: 7}
    state.endpoints = {"alpha/attest": [EndpointHealth("http://a")]}
    config = cast(Config, SimpleNamespace(chains=[SimpleNamespace(domain=1, name='al"pha\n')]))
    found = samples(state.exposition(config))
    assert ("passerelle_attester_signatures_total", (), 3.0) in found
    assert ("passerelle_attester_errors_total", (), 2.0) in found
    assert ("passerelle_attester_skipped_remarks_total", (), 0.0) in found
    # A hostile chain name round-trips as one label value; an unnamed domain shows as itself.
    assert ("passerelle_attester_signed_index", (("origin", 'al"pha\n'),), 41.0) in found
    assert ("passerelle_attester_signed_index", (("origin", "3"),), 7.0) in found
    assert (
        "passerelle_rpc_quarantined",
        (("chain", "alpha/attest"), ("endpoint", "http://a")),
        0.0,
    ) in found


def test_a_running_attester_serves_its_numbers_and_counts_a_dead_node(tmp_path: Path) -> None:
    """``passerelle attest --metrics-port``: ready once its loops run; every EVM origin's node
    is a closed port here, so each poll is an error, counted, and the endpoints quarantined."""
    text = config_toml() + f'\n[[attesters]]\nkey = "0x{KEYS[0].hex()}"\n'
    for port in (8545, 8546, 8547):
        text = text.replace(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port()}")
    text = text.replace("ws://127.0.0.1:9944", f"ws://127.0.0.1:{free_port()}")
    config = load(tmp_path, text)
    port = free_port()

    async def main() -> tuple[httpx.Response, list[Sample]]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_attester, config, 0, poll=0.05, metrics_port=port))
            with trio.fail_after(20):
                while (ready := await get_or_none(port, "/readyz")) is None:
                    await trio.sleep(0.05)
                while True:
                    found = samples((await get(port, "/metrics")).text)
                    if any(
                        name == "passerelle_attester_errors_total" and value >= 3
                        for name, _, value in found
                    ):
                        break
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        return ready, found

    ready, found = trio.run(main)
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})
    quarantined = [v for n, labels, v in found if n == "passerelle_rpc_quarantined"]
    assert quarantined and set(quarantined) == {1.0}
    assert not [s for s in found if s[0] == "passerelle_attester_signed_index"]


def test_render_exposes_each_routes_backlog_age_scan_lag_and_last_delivery() -> None:
    found = samples(
        render(
            Counters(),
            {},
            {},
            routes=[("alpha", "beta", 4, 12.5)],
            scan_lag={"alpha": 3},
            last_delivered={"beta": 1_700_000_000.0},
        )
    )
    route = (("destination", "beta"), ("origin", "alpha"))
    assert ("passerelle_route_pending", route, 4.0) in found
    assert ("passerelle_route_oldest_pending_seconds", route, 12.5) in found
    assert ("passerelle_scan_lag_blocks", (("origin", "alpha"),), 3.0) in found
    delivered = ("passerelle_last_delivered_timestamp_seconds", (("destination", "beta"),))
    assert (*delivered, 1_700_000_000.0) in found


def test_a_relayer_reports_its_routes_from_the_ledger(tmp_path: Path) -> None:
    """The route gauges come from the ledger: what waits, per route, and for how long; a
    delivered message is no longer counted."""
    config = load(tmp_path, config_toml())
    with open_ledger(config.ledger) as ledger:
        raws = [message(nonce=n).encode() for n in range(3)]
        ledger.record_discovered(
            [DiscoveredMessage(r, 1, b"\x01" * 32, bytes([n]) * 32, 0) for n, r in enumerate(raws)]
        )
        ledger.transition(["0x" + keccak256(raws[0]).hex()], MessageStatus.DELIVERED)
        relayer = Relayer(config, ledger)
        found = samples(trio.run(relayer.metrics_text))
    route = (("destination", "assethub"), ("origin", "alpha"))
    assert ("passerelle_route_pending", route, 2.0) in found
    (age,) = [v for n, labels, v in found if n == "passerelle_route_oldest_pending_seconds"]
    assert 0.0 <= age < 60.0
