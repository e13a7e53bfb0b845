"""Account and storage proofs from ``eth_getProof`` (EIP-1186), checked against a state root.

The state trie maps ``keccak256(address)`` to ``rlp([nonce, balance, storageRoot, codeHash])``;
an account's storage trie maps ``keccak256(slot as 32 bytes)`` to ``rlp(value)``, and a zero
value is never stored (the key is absent). A response is accepted only if:

* the account proof proves exactly the claimed account, or proves the address absent and the
  response claims an empty account (nonce 0, balance 0 and either the empty storage root and
  empty code hash, or — geth since v1.13.4, erigon — two zero hashes);
* every storage proof proves the claimed value under the storage root *proven* for this
  account (a storage proof taken from another account's trie cannot pass, T14), and a claimed
  zero is proven by absence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from light_clients.errors import DecodeError, TrieProofError
from light_clients.ethereum.mpt import EMPTY_TRIE_ROOT, MptWalk, walk_proof
from light_clients.ethereum.rlp import decode, decode_uint
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, parse_loose_uint

__all__ = [
    "EMPTY_CODE_HASH",
    "Account",
    "AccountMismatchError",
    "GetProof",
    "GetProofVerdict",
    "SlotVerdict",
    "StorageMismatchError",
    "StorageProof",
    "decode_account",
    "parse_get_proof",
    "verify_account",
    "verify_get_proof",
]

EMPTY_CODE_HASH = keccak256(b"")
"""keccak256 of empty code: the code hash of every account without code."""

_ZERO_HASH = bytes(32)


class AccountMismatchError(TrieProofError):
    """The proven account (or its absence) differs from what the response claims."""


class StorageMismatchError(TrieProofError):
    """A proven storage value (or its absence) differs from the claimed value."""


@dataclass(frozen=True, slots=True)
class StorageProof:
    """One entry of ``storageProof``: a slot, its claimed value, and the trie nodes."""

    key: bytes
    """The storage slot as 32 big-endian bytes (not yet hashed)."""
    value: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class GetProof:
    """A parsed ``eth_getProof`` result: what the node claims, and the proofs."""

    address: bytes
    balance: int
    nonce: int
    code_hash: bytes
    storage_hash: bytes
    account_proof: tuple[bytes, ...]
    storage_proofs: tuple[StorageProof, ...]


@dataclass(frozen=True, slots=True)
class Account:
    """A state-trie account leaf."""

    nonce: int
    balance: int
    storage_hash: bytes
    code_hash: bytes


@dataclass(frozen=True, slots=True)
class SlotVerdict:
    """A storage slot's proven value (0 when proven absent) and the walk that proved it."""

    key: bytes
    trie_key: bytes
    """keccak256(key): the path in the storage trie."""
    value: int
    walk: MptWalk


@dataclass(frozen=True, slots=True)
class GetProofVerdict:
    """Everything an ``eth_getProof`` response was shown to prove under ``state_root``."""

    state_root: bytes
    address: bytes
    account: Account | None
    """The proven account, or ``None`` when the address is proven absent from the state."""
    account_walk: MptWalk
    storage_root: bytes
    """The root the storage proofs were checked under (the empty root for an absent account)."""
    storage: tuple[SlotVerdict, ...]


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_get_proof(obj: Mapping[str, object]) -> GetProof:
    """Parse the ``result`` object of ``eth_getProof``.

    Required: ``address`` (20 bytes), ``balance``, ``nonce``, ``codeHash``, ``storageHash``
    (32 bytes each), ``accountProof`` (list of hex nodes), ``storageProof`` (list of
    ``{key, value, proof}``). Integers may be QUANTITY or zero-padded DATA, since clients
    differ (Nethermind pads keys and values); only the integer is used. Other fields are
    ignored. Raises :class:`~light_clients.errors.DecodeError` for anything missing or
    malformed.
    """
    if not isinstance(obj, Mapping):
        raise DecodeError(f"eth_getProof result must be an object, got {type(obj).__name__}")
    storage = _field(obj, "storageProof", "eth_getProof")
    if not isinstance(storage, list):
        raise DecodeError("eth_getProof storageProof must be a list")
    return GetProof(
        address=parse_data(_field(obj, "address", "eth_getProof"), "address", 20),
        balance=parse_loose_uint(_field(obj, "balance", "eth_getProof"), "balance", 32),
        nonce=parse_loose_uint(_field(obj, "nonce", "eth_getProof"), "nonce", 8),
        code_hash=parse_data(_field(obj, "codeHash", "eth_getProof"), "codeHash", 32),
        storage_hash=parse_data(_field(obj, "storageHash", "eth_getProof"), "storageHash", 32),
        account_proof=_parse_nodes(_field(obj, "accountProof", "eth_getProof"), "accountProof"),
        storage_proofs=tuple(_parse_storage_proof(entry, i) for i, entry in enumerate(storage)),
    )


def _field(obj: Mapping[str, object], name: str, where: str) -> object:
    if name not in obj:
        raise DecodeError(f"{where} field {name} is missing")
    return obj[name]


def _parse_nodes(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise DecodeError(f"{what} must be a list of hex strings")
    return tuple(parse_data(node, f"{what}[{i}]") for i, node in enumerate(value))


def _parse_storage_proof(entry: object, index: int) -> StorageProof:
    where = f"storageProof[{index}]"
    if not isinstance(entry, Mapping):
        raise DecodeError(f"{where} must be an object")
    slot = parse_loose_uint(_field(entry, "key", where), f"{where}.key", 32)
    return StorageProof(
        key=slot.to_bytes(32, "big"),
        value=parse_loose_uint(_field(entry, "value", where), f"{where}.value", 32),
        proof=_parse_nodes(_field(entry, "proof", where), f"{where}.proof"),
    )


# ---------------------------------------------------------------------------------------------
# Verification


def decode_account(leaf: bytes) -> Account:
    """Decode a state-trie leaf ``rlp([nonce, balance, storageRoot, codeHash])`` strictly.

    Raises :class:`~light_clients.errors.DecodeError` for anything but four canonical items
    with a uint64 nonce, a uint256 balance and two 32-byte hashes.
    """
    items = decode(leaf)
    if not isinstance(items, list) or len(items) != 4:
        raise DecodeError("account leaf is not a list of 4 items")
    nonce, balance, storage_hash, code_hash = items
    if not isinstance(storage_hash, bytes) or len(storage_hash) != 32:
        raise DecodeError("account storage root is not 32 bytes")
    if not isinstance(code_hash, bytes) or len(code_hash) != 32:
        raise DecodeError("account code hash is not 32 bytes")
    try:
        return Account(decode_uint(nonce, 8), decode_uint(balance, 32), storage_hash, code_hash)
    except DecodeError as error:
        raise DecodeError(f"account leaf: {error}") from error


def verify_account(state_root: bytes, get_proof: GetProof) -> Account | None:
    """Check the account part of ``get_proof`` under ``state_root``.

    Returns the proven account, or ``None`` when the address is proven absent (and the
    response claims an empty account). Raises :class:`AccountMismatchError` when the proof and
    the claim differ, and whatever :func:`~light_clients.ethereum.mpt.walk_proof` raises.
    """
    return _account(state_root, get_proof)[0]


def verify_get_proof(state_root: bytes, get_proof: GetProof) -> GetProofVerdict:
    """Check the account proof and every storage proof of ``get_proof`` under ``state_root``.

    Raises :class:`AccountMismatchError` or :class:`StorageMismatchError` when a proven fact
    differs from the claim, and the trie errors of
    :func:`~light_clients.ethereum.mpt.walk_proof` (T1 zero root, T10 unused nodes,
    incomplete or non-canonical proofs).
    """
    account, account_walk = _account(state_root, get_proof)
    # An absent account has no storage: its slots can only be proven against the empty trie.
    storage_root = EMPTY_TRIE_ROOT if account is None else account.storage_hash
    slots = tuple(_slot(storage_root, entry, i) for i, entry in enumerate(get_proof.storage_proofs))
    return GetProofVerdict(
        state_root, get_proof.address, account, account_walk, storage_root, slots
    )


def _check_shape(get_proof: GetProof) -> None:
    """A GetProof built by hand (not by parse_get_proof) gets the same size checks."""
    if not isinstance(get_proof, GetProof):
        raise DecodeError(f"expected a GetProof, got {type(get_proof).__name__}")
    if not isinstance(get_proof.address, bytes) or len(get_proof.address) != 20:
        raise DecodeError("address must be 20 bytes")
    for name in ("storage_hash", "code_hash"):
        value = getattr(get_proof, name)
        if not isinstance(value, bytes) or len(value) != 32:
            raise DecodeError(f"{name} must be 32 bytes")
    for index, entry in enumerate(get_proof.storage_proofs):
        if not isinstance(entry, StorageProof):
            raise DecodeError(f"storage proof {index} is not a StorageProof")
        if not isinstance(entry.key, bytes) or len(entry.key) != 32:
            raise DecodeError(f"storage proof {index}: slot must be 32 bytes")


def _account(state_root: bytes, get_proof: GetProof) -> tuple[Account | None, MptWalk]:
    _check_shape(get_proof)
    address = f"0x{get_proof.address.hex()}"
    walk = walk_proof(state_root, keccak256(get_proof.address), get_proof.account_proof)
    if walk.value is None:
        if not _claims_nonexistent(get_proof):
            raise AccountMismatchError(
                f"account {address} is proven absent, but the response claims nonce "
                f"{get_proof.nonce}, balance {get_proof.balance}, storageHash "
                f"0x{get_proof.storage_hash.hex()}, codeHash 0x{get_proof.code_hash.hex()}"
            )
        return None, walk
    account = decode_account(walk.value)
    claimed = (
        ("nonce", get_proof.nonce, account.nonce),
        ("balance", get_proof.balance, account.balance),
        ("storageHash", get_proof.storage_hash, account.storage_hash),
        ("codeHash", get_proof.code_hash, account.code_hash),
    )
    for name, claim, proven in claimed:
        if claim != proven:
            raise AccountMismatchError(
                f"account {address}: proven {name} {_show(proven)}, claimed {_show(claim)}"
            )
    return account, walk


def _claims_nonexistent(get_proof: GetProof) -> bool:
    """An absent account must be claimed as empty, in one of the two client conventions."""
    hashes = (get_proof.storage_hash, get_proof.code_hash)
    return (
        get_proof.nonce == 0
        and get_proof.balance == 0
        and hashes in ((EMPTY_TRIE_ROOT, EMPTY_CODE_HASH), (_ZERO_HASH, _ZERO_HASH))
    )


def _slot(storage_root: bytes, entry: StorageProof, index: int) -> SlotVerdict:
    trie_key = keccak256(entry.key)
    walk = walk_proof(storage_root, trie_key, entry.proof)
    proven = 0 if walk.value is None else _storage_value(walk.value, index)
    if proven != entry.value:
        state = "absent (0)" if walk.value is None else _show(proven)
        raise StorageMismatchError(
            f"storage slot 0x{entry.key.hex()}: proven {state}, claimed {_show(entry.value)}"
        )
    return SlotVerdict(entry.key, trie_key, proven, walk)


def _storage_value(leaf: bytes, index: int) -> int:
    """A storage leaf is rlp(value) with value non-zero (zero slots are deleted)."""
    try:
        item = decode(leaf)
        value = decode_uint(item, 32)
    except DecodeError as error:
        raise DecodeError(f"storageProof[{index}] leaf is not rlp(uint256): {error}") from error
    if value == 0:
        raise DecodeError(f"storageProof[{index}] leaf stores zero; zero slots are never stored")
    return value


def _show(value: bytes | int) -> str:
    return f"0x{value.hex()}" if isinstance(value, bytes) else str(value)
