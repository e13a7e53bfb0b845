"""The light-client store as JSON, so an attester can stop and resume where it was.

:func:`store_to_json` writes the beacon API's own encoding (decimal strings, ``0x`` hex; the
headers and committees exactly as ``/light_client/*`` serve them); :func:`store_from_json`
reads it back through the same strict parsers and re-runs every check the store's contents
can still be checked by: each header's fork, shape and execution branch (so the finalized
execution state root is the one in the finalized beacon block), the committee size of the
preset, every key a curve point, the optimistic header not behind the finalized one, the
participation counters within the committee. A file for another chain (genesis validators
root) or preset is :class:`StoreConfigMismatch`. The fork schedule is not recorded: the
caller's config decides it, so scheduling a new fork needs no migration.

What a file cannot prove is that its sync committees are the chain's: the spec's store keeps
no branch for them (they were proven once, by the bootstrap or an update's branch and
signature). Whoever can write the file can therefore swap in keys of their own and then sign
anything; keep it where only the attester writes, as trusted as the checkpoint itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from light_clients.beacon.config import BeaconConfig, LightClientError
from light_clients.beacon.sync import LightClientStore, SlotOrderError, check_header
from light_clients.beacon.types import (
    LightClientHeader,
    MalformedBeaconData,
    _bytes,
    _light_client_header,
    _object,
    _sync_committee,
    _uint,
    header_to_json,
    sync_committee_to_json,
)
from light_clients.hexstr import to_hex

__all__ = ["StoreConfigMismatch", "store_from_json", "store_to_json"]

_STORE_KEYS = (
    "preset",
    "genesis_validators_root",
    "finalized_header",
    "optimistic_header",
    "current_sync_committee",
    "next_sync_committee",
    "previous_max_active_participants",
    "current_max_active_participants",
)


class StoreConfigMismatch(LightClientError):
    """A persisted store of another chain (genesis validators root) or preset."""


def store_to_json(store: LightClientStore) -> dict[str, Any]:
    """The store as a JSON object (``json.dumps``-ready); :func:`store_from_json` inverts it."""
    next_committee = store.next_sync_committee
    return {
        "preset": store.config.preset.name,
        "genesis_validators_root": to_hex(store.config.genesis_validators_root),
        "finalized_header": header_to_json(store.finalized_header),
        "optimistic_header": header_to_json(store.optimistic_header),
        "current_sync_committee": sync_committee_to_json(store.current_sync_committee),
        "next_sync_committee": (
            None if next_committee is None else sync_committee_to_json(next_committee)
        ),
        "previous_max_active_participants": str(store.previous_max_active_participants),
        "current_max_active_participants": str(store.current_max_active_participants),
    }


def _header(value: object, what: str, config: BeaconConfig) -> LightClientHeader:
    header, _ = _light_client_header(value, what, config)
    check_header(config, header, what)
    return header


def store_from_json(obj: object, config: BeaconConfig) -> LightClientStore:
    """Read a store written by :func:`store_to_json` for the chain ``config`` describes.

    Raises :class:`~light_clients.beacon.types.MalformedBeaconData` for a file of the wrong
    shape, :class:`StoreConfigMismatch` for another chain's, and the light client's own
    errors (:class:`~light_clients.beacon.config.UnsupportedFork`,
    :class:`~light_clients.beacon.sync.InvalidExecutionBranch`, ...) for contents that do not
    hold together.
    """
    what = "store"
    data = _object(obj, what, _STORE_KEYS)
    preset = data["preset"]
    if preset != config.preset.name:
        raise StoreConfigMismatch(
            f"store is for the {preset!r:.20} preset, the chain uses {config.preset.name}"
        )
    root = _bytes(data["genesis_validators_root"], f"{what}.genesis_validators_root", 32)
    if root != config.genesis_validators_root:
        raise StoreConfigMismatch(
            f"store is for genesis validators root {to_hex(root)}, the chain's is "
            f"{to_hex(config.genesis_validators_root)}"
        )
    finalized = _header(data["finalized_header"], f"{what}.finalized_header", config)
    optimistic = _header(data["optimistic_header"], f"{what}.optimistic_header", config)
    if optimistic.beacon.slot < finalized.beacon.slot:
        raise SlotOrderError(
            f"store optimistic slot {optimistic.beacon.slot} is before its finalized slot "
            f"{finalized.beacon.slot}"
        )
    size = config.preset.sync_committee_size
    raw_next = data["next_sync_committee"]
    return LightClientStore(
        config=config,
        finalized_header=finalized,
        optimistic_header=optimistic,
        current_sync_committee=_sync_committee(
            data["current_sync_committee"], f"{what}.current_sync_committee", config
        ),
        next_sync_committee=(
            None
            if raw_next is None
            else _sync_committee(raw_next, f"{what}.next_sync_committee", config)
        ),
        previous_max_active_participants=_participants(data, "previous", size),
        current_max_active_participants=_participants(data, "current", size),
    )


def _participants(data: Mapping[str, Any], which: str, size: int) -> int:
    """A participation high-water mark: at most the whole committee."""
    key = f"{which}_max_active_participants"
    count = _uint(data[key], f"store.{key}")
    if count > size:
        raise MalformedBeaconData(f"store.{key} {count} exceeds the committee size {size}")
    return count
