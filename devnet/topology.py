"""What the devnet is made of: its chains and domains, its keys, its committee and finality.

Two anvil chains (:data:`CHAINS`: alpha, the home of the test token, and beta), Rococo
Asset Hub under chopsticks (:data:`ASSETHUB`) and, with ``up --pos``, a proof-of-stake chain
(:data:`POS_CHAIN`: gamma, Lodestar + EthereumJS, :mod:`devnet.pos`). anvil's public
development accounts deploy (:data:`DEPLOYER_KEY`), relay (:data:`RELAYER_KEY`) and send
(:data:`CLIENT_KEY`); the attesters get fresh keys on every ``up`` (:func:`attester_keys`,
:func:`substrate_seeds`).
Every key here is a throwaway that holds value nowhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from devnet.anvil import DEV_PRIVATE_KEYS
from light_clients.committee import SECP256K1_N, address_of
from light_clients.hexstr import parse_data

__all__ = [
    "ASSETHUB",
    "ATTESTERS",
    "CHAINS",
    "CLIENT_KEY",
    "DEPLOYER_KEY",
    "FINALITY",
    "POS_CHAIN",
    "POS_EVM_VERSION",
    "RELAYER_KEY",
    "SUBSTRATE_CLIENT_URI",
    "THRESHOLD",
    "ChainSpec",
    "SubstrateChainSpec",
    "attester_keys",
    "substrate_seeds",
]


@dataclass(frozen=True)
class ChainSpec:
    """One devnet EVM chain: its name, Passerelle domain, EVM chain id and token role."""

    name: str
    domain: int
    chain_id: int
    home_token: bool


CHAINS: tuple[ChainSpec, ...] = (
    ChainSpec("alpha", 1, 31337, home_token=True),
    ChainSpec("beta", 2, 31338, home_token=False),
)
"""The anvil chains (``ports`` of :func:`devnet.manager.up` gives one port per entry)."""


POS_CHAIN = ChainSpec("gamma", 4, 31340, home_token=False)
"""The proof-of-stake chain (``up --pos``): a wrapped-token chain like beta, linked both ways
with every other chain. Its finality policy is :data:`devnet.pos.FINALITY_POLICY`."""

POS_EVM_VERSION = "shanghai"
"""What gamma executes: Lodestar 1.5.1 stops at Capella, whose execution fork is Shanghai (no
transient storage, no MCOPY), so its contracts are the shanghai artifacts."""


@dataclass(frozen=True)
class SubstrateChainSpec:
    """The devnet's Substrate chain: chopsticks running Rococo Asset Hub."""

    name: str
    domain: int


ASSETHUB = SubstrateChainSpec("assethub", 3)

FINALITY = "confirmations:3"
"""anvil has no finality gadget; three 1-second blocks keep the demo quick while still
exercising the confirmation-depth code path (and `anvil_reorg` tests shallower than it)."""

ATTESTERS = 3
THRESHOLD = 2
DEPLOYER_KEY = parse_data(DEV_PRIVATE_KEYS[0], "dev key 0", 32)  # owns every contract
RELAYER_KEY = parse_data(DEV_PRIVATE_KEYS[1], "dev key 1", 32)
CLIENT_KEY = parse_data(DEV_PRIVATE_KEYS[2], "dev key 2", 32)  # `passerelle send`; holds tokens
SUBSTRATE_CLIENT_URI = "//Alice"  # `passerelle send` on assethub


def attester_keys() -> list[bytes]:
    """Fresh random secp256k1 keys, ordered by address so attester i is committee member i."""
    keys: list[bytes] = []
    while len(keys) < ATTESTERS:
        key = secrets.token_bytes(32)
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:  # all but ~2^-128 of draws
            keys.append(key)
    return sorted(keys, key=address_of)


def substrate_seeds() -> list[bytes]:
    """Fresh sr25519 seeds for the attesters' Substrate identities (not their EVM keys)."""
    return [secrets.token_bytes(32) for _ in range(ATTESTERS)]
