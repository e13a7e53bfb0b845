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

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from adapters.errors import AdapterError
from adapters.text import one_line

__all__ = ["MalformedAnswer", "RpcCallError", "RpcError", "call_sync", "request", "result_of"]

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


def call_sync(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = 10.0) -> Any:
    """One blocking call to ``url``: its result, or :class:`RpcError` (unreachable, HTTP error,
    not JSON), :class:`RpcCallError` (the node's error object) or :class:`MalformedAnswer`.

    ``url`` is used as given: callers pass devnet URLs of 127.0.0.1, never provider URLs with
    keys (those go through :class:`adapters.rpc.JsonRpcClient`, which redacts them)."""
    body = json.dumps(request(method, params)).encode()
    http_request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise RpcError(f"{method} on {url}: {one_line(f'{type(exc).__name__}: {exc}')}") from None
    return result_of(answer, url, method)
