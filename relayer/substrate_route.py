"""Substrate as an origin and as a destination: the rules attesters and the relayer share.

DESIGN.md, "Substrate origin and destination". One piece of code serves both roles, so an
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
    ``System.remark_with_event(message)`` — the message on chain, naming its recipient. The
    relayer proposes batches (a file per batch); each attester approves a batch only after
    checking every message against a checkpoint root *it* signed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from adapters.errors import AdapterError
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
from light_clients.message import Message, decode_message
from light_clients.substrate.grandpa import AuthoritySet
from light_clients.substrate.header import SubstrateHeader
from light_clients.substrate.remark import (
    ACTION_MINT,
    U128_MAX,
    EscrowRoute,
    RemarkRejected,
    assign_nonces,
    check_escrow,
    decode_token_body,
)
from relayer.checkpoints import (
    atomic_write,
    checkpoint_from_json,
    checkpoint_to_json,
    json_files,
    parse_hex,
)
from relayer.config import ChainConfig, Config, ConfigError, SubstrateSettings
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


def escrow_routes(config: Config, chain: ChainConfig) -> list[EscrowRoute]:
    """The token bridges a message from ``chain`` may address, and what must back it.

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
    return routes


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
                    f"{client.url} does not offer {PROVE_FINALITY}"
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
    slip in a block of another fork)."""
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
                message = seen.validate(chain.domain)
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


async def delivered_items(
    client: SubstrateClient, settings: SubstrateSettings, messages: Sequence[Message]
) -> list[bool]:
    """For each message, does its replay-guard item exist (it was delivered)? One round trip."""
    entries = await client.query_many(
        "Uniques", "Asset", [[collection_of(settings, m.origin), m.nonce] for m in messages]
    )
    return [entry is not None for entry in entries]


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


def delivery_calls(
    message: Message, settings: SubstrateSettings, token_bridges: Mapping[int, bytes]
) -> list[RuntimeCall]:
    """The two calls that deliver ``message``: the replay guard's mint, then the delivery."""
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
    mint = token_mint(message, settings, token_bridges)
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


class ProposalStore:
    """``<checkpoint store>/proposals/<destination>/<proposal>.json``: batches the relayer asks
    the committee to deliver. Nothing in it is trusted: attesters check every message."""

    def __init__(self, checkpoint_store: Path) -> None:
        self.root = checkpoint_store / "proposals"

    def publish(self, proposal: Proposal) -> Path:
        """Write ``proposal`` (atomically); returns its path."""
        path = self.root / str(proposal.destination) / proposal.name
        atomic_write(path, proposal.to_json())
        return path

    def pending(self, destination: int) -> list[tuple[Path, Proposal]]:
        """Every readable proposal for ``destination``, oldest name first."""
        found = []
        for path in json_files(self.root / str(destination)):
            try:
                found.append((path, Proposal.from_json(path.read_text())))
            except Exception:  # anyone may write here: nothing read may stop us
                continue  # half-deleted or foreign: ignored, like unreadable checkpoints
        return found

    @staticmethod
    def remove(path: Path) -> None:
        """Forget a proposal (delivered, or superseded)."""
        path.unlink(missing_ok=True)


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
