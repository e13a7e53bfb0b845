"""The one TOML file that configures attesters and relayers.

Everything is validated when loaded, before any chain is contacted: a typo or an unsafe
committee stops the process with one line naming the field (docs/threats.md T3, T5, T7).

```toml
[ledger]
location = "passerelle.db"            # a SQLite path (relative to this file) or a database URL

[committee]
validators = ["0x…", "0x…", "0x…"]    # Ethereum addresses, strictly ascending
threshold = 2                          # at least 2/3 of the validators (rounded up), unless
# allow_weak_threshold = true          #   the operator accepts a weaker committee by name
checkpoint_store = "checkpoints"       # directory where attesters publish signed checkpoints,
                                       #   or a postgresql+psycopg:// URL (several machines)

[[chains]]
name = "alpha"
domain = 1                             # Passerelle domain (u32), not necessarily the chain id
kind = "evm"
rpc = ["http://127.0.0.1:8545"]        # several endpoints: ordered failover
rpc_quorum = 1                         # k of the endpoints must agree on the final block (1..len)
chain_id = 31337                       # required for EVM chains (a fork or wrong node is refused)
finality = "finalized"                 # "finalized" | "safe" | "confirmations:N" | "devnet-instant"
outbox = "0x…"
inbox = "0x…"
# max_log_range = 2000                 # most blocks per eth_getLogs (capped public endpoints)
# max_logs_answer_mib = 32             # most MiB one eth_getLogs answer may have: a window over
#                                      #   it is halved (down to one block) and the scan goes on;
#                                      #   one block over it on every endpoint stops the scan
#                                      #   with an error naming this key (raise it then)
# kind = "evm-legacy": the same keys, for chains without EIP-1559 (type-0 gasPrice transactions;
#   eth_getLogs capped at 500 blocks unless max_log_range says otherwise)

[relayer]
key = "0x…"                            # only with devnet = true; else key_env, key_file, or
# key_keystore = "relayer.json"        #   a V3 keystore with key_password_env / key_password_file
#                                      # (files holding keys or passwords: mode 600, or refused)
# keys = [{ key_env = "RELAYER_0" }, { key_file = "relayer-1.key" }]
#                                      # instead of key*: several relayers' keys, one each, picked
#                                      #   by `passerelle relay --index I` (default 0)
# lease_seconds = 15                   # several relayers on one ledger share the routes through
#                                      #   leases this long (default 15 s on PostgreSQL; without
#                                      #   it a SQLite ledger is one relayer's, as before)

[relayer.policy]                       # optional: which messages this relayer pays to deliver
deny_senders = ["0x…"]                 # 20-byte EVM addresses or 32-byte accounts
allow_origins = ["alpha", 3]           # chain names or domains; allow lists present = only those
# allow_senders, allow_recipients, deny_origins, deny_recipients: same shapes; deny wins
deliver = "all"                        # every route's default: "all", or "paid" (only messages
                                       #   that bought the gas their origin's Paymaster states,
                                       #   deliveryGas, and this floor; the others wait as
                                       #   `unpaid` until a top-up arrives)
# delivery_gas = 650000                # the floor under the on-chain charge (+ 40 a body byte;
                                       #   the whole charge from a Substrate origin); to an EVM
                                       #   destination at least 650000 (a recipient may burn
                                       #   500k) unless allow_recipients is set
# routes = [{ from = "alpha", to = "beta", deliver = "paid", delivery_gas = 700000 }]
#                                      # per-route exceptions to deliver / delivery_gas

[[attesters]]                          # the devnet's own attesters (an operator runs one)
key_env = "PASSERELLE_ATTESTER_KEY"

[[chains]]                             # a Substrate chain (docs/design.md "Substrate origin …")
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
# recipients = { "1" = ["0x…"] }     # destination domain -> what messages from here may address;
#   default: each EVM destination's token_bridge and ping (see allowed_recipients)
# fee_account = "0x…"                  # where senders pay for delivery (paid routes from here),
# fee_rates = { "1" = { gas_price = 1000000000, exchange_rate = 10000000000 } }
#                                      #   and its price per destination (as a Paymaster's rates)

[client]                               # who `passerelle send` sends as
key_file = "sender.key"
substrate_key_file = "sender.seed"     # sr25519 seed; substrate_uri = "//Alice" on a devnet
# substrate_key_keystore = "sender-sr25519.json"   # or a Polkadot JS keystore, with
#                                      #   substrate_key_password_env / substrate_key_password_file
```

Strict by design (issue #8, point 12): every table lists the keys it knows and an unknown one is
refused with a "did you mean" hint, because an ignored key is a setting silently not applied (a
misspelled ``grandpa`` would turn GRANDPA verification off). ``key``, ``key_env`` and
``key_file`` are exclusive, every address has its exact size. Each problem is one
:class:`ConfigError` line naming the field; the CLI turns it into exit 2 (unusable input).
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adapters.redact import redact_url
from light_clients.committee import Committee
from light_clients.errors import VerificationError
from light_clients.message import Message
from relayer.family import UnknownFamily, family, family_of
from relayer.jsonfields import FieldError, as_hex, as_int, as_list, as_object, type_name
from relayer.keys import KeyFileError, decrypt_keystore, read_secret

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
# Operating defaults (seconds). Polls are cheap: an attester asks for one header unless something
# new became final; the relayer reads its ledger and the checkpoint directory.
ATTESTER_POLL = 0.25
RELAY_POLL = 0.2
# A delivery asks for its estimate plus ONE handle stipend, and the inbox's `processOrCut` stops a
# batch before a message it could not give a full stipend to (issue #11): a batch of 100 asks
# ~2.5 M gas, so the batch size is no longer bounded by the asked gas. Measured on the devnet
# (docs/performance.md, "Cut batches"): 100 messages × 16 in flight relayed 245 msg/s
# where 20 × 16 relayed 48 msg/s in the same session.
RELAY_BATCH_SIZE = 100  # messages per delivery transaction
RELAY_MAX_INFLIGHT = 16  # delivery transactions in flight per destination
SUBSTRATE_BATCH_SIZE = 1024  # most messages per multisig batch: the chain's weight sizes it
FINALITY_TAGS = ("finalized", "safe", "devnet-instant", "beacon")

# The keys each table knows; anything else is refused (see the module docstring).
TOP_LEVEL_KEYS = ("devnet", "ledger", "committee", "chains", "relayer", "attesters", "client")
LEDGER_KEYS = ("location",)
COMMITTEE_KEYS = ("validators", "threshold", "checkpoint_store", "allow_weak_threshold")
CHAIN_KEYS = ("name", "domain", "kind", "rpc", "finality", "start_block")
# rpc_quorum is read here for every family, but only families whose adapter applies it list it
# among their keys: elsewhere it would be a setting silently not applied.
LIST_POLICY_KEYS = tuple(
    f"{verdict}_{what}"
    for verdict in ("allow", "deny")
    for what in ("origins", "senders", "recipients")
)
POLICY_KEYS = (*LIST_POLICY_KEYS, "deliver", "delivery_gas", "routes")
ROUTE_POLICY_KEYS = ("from", "to", "deliver", "delivery_gas")
DELIVER_MODES = ("all", "paid")
"""``deliver`` of ``[relayer.policy]`` and its routes: everything, or only paid messages."""
EVM_HANDLE_GAS_NEEDED = 500_000 * 64 // 63 + 10_000
"""Inbox.sol's ``HANDLE_GAS_NEEDED``: the gas ``process`` must hold for one message's
``handle`` (``HANDLE_GAS``, 500k, forwarded under EIP-150's 63/64 rule, plus the call). The
recipient is the sender's choice, so a hostile one burns all of it (tests/test_paid_delivery.py
``test_a_paid_message_never_costs_more_gas_than_it_bought``)."""
EVM_DELIVERY_OVERHEAD = 132_064
"""Everything else a one-message ``process`` transaction costs on an EVM destination: the
transaction, the committee's signatures, the batch proof, the replay guard and the events.
Measured 82.7k at threshold 2 with a fresh tree (600,629 gas for a recipient burning all of
``HANDLE_GAS``); the rest is room for about six more signatures and a deeper tree."""
EVM_MIN_DELIVERY_GAS = EVM_HANDLE_GAS_NEEDED + EVM_DELIVERY_OVERHEAD
"""650,000: the most one message's delivery to an EVM destination can cost the relayer when it
is alone in its batch, whatever its recipient does. A paid route to an EVM destination charging
less is refused at load unless ``allow_recipients`` limits it to recipients the operator knows
(docs/decisions.md, "Paid delivery, after the hostile review")."""
DEFAULT_DELIVERY_GAS = EVM_MIN_DELIVERY_GAS
"""Destination gas one message's delivery is charged for (``delivery_gas``) unless the config
says otherwise: :data:`EVM_MIN_DELIVERY_GAS`, so that no recipient a sender picks can make the
relayer spend more than the sender bought. What ``passerelle send`` pays for by default."""
CALLDATA_GAS_PER_BYTE = 40
"""Gas per body byte on top of ``delivery_gas``: EIP-7623's calldata floor price, the most a
byte of a delivery's calldata can cost."""
MAX_DELIVERY_GAS = 30_000_000
"""A block's worth: a larger ``delivery_gas`` is a typo (no message's delivery could use it)."""
KEY_KEYS = ("key", "key_env", "key_file", "key_keystore", "key_password_env", "key_password_file")
SUBSTRATE_KEY_KEYS = (
    "substrate_key",
    "substrate_key_env",
    "substrate_key_file",
    "substrate_key_keystore",
    "substrate_key_password_env",
    "substrate_key_password_file",
)
RELAYER_KEYS = (*KEY_KEYS, "keys", "policy", "lease_seconds")
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 1.0, 3600.0
"""``[relayer] lease_seconds`` bounds: under a second a database round trip is a real part of
the lease; over an hour a killed relayer's work waits too long."""
ATTESTER_KEYS = (*KEY_KEYS, *SUBSTRATE_KEY_KEYS)
CLIENT_KEYS = (*KEY_KEYS, *SUBSTRATE_KEY_KEYS, "substrate_uri")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
"""The port an rpc URL without one uses (the schemes ``rpc`` accepts)."""


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; str() says where."""


@dataclass(frozen=True)
class FinalityPolicy:
    """How a chain's final head is chosen; always explicit, never assumed.

    ``finalized``/``safe``: the node's block tag. ``confirmations``: latest minus ``depth``.
    ``devnet-instant``: a development chain without a finality gadget (chopsticks); a block is
    final once included. Shown by ``passerelle status`` so nobody mistakes it for real finality.
    ``beacon``: what the chain's beacon sync committee finalized, followed by a light client
    from a trusted checkpoint (an EVM chain's ``[chains.beacon]`` table); no RPC is asked.
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
            "finalized, safe, devnet-instant, beacon, confirmations:N"
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
    (the inbox: docs/design.md "Substrate origin and destination"), the replay-guard collections and
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
    recipients: Mapping[int, frozenset[bytes]] | None = None
    """The ``recipients`` table as written: destination domain → the 32-byte recipients that
    messages from this origin may address. None: the default of :func:`allowed_recipients`."""
    fee_account: bytes | None = None
    """Where senders on this chain pay for delivery (a balance transfer in the same
    ``batch_all`` as the remark; docs/design.md "Paid delivery"); None: nobody can pay here."""
    fee_rates: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    """Destination domain → (gas price, exchange rate × 1e10): this origin's price of delivery
    there, as a Paymaster's ``rates`` (in plancks)."""

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
    """The EVM chain id, required for EVM kinds and checked against every endpoint (an
    endpoint serving a fork or another chain is refused); None for Substrate (genesis_hash)."""
    contracts: Mapping[str, bytes] = field(default_factory=dict)
    start_block: int = 0
    substrate: SubstrateSettings | None = None
    options: Mapping[str, int] = field(default_factory=dict)
    """Settings of the chain's family that the flow never reads (``max_log_range``)."""
    family_settings: object = None
    """The family's own parsed settings object, opaque to the flow (an EVM chain's beacon
    light-client settings)."""
    rpc_quorum: int = 1
    """How many of the ``rpc`` endpoints must agree on the final block before an attester signs
    (1 ≤ k ≤ len(rpc)); 1 trusts whichever endpoint answers."""

    @property
    def rpc_policy(self) -> str:
        """How this chain's endpoints are trusted, as ``status`` shows it (URLs never appear)."""
        return family_of(self).rpc_policy(self)

    @property
    def outbox_id(self) -> bytes:
        """The 32-byte outbox of this origin in checkpoints (an Outbox contract, left-padded;
        a Substrate chain's genesis hash). ConfigError if it is no origin."""
        return family_of(self).outbox_id(self)

    @property
    def is_origin(self) -> bool:
        """Does this chain send messages (its family says: an Outbox contract, say)?"""
        return family_of(self).is_origin(self)

    @property
    def is_destination(self) -> bool:
        """Can this chain receive messages (an Inbox contract, a Substrate multisig)?"""
        return family_of(self).is_destination(self)

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
    """Where a signing key comes from: an environment variable, a file only its owner can read,
    an encrypted keystore (its password from a variable or such a file), or (devnet) inline.

    ``sr25519`` sources (``substrate_key*``) hold a 32-byte mini-secret seed, or a Polkadot JS
    keystore, which holds the 64-byte expanded secret and no seed: open those through
    :func:`relayer.signer.substrate_signer`, which handles both. The others hold a secp256k1
    key (a V3 keystore for ``key_keystore``); :func:`relayer.signer.evm_signer` signs with it."""

    inline: bytes | None = None
    env: str | None = None
    file: Path | None = None
    keystore: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    sr25519: bool = False

    @property
    def origin(self) -> str:
        """Where the key comes from, for an operator: keystore, file, env or inline."""
        kinds = ("keystore", "file", "env", "inline")
        return next(k for k in kinds if getattr(self, k) is not None)

    def load(self) -> bytes:
        """Read the 32 bytes: a secp256k1 private key, or an sr25519 source's seed; ConfigError
        (one line) if it is missing, malformed, in a file others can read, or in a keystore that
        does not open (or, sr25519, is a keystore: it has no seed to give)."""
        if self.inline is not None:
            return self.inline
        try:
            if self.keystore is not None:
                if self.sr25519:
                    raise ConfigError(
                        f"keystore {self.keystore} holds an sr25519 secret, not a seed "
                        "(open it with relayer.signer.substrate_signer)"
                    )
                return decrypt_keystore(
                    read_secret(self.keystore, "keystore"), self.password(), self.keystore
                )
            if self.env is not None:
                text = os.environ.get(self.env)
                if text is None:
                    raise ConfigError(f"environment variable {self.env} (a private key) is not set")
            elif self.file is not None:
                text = read_secret(self.file, "key file").strip()
            else:
                raise ConfigError("no key configured")
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
        try:
            return as_hex(text.strip(), "private key", size=32)
        except FieldError as exc:
            raise ConfigError(str(exc)) from None

    def password(self) -> str:
        """The keystore's password (one trailing newline of a file is not part of it)."""
        if self.password_env is not None:
            password = os.environ.get(self.password_env)
            if password is None:
                raise ConfigError(
                    f"environment variable {self.password_env} (a keystore password) is not set"
                )
            return password
        if self.password_file is None:
            raise ConfigError("a keystore needs key_password_env or key_password_file")
        return read_secret(self.password_file, "password file").removesuffix("\n")


def _show_account(account: bytes) -> str:
    """A 32-byte sender/recipient as an operator wrote it: an EVM address if it is one."""
    return "0x" + (account[12:] if account[:12] == bytes(12) else account).hex()


@dataclass(frozen=True)
class RoutePayment:
    """What one route asks of a message's payment before the relayer delivers it."""

    deliver: str = "all"
    """``all`` (paid or not) or ``paid`` (:data:`DELIVER_MODES`)."""
    delivery_gas: int = DEFAULT_DELIVERY_GAS
    """Under ``paid``: the floor of the gas a message must have bought (with :meth:`gas_for`'s
    per-byte part). The charge itself is the origin's on-chain ``deliveryGas`` where it states
    one (:func:`relayer.payments.charged_gas`); this is the whole charge where it does not."""

    @property
    def paid_only(self) -> bool:
        """Whether the route delivers only paid messages."""
        return self.deliver == "paid"

    def gas_for(self, body_size: int) -> int:
        """The floor of the destination gas a message with a ``body_size``-byte body is
        charged: ``delivery_gas`` and :data:`CALLDATA_GAS_PER_BYTE` per body byte (a 64 KiB
        body costs the relayer far more calldata than a ping). The charge is
        :func:`relayer.payments.charged_gas`, which the sender's quote and the relayer's check
        both use, so what ``passerelle send`` pays is what the relayer asks."""
        return self.delivery_gas + CALLDATA_GAS_PER_BYTE * body_size


@dataclass(frozen=True)
class RelayPolicy:
    """Which messages this relayer spends its own gas and fees on (``[relayer.policy]``).

    Delivery costs the relayer, and anyone can dispatch a message, so an operator can limit what
    it carries by origin domain, sender and recipient (senders and recipients 32 bytes, EVM
    addresses left-padded, as in messages). A deny list refuses its entries; an allow list, when
    present, refuses everything else; deny wins over allow. The default admits everything. This
    is relayer policy only: the inbox accepts any correctly attested message from anyone.
    """

    allow_origins: frozenset[int] | None = None
    deny_origins: frozenset[int] = frozenset()
    allow_senders: frozenset[bytes] | None = None
    deny_senders: frozenset[bytes] = frozenset()
    allow_recipients: frozenset[bytes] | None = None
    deny_recipients: frozenset[bytes] = frozenset()
    origin_names: Mapping[int, str] = field(default_factory=dict, compare=False)
    """Domain → chain name, only to word refusals."""
    payment: RoutePayment = field(default_factory=RoutePayment)
    """Every route's payment rule (``deliver``, ``delivery_gas``) unless ``routes`` names it."""
    routes: Mapping[tuple[int, int], RoutePayment] = field(default_factory=dict)
    """(origin, destination) → that route's own payment rule (``routes``)."""

    def route_payment(self, origin: int, destination: int) -> RoutePayment:
        """The payment rule of the route ``origin`` → ``destination``."""
        return self.routes.get((origin, destination), self.payment)

    @property
    def any_paid(self) -> bool:
        """Whether some route delivers only paid messages (the relayer then checks payments)."""
        return self.payment.paid_only or any(r.paid_only for r in self.routes.values())

    def refusal(self, message: Message) -> str | None:
        """None if ``message`` may be delivered, else one line saying which list refuses it."""
        origin = message.origin
        origin_text = (
            f"origin {self.origin_names[origin]} ({origin})"
            if origin in self.origin_names
            else f"origin domain {origin}"
        )
        checks = (
            (origin_text, origin, self.allow_origins, self.deny_origins),
            (
                f"sender {_show_account(message.sender)}",
                message.sender,
                self.allow_senders,
                self.deny_senders,
            ),
            (
                f"recipient {_show_account(message.recipient)}",
                message.recipient,
                self.allow_recipients,
                self.deny_recipients,
            ),
        )
        # Every deny list before any allow list: deny wins, whatever field it is about.
        for text, value, _, deny in checks:
            if value in deny:
                return f"{text} is on the relayer's deny list"
        for text, value, allow, _ in checks:
            if allow is not None and value not in allow:
                return f"{text} is not on the relayer's allow list"
        return None


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
    relay_policy: RelayPolicy = field(default_factory=RelayPolicy)
    """What the relayer agrees to deliver (``[relayer.policy]``); admits everything by default."""
    checkpoint_url: str | None = None
    """``[committee] checkpoint_store`` when it is a database URL: signatures are shared in
    PostgreSQL (relayer/checkpoints.py). ``checkpoint_store`` is then ``checkpoints/`` beside
    the config, still the directory of the Substrate multisig proposals."""
    relayer_keys: tuple[KeySource, ...] = ()
    """Every relayer key of ``[relayer]``: its ``key*`` (one), or each of ``keys`` (several
    relayers, one key each: ``passerelle relay --index I`` runs with the I-th as
    :attr:`relayer_key`, which is the first until then)."""
    lease_seconds: float | None = None
    """``[relayer] lease_seconds``: relayers sharing the ledger divide its routes through leases
    this long (relayer/leases.py). None when not set: leasing is then on for a PostgreSQL ledger
    (relayer.leases.DEFAULT_LEASE_SECONDS) and off for a SQLite file (one relayer, as before)."""

    @property
    def checkpoint_location(self) -> str | Path:
        """Where attesters publish signatures and relayers read them: the URL, or the
        directory (what :func:`relayer.checkpoints.open_checkpoint_store` takes)."""
        return self.checkpoint_url or self.checkpoint_store

    def chain(self, key: str | int) -> ChainConfig:
        """Find a chain by name or domain."""
        for chain in self.chains:
            if key in (chain.name, chain.domain, str(chain.domain)):
                return chain
        known = ", ".join(f"{c.name} ({c.domain})" for c in self.chains)
        raise ConfigError(f"unknown chain {key!r}; configured: {known}")


def allowed_recipients(config: Config, origin: ChainConfig) -> Mapping[int, frozenset[bytes]]:
    """For a Substrate ``origin``: destination domain → the 32-byte recipients its messages may
    address (every other destination is a key; an empty set means nothing may be addressed).

    The escrow rule checks what a message to a *configured* TokenBridge must carry; a bridge the
    config does not know (on a chain configured without ``token_bridge``) would otherwise take a
    Substrate message unchecked and release tokens (issue #8, point 10). So the list fails
    closed: the origin's explicit ``recipients`` table if it has one, else the message-handling
    contracts (``token_bridge``, ``ping``) configured on each EVM destination. A Substrate
    destination gets nothing by default: Passerelle has no Substrate → Substrate route, an
    operator who builds one lists its recipients.
    """
    explicit = origin.settings().recipients
    allowed: dict[int, frozenset[bytes]] = {}
    for chain in config.chains:
        if chain.domain == origin.domain or not chain.is_destination:
            continue
        if explicit is not None:
            allowed[chain.domain] = explicit.get(chain.domain, frozenset())
        else:
            allowed[chain.domain] = family_of(chain).default_recipients(config, chain)
    return allowed


# --------------------------------------------------------------------------- field readers


def table(value: Any, where: str, known: Collection[str], *, kind: str = "") -> Mapping[str, Any]:
    """``value`` as a TOML table whose every key is in ``known``; else one line naming the
    first unknown key, the closest known one and the full list."""
    obj = as_object(value, where)
    for key in obj:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            scope = f" for a {kind} chain" if kind else ""
            raise FieldError(
                f"{where}: unknown key {key!r}{scope}{hint} (known: {', '.join(sorted(known))})"
            )
    return obj


def need(obj: Mapping[str, Any], where: str, key: str) -> Any:
    """``obj[key]``, or one line naming ``where.key`` as missing."""
    if key not in obj:
        raise FieldError(f"{where}: missing field {key!r}")
    return obj[key]


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError(f"field {name!r} must be a non-empty string, got {type_name(value)}")
    return value


def _lease_seconds(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not MIN_LEASE_SECONDS <= value <= MAX_LEASE_SECONDS
    ):
        raise FieldError(
            f"relayer.lease_seconds must be a number of seconds from {MIN_LEASE_SECONDS:g} to "
            f"{MAX_LEASE_SECONDS:g}, not {value!r}"
        )
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"field {name!r} must be true or false, got {type_name(value)}")
    return value


def domain_key(text: Any, name: str) -> int:
    """A TOML table key that names a domain (``"1"``): keys are strings in TOML."""
    # Canonical digits only: "1" and "01" are two TOML keys, and one would silently replace the
    # other once both are read as domain 1.
    if not isinstance(text, str) or not text.isdigit() or str(int(text)) != text:
        raise FieldError(f"{name}: {text!r} is not a domain")
    if int(text) > U32_MAX:
        raise FieldError(f"{name}: {text!r} is not a domain")
    return int(text)


def account(value: Any, name: str) -> bytes:
    """A message sender/recipient: a 20-byte EVM address (left-padded) or a 32-byte account."""
    data = as_hex(value, name)
    if len(data) not in (20, 32):
        raise FieldError(
            f"field {name!r} must be a 20-byte address or a 32-byte account, got {len(data)} bytes"
        )
    return data.rjust(32, b"\0")


def two_thirds(threshold: int, members: int) -> bool:
    """Is ``threshold`` at least two thirds of ``members`` (BFT: a third may be faulty)?"""
    return 3 * threshold >= 2 * members


def weak_threshold(name: str, threshold: int, members: int) -> FieldError:
    need = -(-2 * members // 3)
    return FieldError(
        f"{name} {threshold} of {members} is below two thirds (at least {need}); set "
        "[committee] allow_weak_threshold = true to run a weaker committee on purpose"
    )


def _key_source(
    obj: Mapping[str, Any], where: str, devnet: bool, base: Path, *, name: str = "key"
) -> KeySource | None:
    """``name`` (inline, devnet only), ``name_env``, ``name_file`` or ``name_keystore`` (with
    one ``name_password_*``), at most one; None if none is given. Two at once is refused:
    silently preferring one would sign with a key the operator may not have meant.
    ``name = "substrate_key"`` makes an sr25519 source (a seed, or a Polkadot JS keystore)."""
    sr25519 = name == "substrate_key"
    given = [k for k in (name, f"{name}_env", f"{name}_file", f"{name}_keystore") if k in obj]
    if len(given) > 1:
        raise FieldError(f"{where}: {' and '.join(given)} conflict; give only one")
    passwords = [k for k in (f"{name}_password_env", f"{name}_password_file") if k in obj]
    if f"{name}_keystore" in obj:
        if len(passwords) != 1:
            raise FieldError(
                f"{where}: {name}_keystore needs exactly one of {name}_password_env, "
                f"{name}_password_file"
            )
        password = passwords[0]
        return KeySource(
            sr25519=sr25519,
            keystore=base / _string(obj[f"{name}_keystore"], f"{where}.{name}_keystore"),
            password_env=_string(obj[password], f"{where}.{password}")
            if password.endswith("_env")
            else None,
            password_file=base / _string(obj[password], f"{where}.{password}")
            if password.endswith("_file")
            else None,
        )
    if passwords:
        raise FieldError(f"{where}: {passwords[0]} is only for {name}_keystore")
    if name in obj:
        if not devnet:
            raise FieldError(
                f"{where}: inline private keys are refused outside a devnet; "
                f"use {name}_env or {name}_file"
            )
        return KeySource(inline=as_hex(obj[name], f"{where}.{name}", size=32), sr25519=sr25519)
    if f"{name}_env" in obj:
        return KeySource(env=_string(obj[f"{name}_env"], f"{where}.{name}_env"), sr25519=sr25519)
    if f"{name}_file" in obj:
        file = base / _string(obj[f"{name}_file"], f"{where}.{name}_file")
        return KeySource(file=file, sr25519=sr25519)
    return None


def _required_key(obj: Mapping[str, Any], where: str, devnet: bool, base: Path) -> KeySource:
    source = _key_source(obj, where, devnet, base)
    if source is None:
        raise FieldError(
            f"{where}: one of key_env, key_file, key_keystore (or key, devnet only) is required"
        )
    return source


def _relayer_keys(relayer: Mapping[str, Any], devnet: bool, base: Path) -> tuple[KeySource, ...]:
    """``[relayer]``'s key (``key*``) or keys (``keys = [{key_env = …}, …]``), exactly one form.

    Two entries naming the same source (the same inline key, variable, file or keystore) are
    refused: two relayers signing with one account would take each other's nonces, every
    delivery of one replacing or failing the other's. A file or keystore is the same whatever
    its spelling (``sub/../k.key``, a symlink, a hard link; or one keystore with two password
    sources): it is compared by its resolved path and its (device, inode). (Two different
    sources that hold the same key cannot be seen here, before any is read.)"""
    if "keys" not in relayer:
        return (_required_key(relayer, "relayer", devnet, base),)
    single = [key for key in KEY_KEYS if key in relayer]
    if single:
        raise FieldError(f"relayer: keys and {single[0]} conflict; give only one")
    entries = as_list(relayer["keys"], "relayer.keys")
    if not entries:
        raise FieldError("relayer.keys must list at least one key")
    sources: list[KeySource] = []
    seen: dict[object, int] = {}  # each identity of an entry -> that entry's index
    for i, entry in enumerate(entries):
        where = f"relayer.keys[{i}]"
        source = _required_key(table(entry, where, KEY_KEYS), where, devnet, base)
        identities = _key_identities(source)
        earlier = next((seen[k] for k in identities if k in seen), None)
        if earlier is not None:
            raise FieldError(f"{where} is the same key as relayer.keys[{earlier}]")
        seen.update(dict.fromkeys(identities, i))
        sources.append(source)
    return tuple(sources)


def _key_identities(source: KeySource) -> set[object]:
    """What makes two key sources one: a file's or keystore's resolved path and, when it can
    be stat'ed, its (device, inode) — a hard link has another path, a symlink another name;
    otherwise the source itself (an inline key, a variable's name)."""
    path = source.keystore if source.keystore is not None else source.file
    if path is None:
        return {source}
    identities: set[object] = {("path", path.resolve())}
    try:
        found = path.stat()
    except OSError:  # missing or unreadable: loading it says so; its path still counts
        return identities
    return identities | {("inode", found.st_dev, found.st_ino)}


# --------------------------------------------------------------------------- chains


def _rpc(obj: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], int]:
    """The endpoints and the quorum of them that must agree."""
    urls = as_list(need(obj, where, "rpc"), f"{where}.rpc")
    if not urls:
        raise FieldError(f"{where}.rpc must be a non-empty list of http(s)/ws(s) URLs")
    seen: set[tuple[object, ...]] = set()
    for i, url in enumerate(urls):
        if not isinstance(url, str) or not url.startswith(
            ("http://", "https://", "ws://", "wss://")
        ):
            raise FieldError(f"{where}.rpc[{i}] must be an http(s)/ws(s) URL")
        try:
            parts = urlsplit(url)
            # Host case, a trailing slash or the scheme's default port written out do not make
            # another endpoint.
            port = None if parts.port == DEFAULT_PORTS[parts.scheme] else parts.port
            endpoint = (parts.hostname, port, parts.path.rstrip("/"), parts.query)
        except ValueError:
            raise FieldError(f"{where}.rpc[{i}] is not a valid URL") from None
        if not parts.hostname:
            raise FieldError(f"{where}.rpc[{i}] has no host")
        # A repeated endpoint would count twice towards rpc_quorum: one node, two votes.
        if endpoint in seen:
            raise FieldError(f"{where}.rpc[{i}] repeats {redact_url(url)}")
        seen.add(endpoint)
    quorum = as_int(obj.get("rpc_quorum", 1), f"{where}.rpc_quorum", lo=-U64_MAX, hi=U64_MAX)
    if not 1 <= quorum <= len(urls):
        raise FieldError(
            f"{where}.rpc_quorum {quorum} is not in 1..{len(urls)} (the number of rpc endpoints)"
        )
    return tuple(urls), quorum


def _chain(value: Any, index: int, allow_weak: bool) -> ChainConfig:
    where = f"chains[{index}]"
    kind = need(as_object(value, where), where, "kind")
    if not isinstance(kind, str):
        raise FieldError(f"{where}.kind must be a string, got {type_name(kind)}")
    try:
        chain_family = family(kind)
    except UnknownFamily as exc:
        raise FieldError(f"{where}.{exc}") from None
    # The common keys, and those of the family's own section (it validates them).
    obj = table(value, where, (*CHAIN_KEYS, *chain_family.config_keys), kind=kind)
    name = _string(need(obj, where, "name"), f"{where}.name")
    finality = need(obj, where, "finality")
    if not isinstance(finality, str):
        raise FieldError(f"{where}.finality must be a string")
    rpc, quorum = _rpc(obj, where)
    domain = as_int(need(obj, where, "domain"), f"{where}.domain", hi=U32_MAX)
    policy = FinalityPolicy.parse(finality, f"{where}.finality")
    own = chain_family.chain_fields(obj, where, allow_weak)
    return ChainConfig(
        name=name,
        domain=domain,
        kind=kind,
        rpc=rpc,
        rpc_quorum=quorum,
        finality=policy,
        chain_id=own.chain_id,
        contracts=own.contracts,
        start_block=as_int(obj.get("start_block", 0), f"{where}.start_block"),
        substrate=own.substrate,
        options=own.options,
        family_settings=own.family_settings,
    )


def _check_unique(chains: Sequence[ChainConfig]) -> None:
    for attr in ("name", "domain"):
        values = [getattr(c, attr) for c in chains]
        duplicates = {v for v in values if values.count(v) > 1}
        if duplicates:
            raise FieldError(f"chains: duplicate {attr} {sorted(duplicates)[0]!r}")


# --------------------------------------------------------------------------- the rest


def _committee(value: Any) -> tuple[Committee, Mapping[str, Any], bool]:
    obj = table(value, "committee", COMMITTEE_KEYS)
    validators = [
        as_hex(v, f"committee.validators[{i}]", size=20)
        for i, v in enumerate(as_list(need(obj, "committee", "validators"), "committee.validators"))
    ]
    committee = Committee(
        members=tuple(validators),
        threshold=as_int(need(obj, "committee", "threshold"), "committee.threshold", hi=U32_MAX),
    )
    allow_weak = _bool(obj.get("allow_weak_threshold", False), "committee.allow_weak_threshold")
    # Below 2/3, fewer keys than a BFT quorum sign anything the committee can: 1-of-3 is one
    # stolen key. Allowed only by name, so a weak committee is a decision, not a default.
    if not allow_weak and not two_thirds(committee.threshold, len(committee.members)):
        raise weak_threshold("committee.threshold", committee.threshold, len(committee.members))
    return committee, obj, allow_weak


def _origin(value: Any, name: str, chains: Sequence[ChainConfig]) -> int:
    """A policy origin: a configured chain's name or domain."""
    return _route_end(value, name, [c for c in chains if c.is_origin], "origin")


def _destination(value: Any, name: str, chains: Sequence[ChainConfig]) -> int:
    """A policy route's destination: a configured destination chain's name or domain."""
    return _route_end(value, name, [c for c in chains if c.is_destination], "destination")


def _route_end(value: Any, name: str, candidates: Sequence[ChainConfig], role: str) -> int:
    """The domain of the one of ``candidates`` that ``value`` names (its name or domain)."""
    for chain in candidates:
        if value == chain.name or (
            isinstance(value, int) and not isinstance(value, bool) and value == chain.domain
        ):
            return chain.domain
    known = ", ".join(f"{c.name} ({c.domain})" for c in candidates)
    raise FieldError(f"{name}: {value!r} is not a configured {role} (configured: {known})")


def takes_payment(chain: ChainConfig) -> bool:
    """Whether senders on ``chain`` can pay for delivery: an EVM origin with a ``paymaster``
    contract, a Substrate origin with a ``fee_account`` (docs/design.md, "Paid delivery")."""
    if chain.substrate is not None:
        return chain.substrate.fee_account is not None
    return "paymaster" in chain.contracts


def _route_payment(
    obj: Mapping[str, Any], where: str, default: RoutePayment | None = None
) -> RoutePayment:
    """``deliver`` and ``delivery_gas`` of ``obj`` (``where`` names it), over ``default``."""
    base = default or RoutePayment()
    deliver = obj.get("deliver", base.deliver)
    if deliver not in DELIVER_MODES:
        close = difflib.get_close_matches(str(deliver), DELIVER_MODES, n=1)
        hint = f", did you mean {close[0]!r}?" if close else ""
        raise FieldError(
            f"{where}.deliver: {deliver!r} is not one of {', '.join(DELIVER_MODES)}{hint}"
        )
    gas = as_int(
        obj.get("delivery_gas", base.delivery_gas),
        f"{where}.delivery_gas",
        lo=1,
        hi=MAX_DELIVERY_GAS,
    )
    return RoutePayment(deliver=deliver, delivery_gas=gas)


def _payment_rules(
    obj: Mapping[str, Any], chains: Sequence[ChainConfig]
) -> tuple[RoutePayment, dict[tuple[int, int], RoutePayment]]:
    """The policy's default payment rule and its per-route ones; a paid route from an origin
    where nobody can pay is refused (its messages would wait ``unpaid`` for ever)."""
    default = _route_payment(obj, "relayer.policy")
    routes: dict[tuple[int, int], RoutePayment] = {}
    for i, entry in enumerate(as_list(obj.get("routes", []), "relayer.policy.routes")):
        where = f"relayer.policy.routes[{i}]"
        route = table(entry, where, ROUTE_POLICY_KEYS)
        origin = _origin(need(route, where, "from"), f"{where}.from", chains)
        destination = _destination(need(route, where, "to"), f"{where}.to", chains)
        if origin == destination:
            raise FieldError(f"{where}: from and to are the same chain")
        if (origin, destination) in routes:
            raise FieldError(f"{where}: the route {route['from']} → {route['to']} is listed twice")
        if "deliver" not in route and "delivery_gas" not in route:
            raise FieldError(f"{where}: give deliver or delivery_gas (it changes nothing)")
        routes[(origin, destination)] = _route_payment(route, where, default)
    _check_paid_gas(default, routes, chains, obj)
    for source in (c for c in chains if c.is_origin and not takes_payment(c)):
        for target in chains:
            if not target.is_destination or target.domain == source.domain:
                continue
            rule = routes.get((source.domain, target.domain))
            if (rule or default).paid_only:
                where = "relayer.policy.routes" if rule else "relayer.policy.deliver"
                what = "a paymaster contract" if source.substrate is None else "a fee_account"
                raise FieldError(
                    f"{where}: the paid route {source.name} → {target.name} needs {what} on "
                    f"{source.name} (nobody can pay there: its messages would wait unpaid for ever)"
                )
    return default, routes


def _check_paid_gas(
    default: RoutePayment,
    routes: Mapping[tuple[int, int], RoutePayment],
    chains: Sequence[ChainConfig],
    obj: Mapping[str, Any],
) -> None:
    """Refuse a paid route to an EVM destination that charges less than
    :data:`EVM_MIN_DELIVERY_GAS`, unless ``allow_recipients`` is set: the sender picks the
    recipient, and a recipient that burns all the gas the inbox gives it would make the relayer
    spend several times what was paid (hostile review of paid delivery, finding 1)."""
    if "allow_recipients" in obj:
        return  # the operator vouches for every recipient's gas use
    for source in (c for c in chains if c.is_origin):
        for target in chains:
            if target.substrate is not None or not target.is_destination:
                continue
            if target.domain == source.domain:
                continue
            rule = routes.get((source.domain, target.domain))
            payment = rule or default
            if payment.paid_only and payment.delivery_gas < EVM_MIN_DELIVERY_GAS:
                where = "relayer.policy.routes" if rule else "relayer.policy.delivery_gas"
                raise FieldError(
                    f"{where}: the paid route {source.name} → {target.name} charges "
                    f"{payment.delivery_gas} gas, less than the {EVM_MIN_DELIVERY_GAS} one "
                    f"message can cost on {target.name} (its recipient's handle gets 500k); "
                    "raise delivery_gas or limit recipients with allow_recipients"
                )


def _policy(value: Any, chains: Sequence[ChainConfig]) -> RelayPolicy:
    obj = table(value, "relayer.policy", POLICY_KEYS)
    lists: dict[str, frozenset[Any]] = {}
    for key, items in obj.items():
        if key not in LIST_POLICY_KEYS:
            continue
        name = f"relayer.policy.{key}"
        entries = as_list(items, name)
        if key.startswith("allow") and not entries:
            # An empty allow list would refuse every message: surely not what was meant.
            raise FieldError(f"{name} is empty (it would refuse everything); remove it")
        if key.endswith("origins"):
            lists[key] = frozenset(
                _origin(e, f"{name}[{i}]", chains) for i, e in enumerate(entries)
            )
        else:  # senders and recipients: 32 bytes, as messages carry them
            lists[key] = frozenset(account(e, f"{name}[{i}]") for i, e in enumerate(entries))
    payment, routes = _payment_rules(obj, chains)
    return RelayPolicy(
        allow_origins=lists.get("allow_origins"),
        deny_origins=lists.get("deny_origins", frozenset()),
        allow_senders=lists.get("allow_senders"),
        deny_senders=lists.get("deny_senders", frozenset()),
        allow_recipients=lists.get("allow_recipients"),
        deny_recipients=lists.get("deny_recipients", frozenset()),
        origin_names={c.domain: c.name for c in chains},
        payment=payment,
        routes=routes,
    )


def load_config(path: Path) -> Config:
    """Read and validate the TOML file at ``path``; ConfigError (one line) for any problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    try:
        return _build(raw, path)
    except (FieldError, VerificationError, ConfigError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def _build(raw: Mapping[str, Any], path: Path) -> Config:
    base = path.parent
    raw = table(raw, "top level", TOP_LEVEL_KEYS)
    devnet = _bool(raw.get("devnet", False), "devnet")
    ledger = table(need(raw, "top level", "ledger"), "ledger", LEDGER_KEYS)
    location = _string(need(ledger, "ledger", "location"), "ledger.location")
    if "://" not in location:
        location = str((base / location).resolve())
    committee, committee_obj, allow_weak = _committee(need(raw, "top level", "committee"))
    chains = tuple(
        _chain(c, i, allow_weak)
        for i, c in enumerate(as_list(need(raw, "top level", "chains"), "chains"))
    )
    _check_unique(chains)
    for kind in dict.fromkeys(chain.kind for chain in chains):
        family(kind).check_config(chains)
    relayer = None if "relayer" not in raw else table(raw["relayer"], "relayer", RELAYER_KEYS)
    relayer_keys = () if relayer is None else _relayer_keys(relayer, devnet, base)
    lease_seconds = (
        None
        if relayer is None or "lease_seconds" not in relayer
        else _lease_seconds(relayer["lease_seconds"])
    )
    client = None if "client" not in raw else table(raw["client"], "client", CLIENT_KEYS)
    client_substrate_uri = None
    if client is not None and "substrate_uri" in client:
        if not devnet:
            raise FieldError("client.substrate_uri (a development key) is refused outside a devnet")
        conflicting = [k for k in SUBSTRATE_KEY_KEYS if k in client]
        if conflicting:
            raise FieldError(f"client: substrate_uri and {conflicting[0]} conflict; give only one")
        client_substrate_uri = _string(client["substrate_uri"], "client.substrate_uri")
    attester_tables = [
        (table(a, f"attesters[{i}]", ATTESTER_KEYS), f"attesters[{i}]")
        for i, a in enumerate(as_list(raw.get("attesters", []), "attesters"))
    ]
    checkpoint_text = _string(
        committee_obj.get("checkpoint_store", "checkpoints"), "committee.checkpoint_store"
    )
    checkpoint_url = None
    if "://" in checkpoint_text:
        # Checked here, so that a typo is one line at start-up; the password never shown.
        if not checkpoint_text.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ConfigError(
                f"committee.checkpoint_store: {redact_url(checkpoint_text)} is neither a "
                "directory nor a postgresql+psycopg:// URL"
            )
        checkpoint_url = checkpoint_text
    return Config(
        path=path,
        devnet=devnet,
        ledger=location,
        committee=committee,
        checkpoint_store=base / (checkpoint_text if checkpoint_url is None else "checkpoints"),
        checkpoint_url=checkpoint_url,
        chains=chains,
        relayer_key=relayer_keys[0] if relayer_keys else None,
        relayer_keys=relayer_keys,
        lease_seconds=lease_seconds,
        attester_keys=tuple(
            _required_key(obj, where, devnet, base) for obj, where in attester_tables
        ),
        # An attester's Substrate identity (sr25519 seed): what it signs multisig approvals with.
        attester_substrate_keys=tuple(
            _key_source(obj, where, devnet, base, name="substrate_key")
            for obj, where in attester_tables
        ),
        client_key=None if client is None else _required_key(client, "client", devnet, base),
        client_substrate_key=None
        if client is None
        else _key_source(client, "client", devnet, base, name="substrate_key"),
        client_substrate_uri=client_substrate_uri,
        raw=raw,
        relay_policy=RelayPolicy()
        if relayer is None or "policy" not in relayer
        else _policy(relayer["policy"], chains),
    )
