"""The beacon node's light-client REST API, trio-native (httpx), with several endpoints.

What a sync-committee light client asks a beacon node (the Ethereum Beacon API,
``/eth/v1/beacon/light_client/…``): a bootstrap for a trusted block root, the best update of
each sync-committee period, and the newest finality update. Everything returned here is the
node's word — plain JSON, the ``data`` member of the answer — and is parsed and verified by
:mod:`light_clients.beacon` before anything is believed. So this module only has to make
answering cheap to check and lying cheap to survive:

- several endpoints, tried in order with the healthy ones first (the same
  :class:`adapters.rpc.EndpointHealth` counters and quarantine as JSON-RPC endpoints, so the
  metrics show both alike); an endpoint whose answer the light client refused is blamed
  (:meth:`BeaconApi.blame`) and rests, so one lying node cannot keep a follower from the
  honest ones;
- an answer is read with the JSON-RPC client's reader (:func:`adapters.rpc.read_capped`): up
  to :data:`MAX_ANSWER_BYTES` as the bytes come on the wire and no further (a hostile node
  could otherwise make us buffer without limit), uncompressed (``Accept-Encoding: identity``;
  one gzip or deflate layer sent anyway is inflated no further than the cap, and any other
  encoding refused: stacked gzip inflates past any cap in httpx before it can be counted),
  and refused unparsed if far denser in JSON values than any honest answer
  (:func:`adapters.rpc.parse_json`: parsing holds the GIL, in a thread too);
- an answer must arrive whole within :data:`ANSWER_DEADLINE` seconds plus
  :data:`adapters.rpc.SECONDS_PER_MIB` per MiB received (:func:`adapters.rpc.answer_deadline`;
  httpx's timeout bounds each read, not the answer: a node trickling a byte now and then
  would otherwise hold a follower for ever), and JSON nested too deep to parse is a garbled
  answer, not a crash;
- "not ready yet" is an HTTP 500 or 503 on Lodestar and 404 elsewhere (a finality update
  before the first finality, the updates of a period not reached yet): :class:`NotServed`,
  which fails over like an outage but says which it was.

Answers come back as the API wrote them, ``{"version", "data"}`` (other members dropped), or
the bare ``data`` when the node names no version: the parsers check that a claimed version is
the fork of the object's own slot. An answer that is valid but brings nothing new is not a
failure here; :class:`adapters.evm.beacon_finality.BeaconFollower` then asks the next endpoint
(:meth:`BeaconApi.ordered` and the ``*_on`` methods), so a lagging or stale node listed first
cannot keep it from the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Self

import httpx
import trio

from adapters.jsonrpc import MalformedAnswer, RpcError
from adapters.rpc import (
    IDENTITY,
    AnswerTooLarge,
    DenseAnswer,
    EncodedAnswer,
    EndpointHealth,
    answer_deadline,
    failover_order,
    late_answer,
    parse_json,
    read_capped,
    tls_context,
)
from adapters.text import one_line

__all__ = [
    "ANSWER_DEADLINE",
    "MAX_ANSWER_BYTES",
    "MAX_UPDATES_PER_REQUEST",
    "BeaconApi",
    "NotServed",
]

log = logging.getLogger("passerelle.beacon")

MAX_ANSWER_BYTES = 8 << 20
"""The most bytes one answer may have: a mainnet update with its 512-key committee is about
25 KB, so :data:`MAX_UPDATES_PER_REQUEST` of them fit with room to spare."""

ANSWER_DEADLINE = 30.0
"""Seconds one answer may take from request to its last byte, plus
:data:`adapters.rpc.SECONDS_PER_MIB` per MiB received."""

MAX_UPDATES_PER_REQUEST = 16
"""Periods asked in one ``updates`` request (the API allows 128; fewer keeps answers small)."""

_NOT_SERVED = frozenset({404, 500, 503})
_LC = "/eth/v1/beacon/light_client"


class NotServed(RpcError):
    """No endpoint serves the object now (not produced yet, or pruned): asked again later."""


class BeaconApi:
    """A beacon node's light-client endpoints, with ordered failover across ``urls``."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        base_backoff: float = 0.5,
        max_backoff: float = 30.0,
        deadline: float = ANSWER_DEADLINE,
    ) -> None:
        if not urls:
            raise ValueError("at least one beacon API endpoint is required")
        self.deadline = deadline
        self.endpoints = [EndpointHealth(url.rstrip("/"), identified=True) for url in urls]
        self._base_backoff, self._max_backoff = base_backoff, max_backoff
        self._http = httpx.AsyncClient(timeout=timeout, headers=IDENTITY, verify=tls_context())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def bootstrap_on(self, endpoint: EndpointHealth, block_root: bytes) -> Any:
        """``endpoint``'s ``LightClientBootstrap`` for the block ``block_root`` (the light client
        checks it against ``block_root``)."""
        path = f"{_LC}/bootstrap/0x{block_root.hex()}"
        return self._payload(await self._fetch(endpoint, path), endpoint, path)

    async def updates_on(
        self, endpoint: EndpointHealth, start_period: int, count: int
    ) -> list[Any]:
        """The best ``LightClientUpdate`` of each period from ``start_period`` (at most ``count``,
        capped at :data:`MAX_UPDATES_PER_REQUEST`), oldest first, as ``endpoint`` serves them."""
        count = max(1, min(count, MAX_UPDATES_PER_REQUEST))
        path = f"{_LC}/updates?start_period={start_period}&count={count}"
        answer = await self._fetch(endpoint, path)
        if not isinstance(answer, list) or len(answer) > count:
            raise self._refuse(
                endpoint,
                f"updates on {endpoint.url}: not a list of at most {count}",
                MalformedAnswer,
            )
        return [self._payload(item, endpoint, "update") for item in answer]

    async def finality_update_on(self, endpoint: EndpointHealth) -> Any:
        """``endpoint``'s newest ``LightClientFinalityUpdate``."""
        path = f"{_LC}/finality_update"
        return self._payload(await self._fetch(endpoint, path), endpoint, path)

    def blame(self, endpoint: EndpointHealth, reason: str) -> None:
        """Rest ``endpoint``: the light client refused what it served (``reason``)."""
        log.warning("beacon API %s served what the light client refuses: %s", endpoint.url, reason)
        endpoint.record_failure(trio.current_time(), reason, self._base_backoff, self._max_backoff)

    def ordered(self) -> list[EndpointHealth]:
        """The endpoints, healthy ones first (in configured order), resting ones soonest-first."""
        return failover_order(self.endpoints)

    async def _fetch(self, endpoint: EndpointHealth, path: str) -> Any:
        """One GET on one endpoint: the parsed JSON answer, read up to the size cap."""
        what = f"GET {path.split('?', maxsplit=1)[0]} on {endpoint.url}"
        started = trio.current_time()
        received = 0

        def progress(count: int) -> None:
            nonlocal received
            received = count
            deadline.deadline = answer_deadline(started, self.deadline, count)

        with trio.CancelScope(deadline=answer_deadline(started, self.deadline, 0)) as deadline:
            raw = await self._read(endpoint, path, what, progress)
        if deadline.cancelled_caught:
            raise self._refuse(endpoint, late_answer(what, self.deadline, received))
        try:
            answer = parse_json(raw)
        except DenseAnswer as exc:
            raise self._refuse(endpoint, f"{what}: {exc}", MalformedAnswer) from None
        except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError),
            # or nested deeper than the parser's stack: garbled either way, never a crash
            raise self._refuse(endpoint, f"{what}: answer is not JSON", MalformedAnswer) from None
        endpoint.record_success(trio.current_time() - started)
        return answer

    async def _read(
        self, endpoint: EndpointHealth, path: str, what: str, progress: Callable[[int], None]
    ) -> bytes:
        try:
            async with self._http.stream(
                "GET", endpoint.target + path, headers={"accept": "application/json"}
            ) as response:
                if response.status_code in _NOT_SERVED:
                    # Not an outage: the node is up and says "not (yet) here". It does not
                    # rest for it, or a follower polling before the first finality would put
                    # every endpoint in quarantine.
                    raise NotServed(f"{what}: HTTP {response.status_code} (not served now)")
                response.raise_for_status()
                return await read_capped(response, MAX_ANSWER_BYTES, progress)
        except httpx.HTTPStatusError as exc:
            # The reason phrase is the server's words: one bounded line.
            status = f"HTTP {exc.response.status_code} {one_line(exc.response.reason_phrase)}"
            raise self._refuse(endpoint, f"{what}: {status}") from None
        except httpx.HTTPError as exc:
            detail = one_line(endpoint.scrub(f"{exc.__class__.__name__}: {exc}".rstrip(": ")))
            raise self._refuse(endpoint, f"{what}: {detail}") from None
        except (AnswerTooLarge, EncodedAnswer) as exc:
            raise self._refuse(endpoint, f"{what}: {exc}", MalformedAnswer) from None

    def _payload(self, answer: object, endpoint: EndpointHealth, what: str) -> Any:
        """``{"version", "data"}`` of a beacon API answer (the bare ``data`` if it names no
        version), for the parsers: they check the version against the object's slot."""
        if not isinstance(answer, dict) or "data" not in answer:
            raise self._refuse(
                endpoint, f"{what} on {endpoint.url}: answer has no data member", MalformedAnswer
            )
        if "version" not in answer:
            return answer["data"]
        return {"version": answer["version"], "data": answer["data"]}

    def _refuse(
        self, endpoint: EndpointHealth, reason: str, kind: type[RpcError] = RpcError
    ) -> RpcError:
        """Rest ``endpoint`` (an outage or a garbled answer); the error to raise."""
        endpoint.record_failure(trio.current_time(), reason, self._base_backoff, self._max_backoff)
        return kind(reason)
