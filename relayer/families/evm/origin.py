"""An EVM chain as an origin: ``Dispatch`` logs of final blocks, reconciled with the outbox's
proven storage, and the outbox state an attester signs (:class:`relayer.family.Origin`).

Logs are an endpoint's word: a backend can drop, alter or invent them. So a scanned range counts
only if its nonces continue the caller's tree exactly *and* the outbox's count and root, proven
from its storage under the range's last (quorum-agreed) header, are what those logs make of the
tree. The attester does not scan at all: it proves the outbox's 33 storage slots against the
final header's state root and signs what they say.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.errors import AdapterError
from adapters.evm.chain import DispatchEvent, EvmChain, selector
from adapters.rpc import EndpointHealth
from light_clients.ethereum.header import EthHeader
from light_clients.merkle import IncrementalMerkleTree, frontier_append, root_from_branch
from relayer.config import ChainConfig
from relayer.family import Head, OutboxState, ScannedRange
from relayer.ledger import DiscoveredMessage

SCAN_CHUNK = 1_000
"""Blocks per scan step (and per ledger transaction) while catching up."""


class EvmOrigin:
    """One EVM origin, read through an open :class:`EvmChain`."""

    def __init__(self, chain: ChainConfig, evm: EvmChain, *, scan_chunk: int = SCAN_CHUNK) -> None:
        self.chain = chain
        self.evm = evm
        self.outbox = chain.outbox_id
        self.scan_chunk = scan_chunk

    @property
    def endpoints(self) -> Sequence[EndpointHealth]:
        """The chain's RPC endpoints and beacon API endpoints (for the health metrics)."""
        if self.evm.beacon is None:
            return self.evm.rpc.endpoints
        return [*self.evm.rpc.endpoints, *self.evm.beacon.api.endpoints]

    async def final_head(self) -> Head:
        """The final header under the chain's policy, hash recomputed, agreed by the quorum."""
        header = await self.evm.final_header()
        return Head(header.number, header.hash, header)

    async def block_hash(self, number: int) -> bytes | None:
        """Block ``number``'s hash as ``rpc_quorum`` endpoints agree on it."""
        return await self.evm.agreed_block_hash(number)

    async def stamped_domain(self) -> int:
        """The Outbox's ``localDomain()`` (one ``eth_call``; AdapterError unless 32 bytes holding
        a u32)."""
        answer = await self.evm.call(self.outbox, selector("localDomain()"))
        domain = int.from_bytes(answer, "big") if len(answer) == 32 else -1
        if not 0 <= domain < 2**32:
            raise AdapterError(
                f"{self.chain.name}: the outbox answered localDomain() with {len(answer)} bytes, "
                "not a uint32"
            )
        return domain

    async def scan(self, tree: IncrementalMerkleTree, first: int, final: Head) -> ScannedRange:
        """The Dispatch events of blocks ``first..`` (one chunk, up to ``final``), gapless and
        reconciled with the outbox's proven state at the chunk's end."""
        end = min(final.number, first + self.scan_chunk - 1)
        events = await self.evm.dispatches(self.outbox, first, end)
        # Agreed by the quorum like ``final``: its hash becomes the cursor's and its state root
        # proves the outbox count below.
        end_header = _header(final) if end == final.number else await self.evm.agreed_header(end)
        self._check_gapless(tree, events)
        # Gapless is not complete: a backend that drops the *last* logs of the range passes
        # the nonce check (the cursor would move past messages never to be seen again), and one
        # that alters a message keeps nonces and count (our root would then differ from the
        # committee's and the relayer would halt). The outbox's own state at the range's end,
        # proven from its storage, must be exactly what these logs make of our tree.
        ids = [e.id for e in events]
        await self._reconcile(tree, end_header, ids, first)
        found = [
            DiscoveredMessage(
                message=e.raw,
                block_number=e.block.number,
                block_hash=e.block.hash,
                tx_hash=e.tx_hash,
                log_index=e.log_index,
            )
            for e in events
        ]
        return ScannedRange(first, end, end_header.hash, found, ids)

    async def outbox_state(self, head: Head) -> OutboxState:
        """The outbox's count and root proven from its storage under ``head``'s state root."""
        state = await self.evm.outbox_state(self.outbox, _header(head))
        return OutboxState(state.count, state.root)

    def _check_gapless(self, tree: IncrementalMerkleTree, events: Sequence[DispatchEvent]) -> None:
        """Nonces must continue the tree exactly: a missing log is an error, never skipped."""
        expected = tree.count
        for event in events:
            if event.message.nonce != expected:
                raise AdapterError(
                    f"origin {self.chain.name}: expected nonce {expected}, got "
                    f"{event.message.nonce} (missed or duplicated logs; rescanning)"
                )
            expected += 1

    async def _reconcile(
        self, tree: IncrementalMerkleTree, end: EthHeader, ids: Sequence[bytes], first: int
    ) -> None:
        """AdapterError (the range is scanned again) unless the outbox's count and root proven
        at ``end`` equal the tree's after appending ``ids``."""
        state = await self.evm.outbox_state(self.outbox, end, may_be_absent=True)
        frontier, count = frontier_append(tree.frontier(), tree.count, ids)
        if state.count != count or state.root != root_from_branch(frontier, count):
            raise AdapterError(
                f"origin {self.chain.name}: the outbox holds {state.count} message(s) with root "
                f"0x{state.root.hex()} at block {end.number}, but the logs up to it give "
                f"{count} (logs missing, altered or invented); rescanning blocks "
                f"{first}..{end.number}"
            )


def _header(head: Head) -> EthHeader:
    """The verified header behind a head this family produced."""
    if not isinstance(head.proof, EthHeader):
        raise TypeError("not a head of an EVM origin")
    return head.proof
