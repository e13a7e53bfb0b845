"""The ``passerelle.toml`` that ``passerelle devnet up`` hands out: :func:`render_config`.

The file follows the schema of :mod:`relayer.config` (``devnet = true``) and is loaded with
:func:`relayer.config.load_config` before ``up`` returns, so it is always one the relayer
accepts. Addresses are written EIP-55 checksummed so they can be pasted into any wallet or
explorer; every key in it is a devnet throwaway (:mod:`devnet.topology`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from web3 import Web3

from devnet.chopsticks import FINALITY_POLICY
from devnet.pos import FINALITY_POLICY as POS_FINALITY_POLICY
from devnet.pos import BeaconInfo
from devnet.records import CHECKPOINT_DIR, LEDGER_FILE
from devnet.topology import (
    ASSETHUB,
    CLIENT_KEY,
    FINALITY,
    RELAYER_KEYS,
    SUBSTRATE_CLIENT_URI,
    THRESHOLD,
    ChainSpec,
)
from light_clients.hexstr import to_hex

__all__ = ["CONTRACT_KEYS", "PosSection", "render_config"]

CONTRACT_KEYS = ("outbox", "inbox", "ping", "token_bridge", "token", "wrapped_token", "paymaster")
"""The contract addresses an EVM chain's table lists, in this order, when deployed."""


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for the ASCII values written here.
    return json.dumps(value)


def _checksum(address: bytes) -> str:
    return str(Web3.to_checksum_address(address))


@dataclass(frozen=True)
class PosSection:
    """The proof-of-stake chain as the config names it: its EVM part like any chain's, and the
    ``[chains.beacon]`` table its attesters' light client starts from."""

    spec: ChainSpec
    rpc: str
    contracts: dict[str, bytes]
    beacon_api: str
    checkpoint: str  # 0x block root of a finalized block whose bootstrap the node serves
    beacon: BeaconInfo
    store: str  # absolute folder of the attesters' light-client store


def _evm_chain(
    spec: ChainSpec, rpc: str, contracts: dict[str, bytes], finality: str = FINALITY
) -> list[str]:
    lines = [
        "",
        "[[chains]]",
        f"name = {_toml_string(spec.name)}",
        f"domain = {spec.domain}",
        'kind = "evm"',
        f"rpc = [{_toml_string(rpc)}]",
        f"chain_id = {spec.chain_id}",
        f"finality = {_toml_string(finality)}",
        "start_block = 0",
    ]
    lines += [
        f"{key} = {_toml_string(_checksum(contracts[key]))}"
        for key in CONTRACT_KEYS
        if key in contracts
    ]
    return lines


def _pos_chain(pos: PosSection) -> list[str]:
    """gamma's tables: the EVM chain with ``finality = "beacon"``, then ``[chains.beacon]``."""
    forks = ", ".join(
        f"{name} = [{_toml_string(version)}, {epoch}]"
        for name, (version, epoch) in pos.beacon.forks.items()
    )
    return [
        "",
        "# Proof of stake (Lodestar + EthereumJS): the attesters follow the beacon chain's sync",
        "# committee from the checkpoint below and prove state under its finalized execution",
        "# state root; they never ask the execution RPC which block is final.",
        *_evm_chain(pos.spec, pos.rpc, pos.contracts, POS_FINALITY_POLICY)[1:],
        "",
        "[chains.beacon]",
        f"api = [{_toml_string(pos.beacon_api)}]",
        "# A finalized block root taken from this chain's own bootstrap when `up` ran: trust on",
        "# first use of the devnet's own node (an operator takes a checkpoint from a source",
        "# independent of the beacon API the light client then reads).",
        f"checkpoint = {_toml_string(pos.checkpoint)}",
        f"preset = {_toml_string(pos.beacon.preset)}",
        f"genesis_validators_root = {_toml_string(pos.beacon.genesis_validators_root)}",
        f"genesis_time = {pos.beacon.genesis_time}",
        f"seconds_per_slot = {pos.beacon.seconds_per_slot}",
        f"forks = {{ {forks} }}",
        f"store = {_toml_string(pos.store)}",
    ]


def _assethub_chain(rpc: str, setup: dict[str, object], home: tuple[int, bytes]) -> list[str]:
    collections = setup["collections"]
    signatories = setup["signatories"]
    if not isinstance(collections, dict) or not isinstance(signatories, list):
        raise TypeError("setup_asset_hub's collections / signatories have the wrong shape")
    return [
        "",
        "# chopsticks (Rococo Asset Hub): every block is final once built, no GRANDPA",
        "# justifications and no read proofs; the finality policy says so.",
        "[[chains]]",
        f"name = {_toml_string(ASSETHUB.name)}",
        f"domain = {ASSETHUB.domain}",
        'kind = "substrate"',
        f"rpc = [{_toml_string(rpc)}]",
        f"finality = {_toml_string(FINALITY_POLICY)}",
        f"genesis_hash = {_toml_string(str(setup['genesis_hash']))}",
        "# The committee's multisig (of the attesters' substrate_key accounts): owner, issuer",
        "# and admin of the replay-guard collections (item = nonce) and the wrapped asset.",
        f"multisig = {_toml_string(str(setup['multisig']))}",
        f"multisig_threshold = {int(str(setup['multisig_threshold']))}",
        "signatories = ["
        + ", ".join(_toml_string(str(s)) for s in signatories)
        + "]  # the attesters' substrate_key accounts",
        "collections = { "
        + ", ".join(
            f"{_toml_string(str(origin))} = {int(str(cid))}" for origin, cid in collections.items()
        )
        + " }  # EVM origin domain -> Uniques collection",
        f"asset_id = {int(str(setup['asset_id']))}",
        "asset_home = { "
        + f"domain = {home[0]}, "
        + f"token = {_toml_string(_checksum(home[1]))}"
        + " }  # the EVM token the asset wraps",
    ]


def render_config(
    chains: Sequence[tuple[ChainSpec, str, dict[str, bytes]]],
    validators: Sequence[bytes],
    attester_keys: Sequence[bytes],
    substrate_seeds: Sequence[bytes] | None = None,
    assethub: tuple[str, dict[str, object]] | None = None,
    *,
    pos: PosSection | None = None,
    ledger: str = LEDGER_FILE,
    checkpoint_store: str = CHECKPOINT_DIR,
    relayer_keys: Sequence[bytes] = RELAYER_KEYS,
) -> str:
    """The config text for EVM ``chains`` ((spec, RPC URL, deployed addresses by
    :data:`CONTRACT_KEYS`), the home-token chain first), the committee (``validators``, their
    ``attester_keys`` in the same order, and the attesters' sr25519 ``substrate_seeds`` when
    Asset Hub runs) and ``assethub`` ((ws URL, what :func:`devnet.substrate.setup_asset_hub`
    returned), or None for the anvil-only devnet) and ``pos`` (the proof-of-stake chain, or
    None without ``--pos``). ``ledger`` and ``checkpoint_store`` are the ``[ledger]
    location`` and ``[committee] checkpoint_store`` (files beside the config, or database URLs
    with ``up --postgres``); ``relayer_keys`` become ``[relayer] keys``, one per ``passerelle
    relay --index I``."""
    lines = [
        "# Written by `passerelle devnet up`. Devnet only: every key below is a throwaway",
        "# (anvil's public development accounts, //Alice, and attester keys made for this run).",
        "devnet = true",
        "",
        "[ledger]",
        f"location = {_toml_string(ledger)}",
        "",
        "[committee]",
        "validators = [" + ", ".join(_toml_string(_checksum(v)) for v in validators) + "]",
        f"threshold = {THRESHOLD}",
        f"checkpoint_store = {_toml_string(checkpoint_store)}",
    ]
    for spec, rpc, contracts in chains:
        lines += _evm_chain(spec, rpc, contracts)
    if pos is not None:
        lines += _pos_chain(pos)
    if assethub is not None:
        lines += _assethub_chain(*assethub, home=(chains[0][0].domain, chains[0][2]["token"]))
    lines += [
        "",
        "[relayer]",
        "# One key per relayer process: `passerelle relay --index I` (without it: the first).",
        "keys = [",
        *(f"    {{ key = {_toml_string(to_hex(key))} }}," for key in relayer_keys),
        "]",
    ]
    seeds: Sequence[bytes | None] = (
        [None] * len(attester_keys) if substrate_seeds is None else substrate_seeds
    )
    for attester_key, seed in zip(attester_keys, seeds, strict=True):
        lines += ["", "[[attesters]]", f"key = {_toml_string(to_hex(attester_key))}"]
        if seed is not None:  # sr25519 mini-secret: the attester's assethub identity
            lines.append(f"substrate_key = {_toml_string(to_hex(seed))}")
    lines += ["", "[client]", f"key = {_toml_string(to_hex(CLIENT_KEY))}"]
    if assethub is not None:
        lines.append(f"substrate_uri = {_toml_string(SUBSTRATE_CLIENT_URI)}")
    lines.append("")
    return "\n".join(lines)
