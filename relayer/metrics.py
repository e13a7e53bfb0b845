"""Prometheus metrics for the relayer: ``passerelle relay --metrics-port N`` serves ``/metrics``.

Text exposition format, bound to 127.0.0.1 only (put a proxy in front to expose it). The numbers
an operator pages on: the backlog by status, deliveries, replays skipped (wasted relays),
recipient failures, dry-run failures, gas and fees, and per-endpoint RPC health.

Label values are escaped (a chain name with a quote cannot forge another series) and endpoints
appear only in their redacted form: provider URLs carry API keys, and whoever scrapes or stores
the metrics must not learn them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import trio

from adapters.redact import redact_url
from adapters.rpc import EndpointHealth

MAX_REQUEST_BYTES = 8192


def label(value: object) -> str:
    """``value`` as a quoted Prometheus label value: backslash, quote and newline escaped, as
    the text exposition format requires."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def render(
    counters: Any,
    backlog: Mapping[str, int],
    endpoints: Mapping[str, Sequence[EndpointHealth]],
) -> str:
    """The exposition text for a metrics dataclass, ledger counts and endpoint health."""
    lines: list[str] = []
    for item in fields(counters):
        name = f"passerelle_{item.name}_total"
        lines += [f"# TYPE {name} counter", f"{name} {getattr(counters, item.name)}"]
    lines.append("# TYPE passerelle_messages gauge")
    lines += [f"passerelle_messages{{status={label(s)}}} {n}" for s, n in sorted(backlog.items())]
    lines.append("# TYPE passerelle_rpc_requests_total counter")
    lines.append("# TYPE passerelle_rpc_quarantined gauge")
    for chain, health in sorted(endpoints.items()):
        for endpoint in health:
            labels = f"chain={label(chain)},endpoint={label(redact_url(endpoint.url))}"
            lines.append(
                f'passerelle_rpc_requests_total{{{labels},outcome="ok"}} {endpoint.successes}'
            )
            lines.append(
                f'passerelle_rpc_requests_total{{{labels},outcome="error"}} {endpoint.failures}'
            )
            # A refused endpoint (it serves another chain) is out for good: quarantined too.
            resting = endpoint.consecutive_failures > 0 or bool(endpoint.refused)
            lines.append(f"passerelle_rpc_quarantined{{{labels}}} {int(resting)}")
    return "\n".join(lines) + "\n"


async def serve_metrics(
    port: int,
    snapshot: Callable[[], Awaitable[str]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on 127.0.0.1:``port`` until cancelled."""

    async def handle(stream: trio.SocketStream) -> None:
        # A handler's exception would end serve_listeners and with it the nursery that runs
        # it — the relayer's: a client that resets its connection (any local process can) must
        # cost only that connection.
        try:
            with trio.move_on_after(5):
                await _answer(stream, snapshot)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def _answer(stream: trio.SocketStream, snapshot: Callable[[], Awaitable[str]]) -> None:
    """Read one request (at most :data:`MAX_REQUEST_BYTES` of head) and answer it."""
    request = b""
    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
        chunk = await stream.receive_some(1024)
        if not chunk:
            return
        request += chunk
    path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
    if path == b"/metrics":
        body, status = (await snapshot()).encode(), b"200 OK"
    else:
        body, status = b"not found: try /metrics\n", b"404 Not Found"
    head = (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(head + body)
