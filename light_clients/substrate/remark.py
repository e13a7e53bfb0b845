"""The Substrate outbox: which ``System.remark_with_event`` remarks are messages, and their nonces.

docs/design.md, "Substrate origin and destination": a message leaves a Substrate chain as
``System.remark_with_event(b"PSRL" ‖ message)``; the runtime emits ``System.Remarked { sender,
hash }``. A remark is accepted as a message only if

1. the event's hash is blake2-256 of the remark bytes (the event is about these bytes);
2. the event's sender is the extrinsic's signer (the remark was dispatched by the signer itself,
   not through a proxy, a multisig or a derivative account) — or it is the committee's own
   multisig (``committee``), which emits a remark only when a threshold of the attesters made
   it: a refund (:func:`check_escrow` allows it nothing else);
3. the bytes start with :data:`REMARK_PREFIX` and the rest is a valid message;
4. the message's sender is the signer's 32-byte public key, its origin is this chain's domain,
   and it is not addressed to its own origin.

The sender cannot choose the nonce (anyone could jam the lane by claiming nonce N first): the
nonce field of the remark is ignored, and the canonical message carries the remark's position
among the *accepted* remarks of the origin in finalized blocks, ordered by (block number,
extrinsic index), and by event order within one extrinsic (a ``Utility.batch_all`` may carry
several remarks). Rejected remarks consume no nonce. :func:`validate_remark` checks one remark,
:func:`assign_nonces` numbers a run of accepted ones, :func:`canonical_message` sets one nonce.

Pure, like the rest of :mod:`light_clients`: every rejection is a :class:`RemarkRejected`
subclass (a :class:`~light_clients.errors.VerificationError`) with a one-line reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import ClassVar

from light_clients.errors import VerificationError
from light_clients.hashing import blake2_256
from light_clients.hexstr import to_hex
from light_clients.message import Message, decode_message

__all__ = [
    "REMARK_PREFIX",
    "AssetTransfer",
    "CommitteeRemarkRejected",
    "EscrowRoute",
    "EventHashMismatch",
    "EventSenderMismatch",
    "InvalidRemarkInput",
    "MalformedPayload",
    "MessageSenderMismatch",
    "MissingPrefix",
    "NonceAssignmentError",
    "RecipientNotAllowed",
    "RemarkRejected",
    "SelfAddressed",
    "TokenBody",
    "UnbackedTokenTransfer",
    "WrongOrigin",
    "assign_nonces",
    "canonical_message",
    "check_escrow",
    "check_recipient",
    "decode_token_body",
    "validate_remark",
]

REMARK_PREFIX = b"PSRL"
"""The first bytes of every Passerelle remark; the message follows."""

ACCOUNT_LEN = 32
HASH_LEN = 32
U32_MAX = 2**32 - 1


class RemarkRejected(VerificationError):
    """A remark that is not an acceptable outbox message; ``reason`` is a short stable tag."""

    reason: ClassVar[str] = "rejected"


class InvalidRemarkInput(RemarkRejected):
    """A signer, event sender or event hash that is not 32 bytes, or a domain that is not a u32."""

    reason = "invalid-input"


class EventHashMismatch(RemarkRejected):
    """The ``Remarked`` event's hash is not blake2-256 of the remark bytes."""

    reason = "event-hash-mismatch"


class EventSenderMismatch(RemarkRejected):
    """The ``Remarked`` event's sender is not the extrinsic's signer (proxy, multisig, …)."""

    reason = "event-sender-mismatch"


class MissingPrefix(RemarkRejected):
    """The remark does not start with :data:`REMARK_PREFIX`: not meant for Passerelle."""

    reason = "missing-prefix"


class MalformedPayload(RemarkRejected):
    """The bytes after the prefix are not a valid message."""

    reason = "malformed-payload"


class MessageSenderMismatch(RemarkRejected):
    """The message names another sender than the account that signed the remark (T14)."""

    reason = "wrong-sender"


class WrongOrigin(RemarkRejected):
    """The message names another origin domain than this chain's (T14)."""

    reason = "wrong-origin"


class SelfAddressed(RemarkRejected):
    """The message's destination is its own origin domain."""

    reason = "self-addressed"


class UnbackedTokenTransfer(RemarkRejected):
    """A message to a destination's token bridge that no escrow transfer in the same extrinsic
    backs (or that is not a well-formed unlock): it would release tokens nobody paid (T15)."""

    reason = "unbacked-token-transfer"


class CommitteeRemarkRejected(RemarkRejected):
    """A remark of the committee's multisig that is not a refund to a token's home bridge."""

    reason = "committee-not-refund"


class RecipientNotAllowed(RemarkRejected):
    """The message addresses a recipient its destination does not list for this origin: a
    contract the configuration does not know could act on it unchecked (a TokenBridge
    missing from an attester's config would release tokens nobody escrowed)."""

    reason = "recipient-not-allowed"


class NonceAssignmentError(VerificationError):
    """Accepted remarks given out of chain order, or nonces beyond u32."""


def _check_bytes32(name: str, value: object) -> bytes:
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes) or len(value) != ACCOUNT_LEN:
        size = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidRemarkInput(f"{name} must be 32 bytes, got {size}")
    return value


def _is_u32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX


def validate_remark(
    remark: bytes,
    signer: bytes,
    event_sender: bytes,
    event_hash: bytes,
    origin_domain: int,
    *,
    committee: bytes | None = None,
) -> Message:
    """Check one remark against the outbox rules and return its message, nonce set to 0.

    ``remark`` is the argument of ``System.remark_with_event`` exactly as submitted (prefix
    included), ``signer`` the extrinsic's signer, ``event_sender``/``event_hash`` the fields of
    the ``System.Remarked`` event it emitted, ``origin_domain`` this chain's domain,
    ``committee`` the committee's multisig account on this chain (None: no remark dispatched as
    another account is accepted). A remark whose event names ``committee`` as its sender was
    dispatched by the multisig itself (the runtime sets the event's sender to the dispatch
    origin; no one signs as a multisig), so it is accepted whoever signed the extrinsic that
    carried the approval, and its message must name the multisig as its sender.

    The nonce the sender wrote is ignored: the returned message carries nonce 0, a placeholder
    until :func:`assign_nonces` (or :func:`canonical_message`) gives it its canonical nonce.
    Raises a :class:`RemarkRejected` subclass naming the first rule that failed.
    """
    if isinstance(remark, bytearray | memoryview):
        remark = bytes(remark)
    if not isinstance(remark, bytes):
        raise InvalidRemarkInput(f"remark must be bytes, got {type(remark).__name__}")
    signer = _check_bytes32("signer", signer)
    event_sender = _check_bytes32("event sender", event_sender)
    event_hash = _check_bytes32("event hash", event_hash)
    if not _is_u32(origin_domain):
        raise InvalidRemarkInput(f"origin domain must be a u32, got {origin_domain!r}")

    actual = blake2_256(remark)
    if actual != event_hash:
        raise EventHashMismatch(
            f"event hash {to_hex(event_hash)} is not blake2-256 of the remark ({to_hex(actual)})"
        )
    if committee is not None:
        committee = _check_bytes32("committee", committee)
    if event_sender not in (signer, committee):
        raise EventSenderMismatch(
            f"remark emitted by {to_hex(event_sender)}, not by the signer {to_hex(signer)}"
        )
    if not remark.startswith(REMARK_PREFIX):
        raise MissingPrefix(f"remark does not start with {REMARK_PREFIX.decode()}")
    try:
        message = decode_message(remark[len(REMARK_PREFIX) :])
    except VerificationError as error:
        raise MalformedPayload(f"remark payload is not a message: {error}") from None
    if message.sender != event_sender:
        raise MessageSenderMismatch(
            f"message sender {to_hex(message.sender)} is not the signer {to_hex(event_sender)}"
        )
    if message.origin != origin_domain:
        raise WrongOrigin(f"message origin {message.origin} is not this domain {origin_domain}")
    if message.destination == origin_domain:
        raise SelfAddressed(f"message is addressed to its own origin domain {origin_domain}")
    return canonical_message(message, 0)


def canonical_message(message: Message, nonce: int) -> Message:
    """``message`` with its canonical ``nonce``; every other field unchanged.

    Raises :class:`~light_clients.message.MalformedMessageError` if ``nonce`` is not a u32.
    """
    return dataclasses.replace(message, nonce=nonce)


def assign_nonces(next_nonce: int, accepted: Sequence[tuple[int, int, Message]]) -> list[Message]:
    """Number accepted remarks: the canonical messages, nonces ``next_nonce``, ``next_nonce + 1``…

    ``accepted`` holds ``(block number, extrinsic index, message)`` of remarks that passed
    :func:`validate_remark`, in chain order: (block number, extrinsic index) must never
    decrease. Equal keys are several remarks of one extrinsic (a batch) and keep the order
    given, which must be their event order. Raises :class:`NonceAssignmentError` for input out
    of order, negative positions, or nonces that would not fit the message's u32 field.
    """
    if not _is_u32(next_nonce):
        raise NonceAssignmentError(f"next nonce must be a u32, got {next_nonce!r}")
    if accepted and next_nonce + len(accepted) - 1 > U32_MAX:
        raise NonceAssignmentError(
            f"{len(accepted)} messages from nonce {next_nonce} would exceed the u32 nonce space"
        )
    canonical: list[Message] = []
    previous: tuple[int, int] | None = None
    for position, entry in enumerate(accepted):
        block, index, message = entry
        for name, value in (("block number", block), ("extrinsic index", index)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise NonceAssignmentError(
                    f"remark {position}: {name} must be a non-negative integer, got {value!r}"
                )
        if not isinstance(message, Message):
            raise NonceAssignmentError(
                f"remark {position}: expected a Message, got {type(message).__name__}"
            )
        key = (block, index)
        if previous is not None and key < previous:
            raise NonceAssignmentError(
                f"remark {position} at block {block} extrinsic {index} comes after "
                f"block {previous[0]} extrinsic {previous[1]}: not in chain order"
            )
        previous = key
        canonical.append(canonical_message(message, next_nonce + position))
    return canonical


def check_recipient(message: Message, allowed: Mapping[int, Collection[bytes]]) -> None:
    """Accept a message only to a recipient ``allowed`` lists for its destination (domain →
    32-byte recipients); a destination that is not a key allows nothing. Fails closed: raises
    :class:`RecipientNotAllowed`."""
    if message.recipient not in allowed.get(message.destination, ()):
        raise RecipientNotAllowed(
            f"recipient {to_hex(message.recipient)} on domain {message.destination} is not one "
            "this origin may address"
        )


# --- token returns ---------------------------------------------------------------------------

TOKEN_BODY_SIZE = 128
ACTION_MINT = 1
ACTION_UNLOCK = 2
ACTION_REFUND = 3
U128_MAX = 2**128 - 1


@dataclasses.dataclass(frozen=True)
class TokenBody:
    """A TokenBridge message body: ``abi.encode(uint8 action, bytes32 homeToken, uint256
    amount, bytes32 recipient)`` (the action word read whole: anything above 255 is no action).

    For a REFUND (action 3) the words are ``(3, message id, amount, reason)``: ``home_token``
    holds the refunded message's id and ``recipient`` a reason code.
    """

    action: int
    home_token: bytes
    amount: int
    recipient: bytes


def decode_token_body(body: bytes) -> TokenBody | None:
    """The fields of a 128-byte token body; None for any other length."""
    if len(body) != TOKEN_BODY_SIZE:
        return None
    return TokenBody(
        action=int.from_bytes(body[0:32], "big"),
        home_token=body[32:64],
        amount=int.from_bytes(body[64:96], "big"),
        recipient=body[96:128],
    )


@dataclasses.dataclass(frozen=True)
class AssetTransfer:
    """An ``Assets.Transferred`` event of the extrinsic that carried a remark."""

    asset_id: int
    source: bytes
    target: bytes
    amount: int


@dataclasses.dataclass(frozen=True)
class EscrowRoute:
    """Where token returns from a Substrate origin go, and what must back them.

    ``bridge`` is the destination's TokenBridge (32 bytes, left-padded); a message from this
    origin to it can release ``home_token`` there. It is accepted only if the same extrinsic
    moved ``amount`` of ``asset_id`` from the sender to ``escrow`` (the committee's account)
    before the remark: the destination bridge cannot check that, the attesters do.
    """

    destination: int
    bridge: bytes
    home_token: bytes | None
    """None: the wrapped asset has no home there, so nothing may be returned to that bridge."""
    asset_id: int | None
    escrow: bytes


def check_escrow(
    message: Message,
    transfers: Sequence[AssetTransfer],
    routes: Sequence[EscrowRoute],
    used: set[int],
) -> None:
    """Reject a token return that is not paid for, and any committee remark but a refund;
    other messages pass untouched.

    A message whose sender is a route's ``escrow`` (the committee's multisig: only a
    threshold of attesters can make it remark, :func:`validate_remark`) needs no escrow
    transfer, and is accepted only as exactly a REFUND — body ``abi.encode(uint8 3, bytes32
    id, uint256 amount, bytes32 reason)`` with a non-zero amount — to the bridge of a domain
    where the wrapped asset has its home. Nothing more: the EVM TokenBridge pays a refund only
    for a transfer it recorded, once, for its recorded amount, to its recorded sender, within
    what it locked towards this domain. Raises :class:`CommitteeRemarkRejected` otherwise.

    ``transfers`` are the ``Assets.Transferred`` events of the remark's extrinsic that precede
    its ``Remarked`` event, ``used`` the positions in it that earlier remarks of the same
    extrinsic already consumed (updated here: one transfer backs one message). The body must be
    exactly ``abi.encode(uint8 2, bytes32 home_token, uint256 amount, bytes32 recipient)`` with
    a non-zero amount and an EVM recipient. Raises :class:`UnbackedTokenTransfer`.
    """
    route = next(
        (
            r
            for r in routes
            if r.destination == message.destination and r.bridge == message.recipient
        ),
        None,
    )
    if any(r.escrow == message.sender for r in routes):
        _check_refund(message, route)
        return
    if route is None:
        return
    if route.home_token is None or route.asset_id is None:
        raise UnbackedTokenTransfer(
            f"the wrapped asset has no home at the bridge of domain {route.destination}"
        )
    token = decode_token_body(message.body)
    if token is None:
        raise UnbackedTokenTransfer(f"token message body is {len(message.body)} bytes, not 128")
    if token.action != ACTION_UNLOCK:
        raise UnbackedTokenTransfer(
            f"token action {token.action} from a Substrate origin (only unlock)"
        )
    if token.home_token != route.home_token.rjust(32, b"\0"):
        raise UnbackedTokenTransfer(
            f"token {to_hex(token.home_token)} is not the wrapped asset's home"
        )
    amount = token.amount
    if not 0 < amount <= U128_MAX:
        raise UnbackedTokenTransfer(f"amount {amount} is not a positive u128")
    if token.recipient[:12] != bytes(12) or token.recipient == bytes(32):
        raise UnbackedTokenTransfer(f"recipient {to_hex(token.recipient)} is not an EVM address")
    for position, transfer in enumerate(transfers):
        if position in used:
            continue
        if (
            transfer.asset_id == route.asset_id
            and transfer.source == message.sender
            and transfer.target == route.escrow
            and transfer.amount == amount
        ):
            used.add(position)
            return
    raise UnbackedTokenTransfer(
        f"no transfer of {amount} of asset {route.asset_id} from the sender to the escrow "
        f"{to_hex(route.escrow)} precedes the remark in its extrinsic"
    )


def _check_refund(message: Message, route: EscrowRoute | None) -> None:
    """A committee remark must be a well-formed REFUND to a home bridge (see check_escrow)."""
    if route is None or route.home_token is None or route.escrow != message.sender:
        raise CommitteeRemarkRejected(
            f"committee remark to {to_hex(message.recipient)} on domain {message.destination}, "
            "not to a bridge where the wrapped asset has its home"
        )
    token = decode_token_body(message.body)
    if token is None or token.action != ACTION_REFUND:
        raise CommitteeRemarkRejected("committee remark is not a refund")
    if token.amount == 0:
        raise CommitteeRemarkRejected("refund of zero")
