"""GRANDPA finality: justifications, authority sets and following authority-set changes.

A justification (``sp_consensus_grandpa::GrandpaJustification``) is SCALE::

    round u64 ‖ commit { target_hash [32] ‖ target_number u32 ‖
                         precommits Vec<{ target_hash [32] ‖ target_number u32 ‖
                                          signature [64] ‖ id [32] }> }
    ‖ votes_ancestries Vec<Header>

Each precommit is an ed25519 signature over :func:`precommit_payload`, which binds the vote to
the round and the authority-set id (the set id is not in the justification: it comes from the
caller's trusted :class:`AuthoritySet`).

:func:`verify_justification` applies the rules of polkadot-sdk's bridges
(``bridges/primitives/header-chain/src/justification/verification``, strict verifier; exploit
class T23 in ``docs/threats.md``), with these deliberate differences:

* **Redundant votes are accepted** (polkadot-sdk's strict verifier rejects any vote after the
  threshold is reached, because its relayers first strip them with the optimizer). Nodes
  serve justifications with every precommit they saw, so we accept those — but every vote,
  redundant or not, must still be from a distinct authority of the set, on the target's
  chain, and correctly signed.
* **Stricter ancestry:** a precommit's block number must be the real number of the block it
  names (the commit target's, or its ancestry header's), and every ancestry header must be
  exactly one block above its parent. polkadot-sdk only checks ``number >= target number``.
* **Signatures last, each once:** all structural checks (known authority, no duplicate,
  ancestry, weight, unused ancestry) run first, so a justification that cannot pass costs no
  ed25519 work; then each signature is verified exactly once. When a justification has
  several faults, the one reported may differ from polkadot-sdk's (the verdict does not).

As in the strict verifier, repeated ``votes_ancestries`` headers are rejected
(:class:`DuplicateVotesAncestries`) and so is any invalid signature, even on a vote that is
not needed to reach the threshold.
"""

# Exception names follow polkadot-sdk and light_clients.errors (no "Error" suffix).

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from ed25519_zebra import ed_verify

from light_clients.errors import DecodeError, FinalityError
from light_clients.substrate.header import (
    ED25519_PUBLIC_LEN,
    HASH_LEN,
    MIN_HEADER_LEN,
    ForcedChange,
    ScheduledChange,
    SubstrateHeader,
    grandpa_changes,
    read_header,
)
from light_clients.substrate.scale import (
    U32_MAX,
    U64_MAX,
    ScaleReader,
    UnexpectedEnd,
    encode_u32,
    encode_u64,
    encode_vec,
)

__all__ = [
    "AuthoritySet",
    "AuthoritySetTracker",
    "Commit",
    "ConflictingScheduledChange",
    "CountedVote",
    "DuplicateAuthorityVote",
    "DuplicateVotesAncestries",
    "FinalityProof",
    "InvalidAuthoritySet",
    "InvalidAuthoritySignature",
    "InvalidJustificationTarget",
    "Justification",
    "NonSequentialHeader",
    "PendingChange",
    "PrecommitError",
    "RedundantVotesAncestries",
    "SignedPrecommit",
    "TooLowCumulativeWeight",
    "UnknownAuthorityVote",
    "UnrelatedAncestryVote",
    "UnsupportedForcedChange",
    "decode_justification",
    "encode_justification",
    "precommit_payload",
    "verify_decoded_justification",
    "verify_justification",
]

SIGNATURE_LEN = 64
# target hash, u32 number, signature, authority id.
_PRECOMMIT_LEN = HASH_LEN + 4 + SIGNATURE_LEN + ED25519_PUBLIC_LEN
_PRECOMMIT = struct.Struct("<32sI64s32s")
_PRECOMMIT_TAG = b"\x01"  # finality_grandpa::Message::Precommit


# --- errors -------------------------------------------------------------------------------


class InvalidAuthoritySet(FinalityError):
    """An authority set is empty, has duplicate or malformed keys, or bad weights."""


class InvalidJustificationTarget(FinalityError):
    """The justification finalizes another block than the one expected."""


class DuplicateVotesAncestries(FinalityError):
    """The same header appears twice in ``votes_ancestries``."""


class RedundantVotesAncestries(FinalityError):
    """A ``votes_ancestries`` header is not on the path of any precommit."""


class TooLowCumulativeWeight(FinalityError):
    """The precommits do not carry more than two thirds of the set's weight."""


class PrecommitError(FinalityError):
    """One precommit of the justification is not acceptable."""


class UnknownAuthorityVote(PrecommitError):
    """A precommit is signed by a key outside the authority set."""


class DuplicateAuthorityVote(PrecommitError):
    """An authority has more than one precommit (a repeat or an equivocation)."""


class UnrelatedAncestryVote(PrecommitError):
    """A precommit is for a block that is not the target or a proven descendant of it."""


class InvalidAuthoritySignature(PrecommitError):
    """A precommit's ed25519 signature does not verify (wrong key, round, set id or block)."""


class NonSequentialHeader(FinalityError):
    """A header given to the tracker is not the child of its current head."""


class ConflictingScheduledChange(FinalityError):
    """A scheduled change is signalled while another is pending, or twice in one header."""


class UnsupportedForcedChange(FinalityError):
    """A header signals a forced authority-set change, which the tracker does not follow."""


# --- authority sets -----------------------------------------------------------------------


@dataclass(frozen=True)
class AuthoritySet:
    """A GRANDPA voter set: its id and ``(ed25519 public key, weight)`` pairs.

    Validated on construction (raises :class:`InvalidAuthoritySet`): at least one authority,
    distinct 32-byte keys, weights in ``1..2**64-1`` whose total fits a u64, and a set id
    that fits a u64.
    """

    set_id: int
    authorities: tuple[tuple[bytes, int], ...]
    total_weight: int = field(init=False, compare=False)
    threshold: int = field(init=False, compare=False)
    _weights: Mapping[bytes, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the set and precompute total weight, threshold and key index."""
        if isinstance(self.set_id, bool) or not isinstance(self.set_id, int):
            raise InvalidAuthoritySet("set id must be an integer")
        if not 0 <= self.set_id <= U64_MAX:
            raise InvalidAuthoritySet(f"set id {self.set_id} does not fit in u64")
        if isinstance(self.authorities, bytes | str) or not hasattr(self.authorities, "__iter__"):
            raise InvalidAuthoritySet("authorities must be a sequence of (key, weight) pairs")
        entries = tuple(self.authorities)
        if not entries:
            raise InvalidAuthoritySet("authority set is empty")
        weights: dict[bytes, int] = {}
        for position, entry in enumerate(entries):
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise InvalidAuthoritySet(f"authority #{position} is not a (key, weight) pair")
            key, weight = entry
            if not isinstance(key, bytes) or len(key) != ED25519_PUBLIC_LEN:
                raise InvalidAuthoritySet(f"authority #{position} key is not 32 bytes")
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise InvalidAuthoritySet(f"authority #{position} weight is not an integer")
            if not 1 <= weight <= U64_MAX:
                raise InvalidAuthoritySet(f"authority 0x{key.hex()} has weight {weight}")
            if key in weights:
                raise InvalidAuthoritySet(f"authority 0x{key.hex()} is listed twice")
            weights[key] = weight
        total = sum(weights.values())
        if total > U64_MAX:
            raise InvalidAuthoritySet(f"total weight {total} does not fit in u64")
        object.__setattr__(self, "authorities", entries)
        object.__setattr__(self, "total_weight", total)
        # finality-grandpa's VoterSet threshold: tolerate f = (total - 1) // 3 faulty weight,
        # i.e. the smallest weight strictly above two thirds of the total.
        object.__setattr__(self, "threshold", total - (total - 1) // 3)
        object.__setattr__(self, "_weights", weights)

    def weight_of(self, authority: bytes) -> int | None:
        """The weight of ``authority``, or ``None`` if it is not in the set."""
        return self._weights.get(authority)


# --- justifications -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedPrecommit:
    """A precommit vote for ``(target_hash, target_number)`` and who signed it."""

    target_hash: bytes
    target_number: int
    signature: bytes
    authority: bytes


@dataclass(frozen=True)
class Commit:
    """The block a justification finalizes and the precommits that justify it."""

    target_hash: bytes
    target_number: int
    precommits: tuple[SignedPrecommit, ...]


@dataclass(frozen=True)
class Justification:
    """A decoded GRANDPA justification."""

    round: int
    commit: Commit
    votes_ancestries: tuple[SubstrateHeader, ...]

    @property
    def target(self) -> tuple[bytes, int]:
        """``(hash, number)`` of the block this justification finalizes."""
        return self.commit.target_hash, self.commit.target_number


def _read_precommits(reader: ScaleReader) -> tuple[SignedPrecommit, ...]:
    # Fixed-size items: bound the count by the bytes left, then unpack them in one pass
    # (this loop runs once per vote, so it matters next to the ed25519 checks).
    count = reader.compact()
    if count * _PRECOMMIT_LEN > reader.remaining:
        raise UnexpectedEnd(
            f"{count} precommits need {count * _PRECOMMIT_LEN} bytes, only {reader.remaining} left"
        )
    block = reader.fixed(count * _PRECOMMIT_LEN, "precommits")
    return tuple(SignedPrecommit(*fields) for fields in _PRECOMMIT.iter_unpack(block))


def decode_justification(data: bytes) -> Justification:
    """Decode a SCALE GRANDPA justification (u32 block numbers); trailing bytes raise."""
    reader = ScaleReader(data)
    round_number = reader.u64()
    target_hash = reader.fixed(HASH_LEN, "commit target hash")
    target_number = reader.u32()
    precommits = _read_precommits(reader)
    ancestries = reader.vec(read_header, min_item_size=MIN_HEADER_LEN)
    reader.finish()
    return Justification(
        round=round_number,
        commit=Commit(target_hash, target_number, precommits),
        votes_ancestries=ancestries,
    )


def encode_justification(justification: Justification) -> bytes:
    """Encode a justification (ancestry headers are re-emitted from their raw bytes)."""
    commit = justification.commit
    return (
        encode_u64(justification.round)
        + commit.target_hash
        + encode_u32(commit.target_number)
        + encode_vec(
            p.target_hash + encode_u32(p.target_number) + p.signature + p.authority
            for p in commit.precommits
        )
        + encode_vec(header.raw for header in justification.votes_ancestries)
    )


def precommit_payload(target_hash: bytes, target_number: int, round: int, set_id: int) -> bytes:
    """The bytes an authority signs for a precommit.

    ``0x01 ‖ target_hash ‖ u32 LE number ‖ u64 LE round ‖ u64 LE set_id``: the SCALE of
    ``(Message::Precommit(precommit), round, set_id)`` from ``sp_consensus_grandpa``.
    """
    if len(target_hash) != HASH_LEN:
        raise ValueError("precommit target hash must be 32 bytes")
    return (
        _PRECOMMIT_TAG
        + target_hash
        + encode_u32(target_number)
        + encode_u64(round)
        + encode_u64(set_id)
    )


@dataclass(frozen=True, slots=True)
class CountedVote:
    """A precommit that counted towards finality.

    ``route`` lists the ``votes_ancestries`` hashes walked from the vote's block down to the
    commit target (empty when the vote is for the target itself, or when it joins a path an
    earlier vote already proved).
    """

    authority: bytes
    weight: int
    target_hash: bytes
    target_number: int
    route: tuple[bytes, ...]


@dataclass(frozen=True)
class FinalityProof:
    """What a verified justification established: more than 2/3 of the set's weight signed."""

    target_hash: bytes
    target_number: int
    round: int
    set_id: int
    votes: tuple[CountedVote, ...]
    signed_weight: int
    total_weight: int
    threshold: int
    ancestry: tuple[bytes, ...]

    @property
    def signers(self) -> tuple[tuple[bytes, int], ...]:
        """``(authority, weight)`` of every counted precommit, in justification order."""
        return tuple((vote.authority, vote.weight) for vote in self.votes)


class _AncestryChain:
    """``votes_ancestries`` indexed by hash, remembering which headers a vote has used."""

    __slots__ = ("base_hash", "base_number", "headers", "visited")

    def __init__(self, justification: Justification) -> None:
        commit = justification.commit
        self.base_hash = commit.target_hash
        self.base_number = commit.target_number
        self.headers: dict[bytes, SubstrateHeader] = {}
        for header in justification.votes_ancestries:
            if header.hash in self.headers:
                raise DuplicateVotesAncestries(
                    f"ancestry header 0x{header.hash.hex()} (#{header.number}) is listed twice"
                )
            self.headers[header.hash] = header
        self.visited: set[bytes] = set()

    def route(self, block_hash: bytes, number: int) -> tuple[bytes, ...] | None:
        """Ancestry headers from ``(block_hash, number)`` down to the base, or ``None``."""
        route: list[bytes] = []
        while True:
            if block_hash == self.base_hash:
                return tuple(route) if number == self.base_number else None
            header = self.headers.get(block_hash)
            # The number must be the header's own, and each step goes down exactly one block;
            # numbers fall at every step, so the walk ends even on a forged parent cycle.
            if header is None or header.number != number or number <= self.base_number:
                return None
            if block_hash in self.visited:
                # An earlier vote already proved this header descends from the base.
                return tuple(route)
            route.append(block_hash)
            block_hash, number = header.parent_hash, number - 1

    def mark(self, route: tuple[bytes, ...]) -> None:
        self.visited.update(route)

    def unvisited(self) -> list[SubstrateHeader]:
        return [h for hash_, h in self.headers.items() if hash_ not in self.visited]


def _check_target(expected_target: object) -> tuple[bytes, int]:
    if not isinstance(expected_target, tuple) or len(expected_target) != 2:
        raise InvalidJustificationTarget("expected target must be a (hash, number) pair")
    expected_hash, expected_number = expected_target
    if not isinstance(expected_hash, bytes) or len(expected_hash) != HASH_LEN:
        raise InvalidJustificationTarget("expected target hash must be 32 bytes")
    if isinstance(expected_number, bool) or not isinstance(expected_number, int):
        raise InvalidJustificationTarget("expected target number must be an integer")
    return expected_hash, expected_number


def verify_justification(
    data: bytes,
    authority_set: AuthoritySet,
    expected_target: tuple[bytes, int] | None = None,
) -> FinalityProof:
    """Verify a SCALE GRANDPA justification against a trusted authority set.

    Returns the :class:`FinalityProof`; raises :class:`DecodeError` or a
    :class:`FinalityError` subclass naming the rule that failed (see the module docstring).
    """
    return verify_decoded_justification(decode_justification(data), authority_set, expected_target)


def verify_decoded_justification(
    justification: Justification,
    authority_set: AuthoritySet,
    expected_target: tuple[bytes, int] | None = None,
) -> FinalityProof:
    """Verify an already decoded justification (see :func:`verify_justification`)."""
    if not isinstance(authority_set, AuthoritySet):
        raise InvalidAuthoritySet("authority_set must be an AuthoritySet")
    commit = justification.commit
    if expected_target is not None:
        expected_hash, expected_number = _check_target(expected_target)
        if (commit.target_hash, commit.target_number) != (expected_hash, expected_number):
            raise InvalidJustificationTarget(
                f"justification finalizes #{commit.target_number} "
                f"0x{commit.target_hash.hex()}, expected #{expected_number} "
                f"0x{expected_hash.hex()}"
            )

    # 1. Structure, no cryptography: authorities, duplicates, ancestry, weight.
    chain = _AncestryChain(justification)
    votes: list[CountedVote] = []
    first_vote: dict[bytes, SignedPrecommit] = {}
    signed_weight = 0
    for position, precommit in enumerate(commit.precommits):
        authority = precommit.authority
        weight = authority_set.weight_of(authority)
        if weight is None:
            raise UnknownAuthorityVote(
                f"precommit #{position} is from 0x{authority.hex()}, not in set "
                f"{authority_set.set_id}"
            )
        earlier = first_vote.get(authority)
        if earlier is not None:
            what = (
                "an equivocation"
                if (earlier.target_hash, earlier.target_number)
                != (precommit.target_hash, precommit.target_number)
                else "a repeated vote"
            )
            raise DuplicateAuthorityVote(
                f"precommit #{position} is {what} by authority 0x{authority.hex()}"
            )
        first_vote[authority] = precommit
        if precommit.target_hash == chain.base_hash:
            # Most votes are for the target itself: no ancestry walk needed.
            route: tuple[bytes, ...] | None = (
                () if precommit.target_number == chain.base_number else None
            )
        else:
            route = chain.route(precommit.target_hash, precommit.target_number)
        if route is None:
            raise UnrelatedAncestryVote(
                f"precommit #{position} for #{precommit.target_number} "
                f"0x{precommit.target_hash.hex()} does not descend from the commit target"
            )
        if route:
            chain.mark(route)
        signed_weight += weight
        votes.append(
            CountedVote(authority, weight, precommit.target_hash, precommit.target_number, route)
        )

    threshold = authority_set.threshold
    if signed_weight < threshold:
        raise TooLowCumulativeWeight(
            f"precommits carry weight {signed_weight} of {authority_set.total_weight}, "
            f"need {threshold}"
        )
    unused = chain.unvisited()
    if unused:
        raise RedundantVotesAncestries(
            f"{len(unused)} ancestry header(s) not used by any precommit, "
            f"first #{unused[0].number} 0x{unused[0].hash.hex()}"
        )

    # 2. Cryptography, once per precommit; payloads are shared by votes on the same block.
    round_number, set_id = justification.round, authority_set.set_id
    payloads: dict[tuple[bytes, int], bytes] = {}
    for position, precommit in enumerate(commit.precommits):
        vote_target = (precommit.target_hash, precommit.target_number)
        payload = payloads.get(vote_target)
        if payload is None:
            try:
                payload = precommit_payload(*vote_target, round_number, set_id)
            except ValueError as exc:  # only reachable with a hand-built Justification
                raise DecodeError(f"precommit #{position}: {exc}") from exc
            payloads[vote_target] = payload
        if not ed_verify(precommit.signature, payload, precommit.authority):
            raise InvalidAuthoritySignature(
                f"precommit #{position} by 0x{precommit.authority.hex()}: bad signature "
                f"for round {round_number}, set {set_id}"
            )

    return FinalityProof(
        target_hash=commit.target_hash,
        target_number=commit.target_number,
        round=round_number,
        set_id=set_id,
        votes=tuple(votes),
        signed_weight=signed_weight,
        total_weight=authority_set.total_weight,
        threshold=threshold,
        ancestry=tuple(header.hash for header in justification.votes_ancestries),
    )


# --- following authority-set changes ------------------------------------------------------


@dataclass(frozen=True)
class PendingChange:
    """A scheduled change signalled at ``signalled_at``; ``next_set`` takes over after
    block ``enact_at`` (the last block the current set finalizes)."""

    signalled_at: int
    enact_at: int
    next_set: AuthoritySet


class AuthoritySetTracker:
    """Follows GRANDPA authority-set changes along a chain of headers imported in order.

    ``authority_set`` is always the set that must sign justifications for the block *after*
    ``head_number``: verify a header's justification with it, then :meth:`import_header`.

    Semantics (``pallet_grandpa``): a ``ScheduledChange`` with delay ``d`` in block ``N`` is
    enacted at block ``N + d`` — that block is still finalized by the old set, and the new
    set (``set_id + 1``) finalizes ``N + d + 1`` onwards; with ``d = 0`` the signalling
    block is the old set's last. A second scheduled change while one is pending (including in
    the block that enacts it — the runtime cannot produce that) is rejected. Forced changes
    are rejected with :class:`UnsupportedForcedChange`: they replace the set without
    finality when GRANDPA has stalled, which a light client cannot check, so like
    pallet-bridge-grandpa we stop and require re-initialisation from a trusted checkpoint.
    ``OnDisabled``, ``Pause`` and ``Resume`` do not change the set and are ignored. A header
    is checked completely before any state changes, so a rejected import leaves the tracker
    untouched.
    """

    __slots__ = ("_head_hash", "_head_number", "_pending", "_set")

    def __init__(
        self,
        authority_set: AuthoritySet,
        head_hash: bytes,
        head_number: int,
        pending: PendingChange | None = None,
    ) -> None:
        """Start from a trusted (finalized) head and the set that finalizes its successor."""
        if not isinstance(authority_set, AuthoritySet):
            raise InvalidAuthoritySet("authority_set must be an AuthoritySet")
        if not isinstance(head_hash, bytes) or len(head_hash) != HASH_LEN:
            raise FinalityError("tracker head hash must be 32 bytes")
        if isinstance(head_number, bool) or not isinstance(head_number, int):
            raise FinalityError("tracker head number must be an integer")
        if not 0 <= head_number <= U32_MAX:
            raise FinalityError(f"tracker head number {head_number} does not fit in u32")
        if pending is not None and (
            pending.enact_at <= head_number or pending.next_set.set_id != authority_set.set_id + 1
        ):
            raise FinalityError("pending change does not follow the tracker's head and set")
        self._set = authority_set
        self._head_hash = head_hash
        self._head_number = head_number
        self._pending = pending

    @classmethod
    def from_header(
        cls, authority_set: AuthoritySet, header: SubstrateHeader
    ) -> AuthoritySetTracker:
        """Start from a trusted header whose successor ``authority_set`` finalizes."""
        return cls(authority_set, header.hash, header.number)

    @property
    def authority_set(self) -> AuthoritySet:
        """The set that finalizes the block after the head."""
        return self._set

    @property
    def set_id(self) -> int:
        """Id of :attr:`authority_set`."""
        return self._set.set_id

    @property
    def authorities(self) -> tuple[tuple[bytes, int], ...]:
        """Authorities of :attr:`authority_set`."""
        return self._set.authorities

    @property
    def head_hash(self) -> bytes:
        """Hash of the last imported header."""
        return self._head_hash

    @property
    def head_number(self) -> int:
        """Number of the last imported header."""
        return self._head_number

    @property
    def pending(self) -> PendingChange | None:
        """The scheduled change waiting to be enacted, if any."""
        return self._pending

    def import_header(self, header: SubstrateHeader) -> None:
        """Import the child of the head, recording and enacting GRANDPA scheduled changes."""
        if not isinstance(header, SubstrateHeader):
            raise DecodeError("import_header needs a decoded SubstrateHeader")
        if header.parent_hash != self._head_hash or header.number != self._head_number + 1:
            raise NonSequentialHeader(
                f"header #{header.number} (parent 0x{header.parent_hash.hex()}) does not "
                f"follow head #{self._head_number} 0x{self._head_hash.hex()}"
            )
        changes = grandpa_changes(header)
        scheduled: list[ScheduledChange] = []
        for change in changes:
            if isinstance(change, ForcedChange):
                raise UnsupportedForcedChange(
                    f"header #{header.number} forces an authority change (median "
                    f"#{change.median}, delay {change.delay}); re-initialise from a checkpoint"
                )
            scheduled.append(change)
        pending = self._pending
        if scheduled:
            if len(scheduled) > 1:
                raise ConflictingScheduledChange(
                    f"header #{header.number} signals {len(scheduled)} scheduled changes"
                )
            if pending is not None:
                raise ConflictingScheduledChange(
                    f"header #{header.number} schedules a change while the one from "
                    f"#{pending.signalled_at} is pending until #{pending.enact_at}"
                )
            change = scheduled[0]
            enact_at = header.number + change.delay
            if enact_at > U32_MAX:
                raise InvalidAuthoritySet(
                    f"header #{header.number}: change delay {change.delay} passes block u32::MAX"
                )
            if self._set.set_id == U64_MAX:
                raise InvalidAuthoritySet("set id would overflow u64")
            next_set = AuthoritySet(self._set.set_id + 1, change.next_authorities)
            pending = PendingChange(header.number, enact_at, next_set)

        current = self._set
        if pending is not None and pending.enact_at == header.number:
            current, pending = pending.next_set, None
        self._head_hash, self._head_number = header.hash, header.number
        self._set, self._pending = current, pending
