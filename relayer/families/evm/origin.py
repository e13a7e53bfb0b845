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
from adapters.evm.chain import DispatchEvent, EvmChain, LogAnswer, selector
from adapters.rpc import EndpointHealth
from light_clients.errors import DecodeError
from light_clients.ethereum.header import EthHeader
from light_clients.hexstr import parse_data, to_hex
from light_clients.merkle import IncrementalMerkleTree, frontier_append, root_from_branch
from relayer.config import ChainConfig
from relayer.family import DiscoveredMessage, Head, OutboxState, ScannedRange

SCAN_CHUNK = 1_000
"""Blocks per scan step (and per ledger transaction) while catching up."""


async def local_domain(evm: EvmChain, contract: bytes, what: str, expected: int) -> int:
    """``localDomain()`` of ``contract`` (an Outbox or an Inbox: the domain it stamps into its
    messages, or takes messages for), one ``eth_call`` at ``latest`` per distinct endpoint, in
    the configured order, judged against ``expected`` (the configured domain):

    - ``expected`` as soon as ``rpc_quorum`` endpoints said it;
    - another value only if EVERY distinct endpoint answered, ``rpc_quorum`` of them said it
      AND none said ``expected``: what a relayer halts on (:class:`relayer.relay.DomainCheck`),
      so it needs a quorum against the configuration, no evidence for it, and no endpoint
      that could still give some. With the first value to reach the quorum, two liars listed
      before an honest endpoint halted every relayer (review of FSEAM, L1); with the honest
      endpoint merely down (a timeout, HTTP 429) at a lease claim, one liar at quorum 1 (two
      at quorum 2) halted one relayer after another (review of F2SEAM, L2);
    - AdapterError otherwise (the domain cannot be read now: endpoints failing, answering
      anything but 32 bytes holding a u32, or disagreeing), naming what each endpoint said
      by its redacted URL, so that an operator can tell which one to remove (review of
      FSEAM, M1). The caller asks again later, and reads or halts once every endpoint answers.

    An endpoint's word, never a proof. With a quorum of 1, one endpoint saying ``expected``
    confirms it. A configuration that is really wrong behind an endpoint that never answers
    is warned about (the votes named), never halted on: not halting costs nothing, as either
    contract refuses what is not addressed to it. The same node listed under two URLs votes
    twice: endpoints are told apart by their text only (docs/relayer.md, ``rpc_quorum``)."""
    data = {"to": to_hex(contract[-20:]), "data": to_hex(selector("localDomain()"))}
    votes: dict[int, list[str]] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for endpoint in evm.rpc.endpoints:
        if endpoint.target in seen:
            continue  # a URL listed twice is one node, with one vote
        seen.add(endpoint.target)
        try:
            answer = await evm.rpc.call_on(endpoint, "eth_call", [data, "latest"])
            domain = _domain(answer, f"{what} on {endpoint.url}")
        except AdapterError as exc:  # RpcError too (it names the endpoint): no vote
            problems.append(str(exc))
            continue
        votes.setdefault(domain, []).append(endpoint.url)
        if len(votes.get(expected, ())) >= evm.rpc_quorum:
            return expected
    against = [d for d, said in votes.items() if d != expected and len(said) >= evm.rpc_quorum]
    if against and expected not in votes and not problems:
        return max(against, key=lambda d: len(votes[d]))  # the likeliest mistake, to name it
    said = "; ".join(f"{domain} from {', '.join(urls)}" for domain, urls in votes.items())
    raise AdapterError(
        f"{what}: localDomain() not settled by rpc_quorum {evm.rpc_quorum} (configured "
        f"{expected}): {said or 'no answer'}{'; ' + '; '.join(problems) if problems else ''}"
    )


def _domain(answer: object, where: str) -> int:
    """A ``localDomain()`` answer (hex) as a u32; AdapterError naming ``where`` otherwise."""
    try:
        raw = parse_data(answer, "localDomain()")
    except DecodeError:
        raise AdapterError(f"{where} answered localDomain() with no hex data") from None
    domain = int.from_bytes(raw, "big") if len(raw) == 32 else -1
    if not 0 <= domain < 2**32:
        raise AdapterError(f"{where} answered localDomain() with {len(raw)} bytes, not a uint32")
    return domain


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
        """The Outbox's ``localDomain()`` as the endpoints settle it against the configured
        domain (:func:`local_domain`: AdapterError unless settled)."""
        return await local_domain(
            self.evm, self.outbox, f"{self.chain.name}: the outbox", self.chain.domain
        )

    async def scan(self, tree: IncrementalMerkleTree, first: int, final: Head) -> ScannedRange:
        """The Dispatch events of blocks ``first..`` (one chunk, up to ``final``), gapless and
        reconciled with the outbox's proven state at the chunk's end."""
        end = min(final.number, first + self.scan_chunk - 1)
        answered: list[LogAnswer] = []  # who gave the logs, whom they overruled: for the proof
        events = await self.evm.dispatches(self.outbox, first, end, answered=answered)
        # Agreed by the quorum like ``final``: its hash becomes the cursor's and its state root
        # proves the outbox count below.
        end_header = _header(final) if end == final.number else await self.evm.agreed_header(end)
        try:
            self._check_gapless(tree, events)
        except AdapterError as exc:
            self.evm.refuted(answered, str(exc))
            raise
        # Gapless is not complete: a backend that drops the *last* logs of the range passes
        # the nonce check (the cursor would move past messages never to be seen again), and one
        # that alters a message keeps nonces and count (our root would then differ from the
        # committee's and the relayer would halt). The outbox's own state at the range's end,
        # proven from its storage, must be exactly what these logs make of our tree.
        ids = [e.id for e in events]
        await self._reconcile(tree, end_header, ids, first, answered)
        self.evm.proven(answered)  # now, and only now, the overruled claimants were wrong
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
        self,
        tree: IncrementalMerkleTree,
        end: EthHeader,
        ids: Sequence[bytes],
        first: int,
        answered: Sequence[LogAnswer] = (),
    ) -> None:
        """AdapterError (the range is scanned again) unless the outbox's count and root proven
        at ``end`` equal the tree's after appending ``ids``; :meth:`EvmChain.refuted` then
        strikes the endpoints that gave the logs (the rescan asks another first) and narrows
        each window whose "cannot answer" claim they overruled."""
        state = await self.evm.outbox_state(self.outbox, end, may_be_absent=True)
        frontier, count = frontier_append(tree.frontier(), tree.count, ids)
        if state.count != count or state.root != root_from_branch(frontier, count):
            refuted = AdapterError(
                f"origin {self.chain.name}: the outbox holds {state.count} message(s) with root "
                f"0x{state.root.hex()} at block {end.number}, but the logs up to it give "
                f"{count} (logs missing, altered or invented); rescanning blocks "
                f"{first}..{end.number}"
            )
            self.evm.refuted(answered, str(refuted))
            raise refuted


def _header(head: Head) -> EthHeader:
    """The verified header behind a head this family produced."""
    if not isinstance(head.proof, EthHeader):
        raise TypeError("not a head of an EVM origin")
    return head.proof
