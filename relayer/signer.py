"""Signers: what signs for a role, behind an interface a remote signer can implement.

Two interfaces: :class:`Signer` (secp256k1: committee checkpoints, EVM transactions) and
:class:`SubstrateSigner` (sr25519: extrinsics, the committee's multisig approvals). This module
builds them from the configuration's :class:`~relayer.config.KeySource` in one place
(:func:`evm_signer`, :func:`substrate_signer`); today both are local (the key in this process's
memory, read from a key file, a variable or an encrypted keystore). A remote signer (an HSM, a
KMS, ``clef``, a signing service) is one more class with the same methods, chosen there.

What goes through them today, and what does not yet: Substrate signing does (the attesters'
multisig approvals and the client's extrinsics take a :class:`SubstrateSigner`). secp256k1
signing does NOT: the attester signs checkpoints with the key bytes
(``SignedCheckpoint.create``), and EVM transactions are signed by ``adapters.evm.tx.TxEngine``
from the relayer's key bytes (``Relayer.relayer_key``), as the EVM user commands do. So
:meth:`Signer.sign_transaction`, :meth:`LocalSigner.sign_transaction` and
:func:`sign_digest_checked` have no production caller yet; :func:`evm_signer` is used by
``passerelle keys list`` (the address, or why the key does not load). Until those callers
move, a remote secp256k1 signer cannot be plugged in, and the contract below is what they must
be moved onto.

The contract a remote implementation must keep
------------------------------------------------
* **It signs exactly what it is given, with exactly one key.** ``sign_digest`` signs the 32
  bytes as they are (no prefix, no hashing: they are already a domain-separated digest) and
  returns 65 bytes ``r ‖ s ‖ v``, ``v`` in {27, 28}, low-s, recovering to ``address``.
  ``sign_transaction`` returns the raw signed transaction (EIP-2718 bytes; legacy ones with
  EIP-155's chain id) whose sender is ``address``. ``SubstrateSigner.sign`` returns the 64-byte
  sr25519 signature of the payload bytes as given (``substrate-interface`` has already replaced
  a payload over 256 bytes by its blake2-256, as the runtime expects). Callers check what they
  can cheaply: :func:`sign_digest_checked` recovers the signer of every checkpoint signature
  before it is published, so a signer answering with another key's signature is caught here.
* **Policy is not the signer's.** Never signing two roots at one checkpoint index is the
  attester's rule (its own signed-index record); nonces and fee escalation are the transaction
  engine's; which proposals deserve an approval is the attester's verification. A remote signer
  may add its own limits (rate, allow-listed contracts), but Passerelle does not rely on them.
* **Refusing is allowed; lying is not.** A remote signer that cannot or will not sign raises
  :class:`SignerError` (one line, no secret in it) within a bounded time (it sets its own
  timeout, about 10 s); callers treat that as a failed RPC: retry later, never fall back to
  another key.
* **Synchronous, thread-safe.** ``substrate-interface`` calls ``sign`` from a worker thread
  inside extrinsic construction (and once more for a fee estimate whose extrinsic is never
  submitted); EVM callers in trio code call a blocking signer through
  ``trio.to_thread.run_sync``. ``address``, ``public_key`` and ``ss58_address`` are known at
  construction and never change.
* **The key never leaves it**, and neither it nor a password appears in ``repr``, logs or
  exception messages — as here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from eth_account import Account
from substrateinterface import Keypair, KeypairType

from adapters.substrate.client import keypair_from_seed
from light_clients.committee import address_of, recover_signer, sign_digest
from light_clients.errors import VerificationError
from relayer.config import ConfigError, KeySource
from relayer.keys import (
    SS58_FORMAT,
    KeyFileError,
    check_secp256k1_key,
    decrypt_sr25519_keystore,
    read_secret,
)

if TYPE_CHECKING:
    from relayer.config import Config

__all__ = [
    "LocalSigner",
    "LocalSubstrateSigner",
    "Signer",
    "SignerError",
    "SubstrateSigner",
    "as_keypair",
    "client_substrate_signer",
    "evm_signer",
    "sign_digest_checked",
    "substrate_signer",
]

DIGEST_BYTES = 32
SECP256K1_SIGNATURE_BYTES = 65
SR25519_SIGNATURE_BYTES = 64


class SignerError(Exception):
    """A signer that could not or would not sign, or answered with something that is not a
    signature by its own key. ``str()`` is one line, without any secret."""


@runtime_checkable
class Signer(Protocol):
    """A secp256k1 key that signs: committee checkpoints and EVM transactions."""

    @property
    def address(self) -> bytes:
        """The key's 20-byte Ethereum address."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """65 bytes ``r ‖ s ‖ v`` (``v`` in {27, 28}, low-s) over the 32 bytes ``digest``."""
        ...

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        """The raw signed transaction of ``tx`` (an ``eth_account`` transaction dict)."""
        ...


@runtime_checkable
class SubstrateSigner(Protocol):
    """An sr25519 key that signs Substrate extrinsic payloads."""

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key: the account."""
        ...

    @property
    def ss58_address(self) -> str:
        """The account in SS58 (format :data:`~relayer.keys.SS58_FORMAT`)."""
        ...

    def sign(self, payload: bytes) -> bytes:
        """The 64-byte sr25519 signature of ``payload``."""
        ...


class LocalSigner:
    """A :class:`Signer` holding its secp256k1 key in this process."""

    __slots__ = ("_address", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != DIGEST_BYTES:
            raise ValueError(f"a secp256k1 private key is 32 bytes, got {len(key)}")
        self._key = key
        self._address = address_of(key)

    @property
    def address(self) -> bytes:
        return self._address

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != DIGEST_BYTES:
            # A digest of another length is a caller's bug; signing it would sign something
            # no verifier checks the way the caller meant.
            raise ValueError(f"a digest is 32 bytes, got {len(digest)}")
        return sign_digest(self._key, digest)

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        return bytes(Account.sign_transaction(dict(tx), self._key).raw_transaction)

    def __repr__(self) -> str:
        return f"LocalSigner(0x{self._address.hex()})"


class LocalSubstrateSigner:
    """A :class:`SubstrateSigner` holding its sr25519 keypair in this process."""

    __slots__ = ("_keypair",)

    def __init__(self, keypair: Keypair) -> None:
        if keypair.crypto_type != KeypairType.SR25519 or not keypair.private_key:
            raise ValueError("a local Substrate signer needs an sr25519 keypair with its secret")
        self._keypair = keypair

    @property
    def public_key(self) -> bytes:
        return bytes(self._keypair.public_key)

    @property
    def ss58_address(self) -> str:
        return str(self._keypair.ss58_address)

    def sign(self, payload: bytes) -> bytes:
        return bytes(self._keypair.sign(payload))

    def __repr__(self) -> str:
        return f"LocalSubstrateSigner({self.ss58_address})"


class _SignerKeypair(Keypair):  # type: ignore[misc]  # substrate-interface has no type hints
    """A ``Keypair`` with a public key only, whose ``sign`` is a :class:`SubstrateSigner`'s:
    what ``substrate-interface`` (and so :mod:`adapters.substrate`) signs extrinsics with. It
    reads ``public_key``, ``ss58_address``, ``crypto_type`` and calls ``sign``; no secret is
    here for anything else to read."""

    def __init__(self, signer: SubstrateSigner) -> None:
        super().__init__(
            public_key=signer.public_key, ss58_format=SS58_FORMAT, crypto_type=KeypairType.SR25519
        )
        self._signer = signer

    def sign(self, data: Any) -> bytes:
        """Sign what ``Keypair.sign`` accepts (SCALE bytes, ``0x`` hex, text, bytes)."""
        if hasattr(data, "data"):  # ScaleBytes: the encoded payload
            data = bytes(data.data)
        elif isinstance(data, str):
            data = bytes.fromhex(data[2:]) if data.startswith("0x") else data.encode()
        signature = self._signer.sign(bytes(data))
        if len(signature) != SR25519_SIGNATURE_BYTES:
            raise SignerError(
                f"signer {self.ss58_address} answered {len(signature)} bytes, not a signature"
            )
        return signature

    def __repr__(self) -> str:
        return f"<Keypair of {self._signer!r}>"


def as_keypair(signer: SubstrateSigner) -> Keypair:
    """``signer`` as the ``Keypair`` the Substrate adapters sign with (the seam: they take a
    ``Keypair``; any signer, local or remote, fits through it)."""
    return _SignerKeypair(signer)


def sign_digest_checked(signer: Signer, digest: bytes) -> bytes:
    """``signer.sign_digest(digest)``, checked to be strict and to recover to
    ``signer.address``: SignerError otherwise (a remote signer with the wrong key, a
    corrupted answer). Publishing such a signature would only be refused later, by everyone."""
    signature = signer.sign_digest(digest)
    try:
        recovered = recover_signer(digest, bytes(signature))
    except VerificationError as exc:
        raise SignerError(
            f"signer 0x{signer.address.hex()} returned no valid signature: {exc}"
        ) from None
    if recovered != signer.address:
        raise SignerError(
            f"signer 0x{signer.address.hex()} returned a signature of 0x{recovered.hex()}"
        )
    return signature


def evm_signer(source: KeySource) -> LocalSigner:
    """The signer of a secp256k1 key source; ConfigError (one line) if the key does not load."""
    if source.sr25519:
        raise ConfigError("an sr25519 key cannot sign as a secp256k1 (EVM) key")
    try:
        # Here, not in LocalSigner: coincurve's error for 0 or ≥ n is no ConfigError.
        where = source.env or source.file or source.keystore
        what = f"the key in {source.origin} {where}" if where else "the inline key"
        key = check_secp256k1_key(source.load(), what)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    return LocalSigner(key)


def substrate_signer(source: KeySource) -> LocalSubstrateSigner:
    """The signer of an sr25519 source: a Polkadot JS keystore, or a 32-byte mini-secret seed
    (file, variable, devnet inline); ConfigError (one line) if it does not load."""
    if source.keystore is None:
        return LocalSubstrateSigner(keypair_from_seed(source.load()))
    try:
        keypair = decrypt_sr25519_keystore(
            read_secret(source.keystore, "keystore"), source.password(), source.keystore
        )
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    return LocalSubstrateSigner(keypair)


def client_substrate_signer(config: Config) -> LocalSubstrateSigner:
    """The ``[client]``'s sr25519 signer: ``substrate_uri`` (devnet only: a development key
    such as ``//Alice``), else its ``substrate_key*``; ConfigError if it has neither."""
    if config.client_substrate_uri is not None:
        return LocalSubstrateSigner(Keypair.create_from_uri(config.client_substrate_uri))
    if config.client_substrate_key is None:
        raise ConfigError("no [client] substrate_key configured: cannot sign on Substrate")
    return substrate_signer(config.client_substrate_key)
