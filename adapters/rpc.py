"""JSON-RPC over HTTP, trio-native (httpx), with several endpoints per chain.

Why not web3.py's provider: it blocks, so every call would need a worker thread; httpx speaks
HTTP natively under trio, and a JSON-RPC request is small enough to build by hand. Several
endpoints per chain give failover (what operators of other relayers most ask for): an endpoint
that fails at the transport level is quarantined with exponential backoff and the next healthy
one is tried; a JSON-RPC *error response* is the node's answer, not an outage, and is raised
to the caller as is.
Every error names the endpoint that produced it — by its redacted URL
(:func:`adapters.redact.redact_url`): provider URLs carry API keys, and error texts end up in
logs, ``status`` output and metrics labels. The real URL is used only to connect.

An *identity check* (``identity=``) guards against an endpoint that serves another chain (a
fork, a testnet): each endpoint must pass it before its first use, and one that fails it is
never used again (:class:`WrongChainError`). Callers that must not take one node's word for
something (an attester's final block, ``rpc_quorum``) ask endpoints one by one with
:meth:`JsonRpcClient.call_on`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import trio

from adapters.jsonrpc import MalformedAnswer, RpcCallError, RpcError, request
from adapters.redact import redact_url, scrub_url
from adapters.text import one_line

# The errors of a JSON-RPC exchange live with the envelope (adapters.jsonrpc, shared with the
# blocking call_sync); re-exported here, where callers have always imported them from.
__all__ = [
    "EndpointHealth",
    "Identity",
    "JsonRpcClient",
    "MalformedAnswer",
    "RpcCallError",
    "RpcError",
    "WrongChainError",
    "failover_order",
]

log = logging.getLogger("passerelle.rpc")


class WrongChainError(RpcError):
    """An endpoint failed the client's identity check: it serves another chain."""


@dataclass
class EndpointHealth:
    """Per-endpoint counters, exported as metrics and used to order failover.

    Built from the real URL (``target``, kept out of ``repr``); ``url`` is its redacted form,
    the only one that may be shown (metrics labels, logs, error texts).
    """

    target: str = field(repr=False)
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    quarantined_until: float = 0.0
    last_error: str = ""
    latency_ewma: float = field(default=math.nan)
    identified: bool = False
    """True once the endpoint passed the client's identity check (or there is none)."""
    refused: str = ""
    """Why the endpoint is never used again (it failed the identity check); empty if usable."""
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = redact_url(self.target)

    def scrub(self, text: str) -> str:
        """``text`` (a library's or a node's message) with the real URL redacted: whole, as
        given and as httpx normalises it, and piece by piece (:func:`scrub_url`) — a node sees
        the request path and may echo only that (``invalid project id <key>``)."""
        # An invalid URL: httpx cannot have quoted it in another form either.
        with suppress(httpx.InvalidURL):
            text = scrub_url(text, str(httpx.URL(self.target)))
        return scrub_url(text, self.target)

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


def failover_order(endpoints: Iterable[EndpointHealth]) -> list[EndpointHealth]:
    """The order to try ``endpoints`` in: healthy ones first (as given), then the quarantined
    ones, soonest out of quarantine first."""
    now = trio.current_time()
    usable = list(endpoints)
    healthy = [e for e in usable if e.quarantined_until <= now]
    resting = sorted(
        (e for e in usable if e.quarantined_until > now), key=lambda e: e.quarantined_until
    )
    return healthy + resting


Identity = tuple[str, Callable[[Any], str | None]]
"""An identity check: a method to call without parameters (``eth_chainId``) and a function of
its result that returns None for the right chain, or a one-line reason why not."""


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
        identity: Identity | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC endpoint is required")
        self.endpoints = [EndpointHealth(url, identified=identity is None) for url in urls]
        self._identity = identity
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _ordered(self) -> list[EndpointHealth]:
        """Healthy endpoints first (in configured order), then quarantined ones soonest-first."""
        return failover_order(e for e in self.endpoints if not e.refused)

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Call ``method``; fail over across endpoints on transport errors."""
        return (await self._failover(method, [(method, params)], batch=False))[0]

    async def call_on(
        self, endpoint: EndpointHealth, method: str, params: Sequence[Any] = ()
    ) -> Any:
        """Call ``method`` on ``endpoint`` only (no failover): for answers that must come from
        several independent endpoints. Raises :class:`RpcError` as :meth:`call` does."""
        if endpoint.refused:
            raise WrongChainError(endpoint.refused)
        await self._identify(endpoint)
        return (await self._post(endpoint, [(method, params)], batch=False))[0]

    async def identify_all(self) -> None:
        """Run the identity check on every endpoint that answers now; :class:`WrongChainError`
        for the first that serves another chain. Endpoints that do not answer are checked
        before their first use instead (an outage at start-up must not stop the process)."""
        for endpoint in self.endpoints:
            try:
                await self._identify(endpoint, quiet=True)  # the caller reports the refusal
            except WrongChainError:
                raise
            except RpcError:
                continue

    async def _identify(self, endpoint: EndpointHealth, *, quiet: bool = False) -> None:
        """Pass the identity check once per endpoint before it is used; refuse it for good if
        it serves another chain (its answers would be genuine — for the wrong chain)."""
        if endpoint.identified or self._identity is None:
            return
        method, check = self._identity
        try:
            result = (await self._post(endpoint, [(method, [])], batch=False))[0]
        except RpcCallError as exc:
            # No identity, no use — but no verdict either: it rests (backoff) like a failing
            # endpoint and is asked again later, rather than before every single call.
            raise self._unusable(
                endpoint, f"{endpoint.url}: identity check {method} failed: {exc}"
            ) from None
        problem = check(result)
        if problem is not None:
            endpoint.refused = f"{endpoint.url}: {problem}"
            endpoint.last_error = endpoint.refused
            if not quiet:
                # Said once, here: from now on the endpoint is skipped without a word, and the
                # operator would otherwise not learn that failover is one endpoint short.
                log.warning("%s", endpoint.refused)
            raise WrongChainError(endpoint.refused)
        endpoint.identified = True

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
        errors = [e.refused for e in self.endpoints if e.refused]
        for endpoint in self._ordered():
            try:
                await self._identify(endpoint)
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
        requests = [request(method, params, next(self._ids)) for method, params in calls]
        what = f"{calls[0][0] if not batch else f'batch of {len(calls)}'} on {endpoint.url}"
        started = trio.current_time()
        try:
            response = await self._http.post(
                endpoint.target, json=requests if batch else requests[0]
            )
            response.raise_for_status()
            body = response.json()
        except httpx.HTTPStatusError as exc:
            # Its text quotes the full request URL: say the status, never the URL. The reason
            # phrase is the server's words: one bounded line, like a node's error message.
            status = f"HTTP {exc.response.status_code} {one_line(exc.response.reason_phrase)}"
            raise self._unusable(endpoint, f"{what}: {status}") from None
        except (httpx.HTTPError, ValueError) as exc:
            # Scrubbed whole, then bounded (a key cut by the bound would not be recognised):
            # a protocol error can quote the server's bytes.
            detail = one_line(endpoint.scrub(f"{exc.__class__.__name__}: {exc}".rstrip(": ")))
            raise self._unusable(endpoint, f"{what}: {detail}") from None
        answers = body if batch else [body]
        if not isinstance(answers, list) or not all(
            isinstance(a, dict) and ("result" in a or "error" in a) for a in answers
        ):
            raise self._unusable(endpoint, f"{what}: malformed JSON-RPC response")
        # Only integer ids can be ours (an unhashable id from a hostile node must not crash us).
        by_id = {a["id"]: a for a in answers if isinstance(a.get("id"), int)}
        if any(asked["id"] not in by_id for asked in requests):
            raise self._unusable(endpoint, f"{what}: JSON-RPC response misses answers")
        endpoint.record_success(trio.current_time() - started)
        results = []
        for asked in requests:
            answer = by_id[asked["id"]]
            if answer.get("error") is not None:
                error = answer["error"]
                error = error if isinstance(error, dict) else {"message": str(error)}
                code = error.get("code")
                raise RpcCallError(  # which bounds the message, once scrubbed whole
                    endpoint.url,
                    str(asked["method"]),
                    code if isinstance(code, int) else 0,
                    endpoint.scrub(str(error.get("message", ""))),
                    error.get("data"),
                )
            results.append(answer["result"])
        return results
