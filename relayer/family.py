"""The seam between the chain-neutral flow and the chain families.

Passerelle's flow is the same for every chain: an *origin* has final blocks whose messages get
canonical nonces and whose outbox state (count, root) the attesters prove and sign; a
*destination* takes attested messages in batches and shows, in its final state, which are
delivered. What differs is how each of those is done on a given kind of chain. A
:class:`ChainFamily` says it for one kind (``kind = "evm"`` in the config): the relayer
(:mod:`relayer.relay`), the attester (:mod:`relayer.attester`), the user's send and status
(:mod:`relayer.user`) and the CLI only ever talk to chains through these Protocols.

:func:`family` is the registry: the one place that maps a configured ``kind`` to the package
implementing it (``relayer/families/<name>/``). Families are imported on first use, so a relayer
of EVM chains never loads substrate-interface. Adding a family is adding a package and a line
to :data:`FAMILIES` (docs/adding-a-chain.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from adapters.rpc import EndpointHealth
    from light_clients.merkle import IncrementalMerkleTree
    from relayer.attester import AttesterContext
    from relayer.checkpoints import CheckpointStore
    from relayer.config import ChainConfig, Config
    from relayer.ledger import MessageRecord
    from relayer.payments import GasRate, OriginPayments
    from relayer.relay import Relayer
    from relayer.user import Sent

__all__ = [
    "FAMILIES",
    "ChainFamily",
    "ChainFields",
    "Delivery",
    "DiscoveredMessage",
    "HandledElsewhere",
    "Head",
    "Origin",
    "OutboxState",
    "ReproofRefused",
    "Reproven",
    "ScannedRange",
    "UnknownFamily",
    "family",
    "family_of",
]


@dataclass(frozen=True)
class Head:
    """A block the origin's finality policy accepts, its hash checked by a light client.

    ``proof`` is the family's own evidence for it (an EVM family keeps the verified header, whose
    state root proves the outbox): the flow passes it back to :meth:`Origin.outbox_state`
    untouched and never looks inside."""

    number: int
    hash: bytes
    proof: object = None


@dataclass(frozen=True, slots=True)
class DiscoveredMessage:
    """A message seen on its origin chain, with where it was seen: what an origin's scan finds
    and the ledger records (``Ledger.record_discovered``).

    ``message`` is the packed version-1 message; its id, origin, nonce, sender, destination and
    recipient are read from it, so a row can never disagree with its own bytes.

    Defined here, with the seam, not in :mod:`relayer.ledger` (which re-exports it): an
    attester's origins make them, and importing the ledger would cost it SQLAlchemy and SQLModel
    (~0.5 CPU s at each start) for a plain record.
    """

    message: bytes
    block_number: int
    block_hash: bytes | str
    tx_hash: bytes | str
    log_index: int


@dataclass(frozen=True)
class ScannedRange:
    """What :meth:`Origin.scan` found in final blocks ``first..end``: the messages, with nonces
    continuing the caller's tree exactly (checked by the family against the chain's own record
    of its outbox where it has one), and the hash of block ``end`` (the scan cursor's anchor)."""

    first: int
    end: int
    end_hash: bytes | None
    messages: Sequence[DiscoveredMessage]
    ids: Sequence[bytes]
    skipped: int = 0
    """Candidates the family's rules refused (they consume no nonce), for the metrics."""


@dataclass(frozen=True)
class OutboxState:
    """An origin's outbox at a final head, as an attester signs it: ``count`` messages whose
    Merkle root is ``root``."""

    count: int
    root: bytes
    skipped: int = 0
    """Candidates the family's rules refused while proving it (for the attester's metrics)."""


class Origin(Protocol):
    """An open connection to one origin chain (one per task: it may keep state, such as an
    attester's own copy of the accumulator)."""

    @property
    def endpoints(self) -> Sequence[EndpointHealth]:
        """The RPC endpoints behind it, for the health metrics (empty if the family has none)."""
        ...

    async def final_head(self) -> Head:
        """The newest block the chain's finality policy accepts (AdapterError if none can be
        told now; VerificationError if a node served a proof the light client refuses)."""
        ...

    async def block_hash(self, number: int) -> bytes | None:
        """The canonical hash of block ``number``, None if the node does not have it: the
        reorg check of the scan cursor and of an attester's last signature, which halt on a
        changed hash. So it must be as trustworthy as the family can make it — agreed by the
        RPC quorum (EVM), proven by the finality light client (Substrate with a GRANDPA
        checkpoint) — or a lying endpoint could halt the relayer and the attesters."""
        ...

    async def scan(self, tree: IncrementalMerkleTree, first: int, final: Head) -> ScannedRange:
        """The messages of the next chunk of final blocks from ``first`` (up to ``final``), their
        nonces continuing ``tree`` (not modified). AdapterError when the answers do not add up
        (missing, altered or invented messages): the caller scans the range again."""
        ...

    async def outbox_state(self, head: Head) -> OutboxState:
        """The outbox's count and root at ``head``, proven (never a node's word): what an
        attester signs."""
        ...

    async def stamped_domain(self) -> int | None:
        """The domain the chain's outbox writes into every message as its origin, as the chain
        states it (an EVM Outbox's ``localDomain``); None where the family has no such number
        (the configuration names the domain). Unproven: a start-up check against a wrong
        domain id in the configuration, never a proof. AdapterError if it cannot be read now."""
        ...


class ReproofRefused(ValueError):
    """Nothing was sent: the message cannot be re-proven now, or its destination's family has
    no re-proof at all (:meth:`ChainFamily.reprove`); ``str()`` says why in one line."""


class HandledElsewhere(Exception):
    """Our re-proof failed on chain because someone else handed the message over first (a
    front-run, another operator, the recipient's user): what the operator wanted happened;
    ``str()`` says so in one line."""


@dataclass(frozen=True)
class Reproven:
    """A re-proof that the destination accepted: the message was handed over this time."""

    id: str
    destination: str
    checkpoint_index: int
    tx_hash: str
    block_number: int
    gas_used: int

    def as_json(self) -> dict[str, object]:
        """For ``--json``."""
        return {
            "id": self.id,
            "destination": self.destination,
            "checkpoint_index": self.checkpoint_index,
            "tx": self.tx_hash,
            "block": self.block_number,
            "gas_used": self.gas_used,
        }


class Delivery(Protocol):
    """A relayer's delivery to one destination chain, for as long as the relayer runs."""

    async def run(self) -> None:
        """Deliver attested messages for ever; record what the chain's final state shows
        delivered. Errors of one round are logged and retried; only :class:`RouteHalted`
        (and cancellation) ends it."""
        ...


@dataclass(frozen=True)
class ChainFields:
    """What a family's config section adds to a :class:`~relayer.config.ChainConfig`."""

    chain_id: int | None = None
    contracts: Mapping[str, bytes] = field(default_factory=dict)
    substrate: Any = None
    options: Mapping[str, int] = field(default_factory=dict)
    """The family's own settings (:attr:`relayer.config.ChainConfig.options`)."""
    family_settings: object = None
    """The family's own parsed settings object (``ChainConfig.family_settings``)."""


class ChainFamily(Protocol):
    """Everything the flow needs from one kind of chain."""

    @property
    def kind(self) -> str:
        """The ``kind`` string of its config sections."""
        ...

    @property
    def account_size(self) -> int:
        """Bytes of an account (a recipient's natural size) on this family's chains."""
        ...

    @property
    def config_keys(self) -> frozenset[str]:
        """The keys its ``[[chains]]`` section may have besides the common ones."""
        ...

    # --- configuration -------------------------------------------------------------------

    def chain_fields(self, obj: Mapping[str, Any], where: str, allow_weak: bool) -> ChainFields:
        """Parse and validate the family's own keys of one ``[[chains]]`` table (FieldError,
        one line naming the field, for anything wrong)."""
        ...

    def check_config(self, chains: Sequence[ChainConfig]) -> None:
        """Rules across chains (all chains, not only this family's); FieldError if broken."""
        ...

    def is_origin(self, chain: ChainConfig) -> bool:
        """Does ``chain`` send messages?"""
        ...

    def is_destination(self, chain: ChainConfig) -> bool:
        """Can ``chain`` receive messages?"""
        ...

    def outbox_id(self, chain: ChainConfig) -> bytes:
        """The 32-byte outbox of ``chain`` in checkpoints (ConfigError if it is no origin)."""
        ...

    def finality_text(self, chain: ChainConfig) -> str:
        """``chain``'s finality policy as ``status`` shows it (what the final head rests on)."""
        ...

    def rpc_policy(self, chain: ChainConfig) -> str:
        """How ``chain``'s endpoints are trusted, as ``status`` shows it (no URL)."""
        ...

    def default_recipients(self, config: Config, chain: ChainConfig) -> frozenset[bytes]:
        """The 32-byte recipients on ``chain`` a Substrate-style origin may address by default
        (its message-handling contracts or accounts); empty for none."""
        ...

    # --- the flow --------------------------------------------------------------------------

    def open_origin(
        self, config: Config, chain: ChainConfig, *, role: str | None = None
    ) -> AbstractAsyncContextManager[Origin]:
        """A fresh :class:`Origin` for ``chain`` (one per task), closed on exit. ``role`` names
        the process (``relayer``, ``attester-0x…``) where a family keeps state of its own per
        process (a beacon light client's store); None keeps nothing."""
        ...

    def delivery(self, chain: ChainConfig, relayer: Relayer) -> Delivery:
        """The relayer's delivery to ``chain`` (:class:`Relayer` is the host: ledger, lanes,
        the light-client gate, the relay policy)."""
        ...

    def attester_duties(
        self, chain: ChainConfig, context: AttesterContext
    ) -> Sequence[Callable[[], Awaitable[None]]]:
        """Tasks an attester runs for ``chain`` besides signing its outbox (a multisig
        destination's approvals); none for most families."""
        ...

    async def delivered(
        self, config: Config, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[bool]:
        """For each raw message to ``chain``: does the chain show it delivered? (For ``status``
        and the conformance suite: the latest state, read in bulk.)"""
        ...

    @property
    def delivered_evidence(self) -> str:
        """What :meth:`final_delivered` reads, in words (``ledger rebuild``'s summary)."""
        ...

    async def final_delivered(
        self,
        config: Config,
        chain: ChainConfig,
        messages: Sequence[bytes],
        outboxes: Mapping[int, bytes],
    ) -> list[bool]:
        """For each raw message to ``chain``: delivered, on the evidence the family's own
        delivery records the terminal ``delivered`` from (a false "delivered" loses a message
        for good)? ``outboxes``: origin domain → the outbox its lane trusts. What ``ledger
        rebuild`` restores delivered flags from."""
        ...

    async def reprove(
        self,
        config: Config,
        chain: ChainConfig,
        record: MessageRecord,
        *,
        outbox: bytes,
        store: Callable[[], CheckpointStore],
        tree: Callable[[], IncrementalMerkleTree],
    ) -> Reproven:
        """Hand ``record``, parked on destination ``chain`` (accepted, its recipient failed),
        to its recipient again under a fresh proof checked against the trust ``chain`` holds
        NOW (``passerelle retry --on-chain``, :func:`relayer.operator.retry_on_chain`), from
        the newest checkpoint in the checkpoint store of the tree ``tree`` builds (every
        message of the origin, from the ledger) for ``outbox``. ``store`` and ``tree`` are
        called only once the cheap checks passed: ``store`` opens the store (a database
        engine, files), which a refused command must not do; the caller closes it.

        :class:`ReproofRefused` (one line, nothing sent) when it cannot: a family whose
        destinations park nothing says so, naming the family and why; :class:`HandledElsewhere`
        when someone else handed it over first; AdapterError if the chain cannot be asked."""
        ...

    # --- what users do ---------------------------------------------------------------------

    async def read_payments(
        self,
        chain: ChainConfig,
        origin: Origin,
        records: Sequence[MessageRecord],
        destinations: Collection[int],
    ) -> OriginPayments:
        """What each record paid on ``chain`` (read through its open ``origin`` at one final
        block) and the rate of each of ``destinations`` (:mod:`relayer.payments`)."""
        ...

    async def paid_since(
        self, chain: ChainConfig, origin: Origin, after: int | None
    ) -> tuple[int, set[str]] | None:
        """The final block read up to and the ids paid or topped up after block ``after``;
        None when a payment there cannot change after its message (nothing to watch)."""
        ...

    async def current_rate(self, chain: ChainConfig, destination: ChainConfig) -> GasRate | None:
        """``chain``'s price now for delivery to ``destination`` (``quote``, ``send``); None if
        it prices none; ConfigError if ``chain`` takes no payment."""
        ...

    async def send_messages(
        self,
        config: Config,
        source: ChainConfig,
        destination: ChainConfig,
        *,
        recipient: bytes,
        body: bytes,
        count: int,
        pay_gas: int | None = None,
    ) -> list[Sent]:
        """Dispatch ``count`` messages from the client's account on ``source``, each paying
        (in the same transaction or extrinsic) for ``pay_gas`` destination gas unless None
        (docs/design.md, "Paid delivery")."""
        ...

    async def send_tokens(
        self,
        config: Config,
        source: ChainConfig,
        destination: ChainConfig,
        *,
        amount: int,
        recipient: bytes,
        pay_gas: int | None = None,
    ) -> list[Sent]:
        """Bridge ``amount`` of ``source``'s token to ``recipient`` on ``destination``, paying
        for ``pay_gas`` destination gas unless None."""
        ...

    async def token_balance(self, config: Config, chain: ChainConfig, owner: bytes | None) -> int:
        """The client's (or ``owner``'s) balance of ``chain``'s bridged token."""
        ...

    def client_account(self, config: Config) -> bytes:
        """The client's own account on this family's chains (ConfigError if no key for it is
        configured): where tokens go when ``send`` names no recipient."""
        ...

    def default_message_recipient(self, config: Config, chain: ChainConfig) -> bytes:
        """Who a message to ``chain`` addresses when ``send`` names no recipient (32 bytes)."""
        ...


FAMILIES: Mapping[str, str] = {
    "evm": "relayer.families.evm",
    "evm-legacy": "relayer.families.evm_legacy",
    "substrate": "relayer.families.substrate",
}
"""``kind`` → the module whose ``FAMILY`` implements it."""


class UnknownFamily(ValueError):
    """A ``kind`` no family implements."""


def family(kind: str) -> ChainFamily:
    """The family of ``kind`` (its module imported on first use); :class:`UnknownFamily`
    naming the known kinds otherwise."""
    module = FAMILIES.get(kind)
    if module is None:
        known = ", ".join(repr(k) for k in FAMILIES)
        raise UnknownFamily(f"kind must be one of {known}, got {kind!r}")
    implementation: ChainFamily = importlib.import_module(module).FAMILY
    return implementation


def family_of(chain: ChainConfig) -> ChainFamily:
    """The family of a configured chain."""
    return family(chain.kind)
