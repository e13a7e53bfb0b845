"""The JSON-RPC 2.0 envelope, once: every request Passerelle, its devnet and its tests send.

:class:`adapters.rpc.JsonRpcClient` is the relayer's (trio, several endpoints, failover);
:func:`call_sync` is for the blocking one-shot calls of the devnet manager, the benchmarks and
the tests (a node's readiness, a chain id, a cheat code). Both build their requests with
:func:`request` and raise the errors defined here (:class:`RpcError`, :class:`RpcCallError`,
:class:`MalformedAnswer`; :mod:`adapters.rpc` re-exports them), so a failed call is the same
error everywhere. (The client reads its answers itself: it matches batch ids and scrubs
provider URLs out of node messages; :func:`result_of` is the one-answer form of that.)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from adapters.errors import AdapterError
from adapters.text import one_line

__all__ = [
    "SYNC_ANSWER_BYTES",
    "MalformedAnswer",
    "RpcCallError",
    "RpcError",
    "call_sync",
    "request",
    "result_of",
]

SYNC_ANSWER_BYTES = 32 << 20
"""The most bytes :func:`call_sync` reads of one answer (the devnet's and tests' calls: a
block, a receipt, a chain id): as large as :data:`adapters.rpc.LOGS_ANSWER_BYTES`, since these
calls only ever go to the devnet's own nodes on 127.0.0.1."""
_CHUNK = 64 << 10

# The errors of one exchange are defined here, not in adapters.rpc (which imports this module
# for the envelope and re-exports them, so ``from adapters.rpc import RpcError`` still works):
# both modules need them, and this one must not import adapters.rpc back.


class RpcError(AdapterError):
    """No endpoint could answer (transport failures, timeouts, malformed responses)."""


class MalformedAnswer(RpcError):
    """A node answered, but its result is not the shape the method promises (a missing key, a
    wrong type, a quantity that is not hex). An :class:`RpcError` because, to every caller, a
    garbled answer is no answer: code that retries or fails over on a dead node does the same
    here, and never sees a ``KeyError`` or ``ValueError`` from someone else's JSON."""


class RpcCallError(RpcError):
    """The node answered with a JSON-RPC error object.

    ``message``, the node's words, is kept as :func:`adapters.text.one_line` of it (at most
    :data:`adapters.text.NODE_TEXT_LIMIT` printable characters), here, where every such error
    is built: the error's text goes into log lines (a scan's, a payment read's, a delivery's),
    stored reasons and ``status``, and a hostile endpoint answering a megabyte with a forged
    second log line made each of those a megabyte and two lines, at every poll (review of
    F2SEAM, L3). Callers that put provider URLs in it scrub them first (:mod:`adapters.rpc`):
    a key cut in half by the bound would no longer be recognised."""

    def __init__(self, endpoint: str, method: str, code: int, message: str, data: Any = None):
        message = one_line(message)
        super().__init__(f"{method} on {endpoint}: error {code}: {message}")
        self.endpoint, self.method, self.code, self.message, self.data = (
            endpoint,
            method,
            code,
            message,
            data,
        )

    @property
    def reverted(self) -> bool:
        """Whether the node says the call's execution reverted (code 3, geth's and anvil's
        revert with data, or a message naming a revert: nodes say so first, "execution
        reverted: …", well inside the kept words), rather than refusing to run it (a rate
        limit, an unknown block, a bad request). The node's word, like its answers."""
        return self.code == 3 or "revert" in self.message.lower()


def request(method: str, params: Sequence[Any] = (), request_id: int = 1) -> dict[str, Any]:
    """One JSON-RPC 2.0 request object."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


def result_of(answer: object, endpoint: str, method: str) -> Any:
    """The ``result`` of a response object; :class:`RpcCallError` for an error object,
    :class:`MalformedAnswer` for anything that is neither."""
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"{method} on {endpoint}: the answer is not a JSON object")
    error = answer.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise MalformedAnswer(f"{method} on {endpoint}: malformed error {error!r:.120}")
        code = error.get("code")
        return_code = code if isinstance(code, int) else 0
        raise RpcCallError(
            endpoint, method, return_code, str(error.get("message")), error.get("data")
        )
    if "result" not in answer:
        raise MalformedAnswer(f"{method} on {endpoint}: the answer has no result")
    return answer["result"]


_RECHECK = 0.05
"""Seconds between a :class:`_Watchdog`'s looks at a connection still connecting."""


class _Watchdog:
    """The time limit of one :func:`call_sync`: when ``timeout`` runs out, a timer thread
    shuts the connection's socket (a blocked read or TLS handshake returns at once, as if the
    node had closed the connection).

    One lock orders the timer against the caller: :meth:`stop` marks the exchange over under
    it, so a timer firing after the last byte was read does nothing (a completed call is
    never reported as a timeout), and the socket is shut only while the caller has not
    closed it (closing frees the fd number, which another thread may reuse at once)."""

    def __init__(self, connection: http.client.HTTPConnection, timeout: float) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._over = False
        self.expired = False
        self._timer = threading.Timer(timeout, self._shut)
        self._timer.daemon = True

    def start(self) -> None:
        """Start counting."""
        self._timer.start()

    def _shut(self) -> None:
        with self._lock:
            if self._over:
                return
            self.expired = True
            sock = self._connection.sock
            if sock is None:
                # Still in the TCP connect (bounded by the socket timeout): no socket to shut
                # yet. Look again shortly, so that a TLS handshake after it is cut too.
                self._timer = threading.Timer(_RECHECK, self._shut)
                self._timer.daemon = True
                self._timer.start()
                return
            with contextlib.suppress(OSError):  # already shut: nothing left to stop
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> bool:
        """End the watch: True if the time ran out first (the exchange was cut short, whatever
        the reads made of it), False if it ended before and the timer will do nothing."""
        with self._lock:
            self._over = True
            self._timer.cancel()
            return self.expired


def call_sync(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = 10.0) -> Any:
    """One blocking call to ``url``: its result, or :class:`RpcError` (unreachable, HTTP error,
    a redirect, no whole answer within ``timeout``, an answer over :data:`SYNC_ANSWER_BYTES`,
    not JSON, a broken HTTP answer), :class:`RpcCallError` (the node's error object) or
    :class:`MalformedAnswer`. Always one line, never a traceback.

    ``timeout`` bounds the exchange, from the TLS handshake to the last byte: a watchdog
    thread shuts the socket when it runs out (:class:`_Watchdog`). What it cannot cut is
    the TCP connect, which has no socket to shut until it succeeds: that is bounded by the
    socket timeout, ``timeout`` for each address the host name resolves to (one for the
    127.0.0.1 URLs this is used with), and the call ends as soon as it returns if the time
    ran out meanwhile. A socket timeout alone bounds each read, and is reset by every byte:
    a node sending its status line, a header or a chunk-size line a byte every few seconds
    (each line may be 64 KiB, and there may be 100 headers) would hold the caller for hours.
    ``http.client``, not urllib: no redirect is followed (a JSON-RPC endpoint has no business
    sending us elsewhere), no ``Content-Encoding`` is asked for, and its own errors (a bad
    status line, a body cut short, a line too long) are caught here like any other failure.

    ``url`` is used as given: callers pass devnet URLs of 127.0.0.1, never provider URLs with
    keys (those go through :class:`adapters.rpc.JsonRpcClient`, which redacts them)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RpcError(f"{method} on {url}: not an http(s) URL")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = json.dumps(request(method, params)).encode()
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    try:
        connection = kind(parts.hostname, parts.port, timeout=timeout)
    except ValueError as exc:  # a port that is not a number
        raise RpcError(f"{method} on {url}: {one_line(str(exc))}") from None
    watchdog = _Watchdog(connection, timeout)
    try:
        watchdog.start()  # before connect(): the TLS handshake is bounded by it too
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        if response.status != 200:
            reason = one_line(f"{response.status} {response.reason}")
            raise RpcError(f"{method} on {url}: HTTP {reason}")
        raw = bytearray()
        while chunk := response.read1(_CHUNK):
            raw += chunk
            if len(raw) > SYNC_ANSWER_BYTES:
                raise RpcError(f"{method} on {url}: answer over {SYNC_ANSWER_BYTES} bytes")
        if response.length:  # the connection closed before the Content-Length was read
            raise http.client.IncompleteRead(bytes(raw), response.length)
        # A body framed by its Content-Length or by chunks and read to its end is whole, even
        # if the time ran out after its last byte: never reported as a timeout. One that
        # ends where the connection closes cannot tell a shut socket from its end: if the
        # watchdog fired at all, it may have been cut.
        framed = response.length is not None or response.chunked
        if watchdog.stop() and not framed:
            raise TimeoutError
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: an SSL socket shut under a read says "Read on closed or unwrapped SSL
        # socket" as one (and a port out of range is one too).
        if watchdog.stop():  # a read cut short by the watchdog, whatever it made of it
            raise RpcError(f"{method} on {url}: no whole answer within {timeout:g} s") from None
        raise RpcError(f"{method} on {url}: {one_line(f'{type(exc).__name__}: {exc}')}") from None
    finally:
        watchdog.stop()  # first: the timer never touches the socket once it is closed
        connection.close()
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # a whole answer that is not JSON
        raise RpcError(f"{method} on {url}: {one_line(f'{type(exc).__name__}: {exc}')}") from None
    return result_of(answer, url, method)
