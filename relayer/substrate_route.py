"""Substrate as an origin and as a destination: the rules attesters and the relayer share.

docs/design.md, "Substrate origin and destination". One piece of code serves both roles, so an
attester and the relayer cannot disagree about a nonce or a call hash:

Origin (:func:`scan_remarks`)
    The messages of a Substrate chain are the ``PSRL`` remarks of its final blocks that pass
    :func:`light_clients.substrate.remark.validate_remark` and, for token returns,
    :func:`~light_clients.substrate.remark.check_escrow`; their nonces are their positions
    (:func:`~light_clients.substrate.remark.assign_nonces`). Rejected remarks are logged with
    their reason and consume no nonce. The outbox id in checkpoints is the genesis hash.

Destination (:func:`delivery_calls`, :class:`ProposalStore`)
    The committee's multisig executes ``Utility.batch_all`` of, per message,
    ``Uniques.mint(collection of its origin, item = nonce, owner = the multisig)`` (the replay
    guard: a second mint of an item fails, so the whole batch does; the multisig keeps the item,
    since an owner could burn it and re-open the message) and the delivery itself: an
    ``Assets.mint`` of the wrapped token for a transfer from the home chain's TokenBridge, else
    ``System.remark_with_event(message)`` — the message on chain, naming its recipient. A
    token transfer that can never be minted (:func:`refund_reason`, judged by each attester on
    chain state) is refunded instead: the guard item is minted *and frozen*, and the multisig
    remarks ``PSRL ‖ REFUND`` back to the sending TokenBridge (:func:`refund_message`), a
    message of this chain as an origin. The relayer proposes batches (a file per batch); each
    attester approves a batch only after checking every message against a checkpoint root
    that it and a quorum signed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import RemarkSeen, SubstrateClient
from adapters.substrate.finality import (
    GET_READ_PROOF,
    PROVE_FINALITY,
    SYSTEM_EVENTS_KEY,
    GrandpaFinality,
    offered,
    read_proof,
)
from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.merkle import TREE_DEPTH
from light_clients.message import MAX_MESSAGE_BYTES, Message, decode_message
from light_clients.substrate.grandpa import AuthoritySet
from light_clients.substrate.header import SubstrateHeader
from light_clients.substrate.remark import (
    ACTION_MINT,
    ACTION_REFUND,
    REMARK_PREFIX,
    U128_MAX,
    EscrowRoute,
    RemarkRejected,
    TokenBody,
    assign_nonces,
    check_escrow,
    check_recipient,
    decode_token_body,
)
from relayer.checkpoints import (
    atomic_write,
    checkpoint_from_json,
    checkpoint_to_json,
    json_files,
    parse_hex,
    read_small_file,
)
from relayer.config import (
    SUBSTRATE_BATCH_SIZE,
    ChainConfig,
    Config,
    ConfigError,
    SubstrateSettings,
    allowed_recipients,
)
from relayer.endpoints import bytes32

log = logging.getLogger("passerelle.substrate")

SCAN_CHUNK = 50
"""Substrate blocks read per scan step (three RPC round trips each)."""


# --- origin --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginMessage:
    """A canonical message of a Substrate origin and where its remark is."""

    message: Message
    raw: bytes
    id: bytes
    block_number: int
    block_hash: bytes
    extrinsic_index: int
    extrinsic_hash: bytes


@dataclass
class RemarkScan:
    """What :func:`scan_remarks` found in a range of final blocks."""

    messages: list[OriginMessage] = field(default_factory=list)
    skipped: list[tuple[RemarkSeen, str]] = field(default_factory=list)
    last_hash: bytes = b""


class OriginRoutes(list[EscrowRoute]):
    """The escrow routes of a Substrate origin, and the recipients its messages may address.

    A list (of :class:`EscrowRoute`) so that it reads as before; ``allowed`` is
    :func:`relayer.config.allowed_recipients` of the origin: a remark to any other recipient is
    never a message (issue #8, point 10: the escrow rule alone failed open for a TokenBridge
    missing from the config).
    """

    def __init__(
        self, routes: Iterable[EscrowRoute], allowed: Mapping[int, frozenset[bytes]]
    ) -> None:
        super().__init__(routes)
        self.allowed = allowed


def escrow_routes(config: Config, chain: ChainConfig) -> OriginRoutes:
    """The token bridges a message from ``chain`` may address, what must back it, and every
    recipient it may address at all.

    Every configured TokenBridge is listed: a message to one is accepted only as a paid-for
    return of the wrapped asset to its home chain, so a bridge elsewhere (no home token there)
    gets nothing from this origin.
    """
    settings = chain.settings()
    routes = []
    for other in config.chains:
        if "token_bridge" not in other.contracts:
            continue
        at_home = other.domain == settings.asset_home_domain
        routes.append(
            EscrowRoute(
                destination=other.domain,
                bridge=bytes32(other.contract("token_bridge")),
                home_token=settings.asset_home_token if at_home else None,
                asset_id=settings.asset_id if at_home else None,
                escrow=settings.bridge_account,
            )
        )
    return OriginRoutes(routes, allowed_recipients(config, chain))


async def check_genesis(client: SubstrateClient, chain: ChainConfig) -> None:
    """Refuse an endpoint that serves another chain than the configured one (T8)."""
    actual = await client.genesis_hash()
    if actual != chain.settings().genesis_hash:
        raise ConfigError(
            f"chain {chain.name!r}: endpoint reports genesis 0x{actual.hex()}, "
            f"config says 0x{chain.settings().genesis_hash.hex()}"
        )


@asynccontextmanager
async def connected(chain: ChainConfig, *, retry: float = 2.0) -> AsyncIterator[SubstrateClient]:
    """A client of ``chain``'s first endpoint, its genesis checked; a node that is down (or
    still starting) is retried every ``retry`` seconds instead of stopping the process, while a
    node of another chain is a ConfigError at once."""
    while True:
        client = SubstrateClient(chain.rpc[0])
        try:
            await client.connect()
        except AdapterError as exc:
            log.warning("%s: %s; retrying in %g s", chain.name, exc, retry)
            await trio.sleep(retry)
            continue
        try:
            await check_genesis(client, chain)
            yield client
            return
        finally:
            await client.aclose()


def grandpa_follower(chain: ChainConfig) -> GrandpaFinality | None:
    """The GRANDPA light client of ``chain`` if its config has a checkpoint (one per task)."""
    checkpoint = chain.settings().grandpa
    if checkpoint is None:
        return None
    try:
        authority_set = AuthoritySet(checkpoint.set_id, checkpoint.authorities)
    except VerificationError as exc:
        raise ConfigError(f"chain {chain.name!r}: grandpa checkpoint: {exc}") from None
    return GrandpaFinality(authority_set, checkpoint.block_hash, checkpoint.block_number)


async def final_header(
    client: SubstrateClient, chain: ChainConfig, grandpa: GrandpaFinality | None = None
) -> SubstrateHeader:
    """The newest block ``chain``'s finality policy accepts, its hash checked by the light client.

    ``finalized`` takes the node's finalized head and, with a ``grandpa`` checkpoint, proves it
    final with the node's GRANDPA justification (refusing a node that offers none);
    ``devnet-instant`` is the same head on a chain without a finality gadget (chopsticks: every
    block, which is why the policy has its own name); ``confirmations:N`` the best block minus N.
    """
    policy = chain.finality
    if policy.name in ("finalized", "devnet-instant"):
        head = await client.finalized_head()
        if grandpa is not None:
            if grandpa.head_number == grandpa.checkpoint_number and PROVE_FINALITY not in (
                await offered(client)
            ):  # asked once, before the first proof (not on every poll)
                raise ConfigError(
                    f"chain {chain.name!r}: a grandpa checkpoint is configured but "
                    f"{redact_url(client.url)} does not offer {PROVE_FINALITY}"
                )
            await grandpa.verify_final(client, head)
        return head
    if policy.name == "confirmations":
        number = max(await client.best_number() - policy.depth, 0)
        block_hash = await client.block_hash(number)
        if block_hash is None:
            raise AdapterError(f"{chain.name}: no block {number}")
        return await client.header(block_hash)
    raise ConfigError(f"chain {chain.name!r}: finality {policy} does not apply to Substrate")


async def scan_remarks(
    client: SubstrateClient,
    chain: ChainConfig,
    routes: Sequence[EscrowRoute],
    blocks: range,
    next_nonce: int,
    *,
    grandpa: GrandpaFinality | None = None,
) -> RemarkScan:
    """The canonical messages of the (final) ``blocks``, numbered from ``next_nonce``.

    With ``grandpa``, each block must be the one proven final at its height (a node cannot
    slip in a block of another fork). A remark is a message only if it passes the outbox rules
    (a remark the committee's multisig made itself included: a refund), addresses a recipient
    ``routes.allowed`` lists, and, to a TokenBridge, is escrow-backed (or a committee refund)."""
    if not isinstance(routes, OriginRoutes):  # fail closed: no list of allowed recipients
        raise TypeError("scan_remarks needs the routes of escrow_routes (allowed recipients)")
    committee = chain.settings().multisig
    scan = RemarkScan()
    accepted: list[tuple[int, int, Message]] = []
    sources: list[RemarkSeen] = []
    # Events are proven by read proofs under the (hash-checked, and with a GRANDPA checkpoint
    # proven-final) headers wherever the node offers them; chopsticks lists the method but
    # cannot serve it, hence never under its named devnet-instant policy.
    prove_events = chain.finality.name != "devnet-instant" and GET_READ_PROOF in (
        await offered(client)
    )
    for number in blocks:
        block_hash = await client.block_hash(number)
        if block_hash is None:
            raise AdapterError(f"{chain.name}: block {number} vanished while scanning")
        if grandpa is not None and grandpa.final_hash(number) != block_hash:
            await grandpa.verify_final(client, await client.header(block_hash))
        scan.last_hash = block_hash
        if number == 0:
            continue  # genesis has no extrinsics (and chopsticks reports a placeholder hash)
        proven_events = None
        if prove_events:
            header = await client.header(block_hash)
            value = (await read_proof(client, [SYSTEM_EVENTS_KEY], header))[SYSTEM_EVENTS_KEY]
            proven_events = b"\x00" if value is None else value  # absent: no events
        used: dict[int, set[int]] = {}
        for seen in await client.remarks(block_hash, proven_events=proven_events):
            try:
                message = seen.validate(chain.domain, committee)
                check_recipient(message, routes.allowed)
                check_escrow(
                    message, seen.transfers, routes, used.setdefault(seen.extrinsic_index, set())
                )
            except RemarkRejected as exc:
                reason = f"{exc.reason}: {exc}"
                log.warning(
                    "%s block %d extrinsic %d: remark skipped (%s)",
                    chain.name,
                    number,
                    seen.extrinsic_index,
                    reason,
                )
                scan.skipped.append((seen, reason))
                continue
            accepted.append((number, seen.extrinsic_index, message))
            sources.append(seen)
    for message, seen in zip(assign_nonces(next_nonce, accepted), sources, strict=True):
        raw = message.encode()
        scan.messages.append(
            OriginMessage(
                message=message,
                raw=raw,
                id=keccak256(raw),
                block_number=seen.block_number,
                block_hash=seen.block_hash,
                extrinsic_index=seen.extrinsic_index,
                extrinsic_hash=seen.extrinsic_hash,
            )
        )
    return scan


# --- destination ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeCall:
    """One call of a delivery batch, as :meth:`SubstrateClient.compose` takes it."""

    module: str
    function: str
    params: Mapping[str, Any]


def collection_of(settings: SubstrateSettings, origin: int) -> int:
    """The Uniques collection guarding deliveries from ``origin``; ConfigError if none."""
    try:
        return settings.collections[origin]
    except KeyError:
        raise ConfigError(f"no Uniques collection configured for origin {origin}") from None


MAX_DELIVERY_ATTEMPTS = 5
"""Proposals a message to a Substrate chain gets before the relayer leaves it ``failed`` for
good. A transfer the committee can show undeliverable is refunded on the first one; this bounds
everything else (a runtime that refuses a call for a reason nobody foresaw)."""

GUARD_DELIVERED = "delivered"
GUARD_REFUNDED = "refunded"


async def guard_items(
    client: SubstrateClient, settings: SubstrateSettings, messages: Sequence[Message]
) -> list[str | None]:
    """For each message, what its replay-guard item says, in one round trip: None (no item:
    not handled yet), :data:`GUARD_DELIVERED`, or :data:`GUARD_REFUNDED` (the committee froze
    the item in the batch that refunded the transfer: :func:`delivery_calls`)."""
    entries = await client.query_many(
        "Uniques", "Asset", [[collection_of(settings, m.origin), m.nonce] for m in messages]
    )
    states: list[str | None] = []
    for entry in entries:
        if entry is None:
            states.append(None)
        elif isinstance(entry, dict) and entry.get("is_frozen") is True:
            states.append(GUARD_REFUNDED)
        else:
            states.append(GUARD_DELIVERED)
    return states


async def delivered_items(
    client: SubstrateClient, settings: SubstrateSettings, messages: Sequence[Message]
) -> list[bool]:
    """For each message, does its replay-guard item exist (it was delivered or refunded: it
    can never be delivered again)? One round trip."""
    return [state is not None for state in await guard_items(client, settings, messages)]


def token_mint(
    message: Message, settings: SubstrateSettings, token_bridges: Mapping[int, bytes]
) -> tuple[bytes, int] | None:
    """``(beneficiary, amount)`` if ``message`` is a transfer of the wrapped asset's home token
    from its home TokenBridge to the bridge account; None for any other message."""
    token = decode_token_body(message.body)
    if (
        token is None
        or settings.asset_id is None
        or settings.asset_home_token is None
        or message.origin != settings.asset_home_domain
        or token_bridges.get(message.origin) != message.sender
        or message.recipient != settings.bridge_account
        or token.action != ACTION_MINT
        or token.home_token != bytes32(settings.asset_home_token)
        or not 0 < token.amount <= U128_MAX
        or token.recipient == bytes(32)
    ):
        return None
    return token.recipient, token.amount


def token_transfer(
    message: Message, settings: SubstrateSettings, token_bridges: Mapping[int, bytes]
) -> TokenBody | None:
    """The body of ``message`` if it is a token transfer to this chain — 128 bytes from its
    origin's TokenBridge to the bridge account — else None. Such a message moved tokens on its
    origin (locked them): it is delivered as a mint or refunded, never as a mere remark."""
    token = decode_token_body(message.body)
    if (
        token is None
        or token_bridges.get(message.origin) != message.sender
        or message.recipient != settings.bridge_account
    ):
        return None
    return token


REFUND_NOT_WRAPPED = 1
REFUND_CANNOT_HOLD = 2
REFUND_BELOW_MINIMUM = 3
REFUND_SUPPLY_OVERFLOW = 4
REFUND_NO_CONSUMER_ROOM = 5
REFUND_REASONS: Mapping[int, str] = {
    REFUND_NOT_WRAPPED: "not a mint of the wrapped asset this chain can make (token or amount)",
    REFUND_CANNOT_HOLD: "the beneficiary has no native balance, so it cannot hold the "
    "non-sufficient wrapped asset",
    REFUND_BELOW_MINIMUM: "the amount is below the wrapped asset's minimum balance",
    REFUND_SUPPLY_OVERFLOW: "the wrapped asset's supply would overflow a u128",
    REFUND_NO_CONSUMER_ROOM: "the beneficiary's account has no room for another consumer "
    "reference, so it cannot hold the non-sufficient wrapped asset",
}
"""Why the committee refunds a transfer (the last word of the REFUND body, for the record)."""

MAX_CONSUMERS = 16
"""``frame_system``'s ``MaxConsumers`` on Asset Hub runtimes (``ConstU32<16>``; the metadata does
not carry it). A new holder of a non-sufficient asset takes a consumer reference, and newer
``pallet_assets`` want room for two (``can_accrue_consumers(who, 2)``): with fewer the mint
fails ``Token.CannotCreate``. Judging by the stricter rule refunds, at worst, a transfer an
older runtime could have minted — a safe outcome; the other way, a mint that can never succeed
is retried until the relayer gives up, its tokens locked on the origin."""


def _state_count(obj: Mapping[str, Any], key: str) -> int:
    """A non-negative integer field of decoded chain state (0 if absent); AdapterError for
    anything else — a node's answer, not something to crash an attester on."""
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AdapterError(f"chain state field {key!r} is {str(value)[:60]!r}, not a count")
    return value


async def refund_reason(
    client: SubstrateClient,
    settings: SubstrateSettings,
    message: Message,
    token_bridges: Mapping[int, bytes],
) -> int | None:
    """Why ``message``, a token transfer to this chain, can never be delivered (a key of
    :data:`REFUND_REASONS`), judged on chain state read here — never on the relayer's word;
    None if it can be (or is no token transfer at all).

    ``Assets.mint`` of a non-sufficient asset to an account that does not hold it yet needs the
    account to exist (a provider: native balance) with room for a consumer reference
    (:data:`MAX_CONSUMERS`), and at least the asset's minimum balance; a mint that could not
    succeed now would fail again on every retry until someone funds the account, so it is
    refunded at once instead of costing the committee approvals forever.
    """
    token = token_transfer(message, settings, token_bridges)
    if token is None:
        return None
    mint = token_mint(message, settings, token_bridges)
    if mint is None:
        return REFUND_NOT_WRAPPED
    beneficiary, amount = mint
    who = "0x" + beneficiary.hex()
    asset = await client.query("Assets", "Asset", [settings.asset_id])
    holding = await client.query("Assets", "Account", [settings.asset_id, who])
    if not isinstance(asset, dict):
        raise AdapterError(f"asset {settings.asset_id} does not exist on {redact_url(client.url)}")
    if _state_count(asset, "supply") + amount > U128_MAX:
        return REFUND_SUPPLY_OVERFLOW
    if holding is not None:
        return None  # already a holder: the mint only adds to its balance
    if amount < _state_count(asset, "min_balance"):
        return REFUND_BELOW_MINIMUM
    account = await client.query("System", "Account", [who])
    providers = _state_count(account, "providers") if isinstance(account, dict) else 0
    consumers = _state_count(account, "consumers") if isinstance(account, dict) else 0
    if not asset.get("is_sufficient"):
        if providers == 0:
            return REFUND_CANNOT_HOLD
        if consumers + 2 > MAX_CONSUMERS:  # anyone can fill an account of their own up to it
            return REFUND_NO_CONSUMER_ROOM
    return None


@dataclass(frozen=True)
class Refund:
    """Deliver a transfer as a refund: this chain's ``domain`` and the reason code."""

    domain: int
    reason: int


def refund_message(message: Message, settings: SubstrateSettings, refund: Refund) -> Message:
    """The committee's answer to a transfer it can never deliver: from the multisig on this
    chain to the TokenBridge that sent it, ``REFUND(message id, amount, reason)``. Its nonce is
    0 here; the scan of this chain as an origin gives it its canonical one."""
    token = decode_token_body(message.body)
    if token is None:
        raise VerificationError("only a token transfer can be refunded")
    body = b"".join(
        (
            ACTION_REFUND.to_bytes(32, "big"),
            keccak256(message.encode()),
            token.amount.to_bytes(32, "big"),
            refund.reason.to_bytes(32, "big"),
        )
    )
    return Message(
        version=message.version,
        nonce=0,
        origin=refund.domain,
        sender=settings.multisig,
        destination=message.origin,
        recipient=message.sender,
        body=body,
    )


class NotDeliverable(VerificationError):
    """A token transfer that is no mint this chain can make, asked for without a refund."""


def delivery_calls(
    message: Message,
    settings: SubstrateSettings,
    token_bridges: Mapping[int, bytes],
    *,
    refund: Refund | None = None,
) -> list[RuntimeCall]:
    """The calls that deliver ``message``: the replay guard's mint, then the delivery — or,
    with ``refund``, the guard's mint, its freeze (the relayer reads "refunded" from it) and the
    refund remark, ``PSRL ‖`` :func:`refund_message`, which this chain then carries back as a
    message of its own (from the multisig: :func:`~light_clients.substrate.remark.check_escrow`
    admits it as a refund only). One guard item either way: a message is delivered or refunded,
    never both, and never twice.

    A token transfer (:func:`token_transfer`) that is not a mint of the wrapped asset is never
    delivered as a remark (its tokens are locked on the origin): without ``refund`` it raises
    :class:`NotDeliverable`.
    """
    guard = RuntimeCall(
        "Uniques",
        "mint",
        {
            "class": collection_of(settings, message.origin),
            "instance": message.nonce,
            # The multisig keeps the item: an owner may burn it, which would re-open the
            # message to a second delivery. The recipient is in the delivered message itself.
            "owner": "0x" + settings.multisig.hex(),
        },
    )
    if refund is not None:
        collection = collection_of(settings, message.origin)
        remark = REMARK_PREFIX + refund_message(message, settings, refund).encode()
        return [
            guard,
            RuntimeCall("Uniques", "freeze", {"class": collection, "instance": message.nonce}),
            RuntimeCall("System", "remark_with_event", {"remark": remark}),
        ]
    mint = token_mint(message, settings, token_bridges)
    if mint is None and token_transfer(message, settings, token_bridges) is not None:
        raise NotDeliverable(
            f"message {message.origin}/{message.nonce} is a token transfer but no mint of the "
            "wrapped asset: it can only be refunded"
        )
    if mint is not None:
        beneficiary, amount = mint
        deliver = RuntimeCall(
            "Assets",
            "mint",
            {"id": settings.asset_id, "beneficiary": "0x" + beneficiary.hex(), "amount": amount},
        )
    else:
        deliver = RuntimeCall("System", "remark_with_event", {"remark": message.encode()})
    return [guard, deliver]


def token_bridges(config: Config) -> dict[int, bytes]:
    """Each EVM domain's TokenBridge, left-padded (who may send token messages)."""
    return {
        c.domain: bytes32(c.contract("token_bridge"))
        for c in config.chains
        if "token_bridge" in c.contracts
    }


@dataclass(frozen=True)
class Proposal:
    """A batch of messages for a Substrate destination, proven against one checkpoint."""

    destination: int
    checkpoint: Checkpoint
    messages: tuple[bytes, ...]
    branches: tuple[tuple[bytes, ...], ...]
    created: float = 0.0

    @property
    def name(self) -> str:
        """The file name: origin, first and last nonce, and the checkpoint index."""
        nonces = [decode_message(m).nonce for m in self.messages]
        cp = self.checkpoint
        return f"{cp.origin:010d}-{min(nonces):010d}-{max(nonces):010d}-{cp.index:010d}.json"

    def to_json(self) -> str:
        """The file contents."""
        cp = self.checkpoint
        return json.dumps(
            {
                "destination": self.destination,
                "checkpoint": checkpoint_to_json(cp),
                "messages": ["0x" + m.hex() for m in self.messages],
                "branches": [["0x" + h.hex() for h in b] for b in self.branches],
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Proposal:
        """Parse a file; ValueError/KeyError/TypeError on anything malformed (a bad checkpoint
        or message included: nothing in a proposal is trusted, but it must at least parse)."""
        obj = json.loads(text)
        cp = obj["checkpoint"]
        branches = tuple(tuple(parse_hex(h) for h in b) for b in obj["branches"])
        if any(len(b) != TREE_DEPTH or any(len(h) != 32 for h in b) for b in branches):
            raise ValueError("a branch is not 32 hashes of 32 bytes")
        messages = tuple(parse_hex(m) for m in obj["messages"])
        if not messages or len(messages) != len(branches):
            raise ValueError("messages and branches do not pair up")
        try:
            for message in messages:
                decode_message(message)
            checkpoint = checkpoint_from_json(cp)
        except VerificationError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            destination=int(obj["destination"]),
            checkpoint=checkpoint,
            messages=messages,
            branches=branches,
            created=float(obj.get("created", 0.0)),
        )


# The largest proposal file the relayer writes: SUBSTRATE_BATCH_SIZE messages of the largest
# size, hex-encoded, each with its 32-hash branch, plus the checkpoint (a generous 4 KiB).
MAX_PROPOSAL_BYTES = SUBSTRATE_BATCH_SIZE * (2 * MAX_MESSAGE_BYTES + TREE_DEPTH * 72 + 16) + 4096


class ProposalStore:
    """``<checkpoint store>/proposals/<destination>/<proposal>.json``: batches the relayer asks
    the committee to deliver. Nothing in it is trusted: attesters check every message, and the
    relayer tells the proposals this object wrote (:meth:`ours`) from any other file there."""

    def __init__(self, checkpoint_store: Path) -> None:
        self.root = checkpoint_store / "proposals"
        self._published: dict[Path, str] = {}
        self._first_seen: dict[Path, float] = {}

    def publish(self, proposal: Proposal) -> Path:
        """Write ``proposal`` (atomically); returns its path."""
        path = self.root / str(proposal.destination) / proposal.name
        text = proposal.to_json()
        atomic_write(path, text)
        self._published[path] = text
        return path

    def ours(self, path: Path, proposal: Proposal) -> bool:
        """Is ``proposal`` (read from ``path``) exactly what this object published there? Only
        such a proposal's ``created`` is ours, and only its timing out says the committee did
        not execute what we asked: a file anyone else wrote (or rewrote; or ours from before a
        restart) must not count as a failed attempt of its messages."""
        return self._published.get(path) == proposal.to_json()

    def first_seen(self, path: Path, now: float) -> float:
        """When this object first listed ``path`` (``now`` if never): a clock for files that
        are not :meth:`ours`, whose ``created`` is anyone's to write."""
        return self._first_seen.setdefault(path, now)

    def pending(self, destination: int) -> list[tuple[Path, Proposal]]:
        """Every readable proposal for ``destination``, oldest name first."""
        found = []
        listed = set(json_files(self.root / str(destination)))
        for path in sorted(listed):
            try:
                # Not read_text(): a FIFO planted here would block the read for ever, and a
                # symlink to /dev/zero would fill the memory (relayer and attesters alike).
                text = read_small_file(path, MAX_PROPOSAL_BYTES)
                if text is None:
                    continue  # not a regular file, or larger than any proposal we write
                found.append((path, Proposal.from_json(text)))
            except Exception:  # anyone may write here: nothing read may stop us
                continue  # half-deleted or foreign: ignored, like unreadable checkpoints
        # Files someone else removed are forgotten (memory stays bounded by what is there).
        here = self.root / str(destination)
        for memory in (self._published, self._first_seen):
            for gone in [p for p in memory if p.parent == here and p not in listed]:
                del memory[gone]
        return found

    def remove(self, path: Path) -> None:
        """Forget a proposal (delivered, or superseded)."""
        path.unlink(missing_ok=True)
        self._published.pop(path, None)
        self._first_seen.pop(path, None)


def new_proposal(
    destination: int, checkpoint: Checkpoint, messages: Sequence[bytes], branches: Sequence[Any]
) -> Proposal:
    """A :class:`Proposal` stamped with the current time."""
    return Proposal(
        destination=destination,
        checkpoint=checkpoint,
        messages=tuple(messages),
        branches=tuple(tuple(b) for b in branches),
        created=time.time(),
    )
