"""GRANDPA finality proofs and storage read proofs from a Substrate node, checked by the light
clients.

Where a node offers them (a GRANDPA relay or solo chain does; a parachain node has no GRANDPA;
chopsticks 1.5.1 has no GRANDPA and lists ``state_getReadProof`` but fails every call to it,
having no upstream node, and its state roots are zero), this module fetches

- ``grandpa_proveFinality(n)``: the SCALE ``FinalityProof { block: Hash, justification:
  Vec<u8>, unknown_headers: Vec<Header> }`` of ``sc-consensus-grandpa``, i.e. a justification
  for a block F at or above ``n`` plus the headers ``(n; F]``, and
- ``state_getReadProof(keys, at)``: the trie nodes that prove storage values (or their absence)
  under a block's state root,

and passes them through :mod:`light_clients.substrate.grandpa` (justifications, authority-set
tracking) and :mod:`light_clients.substrate.trie` (read proofs). Nothing here re-implements a
check: this module only moves bytes and decides which header the light clients are asked about.

Node I/O goes through anything with ``url`` and ``async rpc(method, params)`` (:class:`NodeRpc`):
:class:`adapters.substrate.client.SubstrateClient` is one.

What :meth:`GrandpaFinality.verify_final` establishes for a header B (already hash-checked by the
client): starting from the operator's trusted checkpoint (an authority set and the finalized
block after which it signs), every header from the checkpoint to B is hash-linked (fetched by
parent hash, each re-hashed by the light client), every authority-set change those headers
signal is followed by :class:`~light_clients.substrate.grandpa.AuthoritySetTracker`, and a
justification signed by more than two thirds of the set in force finalizes B or a descendant
of B whose ancestry links back to B. A new set is only trusted after the old set finalized the
block that enacts it; a change enacted inside a proof's unknown headers is refused.

Not verified here: that the checkpoint is right (it is configuration, like any light client's
trusted start); forced authority changes (refused, as the tracker does: re-checkpoint); and the
block body or events, unless read with :func:`read_proof` under a final header.

Exceptions: node problems are :class:`AdapterError` (one line naming the endpoint), among them
:class:`NoFinalityProof` (nothing proves the block yet: retry later). A proof that does not
hold is a :class:`~light_clients.errors.VerificationError` subclass of the light client
(``FinalityError``, ``DecodeError``, ``TrieProofError`` and their subclasses) or one of this
module's :class:`UnlinkedFinalityProof`, :class:`NotOnFinalizedChain`,
:class:`UnprovenAuthoritySetChange` (all ``FinalityError``), its message prefixed with the
method and endpoint; the class is kept, so callers can tell them apart.
"""

# Exception names follow light_clients.errors (no "Error" suffix).

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import trio
import xxhash

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import header_from_json
from adapters.text import one_line
from light_clients.errors import DecodeError, FinalityError, VerificationError
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.grandpa import (
    AuthoritySet,
    AuthoritySetTracker,
    FinalityProof,
    InvalidJustificationTarget,
    PendingChange,
    decode_justification,
    verify_decoded_justification,
)
from light_clients.substrate.header import (
    HASH_LEN,
    MIN_HEADER_LEN,
    SubstrateHeader,
    decode_header,
    read_header,
)
from light_clients.substrate.scale import (
    ScaleReader,
    encode_length_prefixed,
    encode_u32,
    encode_vec,
)
from light_clients.substrate.trie import TrieProof

if TYPE_CHECKING:
    from adapters.substrate.client import SubstrateClient

__all__ = [
    "GET_READ_PROOF",
    "HISTORY",
    "MAX_SEGMENT",
    "PROOF_METHODS",
    "PROVE_FINALITY",
    "SYSTEM_EVENTS_KEY",
    "Finalized",
    "GrandpaFinality",
    "NoFinalityProof",
    "NodeFinalityProof",
    "NodeRpc",
    "NotOnFinalizedChain",
    "UnlinkedFinalityProof",
    "UnprovenAuthoritySetChange",
    "decode_finality_proof",
    "encode_finality_proof",
    "offered",
    "parachain_head",
    "paras_heads_key",
    "read_proof",
    "storage_key",
    "twox128",
    "verify_finality_proof",
    "verify_read_proof",
]

PROVE_FINALITY: Final = "grandpa_proveFinality"
GET_READ_PROOF: Final = "state_getReadProof"
PROOF_METHODS: Final = frozenset({PROVE_FINALITY, GET_READ_PROOF})

MAX_SEGMENT: Final = 2048
"""Headers fetched (by parent hash) per finality step: a target further above the last proven
block is reached through intermediate final blocks, so memory stays bounded and progress made
before a failure is kept."""

HISTORY: Final = 16384
"""Proven-final ``number -> hash`` entries kept for :meth:`GrandpaFinality.final_hash`."""


E = TypeVar("E", bound=VerificationError)


# --- errors -------------------------------------------------------------------------------


class NoFinalityProof(AdapterError):
    """The node has no justification covering the block yet (it answered null, or its newest
    justification is for a lower block). Not a bad proof: ask again later."""


class UnlinkedFinalityProof(FinalityError):
    """A finality proof's ``unknown_headers`` do not lead from the block asked about to the
    justified block (the proof is for an unrelated block, or has extra or missing headers)."""


class NotOnFinalizedChain(FinalityError):
    """The header conflicts with a block already proven final (another block at its height, or
    its ancestry does not reach the last proven block)."""


class UnprovenAuthoritySetChange(FinalityError):
    """The authority set would change before the justified block: the old set must finalize
    the block enacting the change first (an honest node's proof never spans a change)."""


# --- node access --------------------------------------------------------------------------


class NodeRpc(Protocol):
    """What this module needs from a node connection (``SubstrateClient`` has it)."""

    url: str

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """A raw JSON-RPC call; its ``result``. Raises AdapterError naming the endpoint."""
        ...


if TYPE_CHECKING:

    def _substrate_client_is_node_rpc(client: SubstrateClient) -> NodeRpc:
        return client  # mypy checks that SubstrateClient satisfies the protocol


def _bytes_field(value: Any, where: str, what: str, size: int | None = None) -> bytes:
    """``0x``-hex bytes of a node's answer (exactly ``size`` if given), strictly parsed
    (:func:`light_clients.hexstr.parse_data`); :class:`AdapterError` naming ``where`` if not."""
    try:
        return parse_data(value, what, size)
    except DecodeError:
        raise AdapterError(f"{where}: malformed {what} {one_line(repr(value))}") from None


def _hash_field(value: Any, where: str, what: str) -> bytes:
    return _bytes_field(value, where, what, HASH_LEN)


def _located(exc: E, where: str) -> E:
    """The same verification error, its message prefixed with where the proof came from."""
    return type(exc)(f"{where}: {exc}")


async def offered(client: NodeRpc) -> frozenset[str]:
    """Which of :data:`PROOF_METHODS` the node lists in ``rpc_methods``.

    Listed is not proven to work: chopsticks 1.5.1 lists ``state_getReadProof`` and answers
    every call with an error (and its zero state roots could prove nothing); its finality
    policy is the named ``devnet-instant``, which uses neither method. A GRANDPA relay or solo
    chain node lists both; a parachain node ``state_getReadProof`` only.
    """
    result = await client.rpc("rpc_methods")
    methods = result.get("methods") if isinstance(result, dict) else None
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise AdapterError(
            f"rpc_methods on {redact_url(client.url)}: malformed {one_line(repr(result))}"
        )
    return PROOF_METHODS.intersection(methods)


# --- grandpa_proveFinality's answer -------------------------------------------------------


@dataclass(frozen=True)
class NodeFinalityProof:
    """``sc_consensus_grandpa::FinalityProof``: what ``grandpa_proveFinality(n)`` returns.

    ``block`` is the hash of the justified block F, ``justification`` its SCALE GRANDPA
    justification, ``unknown_headers`` the headers ``(n; F]`` in ascending order (each hashed
    from its own bytes by the header decoder).
    """

    block: bytes
    justification: bytes = field(repr=False)
    unknown_headers: tuple[SubstrateHeader, ...] = field(repr=False)


def decode_finality_proof(data: bytes) -> NodeFinalityProof:
    """Decode SCALE ``block [32] ‖ justification Vec<u8> ‖ unknown_headers Vec<Header>``,
    strictly (canonical lengths, known digest items, no trailing bytes): DecodeError otherwise.
    The justification is kept as bytes; :func:`verify_finality_proof` decodes it."""
    reader = ScaleReader(data)
    block = reader.fixed(HASH_LEN, "finality proof block hash")
    justification = reader.length_prefixed()
    headers = reader.vec(read_header, min_item_size=MIN_HEADER_LEN)
    reader.finish()
    return NodeFinalityProof(block, justification, headers)


def encode_finality_proof(proof: NodeFinalityProof) -> bytes:
    """Encode a :class:`NodeFinalityProof` (headers re-emitted from their raw bytes)."""
    return (
        proof.block
        + encode_length_prefixed(proof.justification)
        + encode_vec(header.raw for header in proof.unknown_headers)
    )


@dataclass(frozen=True)
class Finalized:
    """What :func:`verify_finality_proof` established.

    ``headers`` runs from the block asked about to the justified block (``justified``), each
    the parent of the next; ``proof`` is the light client's verdict on the justification;
    ``tracker`` is a new tracker advanced to ``justified`` (the one passed in is untouched).
    """

    block: SubstrateHeader
    justified: SubstrateHeader
    proof: FinalityProof
    headers: tuple[SubstrateHeader, ...] = field(repr=False)
    tracker: AuthoritySetTracker = field(repr=False, compare=False)


def _clone(tracker: AuthoritySetTracker) -> AuthoritySetTracker:
    return AuthoritySetTracker(
        tracker.authority_set, tracker.head_hash, tracker.head_number, tracker.pending
    )


def _check_links(
    headers: Sequence[SubstrateHeader], target_hash: bytes, target_number: int
) -> None:
    """``headers`` = block, then the proof's unknown headers, must be the chain up to the target."""
    block = headers[0]
    needed = target_number - block.number
    if len(headers) - 1 != needed:
        raise UnlinkedFinalityProof(
            f"{len(headers) - 1} unknown headers, #{block.number + 1}..#{target_number} "
            f"needs {needed}"
        )
    for parent, child in pairwise(headers):
        if child.parent_hash != parent.hash or child.number != parent.number + 1:
            raise UnlinkedFinalityProof(
                f"unknown header #{child.number} {to_hex(child.hash)} is not the child of "
                f"#{parent.number} {to_hex(parent.hash)}"
            )
    if headers[-1].hash != target_hash:
        raise UnlinkedFinalityProof(
            f"unknown headers end at {to_hex(headers[-1].hash)}, the justification finalizes "
            f"#{target_number} {to_hex(target_hash)}"
        )


def verify_finality_proof(
    data: bytes, block: SubstrateHeader, tracker: AuthoritySetTracker
) -> Finalized:
    """Verify a ``grandpa_proveFinality`` answer for ``block``, the child of ``tracker``'s head.

    Checks, cheapest first: the proof decodes; its ``block`` is its justification's target;
    the target is ``block`` itself (no unknown headers) or a descendant to which the unknown
    headers link ``block`` one block at a time; no authority-set change is enacted before the
    target; then the light client verifies the justification with the set in force (signatures
    last). Pure: ``tracker`` is not modified, the result carries an advanced copy.

    Raises :class:`NoFinalityProof` when the proof's justification is for a lower block (it
    proves nothing about ``block``), else DecodeError / FinalityError subclasses.
    """
    proof = decode_finality_proof(data)
    justification = decode_justification(proof.justification)
    target_hash, target_number = justification.target
    if proof.block != target_hash:
        raise InvalidJustificationTarget(
            f"the proof names block {to_hex(proof.block)}, its justification finalizes "
            f"#{target_number} {to_hex(target_hash)}"
        )
    if target_number < block.number:
        raise NoFinalityProof(
            f"the node's justification finalizes #{target_number}, below #{block.number}"
        )
    headers = (block, *proof.unknown_headers)
    if proof.unknown_headers or target_number != block.number:
        _check_links(headers, target_hash, target_number)
    # else: a justification for another block at block's height is the light client's
    # InvalidJustificationTarget (checked before any signature).
    advanced = _clone(tracker)
    for header in headers[:-1]:
        advanced.import_header(header)
    if advanced.set_id != tracker.set_id:
        raise UnprovenAuthoritySetChange(
            f"set {tracker.set_id} ends before #{target_number}: the proof must stop at the "
            "block that enacts the change"
        )
    justified = headers[-1]
    verdict = verify_decoded_justification(
        justification, advanced.authority_set, (justified.hash, justified.number)
    )
    advanced.import_header(justified)
    return Finalized(block, justified, verdict, headers, advanced)


# --- following finality -------------------------------------------------------------------


class GrandpaFinality:
    """Follows a GRANDPA chain's finality from a trusted checkpoint, through a node's proofs.

    The checkpoint is ``authority_set`` (its set id and ``(ed25519 key, weight)`` pairs) and
    the finalized block ``(head_hash, head_number)`` whose successor it signs — plus a
    scheduled change already signalled and not yet enacted at that block, if there is one
    (``pending``). One object per chain and process; calls are serialised by a lock.
    """

    def __init__(
        self,
        authority_set: AuthoritySet,
        head_hash: bytes,
        head_number: int,
        *,
        pending: PendingChange | None = None,
        max_segment: int = MAX_SEGMENT,
        history: int = HISTORY,
    ) -> None:
        """Start from the checkpoint (validated by the light client's tracker)."""
        if max_segment < 1 or history < 1:
            raise ValueError("max_segment and history must be positive")
        self._tracker = AuthoritySetTracker(authority_set, head_hash, head_number, pending)
        self._max_segment = max_segment
        self._history = history
        self._final: dict[int, bytes] = {head_number: head_hash}
        self.checkpoint_number = head_number
        """Where the trusted checkpoint is (the head stays there until a proof is accepted)."""
        self._lock = trio.Lock()
        self.last_proof: FinalityProof | None = None
        """The light client's verdict on the last justification accepted."""

    # state

    @property
    def head_hash(self) -> bytes:
        """The highest block proven final (the checkpoint until a proof is accepted)."""
        return self._tracker.head_hash

    @property
    def head_number(self) -> int:
        """Number of :attr:`head_hash`."""
        return self._tracker.head_number

    @property
    def authority_set(self) -> AuthoritySet:
        """The set that must sign the blocks after :attr:`head_number`."""
        return self._tracker.authority_set

    @property
    def pending(self) -> PendingChange | None:
        """A scheduled change signalled up to the head and not yet enacted."""
        return self._tracker.pending

    def final_hash(self, number: int) -> bytes | None:
        """The proven-final hash at ``number``, if it is among the last :data:`HISTORY` proven
        (or the checkpoint); None otherwise (not final yet, or older than the window)."""
        return self._final.get(number)

    # verification

    async def verify_final(self, client: NodeRpc, header: SubstrateHeader) -> None:
        """Prove ``header`` final (returns) or raise; see the module docstring for what is
        established. ``header`` must come from a hash-checked source (``client.header``).

        Above the last proven block: the headers between are fetched by parent hash, set
        changes among them are proven block by block (the node's proof for a block of an old
        set is the justification of that set's last block), then ``header`` itself. At or
        below it: ``header`` must be the proven block at its height.
        """
        async with self._lock:
            while header.number > self.head_number + self._max_segment:
                step = await self._canonical_header(client, self.head_number + self._max_segment)
                await self._advance(client, step)
            if header.number > self.head_number:
                await self._advance(client, header)
            await self._check_proven(client, header)

    async def _canonical_header(self, client: NodeRpc, number: int) -> SubstrateHeader:
        """The node's block at ``number`` (trusted only after a proof finalizes it)."""
        where = f"chain_getBlockHash({number}) on {redact_url(client.url)}"
        result = await client.rpc("chain_getBlockHash", [number])
        if result is None:
            raise AdapterError(f"{where}: the node has no block {number}")
        return await self._header(client, _hash_field(result, where, "block hash"))

    async def _header(self, client: NodeRpc, block_hash: bytes) -> SubstrateHeader:
        """The header of ``block_hash``, its SCALE bytes hashed by the light client."""
        obj = await client.rpc("chain_getHeader", [to_hex(block_hash)])
        try:
            return header_from_json(obj, block_hash)
        except AdapterError as exc:
            raise AdapterError(f"chain_getHeader on {redact_url(client.url)}: {exc}") from None

    async def _segment(self, client: NodeRpc, target: SubstrateHeader) -> list[SubstrateHeader]:
        """Headers ``head+1 .. target``, fetched back from ``target`` by parent hash."""
        head_hash, head_number = self.head_hash, self.head_number
        segment = [target]
        while segment[-1].number > head_number + 1:
            child = segment[-1]
            parent = await self._header(client, child.parent_hash)
            if parent.number != child.number - 1:
                raise NotOnFinalizedChain(
                    f"chain_getHeader on {redact_url(client.url)}: the parent of #{child.number} "
                    f"{to_hex(child.hash)} is #{parent.number}"
                )
            segment.append(parent)
        if segment[-1].parent_hash != head_hash:
            raise NotOnFinalizedChain(
                f"#{target.number} {to_hex(target.hash)} does not descend from the last proven "
                f"block #{head_number} {to_hex(head_hash)}"
            )
        segment.reverse()
        return segment

    async def _advance(self, client: NodeRpc, target: SubstrateHeader) -> None:
        """Prove ``target`` (above the head) final, set change by set change."""
        segment = await self._segment(client, target)
        while segment:
            # Cut at the first block that enacts a set change: it must be proven by the old set
            # before anything above it can be checked against the new one.
            probe, cut = _clone(self._tracker), len(segment)
            try:
                for index, header in enumerate(segment):
                    probe.import_header(header)
                    if probe.set_id != self._tracker.set_id:
                        cut = index + 1
                        break
            except VerificationError as exc:  # e.g. a forced change: re-checkpoint
                raise _located(exc, f"headers from {redact_url(client.url)}") from exc
            await self._prove(client, segment[:cut])
            rest = segment[cut:]
            for header in rest:
                if header.number > self.head_number:
                    break
                if self._final.get(header.number) != header.hash:
                    raise NotOnFinalizedChain(
                        f"#{header.number} {to_hex(header.hash)} is not the block proven final at "
                        f"that height"
                    )
            segment = [header for header in rest if header.number > self.head_number]

    async def _prove(self, client: NodeRpc, part: Sequence[SubstrateHeader]) -> None:
        """Fetch and verify the finality proof of ``part[-1]``; ``part`` starts at head+1."""
        block = part[-1]
        where = f"{PROVE_FINALITY}({block.number}) on {redact_url(client.url)}"
        base = _clone(self._tracker)
        for header in part[:-1]:
            base.import_header(header)
        result = await client.rpc(PROVE_FINALITY, [block.number])
        if result is None:
            raise NoFinalityProof(f"{where}: the node has no justification covering the block")
        data = _bytes_field(result, where, "finality proof")
        try:
            finalized = verify_finality_proof(data, block, base)
        except NoFinalityProof as exc:
            raise NoFinalityProof(f"{where}: {exc}") from None
        except VerificationError as exc:
            raise _located(exc, where) from exc
        self._tracker = finalized.tracker
        self.last_proof = finalized.proof
        for header in (*part, *finalized.headers[1:]):
            self._remember(header)

    def _remember(self, header: SubstrateHeader) -> None:
        self._final[header.number] = header.hash
        while len(self._final) > self._history:
            del self._final[next(iter(self._final))]

    async def _check_proven(self, client: NodeRpc, header: SubstrateHeader) -> None:
        """``header`` (at or below the head) must be the block proven final at its height."""
        known = self._final.get(header.number)
        if known is None:
            # Below the window: walk down by parent hash from the lowest proven block kept.
            lowest = min(self._final)
            if header.number > lowest:  # cannot happen: the window is contiguous to the head
                raise AdapterError(f"no proven block recorded at #{header.number}")
            if lowest - header.number > self._max_segment:
                raise AdapterError(
                    f"#{header.number} is {lowest - header.number} blocks below the proven "
                    f"blocks kept (#{lowest}); look it up from a later checkpoint"
                )
            cursor = await self._header(client, self._final[lowest])
            while cursor.number > header.number:
                cursor = await self._header(client, cursor.parent_hash)
            known = cursor.hash
        if known != header.hash:
            raise NotOnFinalizedChain(
                f"#{header.number} {to_hex(header.hash)} conflicts with the block proven final at "
                f"that height, {to_hex(known)}"
            )


# --- read proofs --------------------------------------------------------------------------


def verify_read_proof(
    state_root: bytes, nodes: Sequence[bytes], keys: Iterable[bytes]
) -> dict[bytes, bytes | None]:
    """The values ``nodes`` prove for ``keys`` under ``state_root`` (None: proven absent).

    All checks are the trie light client's (:class:`~light_clients.substrate.trie.TrieProof`):
    a key the proof does not cover raises ``IncompleteProof``, never "absent".
    """
    proof = TrieProof(nodes)
    return {bytes(key): proof.read(state_root, bytes(key)).value for key in keys}


MAX_READ_PROOF_HEX: Final = 32 * 2**20
"""Characters of hex (16 MiB of trie nodes) a ``state_getReadProof`` answer may hold in all;
past it the answer is refused before one node of it is parsed (review R3 L2). An honest
2,048-key chunk of replay-guard items (the relayer's largest read) against 100,000 items is
about 4,600 nodes, 2 MB of hex; against a state a hundred times larger, a level or two more.
A Substrate node refuses to send a response over 15 MiB by default (``--rpc-max-response-size``),
so this is twice what an honest node sends at all, and sixteen times an honest chunk: only a
hostile node gets near it, and it must not cost the relayer seconds of CPU."""

MAX_READ_PROOF_NODES_PER_KEY: Final = 64
"""Trie nodes a read proof may hold per key asked (the same reason: an honest proof has one
node per trie level a key passes, a dozen on the largest states, shared between keys)."""


async def read_proof(
    client: NodeRpc, keys: Iterable[bytes], header: SubstrateHeader
) -> dict[bytes, bytes | None]:
    """``state_getReadProof(keys, header.hash)``, verified against ``header.state_root``.

    Returns every key's proven value (None = proven absent). ``header`` must be hash-checked,
    and final if the values are to be final: this proves storage *of that block* only.

    A proof larger than :data:`MAX_READ_PROOF_HEX` in all, or of more than
    :data:`MAX_READ_PROOF_NODES_PER_KEY` nodes a key, is refused (AdapterError) before any of
    it is parsed; the rest (parsing every node, hashing it, walking the trie: pure, the trie
    light client's) runs in a worker thread, so a large answer never stalls the trio loop the
    relayer's other tasks share (lease heartbeats, other chains' deliveries).
    """
    wanted = list(dict.fromkeys(bytes(key) for key in keys))
    if not wanted:
        return {}
    where = f"{GET_READ_PROOF} at #{header.number} on {redact_url(client.url)}"
    answer = await client.rpc(
        GET_READ_PROOF, [[to_hex(key) for key in wanted], to_hex(header.hash)]
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("proof"), list):
        raise AdapterError(f"{where}: malformed answer {one_line(repr(answer))}")
    at = _hash_field(answer.get("at"), where, "block hash")
    if at != header.hash:
        raise AdapterError(
            f"{where}: the proof is at block {to_hex(at)}, not {to_hex(header.hash)}"
        )
    proof: list[Any] = answer["proof"]
    most = MAX_READ_PROOF_NODES_PER_KEY * len(wanted)
    if len(proof) > most:
        raise AdapterError(
            f"{where}: {len(proof)} proof nodes for {len(wanted)} key(s), over the bound of "
            f"{most}: refused unread"
        )
    size = sum(len(node) for node in proof if isinstance(node, str))
    if size > MAX_READ_PROOF_HEX:
        raise AdapterError(
            f"{where}: a proof of {size:,} hex characters, over the bound of "
            f"{MAX_READ_PROOF_HEX:,}: refused unread"
        )

    def verify() -> dict[bytes, bytes | None]:
        nodes = [_bytes_field(node, where, "proof node") for node in proof]
        try:
            return verify_read_proof(header.state_root, nodes, wanted)
        except VerificationError as exc:
            raise _located(exc, where) from exc

    return await trio.to_thread.run_sync(verify)


# --- storage keys -------------------------------------------------------------------------


def twox128(data: bytes) -> bytes:
    """Substrate's ``twox_128``: xxHash64 with seeds 0 and 1, each little-endian."""
    return xxhash.xxh64_digest(data, seed=0)[::-1] + xxhash.xxh64_digest(data, seed=1)[::-1]


def storage_key(pallet: str, item: str) -> bytes:
    """The key of a plain storage value: ``twox128(pallet) ‖ twox128(item)``."""
    return twox128(pallet.encode()) + twox128(item.encode())


SYSTEM_EVENTS_KEY: Final = storage_key("System", "Events")
"""``System.Events``: the SCALE ``Vec<EventRecord>`` of a block, read at that block."""


def paras_heads_key(para_id: int) -> bytes:
    """A relay chain's ``Paras.Heads(para_id)`` key (``Twox64Concat`` of the u32 id): its value
    is the parachain's head data as the relay chain's state records it."""
    encoded = encode_u32(para_id)
    return storage_key("Paras", "Heads") + xxhash.xxh64_digest(encoded, seed=0)[::-1] + encoded


def parachain_head(value: bytes) -> SubstrateHeader:
    """The parachain header in a ``Paras.Heads`` value (``HeadData``: a SCALE ``Vec<u8>`` of
    the header); DecodeError if it is not exactly one header."""
    reader = ScaleReader(value)
    raw = reader.length_prefixed()
    reader.finish()
    try:
        return decode_header(raw)
    except DecodeError as exc:
        raise DecodeError(f"head data is not a header: {exc}") from exc
