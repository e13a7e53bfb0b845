"""Signers: what signs for a role, behind an interface a remote signer can implement.

Two interfaces: :class:`Signer` (secp256k1: committee checkpoints, EVM transactions) and
:class:`SubstrateSigner` (sr25519: extrinsics, the committee's multisig approvals). This module
builds them from the configuration's :class:`~relayer.config.KeySource` in one place
(:func:`evm_signer`, :func:`substrate_signer`); today both are local (the key in this process's
memory, read from a key file, a variable or an encrypted keystore). A remote signer (an HSM, a
KMS, ``clef``, a signing service) is one more class with the same methods, chosen there.

What goes through them: every signature Passerelle makes.

* Substrate: the attesters' multisig approvals and the client's extrinsics take a
  :class:`SubstrateSigner` (through :func:`as_keypair`, the ``Keypair`` seam).
* Checkpoints: the attester builds its :class:`Signer` once at start-up (:func:`evm_signer`),
  fixes its address there (:func:`fixed_address`: the address checked against the committee is
  the one every later signature must recover to, whatever the signer says later) and signs each
  checkpoint, and the block it read it at, through :func:`sign_digest_checked`
  (``SignedCheckpoint.create``): a signature that does not recover to that address is never
  published.
* EVM transactions: ``adapters.evm.tx.TxEngine`` holds a signer, not a key — the relayer's
  (``Relayer.relayer_signer``) and the client's for ``send`` and token transfers
  (``relayer.families.evm.user.client_signer``) — and broadcasts a signed transaction only
  after checking it is exactly the one asked, from its own address
  (``adapters.evm.tx.check_signed_transaction``).
* Both go through ``adapters.signing.call_signer``: in a worker thread unless the signer's own
  class says it ``signs_in_process`` (:class:`LocalSigner`: a thread would cost more than its
  signature).

So after start-up no code in ``adapters/`` or ``relayer/`` outside this module (and
:mod:`relayer.keys`, which reads key files) holds a secp256k1 private key: a remote signer is
one class implementing :class:`Signer`, chosen in :func:`evm_signer` (or
:class:`SubstrateSigner`, in :func:`substrate_signer`). What remains: ``passerelle keys
new``/``import`` handle key bytes by nature (they write keystores); ``devnet/`` deploys the
devnet's contracts with the devnet's own public development keys (``devnet.topology``), never
an operator's; test and benchmark helpers read the devnet's keys.
(``tests/test_signer_callers.py`` checks the imports of signing primitives.)

What is bounded and checked
---------------------------
Both sides: the secp256k1 one (:class:`Signer`) through ``adapters.signing.call_signer``, the
sr25519 one (:class:`SubstrateSigner`) through ``adapters.substrate.signing.sign_sr25519`` (the same
call, plus its own check):

* **Bounded**: the signer's answer to each call within ``adapters.signing.SIGN_TIMEOUT`` (20 s),
  on at most ``SIGNER_THREADS`` (4) threads of each signer's own (one signer that hangs
  never starves another: an attester's sr25519 key and its checkpoint key are two pools).
  Waiting for a free thread is not charged to the timeout; a call abandoned after its timeout
  that never returns is counted (``passerelle_signer_stuck_calls``), and once every thread of
  a signer is held by one, that signer's calls fail at once with one line naming them and
  ``/readyz`` says not ready, naming it.
* **Checked**: every answer, as above (recovered address; a transaction byte for byte); an
  sr25519 answer must be 64 bytes that verify, with sr25519, under the account's public key
  for exactly the payload it was given, before anything is submitted (a lying signer costs
  no nonce and no round trip to the chain).
* **One line**: a :class:`SignerError`, or any other exception of a signer called in a thread,
  turned into a :class:`SignerError` naming only its type (its text may hold a secret). Counted
  in ``passerelle_signing_errors_total``.

How the sr25519 side is kept off the Substrate worker slot: ``substrate-interface`` would call
``sign`` inside extrinsic construction, in ``adapters.substrate.client``'s single worker slot
(``SUBSTRATE_LIMITER``, whose thread is never abandoned), where a hanging remote signer would
stop every Substrate call of the process. So the client asks the library for the signature
payload (one slot call), asks the signer for the signature outside the slot (bounded, checked:
above), then has the library encode the extrinsic with that signature (a second slot call,
which never calls ``sign``). :class:`LocalSubstrateSigner` ``signs_in_process`` (inline, as a
thread hop would cost more than its 0.1 ms signature); :func:`as_keypair` exposes the signer it
wraps (``signer``) so the client can tell.

The contract a remote implementation must keep
------------------------------------------------
* **It signs exactly what it is given, with exactly one key.** ``sign_digest`` signs the 32
  bytes as they are (no prefix, no hashing: they are already a domain-separated digest) and
  returns 65 bytes ``r ‖ s ‖ v``, low-s, recovering to ``address``, with ``v`` exactly 27 or
  28: a recovery id ``v`` in {0, 1} (what many KMS wrappers return) is refused, add 27.
  ``sign_transaction`` returns the raw signed transaction (EIP-2718 bytes; legacy ones with
  EIP-155's chain id) whose sender is ``address``. ``SubstrateSigner.sign`` returns the 64-byte
  sr25519 signature of the payload bytes as given (``substrate-interface`` has already replaced
  a payload over 256 bytes by its blake2-256, as the runtime expects). Callers check what they
  can cheaply: :func:`sign_digest_checked` recovers the signer of every checkpoint signature
  before it is published, and the transaction engine decodes every signed transaction and
  recovers its sender before broadcasting it, so a signer answering with another key's
  signature, or signing something else than it was given, is caught on our side.
* **Policy is not the signer's.** Never signing two roots at one checkpoint index is the
  attester's rule (its own signed-index record); nonces and fee escalation are the transaction
  engine's; which proposals deserve an approval is the attester's verification. A remote signer
  may add its own limits (rate, allow-listed contracts), but Passerelle does not rely on them.
* **Refusing is allowed; lying is not.** A remote signer that cannot or will not sign raises
  :class:`SignerError` (one line, no secret in it: it is logged as it is) within a bounded
  time (it sets its own timeout, about 10 s; trio callers of either kind of signer stop waiting
  after ``adapters.signing.SIGN_TIMEOUT`` anyway, but its thread stays held until it returns).
  Callers treat that as a failed RPC (it is an ``AdapterError``): one log line, retry later,
  never fall back to another key. Any other exception of a signer called in a thread
  is turned into a :class:`SignerError` naming only its type; one of a signer that
  ``signs_in_process`` is our bug, and propagates.
* **It never broadcasts or publishes**, and an answer that came after the caller's timeout is
  discarded: the same request may be signed again later with other content (the same nonce,
  another transaction). A signer that also sends what it signed could get a transaction mined
  that our bookkeeping never recorded.
* **Synchronous, thread-safe.** Trio callers call a secp256k1 signer through
  ``adapters.signing.call_signer`` and an sr25519 one through
  ``adapters.substrate.signing.sign_sr25519`` (once per extrinsic submitted; a fee estimate
  signs nothing), from a worker thread unless its own class (not a parent: the attribute is not
  inherited) says ``signs_in_process = True`` (only for a signer that does no I/O and cannot
  hang: it is then called on the event loop). ``address``, ``public_key`` and ``ss58_address``
  are known at construction and never change.
* **The key never leaves it**, and neither it nor a password appears in ``repr``, logs or
  exception messages — as here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from adapters.signing import SignerError, signs_in_process
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

# Each signing library is imported by the code that signs with it, on first use, not here:
# every attester and relayer imports this module, and eth-account (EVM transactions: only a
# relayer or a client sends them) and substrate-interface (sr25519: only where a Substrate
# chain is configured) cost ~0.25 CPU s each to import (both bring eth-utils). An attester of
# EVM chains signs checkpoints with coincurve (light_clients.committee) and needs neither.
if TYPE_CHECKING:
    from eth_account import Account
    from substrateinterface import Keypair

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
    "fixed_address",
    "sign_digest_checked",
    "substrate_signer",
    "transaction_signing",
]

DIGEST_BYTES = 32
ADDRESS_BYTES = 20
SECP256K1_SIGNATURE_BYTES = 65


@runtime_checkable
class Signer(Protocol):
    """A secp256k1 key that signs: committee checkpoints and EVM transactions."""

    @property
    def address(self) -> bytes:
        """The key's 20-byte Ethereum address."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """65 bytes ``r ‖ s ‖ v`` (``v`` in {27, 28}, low-s) over the 32 bytes ``digest``;
        :class:`SignerError` if it cannot or will not sign."""
        ...

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        """The raw signed transaction of ``tx`` (an ``eth_account`` transaction dict: EIP-1559
        with ``type`` 2, or legacy with ``gasPrice`` and ``chainId`` for EIP-155);
        :class:`SignerError` if it cannot or will not sign."""
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

    signs_in_process: ClassVar[bool] = True
    """CPU only (about half a millisecond for a transaction, less for a digest), no I/O, cannot
    hang: ``adapters.signing.call_signer`` calls it inline, as it was before the interface.
    Read from this class only: a subclass is called in a worker thread unless it sets it too."""

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
        account = transaction_signing()
        return bytes(account.sign_transaction(dict(tx), self._key).raw_transaction)

    def __repr__(self) -> str:
        return f"LocalSigner(0x{self._address.hex()})"


class LocalSubstrateSigner:
    """A :class:`SubstrateSigner` holding its sr25519 keypair in this process."""

    __slots__ = ("_keypair",)

    signs_in_process: ClassVar[bool] = True
    """CPU only (about 0.1 ms a signature), no I/O, cannot hang:
    ``adapters.substrate.signing.sign_sr25519`` calls it inline. Read from this class only, as
    for :class:`LocalSigner`."""

    def __init__(self, keypair: Keypair) -> None:
        from substrateinterface import KeypairType  # noqa: PLC0415 (see the imports)

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


@functools.cache
def _signer_keypair_class() -> type[Keypair]:
    """The ``Keypair`` subclass behind :func:`as_keypair`, made on first use: subclassing needs
    substrate-interface imported, which only a process with a Substrate chain pays for."""
    from substrateinterface import Keypair, KeypairType  # noqa: PLC0415 (see the imports)

    class _SignerKeypair(Keypair):  # type: ignore[misc]  # substrate-interface has no type hints
        """A ``Keypair`` with a public key only, whose ``sign`` is a
        :class:`SubstrateSigner`'s: what ``substrate-interface`` (and so
        :mod:`adapters.substrate`) signs extrinsics with. It reads ``public_key``,
        ``ss58_address``, ``crypto_type`` and calls ``sign``; no secret is here for anything
        else to read."""

        def __init__(self, signer: SubstrateSigner) -> None:
            super().__init__(
                public_key=signer.public_key,
                ss58_format=SS58_FORMAT,
                crypto_type=KeypairType.SR25519,
            )
            self._signer = signer

        @property
        def signer(self) -> SubstrateSigner:
            """The signer behind this keypair: ``adapters.substrate.client`` reads whether it
            ``signs_in_process`` (inline) or must be called in a thread, bounded."""
            return self._signer

        def sign(self, data: Any) -> bytes:
            """Sign what ``Keypair.sign`` accepts (SCALE bytes, ``0x`` hex, text, bytes). The
            answer is checked by the caller, ``adapters.substrate.signing.sign_sr25519`` (64
            bytes that verify under this key for exactly this payload), off the Substrate worker
            slot."""
            if hasattr(data, "data"):  # ScaleBytes: the encoded payload
                data = bytes(data.data)
            elif isinstance(data, str):
                data = bytes.fromhex(data[2:]) if data.startswith("0x") else data.encode()
            return self._signer.sign(bytes(data))

        def __repr__(self) -> str:
            return f"<Keypair of {self._signer!r}>"

    return _SignerKeypair


def as_keypair(signer: SubstrateSigner) -> Keypair:
    """``signer`` as the ``Keypair`` the Substrate adapters sign with (the seam: they take a
    ``Keypair``; any signer, local or remote, fits through it)."""
    return _signer_keypair_class()(signer)


class _FixedAddressSigner:
    """A :class:`Signer` whose address was read once, at construction: what
    :func:`fixed_address` returns for a signer that is not ours."""

    __slots__ = ("_address", "_signer")

    def __init__(self, signer: Signer, address: bytes) -> None:
        self._signer, self._address = signer, address

    @property
    def address(self) -> bytes:
        return self._address

    def _still_ours(self) -> None:
        now = self._signer.address
        if now != self._address:
            shown = f"0x{now.hex()}" if isinstance(now, bytes) else type(now).__name__
            raise SignerError(
                f"signer 0x{self._address.hex()} now says its address is {shown}: not signing"
            )

    def sign_digest(self, digest: bytes) -> bytes:
        self._still_ours()
        return self._signer.sign_digest(digest)

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        self._still_ours()
        return self._signer.sign_transaction(tx)

    def __repr__(self) -> str:
        return f"{self._signer!r} (fixed at 0x{self._address.hex()})"


def fixed_address(signer: Signer) -> Signer:
    """``signer`` with its address fixed now: ``address`` answers what it read now, and each
    signature first checks the signer still says so (SignerError otherwise), so
    :func:`sign_digest_checked` holds every later signature to this address. What the attester
    checks against the committee at start is then what it signs as, for good: a remote signer
    whose address moves (a KMS alias re-pointed during a rotation, a lazy property) cannot get
    a checkpoint published under another address, nor split the attester's "never sign an
    index twice" record (keyed on the start address) from what it publishes.

    A signer that :func:`~adapters.signing.signs_in_process` is returned as it is: that is
    :class:`LocalSigner` itself (the attribute is not inherited), whose address is derived from
    its key once, at construction; wrapping it would only move it to a worker thread.
    ValueError if the address is not 20 bytes."""
    address = signer.address
    if not isinstance(address, bytes) or len(address) != ADDRESS_BYTES:
        raise ValueError(f"a signer's address is {ADDRESS_BYTES} bytes, got {address!r}")
    if signs_in_process(signer):
        return signer
    return _FixedAddressSigner(signer, address)


def sign_digest_checked(signer: Signer, digest: bytes) -> bytes:
    """``signer.sign_digest(digest)``, checked to be strict and to recover to
    ``signer.address``: SignerError otherwise (a remote signer with the wrong key, a
    corrupted answer). Publishing such a signature would only be refused later, by everyone.

    Blocking (a remote signer waits on I/O): trio code calls it through
    ``adapters.signing.call_signer``."""
    answer = signer.sign_digest(digest)
    # bytes() of an int or a str is no signature: refuse the type, not just the content.
    signature = bytes(answer) if isinstance(answer, bytes | bytearray) else b""
    try:
        recovered = recover_signer(digest, signature)
    except VerificationError as exc:
        raise SignerError(
            f"signer 0x{signer.address.hex()} returned no valid signature: {exc}"
        ) from None
    if recovered != signer.address:
        raise SignerError(
            f"signer 0x{signer.address.hex()} returned a signature of 0x{recovered.hex()}"
        )
    return signature


def transaction_signing() -> type[Account]:
    """eth-account's ``Account``, which signs EVM transactions, imported on first use (see the
    imports: ~0.25 CPU s that an attester never needs). A relayer calls this once at start-up,
    before its event loop runs, so that its first delivery does not stall the loop on the
    import; later calls cost a dictionary look-up."""
    from eth_account import Account  # noqa: PLC0415 (see the imports)

    return Account


def evm_signer(source: KeySource) -> Signer:
    """The signer of a secp256k1 key source; ConfigError (one line) if the key does not load.

    The one place a secp256k1 key becomes a signer (the relayer's, the attesters', the
    client's): a remote signer would be chosen here, from a new kind of source."""
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
        from adapters.substrate.client import keypair_from_seed  # noqa: PLC0415 (the imports)

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
        from substrateinterface import Keypair  # noqa: PLC0415 (see the imports)

        return LocalSubstrateSigner(Keypair.create_from_uri(config.client_substrate_uri))
    if config.client_substrate_key is None:
        raise ConfigError("no [client] substrate_key configured: cannot sign on Substrate")
    return substrate_signer(config.client_substrate_key)
