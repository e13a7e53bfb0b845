"""Messages and delivery checks (light_clients.message): wire format and T1–T17 as they apply."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from Crypto.Hash import keccak as cryptodome_keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients.committee import (
    SECP256K1_N,
    BelowThresholdError,
    Checkpoint,
    Committee,
    DuplicateSignerError,
    InvalidCheckpointError,
    InvalidCommitteeError,
    MalformedSignatureError,
    UnknownSignerError,
    UnorderedSignaturesError,
    address_of,
    sign_checkpoint,
)
from light_clients.errors import (
    AttestationError,
    DecodeError,
    MerkleProofError,
    MessageError,
)
from light_clients.hashing import keccak256
from light_clients.merkle import (
    EMPTY_ROOT,
    ZERO_HASHES,
    IncrementalMerkleTree,
    MalformedProofError,
    RootMismatchError,
)
from light_clients.message import (
    HEADER_SIZE,
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    Delivery,
    MalformedMessageError,
    Message,
    NonceBeyondCheckpointError,
    WrongDestinationError,
    WrongOriginError,
    WrongOutboxError,
    decode_message,
    verify_delivery,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ORIGIN, DESTINATION = 31337, 31338
OUTBOX = b"\x00" * 12 + b"\x0b" * 20
KEYS = [keccak256(b"passerelle message test key %d" % i) for i in range(4)]
ADDRESSES = [address_of(key) for key in KEYS]
COMMITTEE = Committee(members=tuple(ADDRESSES[:3]), threshold=2)


def _message(nonce: int, /, body: bytes = b"hello", **overrides: object) -> Message:
    fields: dict[str, object] = {
        "version": 1,
        "nonce": nonce,
        "origin": ORIGIN,
        "sender": b"\x00" * 12 + b"\x5e" * 20,
        "destination": DESTINATION,
        "recipient": b"\x00" * 12 + b"\xec" * 20,
        "body": body,
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def _sign(checkpoint: Checkpoint, signers: Sequence[int]) -> list[bytes]:
    ordered = sorted(signers, key=lambda i: ADDRESSES[i])
    return [sign_checkpoint(KEYS[i], checkpoint) for i in ordered]


class Outbox:
    """An outbox of ``count`` messages, a checkpoint of it, and 2-of-3 committee votes."""

    def __init__(self, count: int = 5, origin: int = ORIGIN, outbox: bytes = OUTBOX) -> None:
        self.messages = [
            _message(nonce, body=b"body %d" % nonce, origin=origin) for nonce in range(count)
        ]
        self.tree = IncrementalMerkleTree()
        for message in self.messages:
            self.tree.append(message.id)
        self.checkpoint = Checkpoint(
            origin=origin, outbox=outbox, root=self.tree.root(), index=count - 1
        )
        self.signatures = _sign(self.checkpoint, [0, 1])

    def deliver(self, nonce: int, **kwargs: object) -> Delivery:
        return verify_delivery(
            self.messages[nonce].encode(),
            self.checkpoint,
            self.tree.proof(nonce),
            COMMITTEE,
            self.signatures,
            **kwargs,  # type: ignore[arg-type]
        )


_BOX = Outbox()


@pytest.fixture(scope="module")
def outbox() -> Outbox:
    return _BOX


# --------------------------------------------------------------------------- wire format


def test_layout_matches_design() -> None:
    sender, recipient = b"\x01" * 32, b"\x02" * 32
    packed = struct.pack(">BII32sI32s", 1, 7, 1000, sender, 2000, recipient) + b"payload"
    assert HEADER_SIZE == 77
    message = decode_message(packed)
    assert (message.version, message.nonce, message.origin, message.destination) == (
        1,
        7,
        1000,
        2000,
    )
    assert (message.sender, message.recipient, message.body) == (sender, recipient, b"payload")
    assert message.encode() == packed
    reference = cryptodome_keccak.new(digest_bits=256, data=packed).digest()
    assert message.id == reference


def test_empty_body_and_max_body_accepted() -> None:
    for size in (0, MAX_BODY_BYTES):
        encoded = _message(0, body=b"\xab" * size).encode()
        assert len(encoded) == HEADER_SIZE + size
        assert decode_message(encoded).body == b"\xab" * size
    assert MAX_MESSAGE_BYTES == HEADER_SIZE + MAX_BODY_BYTES


@pytest.mark.parametrize("length", [0, 1, 40, HEADER_SIZE - 1])
def test_too_short_rejected(length: int) -> None:
    with pytest.raises(MalformedMessageError, match="shorter than the 77-byte header"):
        decode_message(_message(0).encode()[:length])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_rejected(version: int) -> None:
    encoded = bytes((version,)) + _message(0).encode()[1:]
    with pytest.raises(MalformedMessageError, match=f"unsupported message version {version}"):
        decode_message(encoded)
    with pytest.raises(MalformedMessageError):
        _message(0, version=version)


def test_oversized_body_rejected() -> None:
    encoded = _message(0).encode()[:HEADER_SIZE] + bytes(MAX_BODY_BYTES + 1)
    with pytest.raises(MalformedMessageError, match="more than 65536"):
        decode_message(encoded)
    with pytest.raises(MalformedMessageError):
        _message(0, body=bytes(MAX_BODY_BYTES + 1))


@pytest.mark.parametrize(
    "override",
    [
        {"version": True},
        {"version": 1.0},
        {"nonce": -1},
        {"nonce": 2**32},
        {"origin": None},
        {"destination": "1"},
        {"sender": b"\x01" * 20},
        {"recipient": b"\x01" * 33},
        {"body": "text"},
        {"body": bytearray(b"x")},
    ],
)
def test_malformed_fields_rejected(override: dict[str, object]) -> None:
    with pytest.raises(MalformedMessageError):
        _message(0, **override)


def test_decode_accepts_bytes_like_and_rejects_other_types() -> None:
    encoded = _message(3).encode()
    assert decode_message(bytearray(encoded)) == decode_message(memoryview(encoded)) == _message(3)
    assert Message.decode(encoded) == _message(3)
    for bad in (None, encoded.hex(), 5, [encoded]):
        with pytest.raises(MalformedMessageError):
            decode_message(bad)  # type: ignore[arg-type]


_messages = st.builds(
    Message,
    version=st.just(1),
    nonce=st.integers(0, 2**32 - 1),
    origin=st.integers(0, 2**32 - 1),
    sender=st.binary(min_size=32, max_size=32),
    destination=st.integers(0, 2**32 - 1),
    recipient=st.binary(min_size=32, max_size=32),
    body=st.binary(max_size=300),
)


@PROPERTY
@given(message=_messages)
def test_round_trip(message: Message) -> None:
    encoded = message.encode()
    assert len(encoded) == HEADER_SIZE + len(message.body)
    decoded = decode_message(encoded)
    assert decoded == message
    assert decoded.id == message.id == keccak256(encoded)


@PROPERTY
@given(
    data=st.one_of(
        st.binary(max_size=200), st.binary(min_size=77, max_size=200).map(lambda b: b"\x01" + b[1:])
    )
)
def test_arbitrary_bytes_decode_canonically_or_raise(data: bytes) -> None:
    try:
        message = decode_message(data)
    except DecodeError:
        assert len(data) < HEADER_SIZE or data[0] != 1
        return
    # T13/T17: the layout has one encoding per message, so the id is a canonical key.
    assert message.encode() == data
    assert message.id == keccak256(data)


# --------------------------------------------------------------------------- delivery


def test_every_message_of_an_outbox_delivers(outbox: Outbox) -> None:
    for nonce, message in enumerate(outbox.messages):
        delivery = outbox.deliver(nonce, local_domain=DESTINATION, outbox=OUTBOX)
        assert delivery.message == message
        assert delivery.id == message.id == delivery.inclusion.leaf
        assert delivery.inclusion.index == nonce
        assert delivery.inclusion.root == outbox.checkpoint.root
        assert delivery.attestation.checkpoint == outbox.checkpoint
        assert delivery.attestation.signers == tuple(sorted(ADDRESSES[:2]))


def test_delivery_without_local_domain_skips_only_that_check(outbox: Outbox) -> None:
    assert outbox.deliver(0).message.destination == DESTINATION


def test_T1_empty_tree_checkpoint_cannot_exist() -> None:
    for root in (EMPTY_ROOT, bytes(32)):
        with pytest.raises(InvalidCheckpointError):
            Checkpoint(origin=ORIGIN, outbox=OUTBOX, root=root, index=0)


def test_T1_message_without_proof_rejected(outbox: Outbox) -> None:
    """The empty-tree branch (all zero siblings) proves nothing under a real root."""
    with pytest.raises(RootMismatchError):
        verify_delivery(
            outbox.messages[0].encode(),
            outbox.checkpoint,
            ZERO_HASHES[:32],
            COMMITTEE,
            outbox.signatures,
        )


def test_T2_tampered_message_changes_id(outbox: Outbox) -> None:
    """The id is recomputed from the bytes: a new body with the old proof fails."""
    forged = _message(2, body=b"mint 1000000").encode()
    with pytest.raises(RootMismatchError):
        verify_delivery(
            forged, outbox.checkpoint, outbox.tree.proof(2), COMMITTEE, outbox.signatures
        )


def test_T2_votes_for_another_root_rejected(outbox: Outbox) -> None:
    """A self-made tree containing the forged message, with votes taken from elsewhere."""
    forged = Outbox(count=3)
    forged.messages[2] = _message(2, body=b"mint 1000000")
    forged.tree = IncrementalMerkleTree()
    for message in forged.messages:
        forged.tree.append(message.id)
    checkpoint = Checkpoint(origin=ORIGIN, outbox=OUTBOX, root=forged.tree.root(), index=2)
    with pytest.raises(UnknownSignerError):
        verify_delivery(
            forged.messages[2].encode(),
            checkpoint,
            forged.tree.proof(2),
            COMMITTEE,
            outbox.signatures,
        )
    # Only the committee's own keys make it valid (a non-member's vote does not).
    with pytest.raises(UnknownSignerError):
        verify_delivery(
            forged.messages[2].encode(),
            checkpoint,
            forged.tree.proof(2),
            COMMITTEE,
            _sign(checkpoint, [0, 3]),
        )


def test_T3_empty_committee_and_no_signatures_rejected(outbox: Outbox) -> None:
    with pytest.raises(InvalidCommitteeError):
        Committee(members=(), threshold=0)
    with pytest.raises(BelowThresholdError, match="no signatures"):
        verify_delivery(
            outbox.messages[1].encode(), outbox.checkpoint, outbox.tree.proof(1), COMMITTEE, []
        )


def test_T4_duplicate_signer_rejected(outbox: Outbox) -> None:
    vote = outbox.signatures[0]
    with pytest.raises(DuplicateSignerError, match="duplicate signer 0x"):
        verify_delivery(
            outbox.messages[1].encode(),
            outbox.checkpoint,
            outbox.tree.proof(1),
            COMMITTEE,
            [vote, vote],
        )


def test_T4_high_s_copy_rejected(outbox: Outbox) -> None:
    vote = outbox.signatures[0]
    s = int.from_bytes(vote[32:64], "big")
    twin = vote[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - vote[64],))
    with pytest.raises(MalformedSignatureError, match="upper half"):
        verify_delivery(
            outbox.messages[1].encode(),
            outbox.checkpoint,
            outbox.tree.proof(1),
            COMMITTEE,
            [vote, twin],
        )


@pytest.mark.parametrize("mutation", ["v0", "r0", "s0"])
def test_T5_invalid_signature_encodings_rejected(outbox: Outbox, mutation: str) -> None:
    vote = outbox.signatures[0]
    bad = {
        "v0": vote[:64] + b"\x00",
        "r0": bytes(32) + vote[32:],
        "s0": vote[:32] + bytes(32) + vote[64:],
    }[mutation]
    with pytest.raises(MalformedSignatureError):
        verify_delivery(
            outbox.messages[1].encode(),
            outbox.checkpoint,
            outbox.tree.proof(1),
            COMMITTEE,
            [bad, outbox.signatures[1]],
        )


def test_T8_wrong_destination_rejected(outbox: Outbox) -> None:
    with pytest.raises(
        WrongDestinationError, match=f"message is for domain {DESTINATION}, this is domain 1"
    ):
        outbox.deliver(0, local_domain=1)


@pytest.mark.parametrize("local_domain", [-1, 2**32, "31338", True])
def test_invalid_local_domain_rejected(outbox: Outbox, local_domain: object) -> None:
    with pytest.raises(MessageError):
        outbox.deliver(0, local_domain=local_domain)


def test_T8_T14_checkpoint_of_another_origin_rejected(outbox: Outbox) -> None:
    """A valid, attested checkpoint of another origin says nothing about this message."""
    elsewhere = Outbox(count=5, origin=ORIGIN + 1)
    with pytest.raises(
        WrongOriginError,
        match=f"message origin {ORIGIN} does not match checkpoint origin {ORIGIN + 1}",
    ):
        verify_delivery(
            outbox.messages[0].encode(),
            elsewhere.checkpoint,
            elsewhere.tree.proof(0),
            COMMITTEE,
            elsewhere.signatures,
        )


def test_T8_votes_for_another_origin_rejected(outbox: Outbox) -> None:
    """Same root and index, but the votes were cast for another origin's checkpoint."""
    other = Checkpoint(
        origin=ORIGIN + 1, outbox=OUTBOX, root=outbox.checkpoint.root, index=outbox.checkpoint.index
    )
    with pytest.raises(UnknownSignerError):
        verify_delivery(
            outbox.messages[0].encode(),
            outbox.checkpoint,
            outbox.tree.proof(0),
            COMMITTEE,
            _sign(other, [0, 1]),
        )


def test_T14_checkpoint_of_another_outbox_rejected(outbox: Outbox) -> None:
    rogue = Outbox(count=5, outbox=b"\x00" * 12 + b"\xee" * 20)
    # Attested, same origin, same message ids: valid unless the inbox pins the outbox.
    verify_delivery(
        rogue.messages[0].encode(),
        rogue.checkpoint,
        rogue.tree.proof(0),
        COMMITTEE,
        rogue.signatures,
    )
    with pytest.raises(WrongOutboxError, match="expected 0x"):
        verify_delivery(
            rogue.messages[0].encode(),
            rogue.checkpoint,
            rogue.tree.proof(0),
            COMMITTEE,
            rogue.signatures,
            outbox=OUTBOX,
        )
    # Votes for the rogue outbox do not carry over to a checkpoint naming the real one.
    relabelled = Checkpoint(origin=ORIGIN, outbox=OUTBOX, root=rogue.checkpoint.root, index=4)
    with pytest.raises(UnknownSignerError):
        verify_delivery(
            rogue.messages[0].encode(), relabelled, rogue.tree.proof(0), COMMITTEE, rogue.signatures
        )


def test_nonce_beyond_checkpoint_rejected(outbox: Outbox) -> None:
    late = _message(outbox.checkpoint.index + 1)
    with pytest.raises(NonceBeyondCheckpointError, match="nonce 5 is beyond checkpoint index 4"):
        verify_delivery(
            late.encode(), outbox.checkpoint, outbox.tree.proof(4), COMMITTEE, outbox.signatures
        )


def test_T12_inner_node_as_message_rejected(outbox: Outbox) -> None:
    """The 64-byte concatenation of two ids is not a message, and no header makes it one."""
    left, right = outbox.messages[0].id, outbox.messages[1].id
    proof = outbox.tree.proof(0)
    with pytest.raises(MalformedMessageError, match="shorter than the 77-byte header"):
        verify_delivery(left + right, outbox.checkpoint, proof[1:], COMMITTEE, outbox.signatures)
    disguised = _message(0, body=left + right).encode()
    with pytest.raises(MalformedProofError, match="31 hashes"):
        verify_delivery(disguised, outbox.checkpoint, proof[1:], COMMITTEE, outbox.signatures)
    with pytest.raises(RootMismatchError):
        verify_delivery(disguised, outbox.checkpoint, proof, COMMITTEE, outbox.signatures)


def test_T13_proof_for_another_index_rejected(outbox: Outbox) -> None:
    message = outbox.messages[2].encode()
    for other in (0, 1, 3, 4):
        with pytest.raises(RootMismatchError):
            verify_delivery(
                message, outbox.checkpoint, outbox.tree.proof(other), COMMITTEE, outbox.signatures
            )


def test_T13_renumbered_message_rejected(outbox: Outbox) -> None:
    """Changing the nonce to match another slot's proof changes the id: no second exit."""
    renumbered = _message(3, body=b"body 2").encode()
    with pytest.raises(RootMismatchError):
        verify_delivery(
            renumbered, outbox.checkpoint, outbox.tree.proof(3), COMMITTEE, outbox.signatures
        )


def test_T13_trailing_bytes_are_body_and_change_the_id(outbox: Outbox) -> None:
    padded = outbox.messages[2].encode() + b"\x00"
    assert decode_message(padded).id != outbox.messages[2].id
    with pytest.raises(RootMismatchError):
        verify_delivery(
            padded, outbox.checkpoint, outbox.tree.proof(2), COMMITTEE, outbox.signatures
        )


def test_T16_T17_id_does_not_depend_on_the_envelope(outbox: Outbox) -> None:
    """Different vote sets and a later checkpoint: same message, same replay key."""
    first = outbox.deliver(2)
    other_votes = verify_delivery(
        outbox.messages[2].encode(),
        outbox.checkpoint,
        outbox.tree.proof(2),
        COMMITTEE,
        _sign(outbox.checkpoint, [1, 2]),
    )
    later = Outbox(count=9)
    from_later = later.deliver(2)
    assert first.attestation.signers != other_votes.attestation.signers
    assert from_later.attestation.checkpoint != first.attestation.checkpoint
    assert first.id == other_votes.id == from_later.id == keccak256(outbox.messages[2].encode())


def test_T17_reordered_votes_rejected(outbox: Outbox) -> None:
    with pytest.raises(UnorderedSignaturesError):
        verify_delivery(
            outbox.messages[0].encode(),
            outbox.checkpoint,
            outbox.tree.proof(0),
            COMMITTEE,
            outbox.signatures[::-1],
        )


# --------------------------------------------------------------------------- properties


def _rejection_for(position: int, changed: bytes, index: int) -> tuple[type[Exception], str]:
    """The check that must refuse a message changed at byte ``position``, read off the packed
    layout (version 1 B, nonce 4 B, origin 4 B, sender 32 B, destination 4 B, recipient 32 B,
    body; integers big-endian) rather than from the decoder: the cheap field checks come first,
    and any other change is a leaf that is not in the tree."""
    if position == 0:
        return MalformedMessageError, "unsupported message version"
    if position < 5:
        nonce = int.from_bytes(changed[1:5], "big")
        if nonce > index:
            return NonceBeyondCheckpointError, f"message nonce {nonce} is beyond checkpoint index"
        return RootMismatchError, "computed root 0x[0-9a-f]{64} != claimed root"
    if position < 9:
        return WrongOriginError, "does not match checkpoint origin"
    if 41 <= position < 45:
        return WrongDestinationError, f"this is domain {DESTINATION}"
    return RootMismatchError, "computed root 0x[0-9a-f]{64} != claimed root"


@PROPERTY
@given(position=st.integers(0, HEADER_SIZE + 5), mask=st.integers(1, 255), nonce=st.integers(0, 4))
def test_any_message_byte_change_is_rejected(
    outbox: Outbox, position: int, mask: int, nonce: int
) -> None:
    encoded = bytearray(outbox.messages[nonce].encode())
    encoded[position] ^= mask
    expected, reason = _rejection_for(position, bytes(encoded), outbox.checkpoint.index)
    with pytest.raises(expected, match=reason):
        verify_delivery(
            bytes(encoded),
            outbox.checkpoint,
            outbox.tree.proof(nonce),
            COMMITTEE,
            outbox.signatures,
            local_domain=DESTINATION,
        )


_ANY_MESSAGE = st.one_of(
    st.binary(max_size=120),
    st.none(),
    st.integers(),
    st.sampled_from([m.encode() for m in _BOX.messages]),
)
_ANY_BRANCH = st.one_of(
    st.lists(st.binary(min_size=32, max_size=32), min_size=32, max_size=32),
    st.lists(st.binary(max_size=33), max_size=33),
    st.none(),
    st.sampled_from([_BOX.tree.proof(n) for n in range(5)]),
)
_ANY_SIGNATURES = st.one_of(
    st.lists(st.binary(max_size=66), max_size=3),
    st.none(),
    st.just(_BOX.signatures),
    st.just(_BOX.signatures[:1]),
)
_ANY_DOMAIN = st.one_of(st.none(), st.integers(-5, 2**33), st.just(DESTINATION))


@st.composite
def delivery_inputs(draw: st.DrawFn) -> dict[str, object]:
    """``verify_delivery``'s inputs: half the time a genuine delivery of one of _BOX's
    messages (its bytes, its branch, the votes, our domain or none) with 0-2 parts replaced;
    otherwise every part drawn on its own, mostly junk."""
    anything = {
        "message": _ANY_MESSAGE,
        "branch": _ANY_BRANCH,
        "signatures": _ANY_SIGNATURES,
        "local_domain": _ANY_DOMAIN,
    }
    if not draw(st.booleans()):
        return {name: draw(strategy) for name, strategy in anything.items()}
    nonce = draw(st.integers(0, len(_BOX.messages) - 1))
    parts: dict[str, object] = {
        "message": _BOX.messages[nonce].encode(),
        "branch": _BOX.tree.proof(nonce),
        "signatures": _BOX.signatures,
        "local_domain": draw(st.sampled_from((None, DESTINATION))),
    }
    for _ in range(draw(st.sampled_from((0, 0, 1, 2)))):
        name = draw(st.sampled_from(sorted(anything)))
        parts[name] = draw(anything[name])
    return parts


def test_arbitrary_input_only_raises_verification_errors() -> None:
    reach = Reach("accepted", "rejected")

    @PROPERTY
    @given(delivery_inputs())
    def check(parts: dict[str, object]) -> None:
        message, branch = parts["message"], parts["branch"]
        signatures, local_domain = parts["signatures"], parts["local_domain"]
        try:
            delivery = verify_delivery(
                message,  # type: ignore[arg-type]
                _BOX.checkpoint,
                branch,  # type: ignore[arg-type]
                COMMITTEE,
                signatures,  # type: ignore[arg-type]
                local_domain=local_domain,  # type: ignore[arg-type]
            )
        except (DecodeError, MessageError, MerkleProofError, AttestationError):
            reach.hit("rejected")
            return
        reach.hit("accepted")
        # Accepted only for a genuine (message, its proof, the committee's votes) triple.
        nonce = delivery.message.nonce
        assert message == _BOX.messages[nonce].encode()
        assert tuple(branch) == _BOX.tree.proof(nonce)  # type: ignore[arg-type]
        assert signatures == _BOX.signatures
        assert local_domain in (None, DESTINATION)

    check()
    reach.assert_reached()


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 40), data=st.data())
def test_random_outboxes_deliver_every_message(count: int, data: st.DataObject) -> None:
    box = Outbox(count=count)
    nonce = data.draw(st.integers(0, count - 1))
    delivery = box.deliver(nonce, local_domain=DESTINATION)
    assert delivery.id == box.messages[nonce].id
    if count > 1:
        wrong = data.draw(st.integers(0, count - 1).filter(lambda n: n != nonce))
        with pytest.raises(RootMismatchError):
            verify_delivery(
                box.messages[nonce].encode(),
                box.checkpoint,
                box.tree.proof(wrong),
                COMMITTEE,
                box.signatures,
            )
