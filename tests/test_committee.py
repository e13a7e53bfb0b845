"""Checkpoint attestations (light_clients.committee): format, signatures, and T2–T9/T17 attacks."""

from __future__ import annotations

import itertools
import struct

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.committee import (
    CHECKPOINT_TAG,
    SECP256K1_N,
    Attestation,
    BelowThresholdError,
    Checkpoint,
    Committee,
    DuplicateSignerError,
    InvalidCheckpointError,
    InvalidCommitteeError,
    InvalidKeyError,
    MalformedCheckpointError,
    MalformedSignatureError,
    UnknownSignerError,
    UnorderedSignaturesError,
    address_of,
    recover_signer,
    sign_checkpoint,
    verify_attestation,
)
from light_clients.errors import AttestationError, DecodeError
from light_clients.hashing import keccak256
from light_clients.merkle import EMPTY_ROOT

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECP256K1_P = 2**256 - 2**32 - 977

KEYS = [keccak256(b"passerelle test key %d" % i) for i in range(20)]
ADDRESSES = [address_of(key) for key in KEYS]
CHECKPOINT = Checkpoint(origin=1000, outbox=b"\x0b" * 32, root=keccak256(b"root"), index=41)
SIGNATURES = [sign_checkpoint(key, CHECKPOINT) for key in KEYS]


def _sorted_by_signer(indices: list[int]) -> list[int]:
    return sorted(indices, key=lambda i: ADDRESSES[i])


def _committee(indices: list[int], threshold: int) -> Committee:
    return Committee(members=tuple(ADDRESSES[i] for i in indices), threshold=threshold)


def _signatures(indices: list[int]) -> list[bytes]:
    return [SIGNATURES[i] for i in _sorted_by_signer(indices)]


def _with(
    signature: bytes, *, r: int | None = None, s: int | None = None, v: int | None = None
) -> bytes:
    r0 = int.from_bytes(signature[:32], "big") if r is None else r
    s0 = int.from_bytes(signature[32:64], "big") if s is None else s
    v0 = signature[64] if v is None else v
    return r0.to_bytes(32, "big") + s0.to_bytes(32, "big") + bytes((v0,))


def _high_s_twin(signature: bytes) -> bytes:
    """The same key's other valid ECDSA encoding of the same vote: s -> n - s, v flipped."""
    s = int.from_bytes(signature[32:64], "big")
    return _with(signature, s=SECP256K1_N - s, v=55 - signature[64])


# --------------------------------------------------------------------------- format


def test_checkpoint_digest_layout_matches_design() -> None:
    preimage = CHECKPOINT_TAG + struct.pack(">I32s32sI", 1000, b"\x0b" * 32, keccak256(b"root"), 41)
    assert CHECKPOINT_TAG == b"PASSERELLE/v1/checkpoint"
    assert len(preimage) == 96
    assert CHECKPOINT.encode() == preimage
    assert CHECKPOINT.inner_hash() == keccak256(preimage)
    assert CHECKPOINT.digest() == keccak256(
        b"\x19Ethereum Signed Message:\n32" + keccak256(preimage)
    )


def test_digest_and_signature_match_eth_account() -> None:
    """Any Ethereum signer signing the inner hash with personal_sign produces our signature."""
    message = encode_defunct(primitive=CHECKPOINT.inner_hash())
    assert _hash_eip191_message(message) == CHECKPOINT.digest()
    for key, signature, address in zip(KEYS[:4], SIGNATURES, ADDRESSES, strict=False):
        reference = Account.sign_message(message, key)
        assert reference.signature == signature
        assert Account.from_key(key).address.lower() == "0x" + address.hex()
        assert Account.recover_message(message, signature=signature).lower() == "0x" + address.hex()
        assert recover_signer(CHECKPOINT.digest(), bytes(reference.signature)) == address


def test_signatures_are_deterministic_low_s_with_v_27_or_28() -> None:
    """RFC 6979: the same key never picks a fresh k for the same digest, nor reuses one (T9)."""
    other = Checkpoint(origin=1000, outbox=b"\x0b" * 32, root=keccak256(b"root"), index=42)
    rs = set()
    for key, signature in zip(KEYS, SIGNATURES, strict=True):
        assert sign_checkpoint(key, CHECKPOINT) == signature
        assert len(signature) == 65 and signature[64] in (27, 28)
        assert int.from_bytes(signature[32:64], "big") <= SECP256K1_N // 2
        rs.add(signature[:32])
        assert sign_checkpoint(key, other)[:32] != signature[:32]
    assert len(rs) == len(KEYS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": -1},
        {"origin": 2**32},
        {"origin": True},
        {"origin": "1"},
        {"index": -1},
        {"index": 2**32},
        {"outbox": b"\x0b" * 31},
        {"outbox": b"\x0b" * 33},
        {"outbox": "0x" + "0b" * 32},
        {"root": b"\x01" * 20},
        {"root": None},
    ],
)
def test_malformed_checkpoint_rejected(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "origin": 1,
        "outbox": b"\x0b" * 32,
        "root": b"\x01" * 32,
        "index": 0,
    }
    fields.update(kwargs)
    with pytest.raises(MalformedCheckpointError):
        Checkpoint(**fields)  # type: ignore[arg-type]


def test_T1_checkpoint_of_empty_or_zero_root_rejected() -> None:
    with pytest.raises(InvalidCheckpointError, match="empty-tree root"):
        Checkpoint(origin=1, outbox=b"\x0b" * 32, root=EMPTY_ROOT, index=0)
    with pytest.raises(InvalidCheckpointError, match="zero hash"):
        Checkpoint(origin=1, outbox=b"\x0b" * 32, root=bytes(32), index=0)


def test_address_of_and_bad_private_keys() -> None:
    assert address_of((1).to_bytes(32, "big")).hex() == "7e5f4552091a69125d5dfcb7b8c2659029395bdf"
    for bad in (bytes(32), SECP256K1_N.to_bytes(32, "big"), b"\x01" * 31, "11" * 32):
        with pytest.raises(InvalidKeyError):
            address_of(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError):
            sign_checkpoint(bad, CHECKPOINT)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- committee


def test_committee_keeps_member_order_and_answers_membership() -> None:
    committee = _committee([3, 1, 2], 2)
    assert committee.members == (ADDRESSES[3], ADDRESSES[1], ADDRESSES[2])
    assert ADDRESSES[1] in committee and ADDRESSES[0] not in committee
    assert len(committee) == 3
    assert Committee(members=[ADDRESSES[0]], threshold=1).members == (ADDRESSES[0],)  # type: ignore[arg-type]


def test_T3_empty_committee_rejected() -> None:
    with pytest.raises(InvalidCommitteeError, match="empty"):
        Committee(members=(), threshold=1)
    with pytest.raises(InvalidCommitteeError):
        Committee(members=(), threshold=0)


@pytest.mark.parametrize("threshold", [0, -1, 4, 100, True, 2.0, "2"])
def test_T3_bad_threshold_rejected(threshold: object) -> None:
    with pytest.raises(InvalidCommitteeError):
        Committee(members=tuple(ADDRESSES[:3]), threshold=threshold)  # type: ignore[arg-type]


def test_T5_zero_address_member_rejected() -> None:
    with pytest.raises(InvalidCommitteeError, match="zero address"):
        Committee(members=(ADDRESSES[0], bytes(20)), threshold=1)


def test_T4_duplicate_member_rejected() -> None:
    with pytest.raises(InvalidCommitteeError, match="duplicate committee member 0x"):
        Committee(members=(ADDRESSES[0], ADDRESSES[1], ADDRESSES[0]), threshold=2)


@pytest.mark.parametrize("member", [b"\x01" * 19, b"\x01" * 21, b"\x01" * 32, "0x" + "01" * 20, 5])
def test_malformed_member_rejected(member: object) -> None:
    with pytest.raises(InvalidCommitteeError, match="20-byte address"):
        Committee(members=(ADDRESSES[0], member), threshold=1)  # type: ignore[arg-type]


def test_members_must_be_a_sequence_of_addresses() -> None:
    with pytest.raises(InvalidCommitteeError):
        Committee(members=ADDRESSES[0], threshold=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommitteeError):
        Committee(members=None, threshold=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- recover_signer


def test_recover_signer_returns_the_signing_address() -> None:
    for signature, address in zip(SIGNATURES, ADDRESSES, strict=True):
        assert recover_signer(CHECKPOINT.digest(), signature) == address


@pytest.mark.parametrize("v", [0, 1, 2, 3, 26, 29, 35, 36, 255])
def test_T5_v_not_27_or_28_rejected(v: int) -> None:
    with pytest.raises(MalformedSignatureError, match=f"v is {v}"):
        recover_signer(CHECKPOINT.digest(), _with(SIGNATURES[0], v=v))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"r": 0}, "r is 0"),
        ({"r": SECP256K1_N}, "r is 0 or not below"),
        ({"r": 2**256 - 1}, "r is 0 or not below"),
        ({"s": 0}, "s is 0"),
        ({"s": SECP256K1_N}, "upper half"),
        ({"s": 2**256 - 1}, "upper half"),
        ({"s": SECP256K1_N // 2 + 1}, "upper half"),
    ],
)
def test_T5_out_of_range_r_or_s_rejected(change: dict[str, int], reason: str) -> None:
    with pytest.raises(MalformedSignatureError, match=reason):
        recover_signer(CHECKPOINT.digest(), _with(SIGNATURES[0], **change))


def test_T4_high_s_twin_rejected() -> None:
    twin = _high_s_twin(SIGNATURES[0])
    # The twin is a valid ECDSA signature by the same key (eth-account accepts it)...
    message = encode_defunct(primitive=CHECKPOINT.inner_hash())
    assert Account.recover_message(message, signature=twin).lower() == "0x" + ADDRESSES[0].hex()
    # ...but a second encoding of one vote: refused.
    with pytest.raises(MalformedSignatureError, match="upper half"):
        recover_signer(CHECKPOINT.digest(), twin)


def test_T5_r_not_on_curve_does_not_recover() -> None:
    # r must be the x-coordinate of a curve point; find the first small r that is not.
    r = next(
        x for x in itertools.count(1) if pow(x**3 + 7, (SECP256K1_P - 1) // 2, SECP256K1_P) != 1
    )
    with pytest.raises(MalformedSignatureError, match="does not recover"):
        recover_signer(CHECKPOINT.digest(), _with(SIGNATURES[0], r=r))


@pytest.mark.parametrize("length", [0, 64, 66, 130])
def test_T17_wrong_signature_length_rejected(length: int) -> None:
    padded = (SIGNATURES[0] * 3)[:length]
    with pytest.raises(MalformedSignatureError, match=f"{length} bytes"):
        recover_signer(CHECKPOINT.digest(), padded)


def test_recover_signer_rejects_non_bytes_and_bad_digest() -> None:
    with pytest.raises(MalformedSignatureError):
        recover_signer(CHECKPOINT.digest(), SIGNATURES[0].hex())  # type: ignore[arg-type]
    with pytest.raises(MalformedSignatureError, match="digest"):
        recover_signer(CHECKPOINT.digest()[:31], SIGNATURES[0])


# --------------------------------------------------------------------------- verify_attestation


def test_valid_two_of_three() -> None:
    committee = _committee([0, 1, 2], 2)
    for chosen in ([0, 1], [1, 2], [0, 2], [0, 1, 2]):
        attestation = verify_attestation(committee, CHECKPOINT, _signatures(chosen))
        assert isinstance(attestation, Attestation)
        assert attestation.signers == tuple(sorted(ADDRESSES[i] for i in chosen))
        assert attestation.digest == CHECKPOINT.digest()
        assert attestation.inner == CHECKPOINT.inner_hash()
        assert attestation.checkpoint == CHECKPOINT
        assert attestation.threshold == 2 and attestation.committee_size == 3


def test_T3_empty_signature_list_rejected() -> None:
    with pytest.raises(BelowThresholdError, match="no signatures"):
        verify_attestation(_committee([0, 1, 2], 1), CHECKPOINT, [])


def test_below_threshold_rejected() -> None:
    with pytest.raises(BelowThresholdError, match="below threshold: 1 of 2"):
        verify_attestation(_committee([0, 1, 2], 2), CHECKPOINT, _signatures([1]))


def test_T4_same_signature_repeated_rejected() -> None:
    committee = _committee([0, 1, 2], 2)
    with pytest.raises(DuplicateSignerError, match="duplicate signer 0x" + ADDRESSES[0].hex()):
        verify_attestation(committee, CHECKPOINT, [SIGNATURES[0], SIGNATURES[0]])
    with pytest.raises(DuplicateSignerError):
        verify_attestation(_committee([0, 1, 2], 3), CHECKPOINT, [SIGNATURES[0]] * 3)


def test_T4_duplicate_signer_rejected() -> None:
    """Two different valid encodings from one key: both lead to "duplicate" or "malleable"."""
    committee = _committee([0, 1, 2], 2)
    twin = _high_s_twin(SIGNATURES[0])
    with pytest.raises(MalformedSignatureError, match=r"signature 1: .*upper half"):
        verify_attestation(committee, CHECKPOINT, [SIGNATURES[0], twin])
    # eth-account's signature for the same key is byte-identical (deterministic): duplicate.
    reference = bytes(
        Account.sign_message(encode_defunct(primitive=CHECKPOINT.inner_hash()), KEYS[0]).signature
    )
    with pytest.raises(DuplicateSignerError):
        verify_attestation(committee, CHECKPOINT, [SIGNATURES[0], reference])


def test_T17_reordered_signatures_rejected() -> None:
    committee = _committee([0, 1, 2], 2)
    ordered = _signatures([0, 1])
    with pytest.raises(UnorderedSignaturesError, match="not in ascending signer order"):
        verify_attestation(committee, CHECKPOINT, ordered[::-1])


def test_T17_re_encoded_signature_rejected() -> None:
    committee = _committee([0, 1, 2], 2)
    first, second = _signatures([0, 1])
    # v as a raw recovery id (0/1) instead of 27/28, and a zero-padded 66-byte form.
    for variant in (first[:64] + bytes((first[64] - 27,)), first + b"\x00", b"\x00" + first):
        with pytest.raises(MalformedSignatureError, match="signature 0"):
            verify_attestation(committee, CHECKPOINT, [variant, second])


@pytest.mark.parametrize("field", ["origin", "outbox", "root", "index"], ids=lambda f: f"other_{f}")
def test_T8_signature_for_another_checkpoint_rejected(field: str) -> None:
    """A vote over another origin, outbox, root or index is not a vote for this checkpoint."""
    changed = {
        "origin": {"origin": 1001},
        "outbox": {"outbox": b"\x0c" * 32},
        "root": {"root": keccak256(b"other root")},
        "index": {"index": 40},
    }[field]
    fields = {"origin": 1000, "outbox": b"\x0b" * 32, "root": keccak256(b"root"), "index": 41}
    fields.update(changed)  # type: ignore[arg-type]
    other = Checkpoint(**fields)  # type: ignore[arg-type]
    committee = _committee([0, 1, 2], 2)
    foreign = sorted(
        (sign_checkpoint(KEYS[i], other) for i in (0, 1)),
        key=lambda s: recover_signer(other.digest(), s),
    )
    verify_attestation(committee, other, foreign)
    with pytest.raises(UnknownSignerError, match="not a committee member"):
        verify_attestation(committee, CHECKPOINT, foreign)


def test_T8_signature_without_domain_separation_rejected() -> None:
    """Members signing the bare fields (no tag, no EIP-191 prefix) do not attest a checkpoint."""
    committee = _committee([0, 1, 2], 1)
    bare = keccak256(struct.pack(">I32s32sI", 1000, b"\x0b" * 32, keccak256(b"root"), 41))
    for digest in (bare, CHECKPOINT.inner_hash()):
        raw = coincurve.PrivateKey(KEYS[0]).sign_recoverable(digest, hasher=None)
        signature = raw[:64] + bytes((raw[64] + 27,))
        assert recover_signer(digest, signature) == ADDRESSES[0]
        with pytest.raises(UnknownSignerError):
            verify_attestation(committee, CHECKPOINT, [signature])


def test_T6_signer_outside_committee_rejected() -> None:
    """A key rotated out of (or never in) the committee does not count."""
    committee = _committee([0, 1, 2], 2)
    with pytest.raises(UnknownSignerError, match="0x" + ADDRESSES[3].hex()):
        verify_attestation(committee, CHECKPOINT, _signatures([0, 3]))


def test_T2_caller_supplied_digest_is_ignored() -> None:
    """Whatever a checkpoint object claims its digest is, it is recomputed from its fields."""
    other = Checkpoint(origin=7, outbox=b"\x0c" * 32, root=keccak256(b"x"), index=1)

    class LyingCheckpoint(Checkpoint):
        def digest(self) -> bytes:
            return other.digest()

        def inner_hash(self) -> bytes:
            return other.inner_hash()

    lying = LyingCheckpoint(origin=1000, outbox=b"\x0b" * 32, root=keccak256(b"root"), index=41)
    committee = _committee([0, 1, 2], 1)
    with pytest.raises(UnknownSignerError):
        verify_attestation(committee, lying, [sign_checkpoint(KEYS[0], other)])
    attestation = verify_attestation(committee, lying, [SIGNATURES[0]])
    assert attestation.digest == CHECKPOINT.digest()


def test_T2_non_checkpoint_or_committee_objects_rejected() -> None:
    committee = _committee([0, 1, 2], 1)
    fake = {"origin": 1000, "outbox": b"\x0b" * 32, "root": keccak256(b"root"), "index": 41}
    with pytest.raises(AttestationError):
        verify_attestation(committee, fake, [SIGNATURES[0]])  # type: ignore[arg-type]
    with pytest.raises(AttestationError):
        verify_attestation((ADDRESSES[0],), CHECKPOINT, [SIGNATURES[0]])  # type: ignore[arg-type]
    with pytest.raises(AttestationError):
        verify_attestation(committee, CHECKPOINT, SIGNATURES[0])  # a flat 65-byte string


def test_more_signatures_than_members_rejected_before_recovery() -> None:
    committee = _committee([0, 1], 1)
    with pytest.raises(MalformedSignatureError, match="more signatures"):
        verify_attestation(committee, CHECKPOINT, [b"junk"] * 3)


@pytest.mark.parametrize(("size", "threshold"), [(3, 2), (19, 13)])
def test_larger_committees(size: int, threshold: int) -> None:
    members = list(range(size))
    committee = _committee(members, threshold)
    attestation = verify_attestation(committee, CHECKPOINT, _signatures(members[:threshold]))
    assert len(attestation.signers) == threshold
    with pytest.raises(
        BelowThresholdError, match=f"below threshold: {threshold - 1} of {threshold}"
    ):
        verify_attestation(committee, CHECKPOINT, _signatures(members[: threshold - 1]))


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(data=st.data())
def test_attestation_accepts_exactly_ordered_distinct_quorums(data: st.DataObject) -> None:
    members = data.draw(
        st.lists(st.integers(0, 9), min_size=1, max_size=7, unique=True), label="members"
    )
    threshold = data.draw(st.integers(1, len(members)), label="threshold")
    committee = _committee(members, threshold)
    chosen = data.draw(
        st.lists(st.integers(0, 11), min_size=1, max_size=len(members)), label="chosen"
    )
    signatures = [SIGNATURES[i] for i in chosen]
    signers = [ADDRESSES[i] for i in chosen]
    should_pass = (
        set(chosen) <= set(members)
        and all(a < b for a, b in itertools.pairwise(signers))
        and len(chosen) >= threshold
    )
    if should_pass:
        assert verify_attestation(committee, CHECKPOINT, signatures).signers == tuple(signers)
    else:
        with pytest.raises(AttestationError):
            verify_attestation(committee, CHECKPOINT, signatures)


@PROPERTY
@given(
    which=st.integers(0, 2),
    position=st.integers(0, 64),
    mask=st.integers(1, 255),
)
def test_any_signature_byte_change_is_rejected(which: int, position: int, mask: int) -> None:
    committee = _committee([0, 1, 2], 3)
    signatures = _signatures([0, 1, 2])
    mutated = bytearray(signatures[which])
    mutated[position] ^= mask
    signatures[which] = bytes(mutated)
    with pytest.raises(AttestationError):
        verify_attestation(committee, CHECKPOINT, signatures)


@PROPERTY
@given(
    signatures=st.one_of(
        st.lists(st.binary(max_size=70), max_size=4),
        st.lists(st.binary(min_size=65, max_size=65), min_size=1, max_size=3),
        st.binary(max_size=70),
        st.none(),
        st.integers(),
        st.lists(st.one_of(st.none(), st.integers(), st.text()), max_size=3),
    )
)
def test_arbitrary_signatures_only_raise_attestation_error(signatures: object) -> None:
    committee = _committee([0, 1, 2], 1)
    with pytest.raises(AttestationError):
        verify_attestation(committee, CHECKPOINT, signatures)  # type: ignore[arg-type]


@PROPERTY
@given(
    origin=st.one_of(st.integers(0, 2**32 - 1), st.integers(), st.none()),
    outbox=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40), st.text()),
    root=st.one_of(
        st.binary(min_size=32, max_size=32), st.binary(max_size=40), st.just(EMPTY_ROOT)
    ),
    index=st.one_of(st.integers(0, 2**32 - 1), st.integers(), st.booleans()),
)
def test_checkpoint_fields_fuzz(
    origin: object, outbox: object, root: object, index: object
) -> None:
    try:
        checkpoint = Checkpoint(origin=origin, outbox=outbox, root=root, index=index)  # type: ignore[arg-type]
    except (DecodeError, AttestationError):
        return
    # Whatever was accepted round-trips through signing and verification.
    committee = _committee([0, 1], 1)
    signature = sign_checkpoint(KEYS[0], checkpoint)
    assert verify_attestation(committee, checkpoint, [signature]).signers == (ADDRESSES[0],)


@PROPERTY
@given(
    origin=st.integers(0, 2**32 - 1),
    index=st.integers(0, 2**32 - 1),
    seed=st.binary(max_size=8),
    field=st.sampled_from(["origin", "outbox", "root", "index"]),
)
def test_T8_any_field_change_invalidates_votes(
    origin: int, index: int, seed: bytes, field: str
) -> None:
    checkpoint = Checkpoint(
        origin=origin, outbox=keccak256(b"o" + seed), root=keccak256(b"r" + seed), index=index
    )
    committee = _committee([0, 1, 2], 2)
    votes = [sign_checkpoint(KEYS[i], checkpoint) for i in _sorted_by_signer([0, 2])]
    verify_attestation(committee, checkpoint, votes)
    fields = {
        "origin": origin,
        "outbox": checkpoint.outbox,
        "root": checkpoint.root,
        "index": index,
    }
    value = fields[field]
    fields[field] = (value ^ 1) if isinstance(value, int) else keccak256(value)
    moved = Checkpoint(**fields)  # type: ignore[arg-type]
    # The votes sign another digest, so the first one recovers to a stranger (an address no
    # one holds the key of), never to a member: the set of signers is what the field moved.
    with pytest.raises(UnknownSignerError, match=r"signature 0 recovers to 0x[0-9a-f]{40}, not a"):
        verify_attestation(committee, moved, votes)
