"""The ``[[chains]]`` section of a Substrate chain: its keys, their rules, and the rules that
tie it to the other chains (a replay-guard collection per EVM origin; ``recipients`` naming
real destinations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from light_clients.errors import VerificationError
from light_clients.substrate.grandpa import AuthoritySet
from light_clients.substrate.multisig import multisig_account
from relayer.config import (
    U32_MAX,
    U64_MAX,
    ChainConfig,
    GrandpaCheckpoint,
    SubstrateSettings,
    account,
    domain_key,
    need,
    table,
    two_thirds,
    weak_threshold,
)
from relayer.jsonfields import FieldError, as_hex, as_int, as_list, as_object

SUBSTRATE_KEYS = frozenset(
    {
        "genesis_hash",
        "multisig",
        "multisig_threshold",
        "signatories",
        "collections",
        "asset_id",
        "asset_home",
        "grandpa",
        "recipients",
        "fee_account",
        "fee_rates",
    }
)
"""A Substrate chain's own keys. No ``rpc_quorum``: it is read from its first endpoint."""
ASSET_HOME_KEYS = ("domain", "token")
GRANDPA_KEYS = ("set_id", "block_hash", "block_number", "authorities")
FEE_RATE_KEYS = ("gas_price", "exchange_rate")
U128_MAX = 2**128 - 1


def substrate_settings(obj: Mapping[str, Any], where: str, allow_weak: bool) -> SubstrateSettings:
    """The validated Substrate keys of one chain section (FieldError naming the field)."""
    return _substrate_settings(obj, where, allow_weak)


def check_config(chains: Sequence[ChainConfig]) -> None:
    """The rules of a Substrate chain's section as a whole, and between it and the others."""
    for index, chain in enumerate(chains):
        grandpa = None if chain.substrate is None else chain.substrate.grandpa
        if grandpa is not None and chain.start_block < grandpa.block_number:
            # Blocks below the checkpoint cannot be proven from it: the scan would never start.
            raise FieldError(
                f"chains[{index}].start_block {chain.start_block} is below the grandpa "
                f"checkpoint's block {grandpa.block_number}"
            )
    _check_collections(chains)
    _check_recipients(chains)


def _substrate_settings(obj: Mapping[str, Any], where: str, allow_weak: bool) -> SubstrateSettings:
    signatories = tuple(
        as_hex(s, f"{where}.signatories[{i}]", size=32)
        for i, s in enumerate(as_list(need(obj, where, "signatories"), f"{where}.signatories"))
    )
    if list(signatories) != sorted(set(signatories)):
        raise FieldError(f"{where}.signatories must be distinct and ascending")
    if not signatories:
        raise FieldError(f"{where}.signatories must not be empty")
    threshold = as_int(need(obj, where, "multisig_threshold"), f"{where}.multisig_threshold")
    # pallet_multisig's approve_as_multi refuses a threshold of 1 (nothing would be delivered).
    if not 2 <= threshold <= len(signatories):
        raise FieldError(f"{where}.multisig_threshold must be in 2..{len(signatories)}")
    # The multisig mints and releases on the destination: the same bar as the committee.
    if not allow_weak and not two_thirds(threshold, len(signatories)):
        raise weak_threshold(f"{where}.multisig_threshold", threshold, len(signatories))
    multisig = as_hex(need(obj, where, "multisig"), f"{where}.multisig", size=32)
    if multisig != multisig_account(signatories, threshold):
        raise FieldError(
            f"{where}.multisig is not the {threshold}-of-{len(signatories)} multisig of "
            "the signatories"
        )
    collections_obj = as_object(obj.get("collections", {}), f"{where}.collections")
    collections: dict[int, int] = {}
    for origin, collection in collections_obj.items():
        domain = domain_key(origin, f"{where}.collections")
        collections[domain] = as_int(collection, f"{where}.collections.{origin}", hi=U32_MAX)
    if len(set(collections.values())) != len(collections):
        raise FieldError(
            f"{where}.collections: two origins share a collection (nonces would collide)"
        )
    home = obj.get("asset_home")
    home_obj = None if home is None else table(home, f"{where}.asset_home", ASSET_HOME_KEYS)
    asset_id = obj.get("asset_id")
    if (home_obj is None) != (asset_id is None):
        raise FieldError(f"{where}: asset_id and asset_home go together")
    if obj.get("finality") == "beacon":
        raise FieldError(f'{where}.finality "beacon" is for proof-of-stake Ethereum chains')
    grandpa = obj.get("grandpa")
    if grandpa is not None and obj.get("finality") != "finalized":
        raise FieldError(f'{where}.grandpa needs finality = "finalized"')
    return SubstrateSettings(
        grandpa=None if grandpa is None else _grandpa(grandpa, where),
        genesis_hash=as_hex(need(obj, where, "genesis_hash"), f"{where}.genesis_hash", size=32),
        multisig=multisig,
        multisig_threshold=threshold,
        signatories=signatories,
        collections=collections,
        asset_id=None if asset_id is None else as_int(asset_id, f"{where}.asset_id", hi=U32_MAX),
        asset_home_domain=None
        if home_obj is None
        else as_int(
            need(home_obj, f"{where}.asset_home", "domain"),
            f"{where}.asset_home.domain",
            hi=U32_MAX,
        ),
        asset_home_token=None
        if home_obj is None
        else as_hex(
            need(home_obj, f"{where}.asset_home", "token"), f"{where}.asset_home.token", size=20
        ),
        recipients=None if "recipients" not in obj else _recipients(obj["recipients"], where),
        **_fees(obj, where),
    )


def _fees(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``fee_account`` and ``fee_rates`` (together or neither): where senders pay and what
    delivery costs from here, per destination. A zero price or rate is refused, as the
    Paymaster refuses it: it would make a paid route free."""
    if ("fee_account" in obj) != ("fee_rates" in obj):
        raise FieldError(f"{where}: fee_account and fee_rates go together")
    if "fee_account" not in obj:
        return {}
    account_ = as_hex(obj["fee_account"], f"{where}.fee_account", size=32)
    if account_ == bytes(32):
        raise FieldError(f"{where}.fee_account must not be zero")
    rates: dict[int, tuple[int, int]] = {}
    for domain, value in as_object(obj["fee_rates"], f"{where}.fee_rates").items():
        name = f"{where}.fee_rates.{domain}"
        rate = table(value, name, FEE_RATE_KEYS)
        rates[domain_key(domain, f"{where}.fee_rates")] = (
            as_int(need(rate, name, "gas_price"), f"{name}.gas_price", lo=1, hi=U128_MAX),
            as_int(need(rate, name, "exchange_rate"), f"{name}.exchange_rate", lo=1, hi=U128_MAX),
        )
    if not rates:
        raise FieldError(f"{where}.fee_rates is empty (nothing could be paid for)")
    return {"fee_account": account_, "fee_rates": rates}


def _recipients(value: Any, where: str) -> Mapping[int, frozenset[bytes]]:
    table = as_object(value, f"{where}.recipients")
    return {
        domain_key(domain, f"{where}.recipients"): frozenset(
            account(item, f"{where}.recipients.{domain}[{i}]")
            for i, item in enumerate(as_list(items, f"{where}.recipients.{domain}"))
        )
        for domain, items in table.items()
    }


def _grandpa(value: Any, where: str) -> GrandpaCheckpoint:
    obj = table(value, f"{where}.grandpa", GRANDPA_KEYS)
    authorities: list[tuple[bytes, int]] = []
    entries = as_list(need(obj, f"{where}.grandpa", "authorities"), f"{where}.grandpa.authorities")
    for i, entry in enumerate(entries):
        name = f"{where}.grandpa.authorities[{i}]"
        if isinstance(entry, list) and len(entry) == 2:  # ["0x…", weight]
            authorities.append((as_hex(entry[0], name, size=32), as_int(entry[1], name, lo=1)))
        else:
            authorities.append((as_hex(entry, name, size=32), 1))
    if not authorities:
        raise FieldError(f"{where}.grandpa.authorities must not be empty")
    checkpoint = GrandpaCheckpoint(
        set_id=as_int(
            need(obj, f"{where}.grandpa", "set_id"), f"{where}.grandpa.set_id", hi=U64_MAX
        ),
        block_hash=as_hex(
            need(obj, f"{where}.grandpa", "block_hash"), f"{where}.grandpa.block_hash", size=32
        ),
        block_number=as_int(
            need(obj, f"{where}.grandpa", "block_number"), f"{where}.grandpa.block_number"
        ),
        authorities=tuple(authorities),
    )
    try:  # the light client's own rules (distinct keys, weights and total within u64)
        AuthoritySet(checkpoint.set_id, checkpoint.authorities)
    except VerificationError as exc:
        raise FieldError(f"{where}.grandpa.authorities: {exc}") from None
    return checkpoint


def _check_collections(chains: Sequence[ChainConfig]) -> None:
    """Every origin of another family needs a replay-guard collection on every Substrate
    chain: a message from an origin without one could never be delivered there. (Substrate →
    Substrate is no route: :func:`relayer.config.allowed_recipients` gives it no recipients.)"""
    for index, chain in enumerate(chains):
        if chain.substrate is None:
            continue
        for origin in chains:
            if (
                origin.is_origin
                and origin.substrate is None
                and (origin.domain not in chain.substrate.collections)
            ):
                raise FieldError(
                    f"chains[{index}].collections: no Uniques collection for origin "
                    f"{origin.name} ({origin.domain})"
                )


def _check_recipients(chains: Sequence[ChainConfig]) -> None:
    """An explicit ``recipients`` table names destinations: each must be another configured
    destination (a typo would otherwise silently leave the real one with no recipients)."""
    for index, chain in enumerate(chains):
        if chain.substrate is None or chain.substrate.recipients is None:
            continue
        for domain in chain.substrate.recipients:
            if not any(c.domain == domain and c.is_destination for c in chains if c is not chain):
                raise FieldError(
                    f"chains[{index}].recipients: domain {domain} is not another configured "
                    "destination"
                )
