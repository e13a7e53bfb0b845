"""Ethereum's beacon-chain sync-committee light client (Altair rules, Capella headers).

Start from a weak-subjectivity checkpoint (a trusted block root) with :func:`bootstrap`, then
follow the sync committee with :func:`process_update` (one per period),
:func:`process_finality_update` and :func:`process_optimistic_update`. The finalized
execution payload header, with its state root, is ``store.finalized_header.execution``.

- ``types``: the light-client objects, parsed strictly from the beacon API's JSON;
- ``ssz``: the SSZ merkleization they need and the consensus spec's branch check;
- ``bls``: BLS12-381 keys, signatures and ``FastAggregateVerify`` through pyblst (blst);
- ``sync``: bootstrap and the update rules.
"""

from __future__ import annotations

from light_clients.beacon.sync import (
    MAINNET,
    BeaconConfig,
    BootstrapMismatch,
    ConflictingSyncCommittee,
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
    parse_optimistic_update,
    parse_update,
)

__all__ = [
    "MAINNET",
    "BeaconConfig",
    "BootstrapMismatch",
    "ConflictingSyncCommittee",
    "InsufficientParticipation",
    "InvalidExecutionBranch",
    "InvalidFinalityBranch",
    "InvalidSyncCommitteeBranch",
    "InvalidSyncCommitteeSignature",
    "IrrelevantUpdate",
    "LightClientError",
    "LightClientStore",
    "MalformedBeaconData",
    "SlotOrderError",
    "UnsupportedFork",
    "UpdateOutcome",
    "WrongSyncCommitteePeriod",
    "bootstrap",
    "parse_bootstrap",
    "parse_finality_update",
    "parse_optimistic_update",
    "parse_update",
    "process_finality_update",
    "process_optimistic_update",
    "process_update",
]
