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
from adapters.substrate.client import account_bytes
from adapters.substrate.client import keypair_from_seed as client_keypair_from_seed
from light_clients.hexstr import to_hex

__all__ = [
    "ASSET_ID",
    "SubstrateSetupError",
    "collection_id",
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
) -> dict[str, object]:
    """Have the committee's multisig create the replay-guard collections and the wrapped asset.

    ``committee_seeds`` are the attesters' sr25519 seeds (32 bytes each); the multisig is
    ``threshold``-of-``len(committee_seeds)``. One collection per domain in ``evm_origins``
    (id :func:`collection_id`), the asset is :data:`ASSET_ID`. What already exists and is
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
