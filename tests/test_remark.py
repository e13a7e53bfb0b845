"""The Substrate outbox rules (light_clients.substrate.remark): which remarks are messages, and
their canonical nonces. Named exploit cases: T14 (wrong sender or origin), T16/T17 (the same
payload twice), and nobody can jam the lane with a nonce of their choosing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients.errors import VerificationError
from light_clients.hashing import blake2_256
from light_clients.message import HEADER_SIZE, MalformedMessageError, Message
from light_clients.substrate.remark import (
    REMARK_PREFIX,
    EventHashMismatch,
    EventSenderMismatch,
    InvalidRemarkInput,
    MalformedPayload,
    MessageSenderMismatch,
    MissingPrefix,
    NonceAssignmentError,
    RecipientNotAllowed,
    RemarkRejected,
    SelfAddressed,
    WrongOrigin,
    assign_nonces,
    canonical_message,
    check_recipient,
    validate_remark,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ORIGIN, DESTINATION = 1000, 31337
ALICE = bytes.fromhex("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
MALLORY = b"\x66" * 32
RECIPIENT = b"\x00" * 12 + b"\x0b" * 20


def message(
    *,
    nonce: int = 0,
    origin: int = ORIGIN,
    sender: bytes = ALICE,
    destination: int = DESTINATION,
    body: bytes = b"hello",
) -> Message:
    return Message(
        version=1,
        nonce=nonce,
        origin=origin,
        sender=sender,
        destination=destination,
        recipient=RECIPIENT,
        body=body,
    )


def remark_of(msg: Message) -> bytes:
    return REMARK_PREFIX + msg.encode()


def check(remark: bytes, signer: bytes = ALICE, origin: int = ORIGIN) -> Message:
    """Validate ``remark`` as the chain would present it: signed and emitted by ``signer``."""
    return validate_remark(remark, signer, signer, blake2_256(remark), origin)


# --- accepted ------------------------------------------------------------------------------


def test_valid_remark_gives_its_message_with_a_placeholder_nonce() -> None:
    sent = message(nonce=0, body=b"payload")
    accepted = check(remark_of(sent))
    assert accepted == sent
    assert accepted.nonce == 0


def test_an_empty_body_is_a_message() -> None:
    remark = REMARK_PREFIX + message(body=b"").encode()
    assert len(remark) == len(REMARK_PREFIX) + HEADER_SIZE
    assert check(remark).body == b""


def test_the_senders_nonce_is_ignored() -> None:
    # Whatever nonce the sender writes, validation gives the same message.
    results = {check(remark_of(message(nonce=n))) for n in (0, 1, 7, 2**32 - 1)}
    assert results == {message(nonce=0)}


# --- each rule, with its reason ------------------------------------------------------------


def test_event_hash_must_be_blake2_of_the_remark() -> None:
    remark = remark_of(message())
    with pytest.raises(EventHashMismatch, match="not blake2-256 of the remark"):
        validate_remark(remark, ALICE, ALICE, blake2_256(remark + b"x"), ORIGIN)


def test_event_sender_must_be_the_signer() -> None:
    # E.g. a remark dispatched through a proxy or a multisig: the event names another account.
    remark = remark_of(message())
    with pytest.raises(EventSenderMismatch, match="not by the signer"):
        validate_remark(remark, ALICE, MALLORY, blake2_256(remark), ORIGIN)


def test_a_remark_the_committees_multisig_dispatched_is_accepted_whoever_signed() -> None:
    """The runtime names the dispatch origin as the event's sender: for a multisig's remark,
    the multisig, while the extrinsic's signer is the attester whose approval executed it."""
    committee = b"\xcc" * 32
    remark = remark_of(message(sender=committee))
    accepted = validate_remark(
        remark, MALLORY, committee, blake2_256(remark), ORIGIN, committee=committee
    )
    assert accepted.sender == committee
    # Without the committee named, the same remark is someone else's.
    with pytest.raises(EventSenderMismatch):
        validate_remark(remark, MALLORY, committee, blake2_256(remark), ORIGIN)
    # Naming the committee admits no other account as sender.
    with pytest.raises(EventSenderMismatch):
        validate_remark(remark, ALICE, MALLORY, blake2_256(remark), ORIGIN, committee=committee)


@pytest.mark.parametrize("committee", [b"\xcc" * 31, b"\xcc" * 33, "cc" * 32, 0])
def test_a_committee_that_is_not_32_bytes_is_an_invalid_input(committee: Any) -> None:
    remark = remark_of(message())
    with pytest.raises(InvalidRemarkInput, match="committee must be 32 bytes"):
        validate_remark(remark, ALICE, ALICE, blake2_256(remark), ORIGIN, committee=committee)


def test_a_committee_given_as_a_bytearray_is_the_same_committee() -> None:
    committee = b"\xcc" * 32
    remark = remark_of(message(sender=committee))
    as_given: Any = bytearray(committee)  # accepted and copied, as the signer is
    accepted = validate_remark(
        remark, ALICE, committee, blake2_256(remark), ORIGIN, committee=as_given
    )
    assert accepted.sender == committee


# --- recipients a destination allows (check_recipient) ---------------------------------------


def test_a_listed_recipient_passes_and_any_other_is_refused() -> None:
    allowed = {DESTINATION: {RECIPIENT}}
    check_recipient(message(), allowed)
    other = dataclasses.replace(message(), recipient=b"\x00" * 12 + b"\x0c" * 20)
    with pytest.raises(RecipientNotAllowed, match="is not one this origin may address") as refused:
        check_recipient(other, allowed)
    assert refused.value.reason == "recipient-not-allowed"
    assert "\n" not in str(refused.value)


def test_a_destination_without_a_list_allows_nothing() -> None:
    with pytest.raises(RecipientNotAllowed):
        check_recipient(message(), {DESTINATION + 1: {RECIPIENT}})
    with pytest.raises(RecipientNotAllowed):
        check_recipient(message(), {})


def test_check_recipient_refuses_exactly_what_the_lists_leave_out() -> None:
    reach = Reach("allowed", "refused")
    recipients = st.sampled_from([RECIPIENT, b"\x00" * 12 + b"\x0c" * 20, b"\x0b" * 32])
    domains = st.sampled_from([DESTINATION, DESTINATION + 1, 0])

    @PROPERTY
    @given(
        destination=domains,
        recipient=recipients,
        allowed=st.dictionaries(domains, st.frozensets(recipients), max_size=3),
    )
    def run(destination: int, recipient: bytes, allowed: dict[int, frozenset[bytes]]) -> None:
        msg = dataclasses.replace(message(destination=destination), recipient=recipient)
        if recipient in allowed.get(destination, frozenset()):
            check_recipient(msg, allowed)
            reach.hit("allowed")
        else:
            with pytest.raises(RecipientNotAllowed):
                check_recipient(msg, allowed)
            reach.hit("refused")

    run()
    reach.assert_reached()


@pytest.mark.parametrize("remark", [b"", b"PSR", b"psrl" + message().encode(), b"hello world"])
def test_remark_without_prefix_rejected(remark: bytes) -> None:
    with pytest.raises(MissingPrefix, match="does not start with PSRL"):
        check(remark)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "shorter than the 77-byte header"),
        (message().encode()[:-6], "shorter than the 77-byte header"),
        (b"\x02" + message().encode()[1:], "unsupported message version 2"),
        (message(body=b"").encode() + b"\x00" * (64 * 1024 + 1), "more than 65536"),
    ],
)
def test_malformed_payload_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason) as rejected:
        check(REMARK_PREFIX + payload)
    assert str(rejected.value).startswith("remark payload is not a message: ")
    assert rejected.value.reason == "malformed-payload"


def test_T14_message_naming_another_sender_rejected() -> None:
    # Mallory signs a remark that claims to come from Alice (e.g. to spend Alice's tokens).
    forged = remark_of(message(sender=ALICE))
    with pytest.raises(MessageSenderMismatch, match="is not the signer") as rejected:
        check(forged, signer=MALLORY)
    assert rejected.value.reason == "wrong-sender"


def test_T14_message_naming_another_origin_rejected() -> None:
    # A message for origin 2000 replayed on (or sent from) origin 1000.
    with pytest.raises(WrongOrigin, match="origin 2000 is not this domain 1000") as rejected:
        check(remark_of(message(origin=2000)))
    assert rejected.value.reason == "wrong-origin"


def test_message_to_its_own_origin_rejected() -> None:
    with pytest.raises(SelfAddressed, match="its own origin domain 1000"):
        check(remark_of(message(destination=ORIGIN)))


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((b"PSRL", ALICE[:31], ALICE, bytes(32), ORIGIN), "signer must be 32 bytes, got 31"),
        ((b"PSRL", ALICE, ALICE + b"\x00", bytes(32), ORIGIN), "event sender must be 32 bytes"),
        ((b"PSRL", ALICE, ALICE, b"", ORIGIN), "event hash must be 32 bytes, got 0 bytes"),
        ((b"PSRL", ALICE, ALICE, bytes(32), -1), "origin domain must be a u32"),
        ((b"PSRL", ALICE, ALICE, bytes(32), 2**32), "origin domain must be a u32"),
        ((b"PSRL", ALICE, ALICE, bytes(32), True), "origin domain must be a u32"),
        (("PSRL", ALICE, ALICE, bytes(32), ORIGIN), "remark must be bytes, got str"),
        ((b"PSRL", "0xd435", ALICE, bytes(32), ORIGIN), "signer must be 32 bytes, got str"),
    ],
)
def test_invalid_inputs_are_rejections_not_crashes(args: tuple[object, ...], reason: str) -> None:
    with pytest.raises(InvalidRemarkInput, match=reason):
        validate_remark(*args)  # type: ignore[arg-type]


def test_checks_run_in_the_documented_order() -> None:
    # A remark that breaks every rule is rejected for the first one: the hash.
    bad = b"not a message"
    with pytest.raises(EventHashMismatch):
        validate_remark(bad, ALICE, MALLORY, bytes(32), ORIGIN)
    with pytest.raises(EventSenderMismatch):
        validate_remark(bad, ALICE, MALLORY, blake2_256(bad), ORIGIN)
    with pytest.raises(MissingPrefix):
        check(bad)


def test_every_reason_is_distinct_and_one_line() -> None:
    reasons = [
        cls.reason
        for cls in (
            InvalidRemarkInput,
            EventHashMismatch,
            EventSenderMismatch,
            MissingPrefix,
            MalformedPayload,
            MessageSenderMismatch,
            WrongOrigin,
            SelfAddressed,
        )
    ]
    assert len(set(reasons)) == len(reasons)
    with pytest.raises(RemarkRejected) as rejected:
        check(REMARK_PREFIX + b"\x01\x00")
    assert "\n" not in str(rejected.value)


# --- nonces --------------------------------------------------------------------------------


def test_canonical_message_only_changes_the_nonce() -> None:
    sent = message(nonce=99, body=b"x")
    assert canonical_message(sent, 5) == message(nonce=5, body=b"x")
    assert canonical_message(sent, 5).id != sent.id
    with pytest.raises(MalformedMessageError, match="nonce must be a u32"):
        canonical_message(sent, 2**32)


def test_assign_nonces_numbers_in_chain_order() -> None:
    a, b, c, d = (message(body=bytes([i])) for i in range(4))
    numbered = assign_nonces(10, [(5, 2, a), (5, 3, b), (7, 2, c), (7, 2, d)])
    assert [m.nonce for m in numbered] == [10, 11, 12, 13]
    assert [m.body for m in numbered] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert assign_nonces(0, []) == []


@pytest.mark.parametrize(
    "accepted",
    [
        [(5, 3, message()), (5, 2, message())],
        [(6, 0, message()), (5, 9, message())],
    ],
)
def test_assign_nonces_refuses_out_of_order_input(
    accepted: Sequence[tuple[int, int, Message]],
) -> None:
    with pytest.raises(NonceAssignmentError, match="not in chain order"):
        assign_nonces(0, accepted)


@pytest.mark.parametrize(
    ("next_nonce", "accepted", "reason"),
    [
        (-1, [], "next nonce must be a u32"),
        (2**32, [], "next nonce must be a u32"),
        (2**32 - 1, [(1, 2, message()), (1, 3, message())], "exceed the u32 nonce space"),
        (0, [(-1, 2, message())], "block number must be a non-negative integer"),
        (0, [(1, True, message())], "extrinsic index must be a non-negative integer"),
        (0, [(1, 2, b"PSRL")], "expected a Message, got bytes"),
    ],
)
def test_assign_nonces_refuses_bad_input(
    next_nonce: int, accepted: Sequence[tuple[int, int, Message]], reason: str
) -> None:
    with pytest.raises(NonceAssignmentError, match=reason):
        assign_nonces(next_nonce, accepted)


def test_assign_nonces_last_u32_nonce_is_usable() -> None:
    [last] = assign_nonces(2**32 - 1, [(1, 2, message())])
    assert last.nonce == 2**32 - 1


def test_T16_T17_the_same_payload_twice_gets_two_nonces_and_two_ids() -> None:
    # Alice sends the same bytes twice (or an attacker replays her remark in a later block): each
    # accepted remark is its own message, with its own nonce, so its own id and leaf.
    remark = remark_of(message(body=b"pay 5"))
    first, second = check(remark), check(remark)
    assert first == second
    numbered = assign_nonces(3, [(10, 2, first), (11, 2, second)])
    assert [m.nonce for m in numbered] == [3, 4]
    assert numbered[0].id != numbered[1].id
    assert numbered[0].body == numbered[1].body == b"pay 5"


def test_nobody_can_jam_the_lane() -> None:
    # Mallory claims nonces in advance (the next one, and the last one), and sends remarks that
    # are rejected (forged sender, wrong origin, junk): none of it moves Alice's message, which
    # gets the next canonical nonce after Mallory's own valid message.
    seen: list[tuple[int, int, bytes, bytes]] = [
        (10, 2, remark_of(message(nonce=1, sender=MALLORY)), MALLORY),
        (10, 3, remark_of(message(nonce=1, sender=ALICE)), MALLORY),
        (10, 4, remark_of(message(nonce=2**32 - 1, sender=MALLORY, origin=7)), MALLORY),
        (11, 2, REMARK_PREFIX + b"\x01junk", MALLORY),
        (11, 3, remark_of(message(nonce=1, sender=ALICE, body=b"alice")), ALICE),
    ]
    accepted: list[tuple[int, int, Message]] = []
    reasons: list[str] = []
    for block, index, remark, signer in seen:
        try:
            accepted.append((block, index, check(remark, signer=signer)))
        except RemarkRejected as rejected:
            reasons.append(rejected.reason)
    assert reasons == ["wrong-sender", "wrong-origin", "malformed-payload"]
    mallory, alice = assign_nonces(0, accepted)
    assert (mallory.sender, mallory.nonce) == (MALLORY, 0)
    assert (alice.sender, alice.nonce, alice.body) == (ALICE, 1, b"alice")


# --- properties ----------------------------------------------------------------------------

byte_strings = st.binary(max_size=200)
accounts = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))
domains = st.integers(min_value=-1, max_value=2**32)


@st.composite
def remark_inputs(draw: st.DrawFn) -> tuple[bytes, object, object, object, object]:
    """``validate_remark``'s five arguments: half the time a valid remark as the chain would
    present it (Alice's message, signed and emitted by her, its true hash, our origin) with
    0-2 of its parts replaced by arbitrary ones; otherwise arbitrary throughout."""
    payload = draw(byte_strings)
    arbitrary = {
        "remark": st.builds(
            lambda prefixed, data: (REMARK_PREFIX if prefixed else b"") + data,
            st.booleans(),
            st.one_of(byte_strings, st.just(payload)),
        ),
        "signer": accounts,
        "sender": accounts,
        "event hash": accounts,
        "origin": domains,
    }
    if draw(st.booleans()):
        sent = message(
            nonce=draw(st.integers(0, 2**32 - 1)),
            destination=draw(st.sampled_from((DESTINATION, 0, ORIGIN + 1))),
            body=payload,
        )
        parts: dict[str, object] = {
            "remark": remark_of(sent),
            "signer": ALICE,
            "sender": ALICE,
            "event hash": None,  # the true hash, filled in below
            "origin": ORIGIN,
        }
        for name in draw(st.lists(st.sampled_from(sorted(arbitrary)), max_size=2)):
            parts[name] = draw(arbitrary[name])
    else:
        parts = {name: draw(strategy) for name, strategy in arbitrary.items()}
        parts["event hash"] = draw(st.one_of(st.none(), accounts))
    remark = parts["remark"]
    assert isinstance(remark, bytes)
    if parts["event hash"] is None:
        parts["event hash"] = blake2_256(remark)
    # Arbitrary parts are deliberately of any type: validate_remark must refuse them itself.
    return remark, parts["signer"], parts["sender"], parts["event hash"], parts["origin"]


def test_arbitrary_input_only_raises_verification_errors() -> None:
    reach = Reach("accepted", "rejected")

    @PROPERTY
    @given(remark_inputs())
    def check(case: tuple[Any, ...]) -> None:
        remark, signer, sender, claimed, origin = case
        try:
            accepted = validate_remark(remark, signer, sender, claimed, origin)
        except VerificationError as rejected:
            assert isinstance(rejected, RemarkRejected)
            assert str(rejected) and "\n" not in str(rejected)
            reach.hit("rejected")
        else:
            assert accepted.nonce == 0
            assert accepted.sender == signer == sender
            assert accepted.origin == origin != accepted.destination
            # What was accepted is exactly the message the remark carries (nonce aside).
            assert (
                remark
                == REMARK_PREFIX
                + dataclasses.replace(
                    accepted, nonce=int.from_bytes(remark[len(REMARK_PREFIX) + 1 :][:4], "big")
                ).encode()
            )
            reach.hit("accepted")

    check()
    reach.assert_reached()


messages = st.builds(
    Message,
    version=st.just(1),
    nonce=st.integers(min_value=0, max_value=2**32 - 1),
    origin=st.just(ORIGIN),
    sender=st.just(ALICE),
    destination=st.integers(min_value=0, max_value=2**32 - 1).filter(lambda d: d != ORIGIN),
    recipient=st.binary(min_size=32, max_size=32),
    body=st.binary(max_size=300),
)


@PROPERTY
@given(sent=messages)
def test_round_trip_a_valid_message(sent: Message) -> None:
    accepted = check(remark_of(sent))
    assert accepted == canonical_message(sent, 0)
    assert canonical_message(accepted, sent.nonce) == sent
    assert accepted.encode()[5:] == sent.encode()[5:]  # everything but the nonce


@PROPERTY
@given(
    start=st.integers(min_value=0, max_value=2**32 - 1),
    positions=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=9)),
        max_size=30,
    ),
    sent=messages,
)
def test_assigned_nonces_are_consecutive(
    start: int, positions: list[tuple[int, int]], sent: Message
) -> None:
    ordered = sorted(positions)
    accepted = [(block, index, sent) for block, index in ordered]
    try:
        numbered = assign_nonces(start, accepted)
    except NonceAssignmentError:
        assert start + len(ordered) - 1 > 2**32 - 1
        return
    assert [m.nonce for m in numbered] == list(range(start, start + len(ordered)))
    assert all(canonical_message(m, sent.nonce) == sent for m in numbered)
    if len(set(ordered)) > 1:  # reversed, some position goes back
        with pytest.raises(NonceAssignmentError, match="not in chain order"):
            assign_nonces(0, list(reversed(accepted)))
