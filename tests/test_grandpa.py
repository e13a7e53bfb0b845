"""GRANDPA justifications (exploit class T23 and friends) and the authority-set tracker.

Real data: smoldot's justification (5 real ed25519 precommits, set id 0) and commit message
(7 precommits, set id 3490). No public authority set goes with them, so the set is built from
the signers (weight 1 each). Cases real data cannot give (votes on descendants through
``votes_ancestries``, forks, equivocations, weights, set changes) use keys generated here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from ed25519_zebra import ed_from_seed, ed_sign, ed_verify
from hypothesis import given, settings
from hypothesis import strategies as st
from reach import Reach

import light_clients.substrate.grandpa as grandpa_module
from light_clients.errors import DecodeError, FinalityError, VerificationError
from light_clients.hashing import blake2_256
from light_clients.substrate.grandpa import (
    AuthoritySet,
    AuthoritySetTracker,
    Commit,
    ConflictingScheduledChange,
    DuplicateAuthorityVote,
    DuplicateVotesAncestries,
    InvalidAuthoritySet,
    InvalidAuthoritySignature,
    InvalidJustificationTarget,
    Justification,
    NonSequentialHeader,
    PendingChange,
    RedundantVotesAncestries,
    SignedPrecommit,
    TooLowCumulativeWeight,
    UnknownAuthorityVote,
    UnrelatedAncestryVote,
    UnsupportedForcedChange,
    decode_justification,
    encode_justification,
    precommit_payload,
    verify_decoded_justification,
    verify_justification,
)
from light_clients.substrate.header import (
    GRANDPA_ENGINE_ID,
    DigestItem,
    DigestKind,
    ForcedChange,
    OnDisabled,
    ScheduledChange,
    SubstrateHeader,
    decode_header,
    encode_grandpa_log,
    encode_header,
)
from light_clients.substrate.scale import U64_MAX

VECTORS = Path(__file__).parent / "vectors" / "substrate"
PROPERTY = settings(max_examples=200, deadline=None)

SMOLDOT = json.loads((VECTORS / "grandpa_smoldot.json").read_text())
REAL_RAW = bytes.fromhex(SMOLDOT["justification"]["hex"])
REAL = decode_justification(REAL_RAW)
REAL_SET = AuthoritySet(0, tuple((p.authority, 1) for p in REAL.commit.precommits))


def real_headers() -> dict[str, bytes]:
    data = json.loads((VECTORS / "headers.json").read_text())
    return {v["name"]: bytes.fromhex(v["scale"].removeprefix("0x")) for v in data["vectors"]}


# --- synthetic chains and keys ------------------------------------------------------------

KEYS = [ed_from_seed(blake2_256(b"passerelle grandpa test key %d" % i)) for i in range(16)]
PUBLIC = [public for _, public in KEYS]


def make_header(
    parent: bytes, number: int, fork: bytes = b"", digest: tuple[DigestItem, ...] = ()
) -> SubstrateHeader:
    state_root = blake2_256(fork + number.to_bytes(4, "little"))
    return decode_header(encode_header(parent, number, state_root, bytes(32), digest))


def chain(base: SubstrateHeader, length: int, fork: bytes = b"") -> list[SubstrateHeader]:
    headers, parent = [], base
    for _ in range(length):
        parent = make_header(parent.hash, parent.number + 1, fork)
        headers.append(parent)
    return headers


GENESIS = make_header(bytes(32), 100)


def vote(
    signer: int,
    target: SubstrateHeader | tuple[bytes, int],
    round_: int = 7,
    set_id: int = 1,
    key_of_signature: int | None = None,
) -> SignedPrecommit:
    target_hash, number = (
        (target.hash, target.number) if isinstance(target, SubstrateHeader) else target
    )
    secret = KEYS[signer if key_of_signature is None else key_of_signature][0]
    signature = ed_sign(secret, precommit_payload(target_hash, number, round_, set_id))
    return SignedPrecommit(target_hash, number, signature, PUBLIC[signer])


def justify(
    target: SubstrateHeader,
    precommits: Sequence[SignedPrecommit],
    ancestries: Sequence[SubstrateHeader] = (),
    round_: int = 7,
) -> bytes:
    commit = Commit(target.hash, target.number, tuple(precommits))
    return encode_justification(Justification(round_, commit, tuple(ancestries)))


def synthetic_set(
    count: int = 4, set_id: int = 1, weights: Sequence[int] | None = None
) -> AuthoritySet:
    weights = weights or [1] * count
    return AuthoritySet(set_id, tuple((PUBLIC[i], weights[i]) for i in range(count)))


def with_precommits(precommits: Sequence[SignedPrecommit], base: Justification = REAL) -> bytes:
    commit = Commit(base.commit.target_hash, base.commit.target_number, tuple(precommits))
    return encode_justification(Justification(base.round, commit, base.votes_ancestries))


# --- the real justification ---------------------------------------------------------------


def test_real_justification_verifies() -> None:
    proof = verify_justification(REAL_RAW, REAL_SET, (REAL.commit.target_hash, 302592))
    assert proof.target_number == 302592
    assert proof.target_hash.hex() == SMOLDOT["justification"]["target_hash"]
    assert proof.round == 439559
    assert proof.set_id == 0
    assert (proof.signed_weight, proof.total_weight, proof.threshold) == (5, 5, 4)
    assert proof.signers == REAL_SET.authorities
    assert all(v.route == () for v in proof.votes)
    assert proof.ancestry == ()


def test_real_justification_roundtrip_and_fields() -> None:
    assert encode_justification(REAL) == REAL_RAW
    for precommit, expected in zip(
        REAL.commit.precommits, SMOLDOT["justification"]["precommits"], strict=True
    ):
        assert precommit.authority.hex() == expected["authority"]
        assert precommit.signature.hex() == expected["signature"]
        assert precommit.target_number == expected["target_number"]


@pytest.mark.parametrize(("part", "set_id"), [("justification", 0), ("commit", 3490)])
def test_real_signed_messages_match_precommit_payload(part: str, set_id: int) -> None:
    vector = SMOLDOT[part]
    for precommit in vector["precommits"]:
        payload = precommit_payload(
            bytes.fromhex(precommit["target_hash"]),
            precommit["target_number"],
            vector["round"],
            set_id,
        )
        assert payload.hex() == precommit["signed_message"]
        assert len(payload) == 53


def commit_message_as_justification() -> tuple[bytes, AuthoritySet, Justification]:
    vector = SMOLDOT["commit"]
    precommits = tuple(
        SignedPrecommit(
            bytes.fromhex(p["target_hash"]),
            p["target_number"],
            bytes.fromhex(p["signature"]),
            bytes.fromhex(p["authority"]),
        )
        for p in vector["precommits"]
    )
    commit = Commit(bytes.fromhex(vector["target_hash"]), vector["target_number"], precommits)
    justification = Justification(vector["round"], commit, ())
    authorities = AuthoritySet(vector["set_id"], tuple((p.authority, 1) for p in precommits))
    return encode_justification(justification), authorities, justification


def test_real_commit_signatures_bind_set_id_3490() -> None:
    raw, authorities, justification = commit_message_as_justification()
    proof = verify_justification(raw, authorities, justification.target)
    assert (proof.set_id, proof.round, proof.signed_weight, proof.threshold) == (3490, 3669, 7, 5)


def test_T6_T23_wrong_set_id_rejected() -> None:
    """A set id other than the signers' (a rotated-out or future set) breaks every signature."""
    with pytest.raises(InvalidAuthoritySignature, match="set 1"):
        verify_justification(REAL_RAW, AuthoritySet(1, REAL_SET.authorities))
    raw, authorities, _ = commit_message_as_justification()
    with pytest.raises(InvalidAuthoritySignature, match="set 3491"):
        verify_justification(raw, AuthoritySet(3491, authorities.authorities))


def test_T23_wrong_round_rejected() -> None:
    raw = (REAL.round + 1).to_bytes(8, "little") + REAL_RAW[8:]
    with pytest.raises(InvalidAuthoritySignature, match="round 439560"):
        verify_justification(raw, REAL_SET)


def test_T23_too_low_cumulative_weight_rejected() -> None:
    precommits = REAL.commit.precommits
    # 4 of 5 is the GRANDPA supermajority (> 2/3); 3 of 5 is not.
    assert verify_justification(with_precommits(precommits[:4]), REAL_SET).signed_weight == 4
    with pytest.raises(TooLowCumulativeWeight, match="weight 3 of 5, need 4"):
        verify_justification(with_precommits(precommits[:3]), REAL_SET)
    with pytest.raises(TooLowCumulativeWeight):
        verify_justification(with_precommits(()), REAL_SET)


def test_T23_duplicate_authority_vote_rejected() -> None:
    """T4/T23: the same precommit twice cannot count twice (3 distinct + 1 repeat < 4)."""
    precommits = REAL.commit.precommits
    with pytest.raises(DuplicateAuthorityVote, match="repeated vote"):
        verify_justification(with_precommits((*precommits[:3], precommits[0])), REAL_SET)
    with pytest.raises(DuplicateAuthorityVote):
        verify_justification(with_precommits((*precommits, precommits[4])), REAL_SET)


def test_T23_unknown_authority_vote_rejected() -> None:
    outsider = vote(0, REAL.target, round_=REAL.round, set_id=0)  # validly signed, not a member
    with pytest.raises(UnknownAuthorityVote, match=PUBLIC[0].hex()):
        verify_justification(with_precommits((*REAL.commit.precommits, outsider)), REAL_SET)
    # A real signer that is not in the given set is unknown too, even with a good signature.
    smaller = AuthoritySet(0, REAL_SET.authorities[1:])
    with pytest.raises(UnknownAuthorityVote):
        verify_justification(REAL_RAW, smaller)


def test_T23_invalid_justification_target_rejected() -> None:
    target_hash, number = REAL.target
    with pytest.raises(InvalidJustificationTarget, match="expected #302593"):
        verify_justification(REAL_RAW, REAL_SET, (target_hash, number + 1))
    with pytest.raises(InvalidJustificationTarget):
        verify_justification(REAL_RAW, REAL_SET, (bytes(32), number))
    for malformed in ((target_hash,), (target_hash[:31], number), (target_hash, "302592")):
        with pytest.raises(InvalidJustificationTarget):
            verify_justification(REAL_RAW, REAL_SET, malformed)  # type: ignore[arg-type]


def test_T23_extra_unused_ancestry_rejected() -> None:
    unrelated = make_header(bytes(32), 302593)
    commit = REAL.commit
    raw = encode_justification(Justification(REAL.round, commit, (unrelated,)))
    with pytest.raises(RedundantVotesAncestries, match="#302593"):
        verify_justification(raw, REAL_SET)
    # Even a real child of the target is redundant when no precommit uses it.
    child = make_header(commit.target_hash, commit.target_number + 1)
    raw = encode_justification(Justification(REAL.round, commit, (child,)))
    with pytest.raises(RedundantVotesAncestries):
        verify_justification(raw, REAL_SET)


def test_T10_trailing_bytes_in_justification_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        verify_justification(REAL_RAW + b"\x00", REAL_SET)


def test_truncated_justification_rejected() -> None:
    for cut in (0, 7, 44, 45, 100, len(REAL_RAW) - 1):
        with pytest.raises(DecodeError):
            decode_justification(REAL_RAW[:cut])


# --- synthetic justifications: ancestry, forks, equivocation, weights ----------------------


def test_precommit_on_descendant_through_ancestries() -> None:
    descendants = chain(GENESIS, 3)
    precommits = [vote(0, GENESIS), vote(1, descendants[2]), vote(2, descendants[0])]
    raw = justify(GENESIS, precommits, descendants)
    proof = verify_justification(raw, synthetic_set(4), (GENESIS.hash, GENESIS.number))
    assert proof.signed_weight == 3 and proof.threshold == 3
    assert proof.votes[0].route == ()
    assert proof.votes[1].route == tuple(h.hash for h in reversed(descendants))
    # The third vote joins the path the second one already proved.
    assert proof.votes[2].route == ()
    assert proof.ancestry == tuple(h.hash for h in descendants)


def test_T23_unrelated_fork_vote_rejected() -> None:
    main = chain(GENESIS, 2)
    fork = chain(make_header(GENESIS.parent_hash, GENESIS.number, b"fork"), 2, b"fork")
    precommits = [vote(0, main[1]), vote(1, main[1]), vote(2, fork[1])]
    with pytest.raises(UnrelatedAncestryVote, match="#102"):
        verify_justification(justify(GENESIS, precommits, main + fork), synthetic_set(4))


def test_T23_vote_for_descendant_without_ancestry_rejected() -> None:
    child = chain(GENESIS, 1)[0]
    precommits = [vote(i, GENESIS) for i in range(2)] + [vote(2, child)]
    with pytest.raises(UnrelatedAncestryVote):
        verify_justification(justify(GENESIS, precommits), synthetic_set(3))


def test_T23_vote_below_target_rejected() -> None:
    """An ancestor of the target does not finalize the target."""
    target = chain(GENESIS, 1)[0]
    precommits = [vote(0, target), vote(1, target), vote(2, GENESIS)]
    with pytest.raises(UnrelatedAncestryVote, match="#100"):
        verify_justification(justify(target, precommits, [GENESIS]), synthetic_set(3))


def test_T23_vote_with_wrong_block_number_rejected() -> None:
    """Stricter than polkadot-sdk: the signed number must be the block's real number."""
    child = chain(GENESIS, 1)[0]
    wrong_number = vote(2, (child.hash, child.number + 5))
    precommits = [vote(0, GENESIS), vote(1, GENESIS), wrong_number]
    with pytest.raises(UnrelatedAncestryVote):
        verify_justification(justify(GENESIS, precommits, [child]), synthetic_set(3))
    wrong_target_number = vote(2, (GENESIS.hash, GENESIS.number + 1))
    precommits = [vote(0, GENESIS), vote(1, GENESIS), wrong_target_number]
    with pytest.raises(UnrelatedAncestryVote):
        verify_justification(justify(GENESIS, precommits), synthetic_set(3))


def test_T23_ancestry_skipping_a_block_rejected() -> None:
    """An ancestry header whose parent is the target but whose number skips ahead."""
    skipping = make_header(GENESIS.hash, GENESIS.number + 2)
    precommits = [vote(0, GENESIS), vote(1, GENESIS), vote(2, skipping)]
    with pytest.raises(UnrelatedAncestryVote):
        verify_justification(justify(GENESIS, precommits, [skipping]), synthetic_set(3))
    # Voting for it under its distance from the target does not help: the vote's number must
    # be the header's own.
    by_distance = vote(2, (skipping.hash, GENESIS.number + 1))
    precommits = [vote(0, GENESIS), vote(1, GENESIS), by_distance]
    with pytest.raises(UnrelatedAncestryVote):
        verify_justification(justify(GENESIS, precommits, [skipping]), synthetic_set(3))


def test_T23_equivocation_rejected() -> None:
    """One authority precommitting two different descendants counts once, and is rejected."""
    descendants = chain(GENESIS, 2)
    precommits = [vote(0, GENESIS), vote(1, descendants[0]), vote(1, descendants[1])]
    with pytest.raises(DuplicateAuthorityVote, match="equivocation"):
        verify_justification(justify(GENESIS, precommits, descendants), synthetic_set(3))


def test_T23_duplicate_votes_ancestries_rejected() -> None:
    descendants = chain(GENESIS, 1)
    precommits = [vote(0, GENESIS), vote(1, descendants[0])]
    raw = justify(GENESIS, precommits, [descendants[0], descendants[0]])
    with pytest.raises(DuplicateVotesAncestries, match="listed twice"):
        verify_justification(raw, synthetic_set(2))


def test_T2_signature_over_another_block_rejected() -> None:
    """Signatures are checked against the payload we rebuild, never a claimed one."""
    other = chain(GENESIS, 1)[0]
    signed_other = vote(2, other)
    moved = SignedPrecommit(GENESIS.hash, GENESIS.number, signed_other.signature, PUBLIC[2])
    precommits = [vote(0, GENESIS), vote(1, GENESIS), moved]
    with pytest.raises(InvalidAuthoritySignature, match="precommit #2"):
        verify_justification(justify(GENESIS, precommits), synthetic_set(3))


def test_T23_signature_by_another_key_rejected() -> None:
    precommits = [vote(0, GENESIS), vote(1, GENESIS), vote(2, GENESIS, key_of_signature=3)]
    with pytest.raises(InvalidAuthoritySignature, match=PUBLIC[2].hex()):
        verify_justification(justify(GENESIS, precommits), synthetic_set(4))


def test_weighted_threshold_boundary() -> None:
    # Total 10: the supermajority is 7 (> 20/3).
    weights = [4, 3, 2, 1]
    authorities = synthetic_set(4, weights=weights)
    assert (authorities.total_weight, authorities.threshold) == (10, 7)
    proof = verify_justification(
        justify(GENESIS, [vote(0, GENESIS), vote(1, GENESIS)]), authorities
    )
    assert proof.signed_weight == 7
    assert proof.signers == ((PUBLIC[0], 4), (PUBLIC[1], 3))
    with pytest.raises(TooLowCumulativeWeight, match="weight 6 of 10"):
        verify_justification(justify(GENESIS, [vote(0, GENESIS), vote(2, GENESIS)]), authorities)


def test_redundant_votes_beyond_threshold_are_accepted_but_checked() -> None:
    """Unlike polkadot-sdk's strict verifier, post-threshold votes are allowed — if valid."""
    all_four = [vote(i, GENESIS) for i in range(4)]
    assert verify_justification(justify(GENESIS, all_four), synthetic_set(4)).signed_weight == 4
    bad_last = [*all_four[:3], vote(3, GENESIS, key_of_signature=0)]
    with pytest.raises(InvalidAuthoritySignature, match="precommit #3"):
        verify_justification(justify(GENESIS, bad_last), synthetic_set(4))


def count_ed_verify(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real: Callable[[bytes, bytes, bytes], bool] = ed_verify

    def counting(signature: bytes, message: bytes, public: bytes) -> bool:
        calls.append(public)
        return real(signature, message, public)

    monkeypatch.setattr(grandpa_module, "ed_verify", counting)
    return calls


def test_signatures_checked_once_each_and_only_after_structure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_ed_verify(monkeypatch)
    descendants = chain(GENESIS, 2)
    precommits = [vote(i, descendants[i % 2]) for i in range(6)]
    verify_justification(justify(GENESIS, precommits, descendants), synthetic_set(8))
    assert calls == PUBLIC[:6]
    calls.clear()
    # Too little weight and a forged signature: rejected without any signature check.
    forged = [vote(0, GENESIS, key_of_signature=5), vote(1, GENESIS)]
    with pytest.raises(TooLowCumulativeWeight):
        verify_justification(justify(GENESIS, forged), synthetic_set(8))
    calls_after_weight = list(calls)
    with pytest.raises(RedundantVotesAncestries):
        verify_justification(
            justify(GENESIS, [vote(i, GENESIS) for i in range(6)], descendants), synthetic_set(8)
        )
    assert calls_after_weight == [] and calls == []


def test_verify_decoded_justification_needs_an_authority_set() -> None:
    with pytest.raises(InvalidAuthoritySet):
        verify_decoded_justification(REAL, REAL_SET.authorities)  # type: ignore[arg-type]


def test_hand_built_justification_out_of_range_is_a_decode_error() -> None:
    too_late = Justification(2**64, REAL.commit, ())
    with pytest.raises(DecodeError, match="u64"):
        verify_decoded_justification(too_late, REAL_SET)


# --- authority sets (T3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_id", "authorities", "reason"),
    [
        (0, (), "empty"),
        (0, ((PUBLIC[0], 1), (PUBLIC[0], 2)), "listed twice"),
        (0, ((PUBLIC[0], 0),), "weight 0"),
        (0, ((PUBLIC[0], -1),), "weight -1"),
        (0, ((PUBLIC[0], True),), "not an integer"),
        (0, ((PUBLIC[0][:31], 1),), "not 32 bytes"),
        (0, (("ab" * 32, 1),), "not 32 bytes"),
        (0, ((PUBLIC[0], 1, 2),), "pair"),
        (0, ((PUBLIC[0], U64_MAX), (PUBLIC[1], 1)), "does not fit in u64"),
        (0, ((PUBLIC[0], U64_MAX + 1),), "weight"),
        (-1, ((PUBLIC[0], 1),), "set id"),
        (U64_MAX + 1, ((PUBLIC[0], 1),), "set id"),
        ("0", ((PUBLIC[0], 1),), "set id"),
        (0, b"not a list", "sequence"),
    ],
)
def test_T3_invalid_authority_set_rejected(set_id: Any, authorities: Any, reason: str) -> None:
    with pytest.raises(InvalidAuthoritySet, match=reason):
        AuthoritySet(set_id, authorities)


def test_authority_set_lookup_and_equality() -> None:
    authorities = AuthoritySet(3, [(PUBLIC[0], 2), (PUBLIC[1], 5)])  # type: ignore[arg-type]
    assert authorities.authorities == ((PUBLIC[0], 2), (PUBLIC[1], 5))
    assert authorities.weight_of(PUBLIC[1]) == 5 and authorities.weight_of(PUBLIC[2]) is None
    assert authorities == AuthoritySet(3, ((PUBLIC[0], 2), (PUBLIC[1], 5)))
    assert hash(authorities) == hash(AuthoritySet(3, ((PUBLIC[0], 2), (PUBLIC[1], 5))))


@PROPERTY
@given(st.integers(1, 10**6))
def test_threshold_is_strictly_more_than_two_thirds(total: int) -> None:
    authorities = AuthoritySet(0, ((PUBLIC[0], total),))
    threshold = authorities.threshold
    assert 3 * threshold > 2 * total
    assert 3 * (threshold - 1) <= 2 * total


# --- properties ---------------------------------------------------------------------------

SIGNED_ON_GENESIS = [vote(i, GENESIS) for i in range(len(KEYS))]


@PROPERTY
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12), st.data())
def test_verdict_matches_two_thirds_rule(weights: list[int], data: st.DataObject) -> None:
    authorities = synthetic_set(len(weights), weights=weights)
    signers = data.draw(st.lists(st.sampled_from(range(len(weights))), unique=True))
    raw = justify(GENESIS, [SIGNED_ON_GENESIS[i] for i in signers])
    signed = sum(weights[i] for i in signers)
    if 3 * signed > 2 * sum(weights):
        proof = verify_justification(raw, authorities)
        assert proof.signed_weight == signed
        assert {key for key, _ in proof.signers} == {PUBLIC[i] for i in signers}
    else:
        with pytest.raises(TooLowCumulativeWeight):
            verify_justification(raw, authorities)


@st.composite
def real_vote_subsets(draw: st.DrawFn) -> tuple[bytes, int]:
    """The real justification re-encoded with a subset of its five precommits (4 of 5 weight-1
    votes pass the threshold, 3 do not), then with 0-2 bytes changed: ``(bytes, votes kept)``."""
    precommits = REAL.commit.precommits
    kept = draw(st.lists(st.integers(0, len(precommits) - 1), unique=True, min_size=3).map(sorted))
    commit = Commit(
        REAL.commit.target_hash, REAL.commit.target_number, tuple(precommits[i] for i in kept)
    )
    raw = bytearray(encode_justification(Justification(REAL.round, commit, ())))
    for _ in range(draw(st.sampled_from((0, 0, 1, 2)))):
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    return bytes(raw), len(kept)


def test_arbitrary_bytes_only_raise_verification_errors() -> None:
    reach = Reach("accepted", "rejected")

    @PROPERTY
    @given(st.one_of(st.binary(max_size=400).map(lambda raw: (raw, 0)), real_vote_subsets()))
    def check(case: tuple[bytes, int]) -> None:
        data, votes = case
        try:
            proof = verify_justification(data, REAL_SET)
        except VerificationError as exc:
            assert isinstance(exc, DecodeError | FinalityError)
            assert "\n" not in str(exc)
            reach.hit("rejected")
            return
        # Only genuine votes for the real target, enough of them, can get here.
        reach.hit("accepted")
        assert votes >= REAL_SET.threshold
        assert (proof.target_hash, proof.target_number) == REAL.target
        assert proof.signed_weight >= REAL_SET.threshold
        assert {vote.authority for vote in proof.votes} <= {key for key, _ in REAL_SET.authorities}

    check()
    reach.assert_reached()


@PROPERTY
@given(st.data())
def test_mutated_real_justification_never_verifies_something_else(data: st.DataObject) -> None:
    raw = bytearray(REAL_RAW)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if mutation == "truncate":
        raw = raw[:position]
    elif mutation == "insert":
        raw[position:position] = b"\x00"
    try:
        proof = verify_justification(bytes(raw), REAL_SET)
    except VerificationError as exc:
        assert isinstance(exc, DecodeError | FinalityError)
        return
    # Every byte is signed or structural, so nothing should survive; if anything ever does
    # (e.g. a non-canonical signature encoding), the claim must be unchanged.
    assert (proof.target_hash, proof.target_number) == REAL.target
    assert proof.round == REAL.round


# --- the authority-set tracker ------------------------------------------------------------


def frnk(log: Any) -> DigestItem:
    return DigestItem(DigestKind.CONSENSUS, GRANDPA_ENGINE_ID, encode_grandpa_log(log))


def next_header(parent: SubstrateHeader, *logs: Any) -> SubstrateHeader:
    return make_header(parent.hash, parent.number + 1, digest=tuple(frnk(log) for log in logs))


def new_authorities(first: int, count: int) -> tuple[tuple[bytes, int], ...]:
    return tuple((PUBLIC[i], 1) for i in range(first, first + count))


def test_tracker_follows_real_polkadot_scheduled_change() -> None:
    header = decode_header(real_headers()["polkadot-512271"])
    tracker = AuthoritySetTracker(synthetic_set(3, set_id=5), header.parent_hash, header.number - 1)
    tracker.import_header(header)
    assert tracker.set_id == 6
    assert len(tracker.authorities) == 197
    assert tracker.pending is None
    assert (tracker.head_hash, tracker.head_number) == (header.hash, 512271)


def test_tracker_real_kusama_header_ignores_on_disabled() -> None:
    header = decode_header(real_headers()["kusama-7472481"])
    tracker = AuthoritySetTracker(synthetic_set(3), header.parent_hash, header.number - 1)
    tracker.import_header(header)
    assert (tracker.set_id, len(tracker.authorities)) == (2, 900)


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_tracker_enacts_change_after_delay(delay: int) -> None:
    initial = synthetic_set(3)
    tracker = AuthoritySetTracker.from_header(initial, GENESIS)
    signal = next_header(GENESIS, ScheduledChange(new_authorities(4, 5), delay))
    tracker.import_header(signal)
    head = signal
    for _ in range(delay):
        assert tracker.authority_set == initial  # block N+d is still finalized by the old set
        assert tracker.pending is not None
        assert tracker.pending.enact_at == signal.number + delay
        head = next_header(head)
        tracker.import_header(head)
    assert tracker.set_id == 2
    assert tracker.authorities == new_authorities(4, 5)
    assert tracker.pending is None
    assert tracker.head_number == GENESIS.number + 1 + delay


def test_T21_non_sequential_header_rejected() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    child = next_header(GENESIS)
    with pytest.raises(NonSequentialHeader, match="does not follow"):
        tracker.import_header(next_header(child))  # skips a block
    with pytest.raises(NonSequentialHeader):
        tracker.import_header(make_header(bytes(32), GENESIS.number + 1))  # wrong parent
    with pytest.raises(NonSequentialHeader):
        tracker.import_header(make_header(GENESIS.hash, GENESIS.number + 2))  # wrong number
    with pytest.raises(DecodeError):
        tracker.import_header(child.raw)  # type: ignore[arg-type]
    tracker.import_header(child)
    assert tracker.head_hash == child.hash


def test_second_scheduled_change_while_pending_rejected_atomically() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    first = next_header(GENESIS, ScheduledChange(new_authorities(4, 2), 2))
    tracker.import_header(first)
    pending = tracker.pending
    second = next_header(first, ScheduledChange(new_authorities(8, 2), 0))
    with pytest.raises(ConflictingScheduledChange, match="pending until #103"):
        tracker.import_header(second)
    assert (tracker.head_hash, tracker.pending, tracker.set_id) == (first.hash, pending, 1)
    # Also at the enacting block itself (the runtime cannot produce that).
    enacting = next_header(next_header(first), ScheduledChange(new_authorities(8, 2), 0))
    tracker.import_header(next_header(first))
    with pytest.raises(ConflictingScheduledChange):
        tracker.import_header(enacting)


def test_two_scheduled_changes_in_one_header_rejected() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    header = next_header(
        GENESIS,
        ScheduledChange(new_authorities(4, 2), 0),
        ScheduledChange(new_authorities(6, 2), 0),
    )
    with pytest.raises(ConflictingScheduledChange, match="2 scheduled changes"):
        tracker.import_header(header)


def test_forced_change_rejected() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    forced = ForcedChange(median=90, change=ScheduledChange(new_authorities(4, 2), 0))
    with pytest.raises(UnsupportedForcedChange, match="median #90"):
        tracker.import_header(next_header(GENESIS, forced))
    assert tracker.head_hash == GENESIS.hash


def test_T3_scheduled_change_to_invalid_set_rejected() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    for bad in ((), ((PUBLIC[0], 1), (PUBLIC[0], 1)), ((PUBLIC[0], 0),)):
        with pytest.raises(InvalidAuthoritySet):
            tracker.import_header(next_header(GENESIS, ScheduledChange(bad, 0)))
    with pytest.raises(InvalidAuthoritySet, match="u32"):
        tracker.import_header(
            next_header(GENESIS, ScheduledChange(new_authorities(0, 1), 2**32 - 1))
        )
    assert tracker.set_id == 1 and tracker.head_hash == GENESIS.hash


def test_malformed_grandpa_log_stops_the_tracker() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    bad = make_header(
        GENESIS.hash,
        GENESIS.number + 1,
        digest=(DigestItem(DigestKind.CONSENSUS, GRANDPA_ENGINE_ID, b"\x01\x00"),),
    )
    with pytest.raises(DecodeError):
        tracker.import_header(bad)


def test_tracker_ignores_informational_logs() -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    tracker.import_header(next_header(GENESIS, OnDisabled(1)))
    assert tracker.set_id == 1


def test_tracker_constructor_validation() -> None:
    authorities = synthetic_set(3)
    for args in (
        (authorities.authorities, GENESIS.hash, 1),
        (authorities, GENESIS.hash[:31], 1),
        (authorities, GENESIS.hash, -1),
        (authorities, GENESIS.hash, 2**32),
        (authorities, GENESIS.hash, True),
    ):
        with pytest.raises(FinalityError):
            AuthoritySetTracker(*args)
    stale = PendingChange(5, 10, synthetic_set(2, set_id=2))
    with pytest.raises(FinalityError, match="pending"):
        AuthoritySetTracker(authorities, GENESIS.hash, 10, stale)
    resumed = AuthoritySetTracker(
        authorities,
        GENESIS.hash,
        GENESIS.number,
        PendingChange(GENESIS.number - 1, GENESIS.number + 1, synthetic_set(2, set_id=2)),
    )
    resumed.import_header(next_header(GENESIS))
    assert resumed.set_id == 2


@PROPERTY
@given(st.integers(0, 6), st.integers(0, 4), st.integers(1, 8))
def test_tracker_set_changes_exactly_after_enactment(
    delay: int, signal_offset: int, extra: int
) -> None:
    tracker = AuthoritySetTracker.from_header(synthetic_set(3), GENESIS)
    head = GENESIS
    signal_number = GENESIS.number + 1 + signal_offset
    while head.number < signal_number + delay + extra:
        logs = (
            (ScheduledChange(new_authorities(5, 3), delay),)
            if head.number + 1 == signal_number
            else ()
        )
        head = next_header(head, *logs)
        # The set that finalizes block n+1 is the new one iff n >= N + d.
        tracker.import_header(head)
        expected = 2 if head.number >= signal_number + delay else 1
        assert tracker.set_id == expected
