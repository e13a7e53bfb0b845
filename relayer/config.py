"""The one TOML file that configures attesters and relayers.

Everything is validated when loaded, before any chain is contacted: a typo or an unsafe
committee stops the process with one line naming the field (anchors.md T3, T5, T7).

```toml
[ledger]
location = "passerelle.db"            # a SQLite path (relative to this file) or a database URL

[committee]
validators = ["0x…", "0x…", "0x…"]    # Ethereum addresses, strictly ascending
threshold = 2
checkpoint_store = "checkpoints"       # directory where attesters publish signed checkpoints

[[chains]]
name = "alpha"
domain = 1                             # Passerelle domain (u32), not necessarily the chain id
kind = "evm"
rpc = ["http://127.0.0.1:8545"]        # several endpoints: ordered failover
chain_id = 31337
finality = "finalized"                 # "finalized" | "safe" | "confirmations:N" | "devnet-instant"
outbox = "0x…"
inbox = "0x…"

[relayer]
key = "0x…"                            # only with devnet = true; else key_env or key_file

[[attesters]]                          # the devnet's own attesters (an operator runs one)
key_env = "PASSERELLE_ATTESTER_KEY"

[[chains]]                             # a Substrate chain (DESIGN.md "Substrate origin …")
name = "assethub"
domain = 3
kind = "substrate"
rpc = ["ws://127.0.0.1:9944"]
finality = "finalized"                 # GRANDPA-final heads; "devnet-instant" on chopsticks
genesis_hash = "0x…"                   # the outbox id of this origin (checked against the node)
multisig = "0x…"                       # the committee's pallet_multisig account: the inbox
multisig_threshold = 2
signatories = ["0x…", "0x…", "0x…"]    # the attesters' sr25519 accounts
collections = { "1" = 1, "2" = 2 }     # EVM origin domain -> Uniques collection (replay guard)
asset_id = 1                           # the wrapped token (Assets pallet), issued by the multisig
asset_home = { domain = 1, token = "0x…" }   # the EVM token it wraps
# grandpa = { set_id = 1234, block_hash = "0x…", block_number = 21000000, authorities = ["0x…"] }
#   a trusted GRANDPA checkpoint: heads are then proven final by justifications (real chains)

[client]                               # who `passerelle send` sends as
key_file = "sender.key"
substrate_key_file = "sender.seed"     # sr25519 seed; substrate_uri = "//Alice" on a devnet
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from light_clients.committee import Committee
from light_clients.errors import VerificationError
from light_clients.substrate.grandpa import AuthoritySet
from light_clients.substrate.multisig import multisig_account
from relayer.jsonfields import FieldError, as_hex, as_int, as_list, as_object, require

U32_MAX = 2**32 - 1
# Operating defaults (seconds). Polls are cheap: an attester asks for one header unless something
# new became final; the relayer reads its ledger and the checkpoint directory.
ATTESTER_POLL = 0.25
RELAY_POLL = 0.2
RELAY_BATCH_SIZE = 100  # messages per delivery tx (~5 M gas used, ~6.9 M limit: 4 per 30 M block)
RELAY_MAX_INFLIGHT = 4  # delivery transactions in flight per destination
SUBSTRATE_BATCH_SIZE = 25  # messages per multisig batch_all (two calls each, ~1/10 of a block)
FINALITY_TAGS = ("finalized", "safe", "devnet-instant")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; str() says where."""


@dataclass(frozen=True)
class FinalityPolicy:
    """How a chain's final head is chosen; always explicit, never assumed.

    ``finalized``/``safe``: the node's block tag. ``confirmations``: latest minus ``depth``.
    ``devnet-instant``: a development chain without a finality gadget (chopsticks); a block is
    final once included. Shown by ``passerelle status`` so nobody mistakes it for real finality.
    """

    name: str
    depth: int = 0

    @classmethod
    def parse(cls, text: str, where: str) -> FinalityPolicy:
        """Parse ``finalized``, ``safe``, ``devnet-instant`` or ``confirmations:N``."""
        if text in FINALITY_TAGS:
            return cls(text)
        name, _, depth = text.partition(":")
        if name == "confirmations" and depth.isdigit() and 0 < int(depth) <= 10_000:
            return cls(name, int(depth))
        raise ConfigError(
            f"{where}: finality {text!r} is not one of "
            "finalized, safe, devnet-instant, confirmations:N"
        )

    def __str__(self) -> str:
        return f"confirmations:{self.depth}" if self.name == "confirmations" else self.name


@dataclass(frozen=True)
class GrandpaCheckpoint:
    """A trusted GRANDPA starting point: the authority set that signs the blocks after the
    finalized block ``block_hash`` (#``block_number``). Taken from a node the operator trusts,
    once, like any light client's checkpoint; everything after it is proven."""

    set_id: int
    block_hash: bytes
    block_number: int
    authorities: tuple[tuple[bytes, int], ...]
    """(ed25519 public key, weight) pairs."""


@dataclass(frozen=True)
class SubstrateSettings:
    """What a Substrate chain needs beyond an endpoint: its identity, the committee's multisig
    (the inbox: DESIGN.md "Substrate origin and destination"), the replay-guard collections and
    the wrapped asset."""

    genesis_hash: bytes
    """The chain's identity and, as an origin, its outbox id in checkpoints."""
    multisig: bytes
    multisig_threshold: int
    signatories: tuple[bytes, ...]
    """The multisig's sr25519 accounts (ascending), one per attester."""
    collections: Mapping[int, int]
    """EVM origin domain → the Uniques collection whose item ``nonce`` marks delivery."""
    asset_id: int | None = None
    asset_home_domain: int | None = None
    asset_home_token: bytes | None = None
    """The EVM token (20 bytes) the wrapped asset represents, on ``asset_home_domain``."""
    grandpa: GrandpaCheckpoint | None = None
    """With ``finality = "finalized"``: verify the final head with GRANDPA justifications
    (``grandpa_proveFinality``) from this checkpoint, instead of taking the node's word."""

    @property
    def bridge_account(self) -> bytes:
        """Where wrapped assets go back to, and the recipient of token messages: the multisig."""
        return self.multisig


@dataclass(frozen=True)
class ChainConfig:
    """One chain Passerelle reads from or delivers to."""

    name: str
    domain: int
    kind: str
    rpc: tuple[str, ...]
    finality: FinalityPolicy
    chain_id: int | None = None
    contracts: Mapping[str, bytes] = field(default_factory=dict)
    start_block: int = 0
    substrate: SubstrateSettings | None = None

    @property
    def outbox_id(self) -> bytes:
        """The 32-byte outbox of this origin in checkpoints: the Outbox contract, left-padded,
        or a Substrate chain's genesis hash. ConfigError if it is no origin."""
        if self.substrate is not None:
            return self.substrate.genesis_hash
        return self.contract("outbox").rjust(32, b"\0")

    @property
    def is_origin(self) -> bool:
        """Does this chain send messages (an Outbox contract, or any Substrate chain)?"""
        return self.substrate is not None or "outbox" in self.contracts

    @property
    def is_destination(self) -> bool:
        """Can this chain receive messages (an Inbox contract, or a Substrate multisig)?"""
        return self.substrate is not None or "inbox" in self.contracts

    def settings(self) -> SubstrateSettings:
        """The Substrate settings; ConfigError for an EVM chain."""
        if self.substrate is None:
            raise ConfigError(f"chain {self.name!r} is not a Substrate chain")
        return self.substrate

    def contract(self, name: str) -> bytes:
        """The address of a deployed contract, or ConfigError naming what is missing."""
        try:
            return self.contracts[name]
        except KeyError:
            raise ConfigError(f"chain {self.name!r}: no {name!r} address configured") from None


@dataclass(frozen=True)
class KeySource:
    """Where a signing key comes from: an environment variable, a file, or (devnet) inline."""

    inline: bytes | None = None
    env: str | None = None
    file: Path | None = None

    def load(self) -> bytes:
        """Read the 32-byte private key; ConfigError if it is missing or malformed."""
        if self.inline is not None:
            return self.inline
        if self.env is not None:
            text = os.environ.get(self.env)
            if text is None:
                raise ConfigError(f"environment variable {self.env} (a private key) is not set")
        elif self.file is not None:
            try:
                text = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read key file {self.file}: {exc.strerror}") from None
        else:
            raise ConfigError("no key configured")
        try:
            return as_hex(text.strip(), "private key", size=32)
        except FieldError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    devnet: bool
    ledger: str
    committee: Committee
    checkpoint_store: Path
    chains: tuple[ChainConfig, ...]
    relayer_key: KeySource | None
    attester_keys: tuple[KeySource, ...]
    attester_substrate_keys: tuple[KeySource | None, ...]
    client_key: KeySource | None
    client_substrate_key: KeySource | None
    """The sr25519 seed `passerelle send` signs Substrate extrinsics with."""
    client_substrate_uri: str | None
    """Or a development URI such as ``//Alice`` (devnet only)."""
    raw: Mapping[str, Any]

    def chain(self, key: str | int) -> ChainConfig:
        """Find a chain by name or domain."""
        for chain in self.chains:
            if key in (chain.name, chain.domain, str(chain.domain)):
                return chain
        known = ", ".join(f"{c.name} ({c.domain})" for c in self.chains)
        raise ConfigError(f"unknown chain {key!r}; configured: {known}")


def _key_source(
    obj: Mapping[str, Any], where: str, devnet: bool, base: Path, *, name: str = "key"
) -> KeySource | None:
    """``name`` (inline, devnet only), ``name_env`` or ``name_file``; None if none is given."""
    if name in obj:
        if not devnet:
            raise ConfigError(
                f"{where}: inline private keys are refused outside a devnet; "
                f"use {name}_env or {name}_file"
            )
        return KeySource(inline=as_hex(obj[name], f"{where}.{name}", size=32))
    if f"{name}_env" in obj:
        return KeySource(env=str(obj[f"{name}_env"]))
    if f"{name}_file" in obj:
        return KeySource(file=base / str(obj[f"{name}_file"]))
    return None


def _required_key(obj: Mapping[str, Any], where: str, devnet: bool, base: Path) -> KeySource:
    source = _key_source(obj, where, devnet, base)
    if source is None:
        raise ConfigError(f"{where}: one of key_env, key_file (or key, devnet only) is required")
    return source


def _chain(obj: Mapping[str, Any], index: int) -> ChainConfig:
    where = f"chains[{index}]"
    name = require(obj, "name")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{where}.name must be a non-empty string")
    kind = require(obj, "kind")
    if kind not in ("evm", "substrate"):
        raise FieldError(f"{where}.kind must be 'evm' or 'substrate', got {kind!r}")
    rpc = as_list(require(obj, "rpc"), f"{where}.rpc")
    if not rpc or not all(
        isinstance(u, str) and u.startswith(("http://", "https://", "ws://", "wss://")) for u in rpc
    ):
        raise FieldError(f"{where}.rpc must be a non-empty list of http(s)/ws(s) URLs")
    finality = require(obj, "finality")
    if not isinstance(finality, str):
        raise FieldError(f"{where}.finality must be a string")
    contracts = {
        key: as_hex(value, f"{where}.{key}")
        for key, value in obj.items()
        if key in ("outbox", "inbox", "token_bridge", "ping", "token", "wrapped_token")
    }
    chain_id = obj.get("chain_id")
    if kind == "substrate" and contracts:
        raise FieldError(f"{where}: a Substrate chain has no contracts ({sorted(contracts)})")
    chain = ChainConfig(
        name=name,
        domain=as_int(require(obj, "domain"), f"{where}.domain", hi=U32_MAX),
        kind=kind,
        rpc=tuple(rpc),
        finality=FinalityPolicy.parse(finality, f"{where}.finality"),
        chain_id=None if chain_id is None else as_int(chain_id, f"{where}.chain_id"),
        contracts=contracts,
        start_block=as_int(obj.get("start_block", 0), f"{where}.start_block"),
        substrate=_substrate_settings(obj, where) if kind == "substrate" else None,
    )
    grandpa = None if chain.substrate is None else chain.substrate.grandpa
    if grandpa is not None and chain.start_block < grandpa.block_number:
        # Blocks below the checkpoint cannot be proven from it: the scan would never start.
        raise FieldError(
            f"{where}.start_block {chain.start_block} is below the grandpa checkpoint's block "
            f"{grandpa.block_number}"
        )
    return chain


def _substrate_settings(obj: Mapping[str, Any], where: str) -> SubstrateSettings:
    signatories = tuple(
        as_hex(s, f"{where}.signatories", size=32)
        for s in as_list(require(obj, "signatories"), f"{where}.signatories")
    )
    if list(signatories) != sorted(set(signatories)):
        raise FieldError(f"{where}.signatories must be distinct and ascending")
    if not signatories:
        raise FieldError(f"{where}.signatories must not be empty")
    threshold = as_int(require(obj, "multisig_threshold"), f"{where}.multisig_threshold")
    # pallet_multisig's approve_as_multi refuses a threshold of 1 (nothing would be delivered).
    if not 2 <= threshold <= len(signatories):
        raise FieldError(f"{where}.multisig_threshold must be in 2..{len(signatories)}")
    multisig = as_hex(require(obj, "multisig"), f"{where}.multisig", size=32)
    if multisig != multisig_account(signatories, threshold):
        raise FieldError(
            f"{where}.multisig is not the {threshold}-of-{len(signatories)} multisig of "
            "the signatories"
        )
    collections_obj = as_object(obj.get("collections", {}), f"{where}.collections")
    collections: dict[int, int] = {}
    for origin, collection in collections_obj.items():
        if not str(origin).isdigit() or int(origin) > U32_MAX:
            raise FieldError(f"{where}.collections: {origin!r} is not a domain")
        collections[int(origin)] = as_int(collection, f"{where}.collections.{origin}", hi=U32_MAX)
    if len(set(collections.values())) != len(collections):
        raise FieldError(
            f"{where}.collections: two origins share a collection (nonces would collide)"
        )
    home = obj.get("asset_home")
    home_obj = None if home is None else as_object(home, f"{where}.asset_home")
    asset_id = obj.get("asset_id")
    if (home_obj is None) != (asset_id is None):
        raise FieldError(f"{where}: asset_id and asset_home go together")
    grandpa = obj.get("grandpa")
    if grandpa is not None and obj.get("finality") != "finalized":
        raise FieldError(f'{where}.grandpa needs finality = "finalized"')
    return SubstrateSettings(
        grandpa=None
        if grandpa is None
        else _grandpa(as_object(grandpa, f"{where}.grandpa"), where),
        genesis_hash=as_hex(require(obj, "genesis_hash"), f"{where}.genesis_hash", size=32),
        multisig=multisig,
        multisig_threshold=threshold,
        signatories=signatories,
        collections=collections,
        asset_id=None if asset_id is None else as_int(asset_id, f"{where}.asset_id", hi=U32_MAX),
        asset_home_domain=None
        if home_obj is None
        else as_int(require(home_obj, "domain"), f"{where}.asset_home.domain", hi=U32_MAX),
        asset_home_token=None
        if home_obj is None
        else as_hex(require(home_obj, "token"), f"{where}.asset_home.token", size=20),
    )


def _grandpa(obj: Mapping[str, Any], where: str) -> GrandpaCheckpoint:
    authorities: list[tuple[bytes, int]] = []
    for i, entry in enumerate(as_list(require(obj, "authorities"), f"{where}.grandpa.authorities")):
        name = f"{where}.grandpa.authorities[{i}]"
        if isinstance(entry, list) and len(entry) == 2:  # ["0x…", weight]
            authorities.append((as_hex(entry[0], name, size=32), as_int(entry[1], name, lo=1)))
        else:
            authorities.append((as_hex(entry, name, size=32), 1))
    if not authorities:
        raise FieldError(f"{where}.grandpa.authorities must not be empty")
    try:
        checkpoint = GrandpaCheckpoint(
            set_id=as_int(require(obj, "set_id"), f"{where}.grandpa.set_id", hi=2**64 - 1),
            block_hash=as_hex(require(obj, "block_hash"), f"{where}.grandpa.block_hash", size=32),
            block_number=as_int(require(obj, "block_number"), f"{where}.grandpa.block_number"),
            authorities=tuple(authorities),
        )
    except FieldError as exc:
        raise FieldError(f"{where}.grandpa: {exc}") from None
    try:  # the light client's own rules (distinct keys, weights and total within u64)
        AuthoritySet(checkpoint.set_id, checkpoint.authorities)
    except VerificationError as exc:
        raise FieldError(f"{where}.grandpa.authorities: {exc}") from None
    return checkpoint


def _check_collections(chains: Sequence[ChainConfig]) -> None:
    """Every EVM origin needs a replay-guard collection on every Substrate chain: a message
    from an origin without one could never be delivered there."""
    for index, chain in enumerate(chains):
        if chain.substrate is None:
            continue
        for origin in chains:
            if (
                origin.is_origin
                and origin.kind == "evm"
                and (origin.domain not in chain.substrate.collections)
            ):
                raise ConfigError(
                    f"chains[{index}].collections: no Uniques collection for origin "
                    f"{origin.name} ({origin.domain})"
                )


def _check_unique(chains: Sequence[ChainConfig]) -> None:
    for attr in ("name", "domain"):
        values = [getattr(c, attr) for c in chains]
        duplicates = {v for v in values if values.count(v) > 1}
        if duplicates:
            raise ConfigError(f"chains: duplicate {attr} {sorted(duplicates)[0]!r}")


def load_config(path: Path) -> Config:
    """Read and validate the TOML file at ``path``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    try:
        return _build(raw, path)
    except (FieldError, VerificationError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def _build(raw: Mapping[str, Any], path: Path) -> Config:
    base = path.parent
    devnet = raw.get("devnet", False) is True
    ledger = as_object(require(raw, "ledger"), "ledger")
    location = str(require(ledger, "location"))
    if "://" not in location:
        location = str((base / location).resolve())
    committee_obj = as_object(require(raw, "committee"), "committee")
    validators = [
        as_hex(v, "committee.validators", size=20)
        for v in as_list(require(committee_obj, "validators"), "committee.validators")
    ]
    committee = Committee(
        members=tuple(validators),
        threshold=as_int(require(committee_obj, "threshold"), "committee.threshold", hi=U32_MAX),
    )
    chains = tuple(
        _chain(as_object(c, f"chains[{i}]"), i)
        for i, c in enumerate(as_list(require(raw, "chains"), "chains"))
    )
    _check_unique(chains)
    _check_collections(chains)
    relayer = raw.get("relayer")
    relayer_key = (
        None
        if relayer is None
        else _required_key(as_object(relayer, "relayer"), "relayer", devnet, base)
    )
    client = raw.get("client")
    client_key = (
        None
        if client is None
        else _required_key(as_object(client, "client"), "client", devnet, base)
    )
    client_obj = None if client is None else as_object(client, "client")
    client_substrate_uri = None
    if client_obj is not None and "substrate_uri" in client_obj:
        if not devnet:
            raise ConfigError(
                "client.substrate_uri (a development key) is refused outside a devnet"
            )
        client_substrate_uri = str(client_obj["substrate_uri"])
    attester_tables = [
        (as_object(a, f"attesters[{i}]"), f"attesters[{i}]")
        for i, a in enumerate(as_list(raw.get("attesters", []), "attesters"))
    ]
    attesters = tuple(_required_key(obj, where, devnet, base) for obj, where in attester_tables)
    # An attester's Substrate identity (sr25519 seed): what it signs multisig approvals with.
    substrate_keys = tuple(
        _key_source(obj, where, devnet, base, name="substrate_key")
        for obj, where in attester_tables
    )
    return Config(
        path=path,
        devnet=devnet,
        ledger=location,
        committee=committee,
        checkpoint_store=base / str(committee_obj.get("checkpoint_store", "checkpoints")),
        chains=chains,
        relayer_key=relayer_key,
        attester_keys=attesters,
        attester_substrate_keys=substrate_keys,
        client_key=client_key,
        client_substrate_key=None
        if client_obj is None
        else _key_source(client_obj, "client", devnet, base, name="substrate_key"),
        client_substrate_uri=client_substrate_uri,
        raw=raw,
    )
