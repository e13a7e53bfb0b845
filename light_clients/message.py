"""Cross-chain messages and everything an inbox checks before delivering one.

Wire format (docs/design.md, "Message"), packed, big-endian integers::

    version (1) ‖ nonce (4) ‖ origin (4) ‖ sender (32) ‖ destination (4) ‖ recipient (32) ‖ body

``id = keccak256(message)``. The layout has no optional parts, so a byte string decodes to at
most one message and re-encodes to itself: the id is a canonical replay key (T13, T17).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from light_clients.committee import Attestation, Checkpoint, Committee, verify_attestation
from light_clients.errors import DecodeError, MessageError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.merkle import MerkleInclusion, verify_inclusion

__all__ = [
    "HEADER_SIZE",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "VERSION",
    "Delivery",
    "MalformedMessageError",
    "Message",
    "NonceBeyondCheckpointError",
    "WrongDestinationError",
    "WrongOriginError",
    "WrongOutboxError",
    "decode_message",
    "verify_delivery",
    "verify_message_inclusion",
]

VERSION = 1
"""The only message version this code understands."""

HEADER_SIZE = 1 + 4 + 4 + 32 + 4 + 32
"""Bytes before the body: version, nonce, origin, sender, destination, recipient (77)."""

MAX_BODY_BYTES = 64 * 1024
"""Largest body accepted (64 KiB).

Why a bound at all: a message is held in memory, written to the ledger and, on delivery, sent
as calldata (16 gas/byte on EVM) or inside an extrinsic (Substrate block length), so an
unbounded body is a denial-of-service lever on every relayer and attester. Why 64 KiB: it is far
above any token transfer or contract call we carry (Nomad/Optics capped bodies at 2 KiB), its
delivery calldata (~1.05 M gas) fits a block with room to batch, and it is well inside a
Substrate extrinsic. The outbox contracts must refuse larger bodies too, otherwise a message
could be dispatched that no inbox will ever deliver.
"""

MAX_MESSAGE_BYTES = HEADER_SIZE + MAX_BODY_BYTES
"""Largest encoded message accepted."""

U32_MAX = 2**32 - 1


class MalformedMessageError(DecodeError):
    """Bytes (or fields) that are not a valid version-1 message."""


class WrongOriginError(MessageError):
    """The checkpoint belongs to another origin domain than the message (T8, T14)."""


class WrongDestinationError(MessageError):
    """The message is addressed to another domain than this inbox (T8)."""


class WrongOutboxError(MessageError):
    """The checkpoint is for another outbox contract than the one trusted for this origin (T14)."""


class NonceBeyondCheckpointError(MessageError):
    """The message nonce is past the checkpoint's last leaf, so the checkpoint cannot contain it."""


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


def _check_u32(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U32_MAX:
        raise MalformedMessageError(f"message {name} must be a u32, got {value!r}")


def _check_bytes32(name: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise MalformedMessageError(f"message {name} must be 32 bytes, got {_describe(value)}")


@dataclass(frozen=True)
class Message:
    """A decoded version-1 message; construction validates every field.

    ``sender`` and ``recipient`` are 32 bytes (EVM addresses left-padded, Substrate accounts
    as their public key); ``body`` is at most :data:`MAX_BODY_BYTES`. Raises
    :class:`MalformedMessageError` for anything else.
    """

    version: int
    nonce: int
    origin: int
    sender: bytes
    destination: int
    recipient: bytes
    body: bytes

    def __post_init__(self) -> None:
        """Validate every field (see the class docstring)."""
        version = self.version
        if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
            raise MalformedMessageError(f"unsupported message version {self.version!r}")
        _check_u32("nonce", self.nonce)
        _check_u32("origin", self.origin)
        _check_u32("destination", self.destination)
        _check_bytes32("sender", self.sender)
        _check_bytes32("recipient", self.recipient)
        if not isinstance(self.body, bytes):
            raise MalformedMessageError(
                f"message body must be bytes, got {type(self.body).__name__}"
            )
        if len(self.body) > MAX_BODY_BYTES:
            raise MalformedMessageError(
                f"message body is {len(self.body)} bytes, more than {MAX_BODY_BYTES}"
            )

    def encode(self) -> bytes:
        """The canonical packed encoding (docs/design.md, "Message")."""
        return b"".join(
            (
                bytes((self.version,)),
                self.nonce.to_bytes(4, "big"),
                self.origin.to_bytes(4, "big"),
                self.sender,
                self.destination.to_bytes(4, "big"),
                self.recipient,
                self.body,
            )
        )

    @cached_property
    def id(self) -> bytes:
        """``keccak256(encode())``: the message's leaf in the outbox tree and its replay key."""
        return keccak256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Message:
        """Same as :func:`decode_message`."""
        return decode_message(data)


def decode_message(data: bytes) -> Message:
    """Decode packed message bytes; raises :class:`MalformedMessageError` (a DecodeError).

    Refused: non-bytes input, fewer than :data:`HEADER_SIZE` bytes, a version other than 1, and
    more than :data:`MAX_MESSAGE_BYTES` bytes. Every other byte string is a valid message and
    ``decode_message(data).encode() == data``.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise MalformedMessageError(f"message must be bytes, got {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise MalformedMessageError(
            f"message is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    if data[0] != VERSION:
        raise MalformedMessageError(f"unsupported message version {data[0]}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(
            f"message body is {len(data) - HEADER_SIZE} bytes, more than {MAX_BODY_BYTES}"
        )
    return Message(
        version=VERSION,
        nonce=int.from_bytes(data[1:5], "big"),
        origin=int.from_bytes(data[5:9], "big"),
        sender=data[9:41],
        destination=int.from_bytes(data[41:45], "big"),
        recipient=data[45:77],
        body=data[77:],
    )


@dataclass(frozen=True)
class Delivery:
    """What :func:`verify_delivery` established: ``message`` (id ``id``) may be delivered.

    ``attestation`` shows the committee signed ``attestation.checkpoint``; ``inclusion`` shows
    ``id`` is leaf ``message.nonce`` under that checkpoint's root.
    """

    message: Message
    id: bytes
    attestation: Attestation
    inclusion: MerkleInclusion


def verify_message_inclusion(
    message: bytes,
    checkpoint: Checkpoint,
    branch: Sequence[bytes],
    *,
    local_domain: int | None = None,
    outbox: bytes | None = None,
) -> tuple[Message, MerkleInclusion]:
    """Everything an inbox checks about one message except the committee attestation.

    1. ``message`` decodes (:class:`MalformedMessageError`);
    2. its origin is the checkpoint's origin (:class:`WrongOriginError`: a checkpoint of another
       origin proves nothing about it, T8/T14);
    3. its destination is ``local_domain`` when given (:class:`WrongDestinationError`, T8);
    4. the checkpoint's outbox is ``outbox`` when given (:class:`WrongOutboxError`, T14);
    5. ``nonce <= checkpoint.index`` (:class:`NonceBeyondCheckpointError`: a leaf past the count is
       not in the tree);
    6. ``keccak256(message)`` is leaf ``nonce`` under ``checkpoint.root`` (MerkleProofError;
       the index is the nonce, so a proof for another slot fails, T12/T13).

    A batch of messages proven against one checkpoint needs this per message and the
    attestation once, exactly as ``Inbox.process`` does; :func:`verify_delivery` is both for one.
    """
    decoded = decode_message(message)
    if not isinstance(checkpoint, Checkpoint):
        raise MessageError(f"expected a Checkpoint, got {type(checkpoint).__name__}")
    if decoded.origin != checkpoint.origin:
        raise WrongOriginError(
            f"message origin {decoded.origin} does not match checkpoint origin {checkpoint.origin}"
        )
    if local_domain is not None:
        if (
            not isinstance(local_domain, int)
            or isinstance(local_domain, bool)
            or not 0 <= local_domain <= U32_MAX
        ):
            raise MessageError(f"local domain must be a u32, got {local_domain!r}")
        if decoded.destination != local_domain:
            raise WrongDestinationError(
                f"message is for domain {decoded.destination}, this is domain {local_domain}"
            )
    if outbox is not None and checkpoint.outbox != outbox:
        raise WrongOutboxError(
            f"checkpoint is for outbox {to_hex(checkpoint.outbox)}, expected "
            f"{to_hex(outbox) if isinstance(outbox, bytes) else repr(outbox)}"
        )
    if decoded.nonce > checkpoint.index:
        raise NonceBeyondCheckpointError(
            f"message nonce {decoded.nonce} is beyond checkpoint index {checkpoint.index}"
        )
    return decoded, verify_inclusion(checkpoint.root, decoded.id, decoded.nonce, branch)


def verify_delivery(
    message: bytes,
    checkpoint: Checkpoint,
    branch: Sequence[bytes],
    committee: Committee,
    signatures: Sequence[bytes],
    *,
    local_domain: int | None = None,
    outbox: bytes | None = None,
) -> Delivery:
    """Everything an inbox checks before delivering ``message``.

    The checks of :func:`verify_message_inclusion`, then 7. the committee attested the
    checkpoint (AttestationError, T2–T6, T17). The cheap checks run first so that junk costs no
    signature recovery.
    """
    decoded, inclusion = verify_message_inclusion(
        message, checkpoint, branch, local_domain=local_domain, outbox=outbox
    )
    attestation = verify_attestation(committee, checkpoint, signatures)
    return Delivery(message=decoded, id=decoded.id, attestation=attestation, inclusion=inclusion)
