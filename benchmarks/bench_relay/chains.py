"""The devnet as the relay benchmark sees it.

What its numbers assume (1-second anvil blocks, finality ``confirmations:3``, Asset Hub under
chopsticks with ``devnet-instant``), checked once by :func:`check_devnet`; :class:`EvmRpc`, the
benchmark's own eyes on an anvil chain (single calls through :func:`adapters.jsonrpc.call_sync`,
batches of :func:`adapters.jsonrpc.request` envelopes over one HTTP connection); and
:func:`block_offsets`, when a chain's blocks really appear.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from adapters.jsonrpc import MalformedAnswer, RpcError, request, result_of
from benchmarks import harness
from devnet.chopsticks import FINALITY_POLICY as HUB_FINALITY
from relayer.config import ChainConfig, Config

BLOCK_TIME = 1.0  # seconds, what the targets assume
FINALITY_BLOCKS = 3  # the devnet's "confirmations:3"
HUB = "assethub"  # the devnet's Asset Hub (chopsticks), domain 3
RPC_TIMEOUT = 60.0  # seconds; eth_getLogs over a phase of 2,000 messages is the longest call


def check_devnet(config: Config) -> ChainConfig | None:
    """The finality the numbers assume: confirmations:3 on the anvils, devnet-instant on
    Asset Hub. Returns the Asset Hub chain, or None if the devnet has none."""
    hub = None
    for chain in config.chains:
        if chain.name == HUB:  # the devnet's chains are known by name
            if str(chain.finality) != HUB_FINALITY:
                raise SystemExit(f"bench_relay: expected {HUB_FINALITY} on {chain.name}")
            hub = chain
        elif (chain.finality.name, chain.finality.depth) != ("confirmations", FINALITY_BLOCKS):
            raise SystemExit(f"bench_relay: expected confirmations:3, got {chain.finality}")
    return hub


class EvmRpc:
    """A small synchronous JSON-RPC view of one anvil chain."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.url, self.http = url, http

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One call; :class:`adapters.jsonrpc.RpcError` (or a subclass) if it fails."""
        return harness.rpc(self.url, method, params, timeout=RPC_TIMEOUT)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in call order. One
        :class:`~adapters.jsonrpc.RpcError` naming how many failed if any did."""
        payload = [request(method, params, i) for i, (method, params) in enumerate(calls)]
        try:
            answers = self.http.post(self.url, json=payload).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RpcError(f"batch of {len(calls)} on {self.url}: {exc}") from None
        if not isinstance(answers, list):
            raise MalformedAnswer(
                f"batch of {len(calls)} on {self.url}: not a list: {answers!r:.200}"
            )
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        results: list[Any] = []
        errors: list[RpcError] = []
        for i, (method, _) in enumerate(calls):
            try:
                results.append(result_of(by_id.get(i), self.url, method))
            except RpcError as error:
                errors.append(error)
        if errors:
            raise RpcError(f"{len(errors)} of {len(calls)} calls failed, e.g. {errors[0]}")
        return results

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def gas_limit(self) -> int:
        """The newest block's gas limit."""
        return int(self.call("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)

    def timestamps(self, numbers: set[int]) -> dict[int, int]:
        """Block number → timestamp (seconds) for every block in ``numbers``."""
        ordered = sorted(numbers)
        out: dict[int, int] = {}
        for start in range(0, len(ordered), 100):
            chunk = ordered[start : start + 100]
            blocks = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            out.update({n: int(b["timestamp"], 16) for n, b in zip(chunk, blocks, strict=True)})
        return out

    def logs(self, address: bytes, topic: bytes, from_block: int) -> list[dict[str, Any]]:
        """Logs of ``address`` with ``topic`` from ``from_block`` to the head (none if ahead)."""
        if from_block > self.block_number():
            return []
        return harness.logs(self.url, address, topic, from_block, timeout=RPC_TIMEOUT)

    def delivered(self, inbox: bytes, from_block: int) -> dict[str, int]:
        """Message id → block of its ``Delivered`` on the Inbox, from ``from_block``."""
        if from_block > self.block_number():
            return {}
        return harness.delivered_blocks(self.url, inbox, from_block)


def block_offsets(rpcs: Sequence[EvmRpc], blocks: int = 2, timeout: float = 10.0) -> list[float]:
    """Per chain, how long after its whole-second timestamp a block really appears (seconds).

    anvil stamps a block with the wall clock truncated to the second, and mines on a fixed
    1-second phase, so ``wall time ≈ timestamp + offset`` with a constant offset in [0, 1) per
    chain. Watching the head at ~10 ms resolution measures it (the smallest of ``blocks``
    sightings; 0.0 for a chain on which no block appeared within ``timeout``).
    """
    last = [rpc.block_number() for rpc in rpcs]
    seen: list[list[float]] = [[] for _ in rpcs]
    deadline = time.monotonic() + timeout
    while any(len(s) < blocks for s in seen) and time.monotonic() < deadline:
        for k, rpc in enumerate(rpcs):
            head = rpc.call("eth_getBlockByNumber", ["latest", False])
            now = time.time()
            number = int(head["number"], 16)
            if number > last[k]:
                if number == last[k] + 1:
                    seen[k].append(now - int(head["timestamp"], 16))
                last[k] = number
        time.sleep(0.01)
    return [min(s) if s else 0.0 for s in seen]
