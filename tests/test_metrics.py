"""The relayer's Prometheus endpoint: exposition text and the tiny HTTP server."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import httpx
import trio

from adapters.rpc import EndpointHealth
from devnet.anvil import free_port
from relayer.metrics import render, serve_metrics


@dataclass
class Counters:
    delivered: int = 7
    rpc_errors: int = 1


def test_render_exposes_counters_backlog_and_endpoints() -> None:
    healthy, broken = EndpointHealth("http://a"), EndpointHealth("http://b")
    healthy.record_success(0.01)
    broken.record_failure(0.0, "refused", 0.5, 30)
    text = render(Counters(), {"attested": 3, "delivered": 9}, {"beta/deliver": [healthy, broken]})
    assert "passerelle_delivered_total 7" in text
    assert 'passerelle_messages{status="attested"} 3' in text
    assert (
        'passerelle_rpc_requests_total{chain="beta/deliver",endpoint="http://b",outcome="error"} 1'
        in text
    )
    assert 'passerelle_rpc_quarantined{chain="beta/deliver",endpoint="http://b"} 1' in text
    assert 'passerelle_rpc_quarantined{chain="beta/deliver",endpoint="http://a"} 0' in text


def test_metrics_server_answers_on_loopback() -> None:
    port = free_port()

    async def snapshot() -> str:
        return "passerelle_up 1\n"

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_metrics, port, snapshot)
            async with httpx.AsyncClient() as client:
                ok = await client.get(f"http://127.0.0.1:{port}/metrics")
                missing = await client.get(f"http://127.0.0.1:{port}/")
            nursery.cancel_scope.cancel()
        assert ok.status_code == 200
        assert ok.text == "passerelle_up 1\n"
        assert missing.status_code == 404

    trio.run(scenario)


def test_an_endpoint_refused_for_another_chain_shows_as_quarantined() -> None:
    # Refused endpoints are skipped without a transport failure: without this they would look
    # healthy (quarantined 0, no errors) while failover is one endpoint short.
    refused = EndpointHealth("http://c")
    refused.refused = "http://c: serves chain id 5, but chain 'beta' has chain_id 1"
    text = render(Counters(), {}, {"beta/deliver": [refused]})
    assert 'passerelle_rpc_quarantined{chain="beta/deliver",endpoint="http://c"} 1' in text


def test_endpoint_labels_never_carry_the_provider_key() -> None:
    key = "q8ZxW2mN5vB7cD1fG3hJ"
    endpoints = [
        EndpointHealth(f"https://eth-mainnet.g.alchemy.com/v2/{key}"),
        EndpointHealth(f"https://user:{key}@node.example:8545/rpc"),
        EndpointHealth(f"wss://polkadot.api.onfinality.io/ws?apikey={key}"),
    ]
    text = render(Counters(), {}, {"alpha/scan": endpoints})
    assert key not in text
    assert 'endpoint="https://eth-mainnet.g.alchemy.com/v2/***"' in text
    assert 'endpoint="https://***@node.example:8545/rpc"' in text
    assert 'endpoint="wss://polkadot.api.onfinality.io/ws?***"' in text


def test_label_values_are_escaped_so_no_series_can_be_forged() -> None:
    # A chain name (from the config) or a status with a quote, a backslash or a newline must
    # stay inside its own label value: unescaped, `"` would end it and `\n` start a new sample.
    hostile = 'x"} 1\npasserelle_delivered_total{a="\\'
    text = render(Counters(), {hostile: 1}, {hostile: [EndpointHealth("http://a")]})
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("passerelle_delivered_total{") for line in samples)
    escaped = 'x\\"} 1\\npasserelle_delivered_total{a=\\"\\\\'
    assert f'passerelle_messages{{status="{escaped}"}} 1' in samples
    assert f'passerelle_rpc_quarantined{{chain="{escaped}",endpoint="http://a"}} 0' in samples


def test_a_client_that_resets_its_connection_does_not_stop_the_server() -> None:
    """Any local process may connect and reset (RST) mid-request: that one connection fails,
    the server — and the relayer whose nursery runs it — carries on."""
    port = free_port()

    async def snapshot() -> str:
        return "passerelle_up 1\n"

    def reset_midway() -> None:
        with socket.create_connection(("127.0.0.1", port)) as rude:
            rude.sendall(b"GET /metr")
            # Linger 0: close() sends a RST, so the server's next read fails with ECONNRESET.
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def scenario() -> httpx.Response:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_metrics, port, snapshot)
            for _ in range(3):
                await trio.to_thread.run_sync(reset_midway)
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"http://127.0.0.1:{port}/metrics")
            nursery.cancel_scope.cancel()
        return answer

    assert trio.run(scenario).text == "passerelle_up 1\n"
