"""The Substrate adapter: py-substrate-interface behind a trio API, and the multisig flow.

- :mod:`.client` — :class:`SubstrateClient`: headers checked by the light client, events,
  ``PSRL`` remarks joined with their events, extrinsic submission (nonces, fees, inclusion).
  Every substrate-interface call goes through one process-wide worker slot
  (:data:`SUBSTRATE_LIMITER`): the library is not thread-safe.
- :mod:`.multisig` — the committee's ``pallet_multisig`` account and its
  ``approve_as_multi``/``as_multi`` flow, and reading whether the executed call succeeded.

The outbox rules a remark must pass live in :mod:`light_clients.substrate.remark`.
"""

from adapters.errors import AdapterError
from adapters.substrate.client import (
    SUBSTRATE_LIMITER,
    Call,
    Fee,
    Included,
    RemarkSeen,
    Submitted,
    SubstrateClient,
    SubstrateEvent,
)
from adapters.substrate.multisig import (
    OpenOperation,
    Timepoint,
    approve,
    execute,
    executed_ok,
    multisig_account,
    open_operation,
    pending,
)

__all__ = [
    "SUBSTRATE_LIMITER",
    "AdapterError",
    "Call",
    "Fee",
    "Included",
    "OpenOperation",
    "RemarkSeen",
    "Submitted",
    "SubstrateClient",
    "SubstrateEvent",
    "Timepoint",
    "approve",
    "execute",
    "executed_ok",
    "multisig_account",
    "open_operation",
    "pending",
]
