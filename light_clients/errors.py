"""The rejection types of every light client.

Each verifier raises a subclass of :class:`VerificationError`; nothing in ``light_clients``
returns a bare ``False`` or raises anything else on bad input. ``str(error)`` is a one-line,
human-readable reason (e.g. ``duplicate signer 0xab…``) suitable for ``passerelle proof verify``.
"""

from __future__ import annotations


class VerificationError(Exception):
    """Base class: the input does not prove what it claims."""


class DecodeError(VerificationError):
    """Bytes (or a JSON-RPC object) that are not a valid, canonical encoding."""


class MerkleProofError(VerificationError):
    """An outbox-accumulator inclusion proof does not hold."""


class AttestationError(VerificationError):
    """A committee attestation (or the committee itself) is not acceptable."""


class MessageError(VerificationError):
    """A message is well-formed but not deliverable here (wrong domain, nonce, origin)."""


class HeaderHashMismatch(VerificationError):
    """A block header does not hash to the claimed hash."""


class TrieProofError(VerificationError):
    """A Merkle-Patricia (Ethereum) or base-16 (Substrate) trie proof does not hold."""


class IncompleteProof(TrieProofError):
    """The proof does not cover the queried key: neither its value nor its absence is proven."""


class FinalityError(VerificationError):
    """A finality proof (GRANDPA justification, authority-set change) is not acceptable."""
