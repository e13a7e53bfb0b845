"""What test modules share: a fake JSON-RPC node on a real websocket and clients of it, the one
builder of JSON-RPC *responses*, and :func:`unhex` for the hex of test vectors.

Only for what no real node can do here (chopsticks has no GRANDPA and serves no read proofs,
and a hostile node must be played by someone: :class:`RpcProxy` is one in front of a real
anvil): chains that can run (anvil, chopsticks) are used as they are, and a :class:`FakeNode`
may stand *in front of* one as a proxy (``upstream``), answering some methods itself and
forwarding the rest.

Requests are built with :func:`adapters.jsonrpc.request` like every other request of the
project; the answers a fake serves are built by :func:`response`, the one place tests write a
JSON-RPC response object.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import trio
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import Server, ServerConnection, serve

from adapters.errors import AdapterError
from adapters.jsonrpc import request
from adapters.rpc import tls_context
from adapters.substrate.finality import GET_READ_PROOF, PROVE_FINALITY
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.header import SubstrateHeader, encode_digest_item

__all__ = [
    "FAKE_NPM",
    "BeaconProxy",
    "FakeNode",
    "MemoryRpc",
    "RpcFailure",
    "RpcProxy",
    "WsRpc",
    "header_json",
    "honest",
    "response",
    "serving",
    "unhex",
    "ws_call",
]


def unhex(text: str) -> bytes:
    """The bytes of a test vector's hex, ``0x``-prefixed or bare (the vector files come from
    several sources and use both); otherwise as strict as
    :func:`light_clients.hexstr.parse_data` (whole bytes, no whitespace, no sign)."""
    return parse_data(text if text.startswith("0x") else "0x" + text, "test vector hex")


def response(
    request_id: Any, result: Any = None, *, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-RPC 2.0 response object: ``result``, or ``error`` (``{"code", "message"}``)."""
    if error is not None:
        return {"jsonrpc": "2.0", "id": request_id, "error": error}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


class RpcFailure(Exception):
    """Raised by a :class:`FakeNode` handler: the node answers with this error object."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def header_json(header: SubstrateHeader) -> dict[str, Any]:
    """``chain_getHeader``'s JSON, as substrate's RPC shapes it."""
    return {
        "parentHash": to_hex(header.parent_hash),
        "number": hex(header.number),
        "stateRoot": to_hex(header.state_root),
        "extrinsicsRoot": to_hex(header.extrinsics_root),
        "digest": {"logs": [to_hex(encode_digest_item(item)) for item in header.digest]},
    }


def ws_call(url: str, method: str, params: Sequence[Any] = ()) -> Any:
    """One JSON-RPC call over a websocket of its own: the result, or :class:`RpcFailure`."""
    with ws_connect(url, max_size=None) as connection:
        connection.send(json.dumps(request(method, params)))
        answer = json.loads(connection.recv(timeout=10))
    if "error" in answer:
        raise RpcFailure(answer["error"].get("code", -32000), answer["error"]["message"])
    return answer["result"]


class FakeNode:
    """Answers JSON-RPC from handlers; with ``upstream`` set (a proxy), forwards the rest.

    Serve it with :func:`serving`; ``calls`` lists what it answered itself."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[list[Any]], Any]] = {}
        self.calls: list[tuple[str, list[Any]]] = []
        self.upstream: str | None = None
        self.extra_methods: list[str] = []
        self.hidden_methods: set[str] = set()  # upstream methods the proxy does not list
        self.raw_results: dict[str, Callable[[list[Any]], bytes | None]] = {}
        self.url = ""

    def on(self, method: str, handler: Callable[[list[Any]], Any]) -> None:
        self.handlers[method] = handler

    def answer_raw(self, method: str, result: Callable[[list[Any]], bytes | None]) -> None:
        """Answer ``method`` with ``result(params)``: raw bytes put where the JSON ``result``
        goes and sent as a TEXT frame unchecked, so they may be what no honest node sends (bytes
        that are not UTF-8); None forwards or answers the call as usual."""
        self.raw_results[method] = result

    def serve_chain(self, headers: Sequence[SubstrateHeader]) -> None:
        by_hash = {to_hex(h.hash): h for h in headers}
        by_number = {h.number: h for h in headers}
        self.on(
            "chain_getHeader", lambda p: header_json(by_hash[p[0]]) if p[0] in by_hash else None
        )
        self.on(
            "chain_getBlockHash",
            lambda p: to_hex(by_number[p[0]].hash) if p[0] in by_number else None,
        )

    def serve_proofs(self, proofs: dict[int, bytes | None]) -> None:
        def prove(params: list[Any]) -> Any:
            if params[0] not in proofs:
                raise RpcFailure(-32000, "Block not yet finalized")
            proof = proofs[params[0]]
            return None if proof is None else to_hex(proof)

        self.on(PROVE_FINALITY, prove)

    def serve_read_proof(self, at: bytes, nodes: Sequence[bytes]) -> None:
        self.on(GET_READ_PROOF, lambda p: {"at": to_hex(at), "proof": [to_hex(n) for n in nodes]})

    def proved(self) -> list[int]:
        return [params[0] for method, params in self.calls if method == PROVE_FINALITY]

    def answer(self, method: str, params: list[Any]) -> Any:
        """The result, or RpcFailure (the node's error object)."""
        self.calls.append((method, params))
        handler = self.handlers.get(method)
        if handler is not None:
            return handler(params)
        if method == "rpc_methods":
            return {"version": 1, "methods": sorted({*self.handlers, "rpc_methods"})}
        raise RpcFailure(-32601, "Method not found")

    def handle(self, connection: ServerConnection) -> None:
        upstream = None if self.upstream is None else ws_connect(self.upstream, max_size=None)
        try:
            for raw in connection:
                asked = json.loads(raw)
                method, params = asked["method"], asked.get("params") or []
                garble = self.raw_results.get(method)
                result = None if garble is None else garble(params)
                if result is not None:
                    self.calls.append((method, params))
                    head = json.dumps({"jsonrpc": "2.0", "id": asked["id"]})[:-1].encode()
                    # websockets checks nothing it sends as text: the bytes go out as they are.
                    connection.send(head + b', "result": ' + result + b"}", text=True)
                    continue
                if upstream is not None and method not in self.handlers:
                    upstream.send(raw)
                    while True:  # no subscriptions are opened: the next answer with this id
                        reply = upstream.recv()
                        if json.loads(reply).get("id") == asked["id"]:
                            break
                    if method == "rpc_methods":  # the proxy adds its own methods
                        answer = json.loads(reply)
                        listed = answer["result"]["methods"] + self.extra_methods
                        answer["result"]["methods"] = [
                            m for m in listed if m not in self.hidden_methods
                        ]
                        reply = json.dumps(answer)
                    connection.send(reply)
                    continue
                try:
                    reply_object = response(asked["id"], self.answer(method, params))
                except RpcFailure as failure:
                    error = {"code": failure.code, "message": failure.message}
                    reply_object = response(asked["id"], error=error)
                connection.send(json.dumps(reply_object))
        finally:
            if upstream is not None:
                upstream.close()


@contextmanager
def serving(fake: FakeNode) -> Iterator[FakeNode]:
    """``fake`` listening on a free port of 127.0.0.1 (its ``url`` set), shut down after."""
    server: Server = serve(fake.handle, "127.0.0.1", 0, max_size=None)
    fake.url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(timeout=10)


class WsRpc:
    """A minimal NodeRpc over a real websocket (JSON-RPC errors become AdapterError, as in
    SubstrateClient), for the tests that need no metadata."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ids = itertools.count(1)
        self._connection: ClientConnection | None = None

    def _call(self, method: str, params: list[Any]) -> Any:
        if self._connection is None:
            self._connection = ws_connect(self.url, max_size=None)
        request_id = next(self._ids)
        self._connection.send(json.dumps(request(method, params, request_id)))
        answer = json.loads(self._connection.recv(timeout=10))
        assert answer["id"] == request_id
        if "error" in answer:
            error = answer["error"]
            raise AdapterError(f"{method} on {self.url}: error {error['code']}: {error['message']}")
        return answer["result"]

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        return await trio.to_thread.run_sync(self._call, method, list(params))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class MemoryRpc:
    """A :class:`FakeNode`'s answers in process (JSON round trip, no socket): for property
    tests, where a socket per example would only be slow."""

    def __init__(self, fake: FakeNode) -> None:
        self.url = "memory://fake"
        self.fake = fake

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        try:
            result = self.fake.answer(method, json.loads(json.dumps(list(params))))
        except RpcFailure as failure:
            raise AdapterError(f"{method} on {self.url}: {failure.message}") from None
        return json.loads(json.dumps(result))


# --------------------------------------------------------------------------- a lying HTTP node


class _HttpServer:
    """An HTTP server on a free port of 127.0.0.1, served from a thread while in a ``with``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class RpcProxy(_HttpServer):
    """An HTTP JSON-RPC endpoint in front of a real node that may rewrite requests.

    ``rewrite(request) -> request`` sees every single (non-batch) JSON-RPC request before it is
    forwarded; ``answer(request)``, if not None, is sent as the result instead of asking the
    node; ``down`` makes it answer 503 (an outage). Served from a thread.
    """

    def __init__(self, target: str, rewrite: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.target, self.rewrite, self.down = target, rewrite, False
        self.answer: Callable[[dict[str, Any]], Any] = lambda request: None
        # fail(request, request path): a JSON-RPC error message to answer with, or None.
        self.fail: Callable[[dict[str, Any], str], str | None] = lambda request, path: None
        self.methods: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if proxy.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                canned = failure = None
                if isinstance(request, dict):
                    proxy.methods.append(request["method"])
                    request = proxy.rewrite(request)
                    canned = proxy.answer(request)
                    failure = proxy.fail(request, self.path)
                answer: bytes
                if failure is not None:
                    reply = response(request["id"], error={"code": -32001, "message": failure})
                    answer = json.dumps(reply).encode()
                elif canned is not None:
                    answer = json.dumps(response(request["id"], canned)).encode()
                else:
                    answer = httpx.post(
                        proxy.target, json=request, timeout=10, verify=tls_context()
                    ).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet

        _HttpServer.__init__(self, Handler)

    def __enter__(self) -> RpcProxy:
        self.start()
        return self


class BeaconProxy(_HttpServer):
    """A beacon node's REST API that may lie: in front of a real node (``target``), or serving
    recorded answers (``static``: request path with its query → JSON body; a path not in it is
    a 404, as a node without the object answers).

    ``tamper(path, body) -> body`` sees every JSON answer before it is sent (None: send it
    as is); ``status`` (not None) answers every request with that HTTP status instead; ``raw``
    (not None) is sent as the body of every answer instead of JSON; ``trickle`` (seconds, not
    None) sends the body one byte at a time, that long apart; ``paths`` records what was
    asked. Served from a thread.
    """

    def __init__(self, target: str | None = None, static: dict[str, Any] | None = None) -> None:
        self.target, self.static = target, dict(static or {})
        self.tamper: Callable[[str, Any], Any] = lambda path, body: body
        self.status: int | None = None
        self.raw: bytes | None = None
        self.trickle: float | None = None
        self.paths: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.paths.append(self.path)
                status, body = proxy.status or 200, None
                if proxy.status is None and proxy.raw is None:
                    if proxy.target is not None:
                        upstream = httpx.get(
                            proxy.target + self.path, timeout=10, verify=tls_context()
                        )
                        status = upstream.status_code
                        body = upstream.json() if status == 200 else None
                    elif self.path in proxy.static:
                        body = proxy.static[self.path]
                    else:
                        status = 404
                if body is not None:
                    body = proxy.tamper(self.path, json.loads(json.dumps(body)))
                answer = json.dumps(body if body is not None else {"code": status}).encode()
                if proxy.raw is not None:
                    answer = proxy.raw
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if proxy.trickle is None:
                    # The client may give up (an answer over its size cap, say): no traceback.
                    with contextlib.suppress(OSError):
                        self.wfile.write(answer)
                    return
                for byte in answer:
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return  # the client gave up, as it should
                    time.sleep(proxy.trickle)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet

        _HttpServer.__init__(self, Handler)

    def __enter__(self) -> BeaconProxy:
        self.start()
        return self


def honest(request: dict[str, Any]) -> dict[str, Any]:
    return request


# A stand-in for npm: records its arguments and the lock `npm ci` would install from, then lays
# out what `npm ci --prefix P` would (P/node_modules), as a link to the checkout's packages.
FAKE_NPM = """
import json, os, sys
args = sys.argv[1:]
prefix = args[args.index("--prefix") + 1]
with open(os.path.join(prefix, "package-lock.json"), "rb") as lock:
    locked = lock.read().hex()
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "lock": locked}) + "\\n")
os.symlink(os.environ["FAKE_NPM_SOURCE"], os.path.join(prefix, "node_modules"))
"""
