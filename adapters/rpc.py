"""JSON-RPC over HTTP, trio-native (httpx), with several endpoints per chain.

Why not web3.py's provider: it blocks, so every call would need a worker thread; httpx speaks
HTTP natively under trio, and a JSON-RPC request is small enough to build by hand. Several
endpoints per chain give failover (anchors.md §4.3): an endpoint that fails at the transport
level is quarantined with exponential backoff and the next healthy one is tried; a JSON-RPC
*error response* is the node's answer, not an outage, and is raised to the caller as is.
Every error names the endpoint that produced it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio


class RpcError(Exception):
    """No endpoint could answer (transport failures, timeouts, malformed responses)."""


class RpcCallError(RpcError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, endpoint: str, method: str, code: int, message: str, data: Any = None):
        super().__init__(f"{method} on {endpoint}: error {code}: {message}")
        self.endpoint, self.method, self.code, self.message, self.data = (
            endpoint,
            method,
            code,
            message,
            data,
        )


@dataclass
class EndpointHealth:
    """Per-endpoint counters, exported as metrics and used to order failover."""

    url: str
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    quarantined_until: float = 0.0
    last_error: str = ""
    latency_ewma: float = field(default=math.nan)

    def record_success(self, latency: float) -> None:
        """Note a good answer and fold its latency into the moving average."""
        self.successes += 1
        self.consecutive_failures = 0
        self.quarantined_until = 0.0
        alpha = 0.2
        self.latency_ewma = (
            latency
            if math.isnan(self.latency_ewma)
            else (alpha * latency + (1 - alpha) * self.latency_ewma)
        )

    def record_failure(
        self, now: float, error: str, base_backoff: float, max_backoff: float
    ) -> None:
        """Quarantine the endpoint for an exponentially growing time."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        backoff = min(max_backoff, base_backoff * 2 ** (self.consecutive_failures - 1))
        self.quarantined_until = now + backoff


class JsonRpcClient:
    """A JSON-RPC 2.0 client over HTTP with ordered failover across endpoints."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        base_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC endpoint is required")
        self.endpoints = [EndpointHealth(url) for url in urls]
        self._ids = itertools.count(1)
        self._base_backoff, self._max_backoff = base_backoff, max_backoff
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> JsonRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _ordered(self) -> list[EndpointHealth]:
        """Healthy endpoints first (in configured order), then quarantined ones soonest-first."""
        now = trio.current_time()
        healthy = [e for e in self.endpoints if e.quarantined_until <= now]
        resting = sorted(
            (e for e in self.endpoints if e.quarantined_until > now),
            key=lambda e: e.quarantined_until,
        )
        return healthy + resting

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Call ``method``; fail over across endpoints on transport errors."""
        return (await self._failover(method, [(method, params)], batch=False))[0]

    async def call_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one JSON-RPC batch request (one round trip); results in order.

        Fails over like :meth:`call`; a JSON-RPC error in any answer raises RpcCallError.
        """
        if not calls:
            return []
        return await self._failover(f"batch of {len(calls)}", calls, batch=True)

    async def _failover(
        self, what: str, calls: Sequence[tuple[str, Sequence[Any]]], *, batch: bool
    ) -> list[Any]:
        errors: list[str] = []
        for endpoint in self._ordered():
            try:
                return await self._post(endpoint, calls, batch=batch)
            except RpcCallError:
                raise
            except RpcError as exc:
                errors.append(str(exc))
        raise RpcError(f"{what}: every endpoint failed: " + "; ".join(errors))

    def _unusable(self, endpoint: EndpointHealth, reason: str) -> RpcError:
        endpoint.record_failure(trio.current_time(), reason, self._base_backoff, self._max_backoff)
        return RpcError(reason)

    async def _post(
        self, endpoint: EndpointHealth, calls: Sequence[tuple[str, Sequence[Any]]], *, batch: bool
    ) -> list[Any]:
        """One HTTP exchange with one endpoint: a single request, or a batch of them."""
        requests = [
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            for method, params in calls
        ]
        what = f"{calls[0][0] if not batch else f'batch of {len(calls)}'} on {endpoint.url}"
        started = trio.current_time()
        try:
            response = await self._http.post(endpoint.url, json=requests if batch else requests[0])
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unusable(
                endpoint, f"{what}: {exc.__class__.__name__}: {exc}".rstrip(": ")
            ) from None
        answers = body if batch else [body]
        if not isinstance(answers, list) or not all(
            isinstance(a, dict) and ("result" in a or "error" in a) for a in answers
        ):
            raise self._unusable(endpoint, f"{what}: malformed JSON-RPC response")
        by_id = {answer.get("id"): answer for answer in answers}
        if any(request["id"] not in by_id for request in requests):
            raise self._unusable(endpoint, f"{what}: JSON-RPC response misses answers")
        endpoint.record_success(trio.current_time() - started)
        results = []
        for request in requests:
            answer = by_id[request["id"]]
            if answer.get("error") is not None:
                error = answer["error"]
                error = error if isinstance(error, dict) else {"message": str(error)}
                raise RpcCallError(
                    endpoint.url,
                    str(request["method"]),
                    int(error.get("code", 0)),
                    str(error.get("message", "")),
                    error.get("data"),
                )
            results.append(answer["result"])
        return results
