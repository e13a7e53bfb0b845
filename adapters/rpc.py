"""JSON-RPC over HTTP, trio-native (httpx), with several endpoints per chain.

Why not web3.py's provider: it blocks, so every call would need a worker thread; httpx speaks
HTTP natively under trio, and a JSON-RPC request is small enough to build by hand. Several
endpoints per chain give failover (what operators of other relayers most ask for): an endpoint
that fails at the transport level is quarantined with exponential backoff and the next healthy
one is tried; a JSON-RPC *error response* is the node's answer, not an outage, and is raised
to the caller as is (except for a ``narrowable`` call, below).
Every error names the endpoint that produced it — by its redacted URL
(:func:`adapters.redact.redact_url`): provider URLs carry API keys, and error texts end up in
logs, ``status`` output and metrics labels. The real URL is used only to connect.

An *identity check* (``identity=``) guards against an endpoint that serves another chain (a
fork, a testnet): each endpoint must pass it before its first use, and one that fails it is
never used again (:class:`WrongChainError`). Callers that must not take one node's word for
something (an attester's final block, ``rpc_quorum``) ask endpoints one by one with
:meth:`JsonRpcClient.call_on`.

Every exchange is bounded, whatever the endpoint does (it may be hostile, not just down):

- in time, by a deadline that grows with the bytes received (:func:`answer_deadline`:
  ``deadline`` seconds plus :data:`SECONDS_PER_MIB` per MiB so far). httpx's ``timeout``
  bounds each phase and each read, not the answer: a node sending a byte every few seconds
  would otherwise hold a relayer's or an attester's task for ever; a fixed deadline, though,
  failed an honest node on a slow link serving a large answer the same way at every poll;
- in size, by a cap per method (``answer_caps``, else ``max_answer_bytes``:
  :data:`MAX_ANSWER_BYTES`, 8 MiB, for ordinary calls; :data:`LOGS_ANSWER_BYTES` for
  ``eth_getLogs`` and the receipts, whose answers are legitimately large:
  :func:`logs_caps`). The cap counts the bytes of the body as we read them: we ask for
  ``Accept-Encoding: identity``; an answer compressed anyway with one ``gzip`` or ``deflate``
  layer is inflated by us, never more than the cap (:func:`read_capped`), and any other
  encoding (stacked ``gzip, gzip`` turned 590 bytes into 256 MiB through httpx) is refused;
- in parsing time, by its shape (:func:`parse_json`): ``json.loads`` holds the GIL for the
  whole parse, in a worker thread as much as on the loop, so no thread can keep a hostile
  body (32 MiB of ``[[],[],…]``: 2.5 s and 11 million lists) from stalling every other task
  of the process (leases, other chains). A body over :data:`SHAPE_CHECK_BYTES` with more
  than one value per :data:`MIN_BYTES_PER_TOKEN` bytes is refused unparsed. Honest answers
  over that size have a value per 29 bytes or more (measured: logs, receipts, proofs; see
  :data:`MIN_BYTES_PER_TOKEN` for the one shape below it, batches, safe only because they
  are chunked at 100). What passes still costs up to 1.7 s of CPU and 172 MiB at its peak
  per 32 MiB (the worst shapes measured);
- a redirect is an error, never followed (a JSON-RPC endpoint has no business sending us
  elsewhere, and a loop of them must not spin), and JSON nested deeper than the parser's stack
  is a garbled answer, not a ``RecursionError`` out of the relayer.

Each failure is one line naming the endpoint by its redacted URL, and the endpoint rests like
one that is down, with one exception: a call made ``narrowable`` (one whose answer grows with
what we asked, such as an ``eth_getLogs`` window of several blocks) whose answer is over its
cap, not begun within the deadline, not whole by it, or a JSON-RPC error object (how Infura,
Alchemy or QuickNode say a window is too wide: -32005 "query returned more than 10000
results", "block range too large"), may mean that our request was too wide, or that this
endpoint is slow or lying (a bare ``Content-Length: 999999999999`` or an error object costs it
nothing). One endpoint's word does not decide it: the next usable endpoint is asked the same
request, and :class:`RequestTooWide` is raised (the caller asks for less,
:meth:`adapters.evm.chain.EvmChain.logs` halves its window) only if no endpoint answered it.
If one did, each endpoint that claimed "too wide" rests like one that failed and takes a
*strike* (:attr:`EndpointHealth.strikes`). For a checked read (:meth:`JsonRpcClient.call_from`,
the log reads) every failure is such a claim at every width, one block included (an error
object, a hang, a trickle, a transport error): the next endpoint is asked the same, and only
if none answers is the first node error raised; a caller that proves the answer takes the
overruled claimants and strikes them only once its proof holds.

Rests are lifted by any success (an endpoint that answers everything but log windows would be
first again after its next ``eth_blockNumber``); strikes are not. Narrowable calls and
:meth:`JsonRpcClient.call_from` (the log reads, whose answers the caller checks: a ``check``
that refuses a result strikes the endpoint and asks the next; the caller may
:meth:`JsonRpcClient.strike` the endpoint that answered when a proof refutes it later) ask
endpoints with fewer strikes first. Strikes only order endpoints, never exclude one: an
endpoint with many is still asked when every other fails. What this does not stop: an
endpoint that answers short logs is found out only where a proof covers them (Dispatch logs,
by the outbox's count and root); other log reads take its word. Strikes are blame, and blame
is only as good as what it rests on: which window of a refuted range was short is not known,
so an honest endpoint that answered one is struck with the liar; and the proof is checked
against a header the quorum agreed, so with ``rpc_quorum = 1`` one lying header source can
make honest logs look refuted and strike their honest senders (the relayer still accepts
nothing unproven: this costs rounds, never a wrong message).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import ssl
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    "ANSWER_DEADLINE",
    "IDENTITY",
    "LOGS_ANSWER_BYTES",
    "MAX_ANSWER_BYTES",
    "MIB",
    "MIN_BYTES_PER_TOKEN",
    "SECONDS_PER_MIB",
    "SHAPE_CHECK_BYTES",
    "AnswerTooLarge",
    "DenseAnswer",
    "EncodedAnswer",
    "EndpointHealth",
    "Identity",
    "JsonRpcClient",
    "MalformedAnswer",
    "RequestTooWide",
    "RpcCallError",
    "RpcError",
    "WrongChainError",
    "answer_deadline",
    "failover_order",
    "late_answer",
    "logs_caps",
    "parse_json",
    "read_capped",
    "tls_context",
]

log = logging.getLogger("passerelle.rpc")

MIB = 1 << 20

ANSWER_DEADLINE = 30.0
"""Seconds one exchange may take, from sending the request to the answer's last byte, before
the answer's size is counted in (:func:`answer_deadline`); the per-read ``timeout`` stays
10 s. Three times what a healthy node needs for an ordinary answer."""
SECONDS_PER_MIB = 2.0
"""Seconds of deadline each MiB received buys (:func:`answer_deadline`): an answer arriving at
0.5 MiB/s or faster is never cut, and the longest any answer can take is bounded by its cap
(8 MiB: 46 s; 32 MiB: 94 s)."""
MAX_ANSWER_BYTES = 8 * MIB
"""The most bytes an answer to an ordinary method may have: the largest we ask for (a batch of
100 ``eth_call``, a 100-message ``eth_getProof`` chunk, a header) are well under 2 MiB, and a
hostile answer at the cap still costs a few hundred MiB of Python objects once parsed (a body
of ``[[],[],…]`` is about 25 times its size in memory)."""
LOGS_ANSWER_BYTES = 32 * MIB
"""The default cap of an ``eth_getLogs`` answer (a chain's ``max_logs_answer_mib`` sets its
own): about 30,000 Dispatch logs, more than one block of the busiest chain we know holds.
A window whose answer is larger is halved (:class:`RequestTooWide`), not failed. Receipts
get the same cap (:func:`logs_caps`)."""
SHAPE_CHECK_BYTES = MIB
"""Bodies up to this size are parsed whatever their shape: the worst, ``[[],[],…]``, takes
under 0.1 s of the loop. Larger ones are checked first (:data:`MIN_BYTES_PER_TOKEN`)."""
MIN_BYTES_PER_TOKEN = 16
"""The fewest bytes per ``,``, ``[`` or ``{`` a body over :data:`SHAPE_CHECK_BYTES` may have.
Every JSON value and key but a container's first follows a comma, so this bounds the objects a
parse builds (a 32 MiB body: about 4 million) and its time (about 1 s at the worst shape,
numbers padded to 16 bytes; 2.5 s for ``[[],…]`` unchecked). Measured on honest answers
(geth's compact JSON): ``eth_getLogs`` of empty ``LOG0`` logs 36 bytes per token, of Dispatch
logs 96, a receipt of empty ``LOG0`` logs 29.2 (anvil) to 29.7 (geth), ``eth_getProof`` 689.
The worst that passes, 32 MiB of floats padded to 16 bytes, takes 1.7 s of CPU (strings of 16
bytes: 0.8 s, 172 MiB at the peak).

One honest shape is under the bound: a batch of ``eth_call`` answers (26.7 bytes per token for
32-byte words, 10.7 for empty ``"0x"`` results). Batches are safe only because every one is
chunked at 100 calls (``CALLS_PER_BATCH`` in relayer/families/evm/payments.py,
``STATUS_BATCH`` in relayer/families/evm/user.py; 100 answers are about 10 KB, far under
:data:`SHAPE_CHECK_BYTES`): an unchunked batch of more than ~25,000 empty results would be
refused. The delivery's ``eth_getStorageAt`` batch (one call per distinct guard word, not
chunked, ~27 bytes per token) reaches 1 MiB only past ~10,000 distinct words."""


def logs_caps(cap: int) -> dict[str, int]:
    """Per-method answer caps for a client whose log answers may reach ``cap`` bytes: the logs
    themselves, and the receipts, which carry every log of a transaction (a delivery's carrier
    calls hostile recipients; empty ``LOG0`` logs cost about 1 byte of receipt per gas, so 18
    recipients at 500,000 gas each pass 8 MiB). The relayer keeps a batch's gas under this cap
    over 1.1 (``relayer.families.evm.delivery.RECEIPT_BYTES_PER_GAS``), so that its own
    carrier's receipt stays readable whatever the block gas limit: size ``max_logs_answer_mib``
    up on chains whose half block is above ~61M gas, or batches there stay smaller."""
    return {"eth_getLogs": cap, "eth_getTransactionReceipt": cap, "eth_getBlockReceipts": cap}


class AnswerTooLarge(RpcError):
    """An answer went past its size cap; only what fits the cap was read."""


class EncodedAnswer(RpcError):
    """An answer came with a ``Content-Encoding`` we do not decode (anything but one layer of
    ``gzip`` or ``deflate``), or one that does not decode."""


class DenseAnswer(ValueError):
    """A large body with far more JSON values per byte than any honest answer
    (:data:`MIN_BYTES_PER_TOKEN`): refused unparsed, since parsing it would hold the GIL."""


class RequestTooWide(RpcError):
    """A ``narrowable`` call that no usable endpoint answered, and at least one found too
    large or too slow (over its cap, not begun or not whole within the deadline): ask for
    less."""


IDENTITY = {"Accept-Encoding": "identity"}
"""Request headers of every client that reads with :func:`read_capped`: no compressed answers
(httpx would inflate a compressed body a whole chunk at a time, past any cap, so
:func:`read_capped` reads the wire's bytes and inflates them itself when a server compresses
anyway)."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS client context, what httpx builds by default (the certifi bundle,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR``, read once per process), given to every
    :class:`JsonRpcClient` and beacon API client.

    httpx builds a new one for each client it is not given one: ~20 ms of CPU reading the CA
    bundle, even for a plain ``http://`` endpoint, and an attester or relayer opens clients
    for each origin it reads (measured: 65 CPU s of `make test`, a third of it in relayers
    and attesters). An ``SSLContext`` is meant to be shared; httpcore sets its ALPN
    protocols at each TLS connect, the same ones for every client here (HTTP/1.1 only): a
    client with ``http2=True`` must not be given this context."""
    return httpx.create_ssl_context()


_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""The ``Content-Encoding`` values :func:`read_capped` inflates (one layer only), and the
``wbits`` of each: a gzip member, or a zlib stream (what HTTP calls ``deflate``)."""


def answer_deadline(started: float, base: float, received: int) -> float:
    """When an answer begun at ``started`` must be whole, ``received`` bytes into it: ``base``
    seconds, plus :data:`SECONDS_PER_MIB` for each MiB received. A slow but honest link keeps
    earning time; a trickle (a byte now and then) does not, and no answer outlives ``base``
    plus its cap's worth of seconds."""
    return started + base + SECONDS_PER_MIB * received / MIB


def late_answer(what: str, base: float, received: int) -> str:
    """The one line for an answer not whole by its :func:`answer_deadline`."""
    return (
        f"{what}: no whole answer within {base:g} s plus {SECONDS_PER_MIB:g} s per MiB "
        f"({received} bytes received)"
    )


async def read_capped(
    response: httpx.Response, limit: int, progress: Callable[[int], None] | None = None
) -> bytes:
    """``response``'s body (opened with ``stream``), read chunk by chunk as it comes on the
    wire and no further than ``limit`` bytes: :class:`AnswerTooLarge` as soon as it goes past
    (the connection is then closed with the stream, and the rest never read). An answer that
    declares a longer ``Content-Length`` is refused before a byte of it is read.

    The request asked for no compression (:data:`IDENTITY`), but some servers compress anyway
    (warp's ``gzip()`` filter, some proxies): one layer of ``gzip`` or ``deflate`` is inflated
    here, never to more than ``limit`` bytes (``decompressobj`` with ``max_length``: a bomb
    stops at the cap, not after inflating a whole chunk as httpx would), and the wire's bytes
    count against ``limit`` too. Any other encoding, stacked ones included, is refused
    (:class:`EncodedAnswer`), as is a compressed stream that does not decode, is cut short, or
    carries bytes after its end. ``progress`` is told the wire's bytes received so far after
    each chunk (to move a deadline, :func:`answer_deadline`)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflater = None
    if encoding not in ("", "identity"):
        if encoding not in _DECODERS:
            raise EncodedAnswer(
                f"answer encoded as {one_line(encoding)!r}: identity was asked for, and only "
                "one layer of gzip or deflate is decoded"
            )
        inflater = zlib.decompressobj(_DECODERS[encoding])
    declared = response.headers.get("content-length", "")
    # ASCII digits only: "²" is a digit to str.isdigit and not to int() (h11 refuses such a
    # header first; this must not depend on it).
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(f"answer of {declared} bytes, over {limit}")
    body = bytearray()
    wire = 0
    async for chunk in response.aiter_raw():  # the wire's bytes: nothing inflated behind us
        wire += len(chunk)
        body += chunk if inflater is None else _inflate(inflater, chunk, limit - len(body))
        if len(body) > limit or wire > limit:
            raise AnswerTooLarge(f"answer over {limit} bytes")
        if progress is not None:
            progress(wire)
    if inflater is not None and not inflater.eof:
        raise EncodedAnswer(f"the answer's {encoding} stream is cut short")
    return bytes(body)


def _inflate(inflater: Any, chunk: bytes, room: int) -> bytes:
    """``chunk`` of a compressed body inflated, at most ``room + 1`` bytes of it (one more than
    fits tells the caller it is over its cap; the rest of the input is never inflated)."""
    try:
        inflated: bytes = inflater.decompress(chunk, room + 1)
    except zlib.error as exc:
        raise EncodedAnswer(f"the answer does not decode: {one_line(str(exc))}") from None
    if inflater.unused_data:  # a second member, or trailing bytes: nothing honest sends them
        raise EncodedAnswer("the answer has bytes after its compressed stream")
    return inflated


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, on the caller's thread. ``ValueError`` (not JSON;
    UnicodeDecodeError is one), :class:`DenseAnswer` (a body over :data:`SHAPE_CHECK_BYTES`
    with more values per byte than :data:`MIN_BYTES_PER_TOKEN` allows: refused before
    parsing) or ``RecursionError`` (nested deeper than the parser's stack), for the caller to
    turn into its one line.

    Not in a worker thread: ``json.loads`` never releases the GIL, so a thread stalls the
    event loop exactly as long, and a cancelled task would wait for it anyway. The shape check
    is what bounds the stall: ``bytes.count`` runs at memory speed (about 10 ms for 32 MiB)."""
    if len(raw) > SHAPE_CHECK_BYTES:
        tokens = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if tokens * MIN_BYTES_PER_TOKEN > len(raw):
            raise DenseAnswer(
                f"answer of {len(raw)} bytes holds {tokens} JSON values, more than one per "
                f"{MIN_BYTES_PER_TOKEN} bytes: refused unparsed"
            )
    return json.loads(raw)


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
    strikes: int = 0
    """How often the endpoint failed a checked read that another endpoint answered (claimed a
    log window too wide or errored on it, answered something else than logs) or answered one
    that a proof refuted (:meth:`JsonRpcClient.strike`). Unlike the rest
    (``quarantined_until``), no success clears it: narrowable calls and
    :meth:`JsonRpcClient.call_from` ask endpoints with fewer strikes first."""
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
        deadline: float = ANSWER_DEADLINE,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        answer_caps: Mapping[str, int] | None = None,
    ) -> None:
        """``timeout`` bounds each phase of an exchange (connecting, each read); ``deadline``
        the whole of it before its size is counted in (:func:`answer_deadline`);
        ``answer_caps`` the bytes of an answer per method (default: the logs and receipts at
        :data:`LOGS_ANSWER_BYTES`, :func:`logs_caps`), and ``max_answer_bytes`` those of any
        other (see the module docstring)."""
        if not urls:
            raise ValueError("at least one RPC endpoint is required")
        self.endpoints = [EndpointHealth(url, identified=identity is None) for url in urls]
        self._identity = identity
        self._ids = itertools.count(1)
        self._base_backoff, self._max_backoff = base_backoff, max_backoff
        self.deadline, self.max_answer_bytes = deadline, max_answer_bytes
        self.answer_caps = dict(
            logs_caps(LOGS_ANSWER_BYTES) if answer_caps is None else answer_caps
        )
        self._http = httpx.AsyncClient(
            timeout=timeout,
            headers=IDENTITY,
            verify=tls_context(),
            follow_redirects=False,  # the default, said: a redirect is an HTTP error here
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

    def ordered(self) -> list[EndpointHealth]:
        """The usable endpoints in the order a call tries them: healthy ones first (in
        configured order), then quarantined ones soonest-first."""
        return failover_order(e for e in self.endpoints if not e.refused)

    def cap_of(self, method: str) -> int:
        """The most bytes an answer to ``method`` may have."""
        return self.answer_caps.get(method, self.max_answer_bytes)

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Call ``method``; fail over across endpoints on transport errors. A JSON-RPC error
        is the node's answer, raised as is. (A read whose size is the caller's choice, an
        ``eth_getLogs`` window, goes through :meth:`call_from`: see the module docstring.)"""
        results, _ = await self._failover(method, [(method, params)], batch=False)
        return results[0]

    async def call_from(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        narrowable: bool = False,
        check: Callable[[Any], str | None] | None = None,
        overruled: list[tuple[EndpointHealth, str]] | None = None,
    ) -> tuple[Any, EndpointHealth]:
        """:meth:`call`, for a read whose answer the caller checks: the result and the
        endpoint that gave it (to :meth:`strike` if a proof refutes it later). Endpoints with
        fewer strikes are asked first, whether or not the call is ``narrowable``.

        ``check`` returns None for an acceptable result, else a one-line reason: an endpoint
        whose result it refuses (``eth_getLogs`` answering a dict) is struck, and the next is
        asked. Without this, a result that is not logs failed the read at the caller, the
        endpoint counted a success and was asked first again at every poll.

        Whatever its width, an endpoint that did not answer (a JSON-RPC error, over the cap,
        a hang, a trickle, a transport error) is only claiming that the read cannot be
        answered: the next endpoint is asked the same. If one answers, the claim was
        overruled: each claimant and its reason go to ``overruled`` when given (the caller
        strikes them once a proof backs the answer, or narrows its request if the proof
        refutes it), else each is struck at once. If none answers: :class:`RequestTooWide`
        for a ``narrowable`` call, else the first node error (:class:`RpcCallError`), else
        :class:`RpcError`. Taking the first endpoint's error at one block as the node's
        answer let one endpoint that errs on every ``eth_getLogs``, configured first, stop a
        scan whose window had narrowed to one block, for good, never struck."""
        calls = [(method, params)]
        results, endpoint = await self._failover(
            method,
            calls,
            batch=False,
            narrowable=narrowable,
            check=check,
            checked=True,
            overruled=overruled,
        )
        return results[0], endpoint

    def strike(self, endpoint: EndpointHealth, reason: str) -> RpcError:
        """Rest ``endpoint`` like a failing one and give it a strike
        (:attr:`EndpointHealth.strikes`), for ``reason`` (one line, the endpoint named by its
        redacted URL): its answer to a checked read was wrong. The error, for the caller to
        raise or collect."""
        endpoint.strikes += 1
        return self._unusable(endpoint, reason)

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
        return (await self._failover(f"batch of {len(calls)}", calls, batch=True))[0]

    async def _failover(
        self,
        what: str,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        batch: bool,
        narrowable: bool = False,
        check: Callable[[Any], str | None] | None = None,
        checked: bool = False,
        overruled: list[tuple[EndpointHealth, str]] | None = None,
    ) -> tuple[list[Any], EndpointHealth]:
        """``calls`` asked of each usable endpoint in turn until one answers: its results and
        the endpoint. ``check`` (single calls): a refused result strikes the endpoint.
        ``checked`` (:meth:`call_from`): endpoints with fewer strikes are asked first (within
        the healthy, then the resting ones), and every failure is a claim another endpoint's
        answer overrules (into ``overruled`` if given, else struck), whatever the width."""
        errors: list[RpcError] = [WrongChainError(e.refused) for e in self.endpoints if e.refused]
        too_wide: list[tuple[EndpointHealth, RpcError]] = []
        order = self.ordered()
        if checked:  # stable: configured order, then soonest out of rest, within each rank
            now = trio.current_time()
            order.sort(key=lambda e: (e.quarantined_until > now, e.strikes))
        for endpoint in order:
            try:
                await self._identify(endpoint)
                results = await self._post(endpoint, calls, batch=batch, narrowable=narrowable)
            except (RpcCallError, RequestTooWide) as exc:
                if isinstance(exc, RpcCallError) and not checked:
                    raise  # the node's answer: the same on any endpoint
                # Too wide, or this endpoint slow or lying (a bare huge Content-Length, a hang
                # until the deadline): only another endpoint's answer tells which. Taking the
                # first endpoint's word let one such endpoint halve every window down to one
                # block, never rest, and keep the honest ones from ever being asked. A JSON-RPC
                # error is how hosted providers say "too wide" (-32005 "query returned more
                # than 10000 results", "block range too large"), and free for a hostile
                # endpoint to say at every poll: raised as is, it stopped the scan for good.
                too_wide.append((endpoint, exc))
                errors.append(exc)
                continue
            except RpcError as exc:
                if checked:  # a hang, a trickle, a 502 at one block: a claim like any other
                    too_wide.append((endpoint, exc))
                errors.append(exc)
                continue
            problem = None if check is None else check(results[0])
            if problem is not None:
                errors.append(self.strike(endpoint, f"{what} on {endpoint.url}: {problem}"))
                continue
            for claimant, claim in too_wide:  # it was not too wide: they failed to answer it
                reason = f"{claim}, which {endpoint.url} answered"
                if overruled is not None:  # the caller strikes once a proof backs the answer
                    overruled.append((claimant, reason))
                else:
                    self.strike(claimant, reason)
            return results, endpoint
        text = f"{what}: every endpoint failed: " + "; ".join(map(str, errors))
        if too_wide and narrowable:  # nobody answered; one at least found it too large/slow
            raise RequestTooWide(text)
        node_errors = [e for _, e in too_wide if isinstance(e, RpcCallError)]
        if node_errors:  # one block nobody answered: the first node's own words
            raise node_errors[0]
        # Every usable endpoint over the cap: the answer really is that large (what a caller
        # that cannot ask for less, a single block's logs, tells the operator about).
        answered = [e for e in errors if not isinstance(e, WrongChainError)]
        if answered and all(isinstance(e, AnswerTooLarge) for e in answered):
            raise AnswerTooLarge(text)
        raise RpcError(text)

    def _unusable(self, endpoint: EndpointHealth, reason: str) -> RpcError:
        endpoint.record_failure(trio.current_time(), reason, self._base_backoff, self._max_backoff)
        return RpcError(reason)

    async def _post(
        self,
        endpoint: EndpointHealth,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        batch: bool,
        narrowable: bool = False,
    ) -> list[Any]:
        """One HTTP exchange with one endpoint: a single request, or a batch of them."""
        requests = [request(method, params, next(self._ids)) for method, params in calls]
        what = f"{calls[0][0] if not batch else f'batch of {len(calls)}'} on {endpoint.url}"
        cap = max(self.cap_of(method) for method, _ in calls)
        started = trio.current_time()
        exchange = _Exchange(started, self.deadline)
        with trio.CancelScope(deadline=answer_deadline(started, self.deadline, 0)) as overall:
            exchange.scope = overall
            payload = requests if batch else requests[0]
            raw = await self._exchange(
                endpoint, payload, what, cap=cap, exchange=exchange, narrowable=narrowable
            )
        if overall.cancelled_caught:
            late = late_answer(what, self.deadline, exchange.received)
            if narrowable:  # begun or not: on a slow link a narrower window finishes in time
                raise RequestTooWide(late)
            raise self._unusable(endpoint, late)
        try:
            body = parse_json(raw)
        except DenseAnswer as exc:
            raise self._unusable(endpoint, f"{what}: {exc}") from None
        except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError),
            # or nested deeper than the parser's stack: garbled either way, never a crash
            raise self._unusable(endpoint, f"{what}: answer is not JSON") from None
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

    async def _exchange(
        self,
        endpoint: EndpointHealth,
        payload: object,
        what: str,
        *,
        cap: int,
        exchange: _Exchange,
        narrowable: bool,
    ) -> bytes:
        """POST ``payload`` to ``endpoint``: the answer's body, read up to ``cap`` bytes;
        :class:`RpcError` (one line, the endpoint resting) for anything else, or
        :class:`RequestTooWide` (the endpoint not resting yet: :meth:`_failover` decides) for a
        ``narrowable`` request too large or too slow to begin.
        The caller bounds it in time (``exchange.scope``, moved on as bytes arrive)."""
        if self._http.is_closed:
            # Closed by its owner on the way out (a shutdown cancelling the tasks that use it):
            # a task not yet told of the cancellation reaches here before its next checkpoint,
            # and httpx's RuntimeError ended a relayer's shutdown with a traceback. The
            # cancellation is raised if there is one; else one line.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise RpcError(f"{what}: this client's connections are closed")
        try:
            async with self._http.stream("POST", endpoint.target, json=payload) as response:
                exchange.answering = True
                # A 3xx is refused here too (no redirect is followed): a loop of them is one.
                response.raise_for_status()
                return await read_capped(response, cap, exchange.received_so_far)
        except httpx.HTTPStatusError as exc:
            # Its text quotes the full request URL: say the status, never the URL. The reason
            # phrase is the server's words: one bounded line, like a node's error message.
            status = f"HTTP {exc.response.status_code} {one_line(exc.response.reason_phrase)}"
            raise self._unusable(endpoint, f"{what}: {status}") from None
        except httpx.ReadTimeout:
            if narrowable and not exchange.answering:  # still working out the answer
                raise RequestTooWide(f"{what}: no answer begun within the read timeout") from None
            raise self._unusable(endpoint, f"{what}: ReadTimeout") from None
        except httpx.HTTPError as exc:
            # Scrubbed whole, then bounded (a key cut by the bound would not be recognised):
            # a protocol error can quote the server's bytes.
            detail = one_line(endpoint.scrub(f"{exc.__class__.__name__}: {exc}".rstrip(": ")))
            raise self._unusable(endpoint, f"{what}: {detail}") from None
        except AnswerTooLarge as exc:
            if narrowable:
                raise RequestTooWide(f"{what}: {exc}") from None
            # Not narrowable: the endpoint rests and the next is asked; if every one says the
            # same, _failover says it as AnswerTooLarge.
            endpoint.record_failure(
                trio.current_time(), f"{what}: {exc}", self._base_backoff, self._max_backoff
            )
            raise AnswerTooLarge(f"{what}: {exc}") from None
        except EncodedAnswer as exc:
            raise self._unusable(endpoint, f"{what}: {exc}") from None


@dataclass
class _Exchange:
    """One exchange's progress, for its deadline: whether the answer has begun (its status
    line and headers came), the bytes received, and the cancel scope whose deadline moves on
    with them (:func:`answer_deadline`)."""

    started: float
    base: float
    scope: trio.CancelScope | None = None
    answering: bool = False
    received: int = 0

    def received_so_far(self, count: int) -> None:
        self.received = count
        if self.scope is not None:
            self.scope.deadline = answer_deadline(self.started, self.base, count)
