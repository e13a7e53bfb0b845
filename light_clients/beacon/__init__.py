"""Ethereum's beacon-chain sync-committee light client (Altair rules; Capella, Deneb and
Electra headers; mainnet or minimal preset).

Describe the chain with a :class:`BeaconConfig` (:data:`MAINNET`, or
:meth:`BeaconConfig.from_schedule` for a preset, genesis validators root and fork schedule)
and pass it to the parsers. Start from a weak-subjectivity checkpoint (a trusted block root)
with :func:`bootstrap`, then follow the sync committee with :func:`process_update` (one per
period), :func:`process_finality_update` and :func:`process_optimistic_update`. The finalized
execution payload header, with its state root, is ``store.finalized_header.execution``.
:func:`store_to_json` / :func:`store_from_json` persist the store between runs.

- ``config``: presets, fork schedule, which fork's shapes and domain apply at a slot;
- ``types``: the light-client objects, parsed strictly from the beacon API's JSON;
- ``ssz``: the SSZ merkleization they need and the consensus spec's branch check;
- ``bls``: BLS12-381 keys, signatures and ``FastAggregateVerify`` through pyblst (blst);
- ``sync``: bootstrap and the update rules;
- ``store``: the store as JSON, re-checked when read back.
"""

from __future__ import annotations

from light_clients.beacon.config import (
    MAINNET,
    MAINNET_PRESET,
    MINIMAL_PRESET,
    PRESETS,
    BeaconConfig,
    Fork,
    InvalidBeaconConfig,
    Preset,
)
from light_clients.beacon.store import StoreConfigMismatch, store_from_json, store_to_json
from light_clients.beacon.sync import (
    BootstrapMismatch,
    ConflictingSyncCommittee,
    ForkMismatch,
    InsufficientParticipation,
    InvalidExecutionBranch,
    InvalidFinalityBranch,
    InvalidSyncCommitteeBranch,
    InvalidSyncCommitteeSignature,
    IrrelevantUpdate,
    LightClientError,
    LightClientStore,
    SlotOrderError,
    UnsupportedFork,
    UpdateOutcome,
    WrongSyncCommitteePeriod,
    bootstrap,
    process_finality_update,
    process_optimistic_update,
    process_update,
)
from light_clients.beacon.types import (
    MalformedBeaconData,
    parse_bootstrap,
    parse_finality_update,
    parse_header,
    parse_optimistic_update,
    parse_sync_committee,
    parse_update,
)

__all__ = [
    "MAINNET",
    "MAINNET_PRESET",
    "MINIMAL_PRESET",
    "PRESETS",
    "BeaconConfig",
    "BootstrapMismatch",
    "ConflictingSyncCommittee",
    "Fork",
    "ForkMismatch",
    "InsufficientParticipation",
    "InvalidBeaconConfig",
    "InvalidExecutionBranch",
    "InvalidFinalityBranch",
    "InvalidSyncCommitteeBranch",
    "InvalidSyncCommitteeSignature",
    "IrrelevantUpdate",
    "LightClientError",
    "LightClientStore",
    "MalformedBeaconData",
    "Preset",
    "SlotOrderError",
    "StoreConfigMismatch",
    "UnsupportedFork",
    "UpdateOutcome",
    "WrongSyncCommitteePeriod",
    "bootstrap",
    "parse_bootstrap",
    "parse_finality_update",
    "parse_header",
    "parse_optimistic_update",
    "parse_sync_committee",
    "parse_update",
    "process_finality_update",
    "process_optimistic_update",
    "process_update",
    "store_from_json",
    "store_to_json",
]
