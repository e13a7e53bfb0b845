"""Reading an EVM chain: final head, headers, Dispatch events and the outbox state.

Everything a node returns that Passerelle acts on passes a light client first: a header's hash
is recomputed from its fields (``light_clients.ethereum.header``), the outbox's 33 storage
slots are proven with ``eth_getProof`` against that header's state root
(``light_clients.ethereum.state``) and the root is recomputed from them
(``light_clients.merkle.root_from_branch``); a Dispatch log must carry a message that decodes,
comes from this domain and hashes to the logged id. A node that lies is caught here, with an
:class:`AdapterError` naming what did not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode

from adapters.errors import AdapterError
from adapters.rpc import JsonRpcClient
from light_clients.errors import VerificationError
from light_clients.ethereum.header import EthHeader, header_rlp_from_json, verify_header_hash
from light_clients.ethereum.state import parse_get_proof, verify_get_proof
from light_clients.hashing import keccak256
from light_clients.merkle import TREE_DEPTH, root_from_branch
from light_clients.message import Message, decode_message

DISPATCH_TOPIC = keccak256(b"Dispatch(bytes32,uint32,uint32,bytes)")
# Outbox storage layout (adapters/evm/contracts/Outbox.sol): branch[32] in slots 0..31, count 32.
OUTBOX_COUNT_SLOT = TREE_DEPTH
MAX_LOG_RANGE = 2_000  # blocks per eth_getLogs request: public nodes cap ranges around here


@dataclass(frozen=True)
class BlockRef:
    """A block by number and hash (the hash is what reorg detection compares)."""

    number: int
    hash: bytes


@dataclass(frozen=True)
class DispatchEvent:
    """A message dispatched by an outbox, where it was logged."""

    message: Message
    raw: bytes
    block: BlockRef
    tx_hash: bytes
    log_index: int

    @property
    def id(self) -> bytes:
        """keccak256 of the canonical message bytes."""
        return self.message.id


@dataclass(frozen=True)
class OutboxState:
    """The outbox's count and root at a block, proven under that block's state root."""

    header: EthHeader
    count: int
    root: bytes


def quantity(value: int) -> str:
    """A JSON-RPC quantity."""
    return hex(value)


def hex0x(data: bytes) -> str:
    """``0x``-prefixed hex."""
    return "0x" + data.hex()


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise AdapterError(f"node returned a malformed {what}: {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise AdapterError(f"node returned a malformed {what}: {value!r}") from None


def _int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise AdapterError(f"node returned a malformed {what}: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise AdapterError(f"node returned a malformed {what}: {value!r}") from None


class EvmChain:
    """Read access to one EVM chain through a :class:`JsonRpcClient`."""

    def __init__(self, rpc: JsonRpcClient, *, domain: int, finality: str, depth: int = 0) -> None:
        """``finality`` is ``finalized``, ``safe``, ``confirmations`` (with ``depth``) or
        ``devnet-instant`` (see :class:`relayer.config.FinalityPolicy`)."""
        self.rpc = rpc
        self.domain = domain
        self.finality = finality
        self.depth = depth

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        return _int(await self.rpc.call("eth_chainId"), "chain id")

    async def latest_number(self) -> int:
        """The number of the latest block."""
        return _int(await self.rpc.call("eth_blockNumber"), "block number")

    async def header(self, block: int | str) -> EthHeader:
        """The header of ``block`` (a number or a tag), its hash recomputed by the light client."""
        tag = quantity(block) if isinstance(block, int) else block
        obj = await self.rpc.call("eth_getBlockByNumber", [tag, False])
        if not isinstance(obj, dict):
            raise AdapterError(f"node has no block {tag}")
        try:
            rlp = header_rlp_from_json(obj)
            return verify_header_hash(rlp, _bytes(obj.get("hash"), "block hash"))
        except VerificationError as exc:
            raise AdapterError(f"block {tag}: {exc}") from None

    async def final_header(self) -> EthHeader:
        """The newest block the finality policy accepts."""
        if self.finality in ("finalized", "safe"):
            return await self.header(self.finality)
        latest = await self.latest_number()
        if self.finality == "devnet-instant":
            return await self.header(latest)
        return await self.header(max(0, latest - self.depth))

    async def dispatches(
        self, outbox: bytes, from_block: int, to_block: int
    ) -> list[DispatchEvent]:
        """Every Dispatch event of ``outbox`` in ``[from_block, to_block]``, in chain order."""
        events: list[DispatchEvent] = []
        start = from_block
        while start <= to_block:
            end = min(to_block, start + MAX_LOG_RANGE - 1)
            logs = await self.rpc.call(
                "eth_getLogs",
                [
                    {
                        "address": hex0x(outbox[-20:]),
                        "fromBlock": quantity(start),
                        "toBlock": quantity(end),
                        "topics": [hex0x(DISPATCH_TOPIC)],
                    }
                ],
            )
            if not isinstance(logs, list):
                raise AdapterError("eth_getLogs returned a non-list")
            events += [self._dispatch(log, outbox) for log in logs if not log.get("removed")]
            start = end + 1
        return events

    def _dispatch(self, log: dict[str, Any], outbox: bytes) -> DispatchEvent:
        """Decode one Dispatch log and check it is what it says (T14: right emitter)."""
        emitter = _bytes(log.get("address"), "log address")
        if emitter != outbox[-20:]:
            raise AdapterError(f"log from {hex0x(emitter)}, not the outbox")
        topics = [_bytes(t, "topic") for t in log.get("topics", [])]
        if len(topics) != 3 or topics[0] != DISPATCH_TOPIC:
            raise AdapterError("malformed Dispatch log topics")
        try:
            nonce, raw = abi_decode(["uint32", "bytes"], _bytes(log.get("data"), "log data"))
            message = decode_message(raw)
        except VerificationError as exc:
            raise AdapterError(f"Dispatch log carries an invalid message: {exc}") from None
        except Exception as exc:  # eth_abi raises assorted decoding errors
            raise AdapterError(f"undecodable Dispatch log: {exc}") from None
        if message.id != topics[1] or message.nonce != nonce or message.origin != self.domain:
            raise AdapterError(f"Dispatch log {hex0x(topics[1])} does not match its message")
        return DispatchEvent(
            message=message,
            raw=bytes(raw),
            block=BlockRef(
                _int(log.get("blockNumber"), "block number"),
                _bytes(log.get("blockHash"), "block hash"),
            ),
            tx_hash=_bytes(log.get("transactionHash"), "transaction hash"),
            log_index=_int(log.get("logIndex"), "log index"),
        )

    async def outbox_state(self, outbox: bytes, header: EthHeader) -> OutboxState:
        """The outbox's count and root at ``header``, proven by ``eth_getProof``.

        The root is not read from ``root()``: the 32 frontier slots and the count slot are
        proven under the header's state root and the root is recomputed from them.
        """
        slots = [hex0x(slot.to_bytes(32, "big")) for slot in range(OUTBOX_COUNT_SLOT + 1)]
        result = await self.rpc.call(
            "eth_getProof", [hex0x(outbox[-20:]), slots, quantity(header.number)]
        )
        try:
            verdict = verify_get_proof(header.state_root, parse_get_proof(result))
        except VerificationError as exc:
            raise AdapterError(f"outbox state proof at block {header.number}: {exc}") from None
        values = {int.from_bytes(slot.key, "big"): slot.value for slot in verdict.storage}
        if verdict.account is None or set(values) != set(range(OUTBOX_COUNT_SLOT + 1)):
            raise AdapterError(f"outbox state proof at block {header.number} is incomplete")
        count = values[OUTBOX_COUNT_SLOT]
        frontier = [values[i].to_bytes(32, "big") for i in range(TREE_DEPTH)]
        try:
            root = root_from_branch(frontier, count)
        except VerificationError as exc:
            raise AdapterError(f"outbox state at block {header.number}: {exc}") from None
        return OutboxState(header=header, count=count, root=root)

    async def call(self, to: bytes, data: bytes, block: int | str = "latest") -> bytes:
        """``eth_call`` at ``block``; raises :class:`adapters.rpc.RpcCallError` on revert."""
        tag = quantity(block) if isinstance(block, int) else block
        result = await self.rpc.call(
            "eth_call", [{"to": hex0x(to[-20:]), "data": hex0x(data)}, tag]
        )
        return _bytes(result, "call result")

    async def call_many(
        self, to: bytes, datas: Sequence[bytes], block: int | str = "latest"
    ) -> list[bytes]:
        """Several ``eth_call`` to one contract in a single JSON-RPC batch (one round trip)."""
        tag = quantity(block) if isinstance(block, int) else block
        target = hex0x(to[-20:])
        results = await self.rpc.call_batch(
            [("eth_call", [{"to": target, "data": hex0x(data)}, tag]) for data in datas]
        )
        return [_bytes(result, "call result") for result in results]

    async def block_hash(self, number: int) -> bytes | None:
        """The canonical hash at ``number`` now (None if the node has no such block)."""
        obj = await self.rpc.call("eth_getBlockByNumber", [quantity(number), False])
        return None if obj is None else _bytes(obj.get("hash"), "block hash")


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature``, e.g. ``delivered(bytes32)``."""
    return keccak256(signature.encode())[:4]


def topics_of(events: Sequence[str]) -> dict[bytes, str]:
    """topic0 → event signature, for decoding receipts."""
    return {keccak256(e.encode()): e for e in events}
