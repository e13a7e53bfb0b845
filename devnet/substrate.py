"""The devnet's Asset Hub side: the committee's multisig and what it owns there.

:func:`setup_asset_hub` runs once per fresh chopsticks (``passerelle devnet up``). Through the
Substrate adapter (:class:`adapters.substrate.SubstrateClient` and the multisig flow), the
committee's multisig account itself creates, in one ``Utility.batch_all``:

- one Uniques collection per EVM origin domain: the replay guard of deliveries from that origin
  (item = message nonce, so a second delivery of the same message fails on chain);
- one Assets asset, the wrapped token (min balance 1).

The multisig is therefore owner, issuer, admin and freezer of all of them. If anybody else
owned a collection they could ``set_team`` and mint item N first, jamming delivery N
(``docs/substrate-devnet.md``, "The replay guard"). Two attesters approve the batch: the first
opens the operation with ``approve_as_multi``, the second executes it with ``as_multi``.

The attesters' sr25519 accounts, the client's and the multisig must already be funded: the
devnet does it with chopsticks' ``import-storage`` at start (fees are paid by the signers,
the collections' and the asset's deposits by the multisig).

The guard collections are then made *free holding* (:func:`grant_free_holding`): a guard item
reserves no deposit. Otherwise every delivered message would lock ``Uniques.InstanceDeposit``
(0.01 ROC on this runtime) of the multisig's balance for good — guard items are never burned —
so anyone sending cheap messages on an EVM origin could drain the multisig until every mint,
and with it every delivery, fails; and each mint would cost the block builder a
``Balances.Reserved`` event and two more storage reads (a fifth of a full delivery block's
reads, measured in docs/performance.md, session 8). The replay guard is the item's existence,
which free holding does not touch. On a real Asset Hub only ``ForceOrigin`` (Root, i.e.
governance) may set it, with ``Uniques.force_asset_status(…, free_holding: true, …)``; the
devnet, which has no Root origin, writes the same field with chopsticks' ``dev_setStorage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from substrateinterface import Keypair

from adapters.substrate import (
    AdapterError,
    SubstrateClient,
    approve,
    execute,
    executed_ok,
    multisig_account,
)
from adapters.substrate.client import account_bytes, blake2_128_concat
from adapters.substrate.client import keypair_from_seed as client_keypair_from_seed
from adapters.substrate.finality import storage_key
from light_clients.hexstr import to_hex

__all__ = [
    "ASSET_ID",
    "CLASS_DETAILS_SIZE",
    "SubstrateSetupError",
    "class_key",
    "collection_id",
    "free_holding_details",
    "grant_free_holding",
    "keypair_from_seed",
    "setup_asset_hub",
]

ASSET_ID = 1
"""The wrapped token's ``Assets`` id on the devnet's Asset Hub."""


class SubstrateSetupError(RuntimeError):
    """Setting up Asset Hub failed; ``str()`` is one line saying why."""


def collection_id(origin_domain: int) -> int:
    """The Uniques collection guarding deliveries from ``origin_domain``: the domain itself."""
    return origin_domain


def keypair_from_seed(seed: bytes) -> Keypair:
    """The sr25519 keypair of a 32-byte mini-secret seed (an attester's Substrate identity)."""
    try:
        return client_keypair_from_seed(seed)
    except ValueError as error:
        raise SubstrateSetupError(str(error)) from None


CLASS_DETAILS_SIZE = 158
"""SCALE size of pallet_uniques' ``ClassDetails`` on this runtime (statemine spec 900): owner,
issuer, admin and freezer (32 bytes each), ``total_deposit`` (u128), ``free_holding`` (bool),
``instances``, ``instance_metadatas`` and ``attributes`` (u32 each), ``is_frozen`` (bool)."""

_FREE_HOLDING_AT = 4 * 32 + 16
"""Offset of ``free_holding`` in :data:`CLASS_DETAILS_SIZE` bytes of ``ClassDetails``."""


def class_key(class_id: int) -> bytes:
    """The storage key of ``Uniques.Class(class_id)``: ``twox128("Uniques") ‖ twox128("Class")
    ‖ blake2_128concat(class_id as u32)``."""
    if not 0 <= class_id < 2**32:
        raise SubstrateSetupError(f"collection id {class_id} is not a u32")
    encoded = class_id.to_bytes(4, "little")
    return storage_key("Uniques", "Class") + blake2_128_concat(encoded)


def free_holding_details(raw: bytes, owner: bytes) -> bytes | None:
    """``raw`` ``ClassDetails`` with ``free_holding`` set, or None if it is set already.

    Refuses (SubstrateSetupError, one line) bytes that are not this runtime's
    ``ClassDetails`` of a collection wholly ``owner``'s: the devnet rewrites only what it
    created, in the layout it knows."""
    if len(raw) != CLASS_DETAILS_SIZE or raw[_FREE_HOLDING_AT] not in (0, 1):
        raise SubstrateSetupError(
            f"not a Uniques ClassDetails of this runtime ({len(raw)} bytes, "
            f"{CLASS_DETAILS_SIZE} expected)"
        )
    if any(raw[i : i + 32] != owner for i in range(0, 128, 32)):
        raise SubstrateSetupError("the collection is not wholly the multisig's")
    if raw[_FREE_HOLDING_AT]:
        return None
    return raw[:_FREE_HOLDING_AT] + b"\x01" + raw[_FREE_HOLDING_AT + 1 :]


async def grant_free_holding(
    client: SubstrateClient, class_ids: Sequence[int], owner: bytes
) -> None:
    """Make each collection of ``class_ids`` (each wholly ``owner``'s) free holding, on the
    devnet's chopsticks, as governance's ``Uniques.force_asset_status`` would on a real chain
    (why: the module docstring). Items minted before keep their deposit. Checked by reading
    the decoded entry back; SubstrateSetupError (one line) otherwise, also when a block was
    built meanwhile (run it again: a collection already free holding is not written).

    Read, write and check all happen at one pinned block, the head when it starts. Why:
    chopsticks' ``dev_setStorage`` builds no block; it pushes a layer onto the block it is
    given (the head if none) and overwrites the whole ``ClassDetails``. Unpinned, a mint
    landing between the read and the write would have its counters (``instances``,
    ``total_deposit``) clobbered by the stale bytes. Pinned, a write to a block that is no
    longer the head changes nothing the chain builds on, and the refusal says so."""
    pinned = await client.rpc("chain_getHead")
    head = _hash_arg(pinned)
    for class_id in class_ids:
        key = "0x" + class_key(class_id).hex()
        stored = await client.rpc("state_getStorage", [key, head])
        if not isinstance(stored, str) or not stored.startswith("0x"):
            raise SubstrateSetupError(f"collection {class_id} does not exist")
        try:
            raw = bytes.fromhex(stored[2:])
        except ValueError:
            raise SubstrateSetupError(f"collection {class_id}: its details are no hex") from None
        updated = free_holding_details(raw, owner)
        if updated is not None:
            await client.rpc("dev_setStorage", [[[key, "0x" + updated.hex()]], head])
        entry = await client.query(
            "Uniques", "Class", [class_id], block_hash=bytes.fromhex(head[2:])
        )
        if not isinstance(entry, dict) or entry.get("free_holding") is not True:
            raise SubstrateSetupError(f"collection {class_id} did not become free holding")
    if _hash_arg(await client.rpc("chain_getHead")) != head:
        raise SubstrateSetupError(
            "a block was built while the guard collections were made free holding: "
            "the grant may not have reached the head; run the setup again"
        )


def _hash_arg(value: Any) -> str:
    """A block hash from the node as ``0x``-hex of 32 bytes, or SubstrateSetupError."""
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        raise SubstrateSetupError(f"the node returned no block hash: {value!r:.80}")
    try:
        bytes.fromhex(value[2:])
    except ValueError:
        raise SubstrateSetupError(f"the node returned no block hash: {value!r:.80}") from None
    return value.lower()


def _owners(entry: Any) -> set[bytes]:
    """The owner/issuer/admin/freezer accounts of a ``Uniques.Class`` or ``Assets.Asset``."""
    if not isinstance(entry, dict):
        raise SubstrateSetupError(f"malformed storage entry {entry!r}")
    return {account_bytes(entry[role]) for role in ("owner", "issuer", "admin", "freezer")}


def setup_asset_hub(
    ws_url: str,
    *,
    committee_seeds: Sequence[bytes],
    threshold: int,
    evm_origins: Sequence[int],
    client_seed_uri: str = "//Alice",
    free_holding: bool = True,
) -> dict[str, object]:
    """Have the committee's multisig create the replay-guard collections and the wrapped asset.

    ``committee_seeds`` are the attesters' sr25519 seeds (32 bytes each); the multisig is
    ``threshold``-of-``len(committee_seeds)``. One collection per domain in ``evm_origins``
    (id :func:`collection_id`), made free holding unless ``free_holding`` is False
    (:func:`grant_free_holding`); the asset is :data:`ASSET_ID`. What already exists and is
    wholly the multisig's is kept (a second call changes nothing); anything owned by another
    account is an error. Returns what the config needs::

        {"genesis_hash": "0x…", "multisig": "0x…", "multisig_threshold": 2,
         "signatories": ["0x…", …], "asset_id": 1, "collections": {"1": 1, "2": 2},
         "client_uri": "//Alice"}

    Raises :class:`SubstrateSetupError` (one line) on any failure.
    """
    keypairs = [keypair_from_seed(bytes(seed)) for seed in committee_seeds]
    if len(set(evm_origins)) != len(evm_origins) or not evm_origins:
        raise SubstrateSetupError(f"need distinct EVM origin domains, got {list(evm_origins)}")
    publics = [bytes(k.public_key) for k in keypairs]
    try:
        multisig = multisig_account(publics, threshold)
        client_key = Keypair.create_from_uri(client_seed_uri)
    except ValueError as error:
        raise SubstrateSetupError(f"bad committee or client: {error}") from None
    if threshold < 2 and len(keypairs) > 1:
        raise SubstrateSetupError(f"a committee multisig needs threshold >= 2, got {threshold}")
    client_account = bytes(client_key.public_key)
    collections = {origin: collection_id(origin) for origin in evm_origins}

    async def run() -> dict[str, object]:
        async with SubstrateClient(ws_url) as client:
            genesis = await client.genesis_hash()
            for who, account in [("client", client_account)] + [
                (f"attester {i}", key) for i, key in enumerate(publics[:threshold])
            ]:
                info = await client.query("System", "Account", [to_hex(account)])
                free = info["data"]["free"] if isinstance(info, dict) else 0
                if not free:
                    raise SubstrateSetupError(f"the {who} account {to_hex(account)} has no funds")

            calls = []
            for origin, class_id in collections.items():
                existing = await client.query("Uniques", "Class", [class_id])
                if existing is None:
                    calls.append(
                        await client.compose(
                            "Uniques", "create", {"class": class_id, "admin": to_hex(multisig)}
                        )
                    )
                elif _owners(existing) != {multisig}:
                    raise SubstrateSetupError(
                        f"Uniques collection {class_id} (origin {origin}) exists and is not "
                        "wholly the multisig's: it could jam deliveries"
                    )
            existing_asset = await client.query("Assets", "Asset", [ASSET_ID])
            if existing_asset is None:
                calls.append(
                    await client.compose(
                        "Assets",
                        "create",
                        {"id": ASSET_ID, "admin": to_hex(multisig), "min_balance": 1},
                    )
                )
            elif _owners(existing_asset) != {multisig}:
                raise SubstrateSetupError(
                    f"asset {ASSET_ID} exists and is not wholly the multisig's"
                )

            if calls:
                batch = await client.compose("Utility", "batch_all", {"calls": calls})
                signers = keypairs[:threshold]
                timepoint = None
                for position, signer in enumerate(signers):
                    me = bytes(signer.public_key)
                    others = [key for key in publics if key != me]
                    if position < len(signers) - 1:
                        timepoint = await approve(
                            client, signer, others, threshold, batch, timepoint=timepoint
                        )
                        continue
                    if timepoint is None:  # threshold 1: no approvals, execute at once
                        raise SubstrateSetupError("a 1-of-n multisig is not supported")
                    done = await execute(
                        client, signer, others, threshold, batch, timepoint=timepoint
                    )
                    ok, reason = executed_ok(done)
                    if not ok:
                        raise SubstrateSetupError(f"the multisig's setup batch failed: {reason}")

            for class_id in collections.values():
                entry = await client.query("Uniques", "Class", [class_id])
                if entry is None or _owners(entry) != {multisig}:
                    raise SubstrateSetupError(f"collection {class_id} is not the multisig's")
            if free_holding:
                await grant_free_holding(client, list(collections.values()), multisig)
            asset = await client.query("Assets", "Asset", [ASSET_ID])
            if asset is None or _owners(asset) != {multisig}:
                raise SubstrateSetupError(f"asset {ASSET_ID} is not the multisig's")
            return {
                "genesis_hash": to_hex(genesis),
                "multisig": to_hex(multisig),
                "multisig_threshold": threshold,
                "signatories": [to_hex(key) for key in sorted(publics)],
                "asset_id": ASSET_ID,
                "collections": {str(origin): cid for origin, cid in collections.items()},
                "client_uri": client_seed_uri,
            }

    try:
        return trio.run(run)
    except AdapterError as error:
        text = str(error).strip()
        raise SubstrateSetupError(text.splitlines()[0] if text else "adapter error") from None
    except (KeyError, TypeError, ValueError) as error:
        raise SubstrateSetupError(
            f"unexpected answer from {ws_url}: {type(error).__name__}: {error}"
        ) from None
