"""The relayer's Prometheus endpoint: exposition text and the tiny HTTP server."""

from __future__ import annotations

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
