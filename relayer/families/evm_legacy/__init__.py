"""The ``evm-legacy`` family: EVM chains that do not price gas the EIP-1559 way.

BNB Smart Chain, many sidechains, appchains and older L2 stacks take type-0 transactions with a
single ``gasPrice`` and either have no ``baseFeePerGas`` or ignore it; their public endpoints
also tend to cap ``eth_getLogs`` to a few hundred blocks. Everything else — the contracts, the
proofs, the reconciliation of logs with the outbox's proven storage — is the EVM family's, so
this family is that one with two parameters changed: ``legacy`` fees on every transaction the
relayer and ``send`` make, and at most :data:`LOG_RANGE` blocks per ``eth_getLogs`` unless the
chain's ``max_log_range`` says otherwise.

It is the third implementation behind :mod:`relayer.family` (docs/adding-a-chain.md tells how it
was added: this file and one line of the registry).
"""

from __future__ import annotations

from relayer.families.evm import EvmFamily
from relayer.family import ChainFamily

LOG_RANGE = 500
"""Blocks per ``eth_getLogs`` by default: what the strictest public endpoints of such chains
accept (several cap at 500 or 1,000 blocks; 5,000 is common)."""

FAMILY: ChainFamily = EvmFamily(
    "evm-legacy",
    fee_model="legacy",
    max_log_range=LOG_RANGE,
)
