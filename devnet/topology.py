"""What the devnet is made of: its chains and domains, its keys, its committee and finality.

``N`` anvil chains (:func:`evm_chains`, 2 by default: :data:`CHAINS`, alpha, the home of the
test token, and beta; ``up --evm-chains N`` adds delta, epsilon, … up to
:data:`MAX_EVM_CHAINS`), Rococo Asset Hub under chopsticks (:data:`ASSETHUB`) and, with
``up --pos``, a proof-of-stake chain (:data:`POS_CHAIN`: gamma, Lodestar + EthereumJS,
:mod:`devnet.pos`). anvil's public development accounts deploy (:data:`DEPLOYER_KEY`), relay
(:data:`RELAYER_KEYS`: one per ``passerelle relay --index I``; the first is
:data:`RELAYER_KEY`, the devnet's only relayer key before there were several) and send
(:data:`CLIENT_KEY`); the attesters get fresh keys on every ``up`` (:func:`attester_keys`,
:func:`substrate_seeds`).
Every key here is a throwaway that holds value nowhere.

How the EVM chains are named and numbered (:data:`NAMES`, :func:`evm_chains`): the Greek
alphabet in order from domain 1 with domain 3 left to Asset Hub (alpha 1, beta 2, gamma 4,
delta 5, epsilon 6, …), so a chain's name and domain never depend on which others run: adding
``--pos`` or more ``--evm-chains`` renames nothing, and no name or domain is ever shared. EVM
chain id ``31336 + domain`` (alpha 31337, anvil's default, beta 31338, gamma 31340, delta
31341, …): one rule for every chain, so a chain id read from a node names its domain, and no
two chains of one devnet accept one another's signed transactions (EIP-155).
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
    "DEFAULT_EVM_CHAINS",
    "DEPLOYER_KEY",
    "FINALITY",
    "MAX_EVM_CHAINS",
    "MIN_EVM_CHAINS",
    "NAMES",
    "POS_CHAIN",
    "POS_EVM_VERSION",
    "RELAYER_KEY",
    "RELAYER_KEYS",
    "SUBSTRATE_CLIENT_URI",
    "THRESHOLD",
    "ChainSpec",
    "SubstrateChainSpec",
    "attester_keys",
    "evm_chains",
    "substrate_seeds",
]


@dataclass(frozen=True)
class ChainSpec:
    """One devnet EVM chain: its name, Passerelle domain, EVM chain id and token role."""

    name: str
    domain: int
    chain_id: int
    home_token: bool


ASSETHUB_DOMAIN = 3
POS_DOMAIN = 4

NAMES: dict[int, str] = {
    1: "alpha", 2: "beta", POS_DOMAIN: "gamma", 5: "delta", 6: "epsilon", 7: "zeta",
    8: "eta", 9: "theta", 10: "iota",
}  # fmt: skip
"""The EVM chains' names by domain: the Greek alphabet in order from domain 1, with domain 3
left to Asset Hub (whose name is its own)."""

CHAIN_ID_BASE = 31336
"""EVM chain id = this + domain (alpha 31337: anvil's default chain id)."""

MIN_EVM_CHAINS = 2
DEFAULT_EVM_CHAINS = 2
MAX_EVM_CHAINS = 8
"""alpha, beta and delta…iota. Not a protocol limit: every anvil costs ~40 MB and a share of
the CPU, every pair of chains a link both ways and every origin a scan per relayer and per
attester; and a mistyped ``--evm-chains 60`` should be one line, not sixty processes."""


def _spec(domain: int) -> ChainSpec:
    return ChainSpec(NAMES[domain], domain, CHAIN_ID_BASE + domain, home_token=domain == 1)


def evm_chains(count: int = DEFAULT_EVM_CHAINS) -> tuple[ChainSpec, ...]:
    """The first ``count`` anvil chains: alpha (home of the test token), beta, delta, epsilon…

    Their domains skip 3 (Asset Hub) and 4 (gamma, :data:`POS_CHAIN`). ``ValueError`` (one
    line) when ``count`` is not an int from :data:`MIN_EVM_CHAINS` to :data:`MAX_EVM_CHAINS`.
    """
    if type(count) is not int or not MIN_EVM_CHAINS <= count <= MAX_EVM_CHAINS:
        raise ValueError(
            f"the devnet runs {MIN_EVM_CHAINS} to {MAX_EVM_CHAINS} EVM chains, not {count!r}"
        )
    domains = [domain for domain in sorted(NAMES) if domain != POS_DOMAIN]
    return tuple(_spec(domain) for domain in domains[:count])


CHAINS: tuple[ChainSpec, ...] = evm_chains()
"""The default anvil chains, alpha and beta."""


POS_CHAIN = ChainSpec(NAMES[POS_DOMAIN], POS_DOMAIN, CHAIN_ID_BASE + POS_DOMAIN, home_token=False)
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


ASSETHUB = SubstrateChainSpec("assethub", ASSETHUB_DOMAIN)

FINALITY = "confirmations:3"
"""anvil has no finality gadget; three 1-second blocks keep the demo quick while still
exercising the confirmation-depth code path (and `anvil_reorg` tests shallower than it)."""

ATTESTERS = 3
THRESHOLD = 2
DEPLOYER_KEY = parse_data(DEV_PRIVATE_KEYS[0], "dev key 0", 32)  # owns every contract
RELAYER_KEYS: tuple[bytes, ...] = tuple(
    parse_data(DEV_PRIVATE_KEYS[i], f"dev key {i}", 32) for i in (1, 3, 4, 5)
)
"""The relayers' keys, ``[[relayer.keys]]`` in the config (``passerelle relay --index I``).
anvil's development accounts 1, 3, 4 and 5: funded on every anvil and in gamma's genesis
(:data:`devnet.manager.POS_DEV_BALANCE`), so nothing has to be funded. Four, so the issue's
1-, 2- and 4-relayer runs share one devnet. None is needed on Asset Hub: a delivery there is
the committee's multisig call, sent by the attesters' sr25519 keys, never by a relayer."""
RELAYER_KEY = RELAYER_KEYS[0]  # index 0: the devnet's relayer key before there were several
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
