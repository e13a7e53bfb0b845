"""Substrate as an origin: the messages of its final blocks (docs/design.md, "Substrate origin").

The messages of a Substrate chain are the ``PSRL`` remarks of its final blocks that pass
:func:`light_clients.substrate.remark.validate_remark` and, for token returns,
:func:`~light_clients.substrate.remark.check_escrow`; their nonces are their positions
(:func:`~light_clients.substrate.remark.assign_nonces`). Rejected remarks are logged with
their reason and consume no nonce. The outbox id in checkpoints is the genesis hash. The
relayer, each attester and ``passerelle send`` all scan through :func:`scan_remarks`, so they
cannot disagree about a nonce.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from adapters.errors import AdapterError
from adapters.substrate.client import EventsProver, RemarkSeen, SubstrateClient
from adapters.substrate.finality import (
    SYSTEM_EVENTS_KEY,
    GrandpaFinality,
    read_proof,
)
from light_clients.hashing import keccak256
from light_clients.message import Message
from light_clients.substrate.header import SubstrateHeader
from light_clients.substrate.remark import (
    EscrowRoute,
    RemarkRejected,
    assign_nonces,
    check_escrow,
    check_recipient,
)
from relayer.accounts import bytes32
from relayer.config import (
    ChainConfig,
    Config,
    allowed_recipients,
)
from relayer.families.substrate.calls import proves_storage

log = logging.getLogger("passerelle.substrate")

SCAN_CHUNK = 50
"""Substrate blocks read per scan step (two RPC round trips each, hash and body; a block
whose body carries ``PSRL`` one more, its events' read proof where the node proves storage)."""


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


async def _proven_events(client: SubstrateClient, header: SubstrateHeader) -> bytes:
    """The block's ``System.Events`` value, proven under ``header``'s state root by
    :func:`~adapters.substrate.finality.read_proof` (absent: no events, ``Vec`` length 0)."""
    value = (await read_proof(client, [SYSTEM_EVENTS_KEY], header))[SYSTEM_EVENTS_KEY]
    return b"\x00" if value is None else value


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
    # proven-final) headers by the one rule the destination's recorded reads follow too
    # (proves_storage: required with a checkpoint, review R3 M1; never under devnet-instant).
    # Asked on the first non-genesis block, after its finality check (a block the light client
    # refuses is refused for that, whatever the node offers), whether or not that block carries
    # PSRL: a checkpointed node that cannot prove storage is refused at once, not at the first
    # message. The proof itself is read only for a block whose body carries PSRL (remarks()
    # calls _proven_events after its prefilter, review RFINAL M2): every other block costs its
    # body alone, its finality check above unchanged.
    proving: bool | None = None  # asked once, on the first block with extrinsics
    prove: EventsProver | None = None
    for number in blocks:
        block_hash = await client.block_hash(number)
        if block_hash is None:
            raise AdapterError(f"{chain.name}: block {number} vanished while scanning")
        if grandpa is not None and grandpa.final_hash(number) != block_hash:
            await grandpa.verify_final(client, await client.header(block_hash))
        scan.last_hash = block_hash
        if number == 0:
            continue  # genesis has no extrinsics (and chopsticks reports a placeholder hash)
        if proving is None:
            proving = await proves_storage(client, chain)
            prove = partial(_proven_events, client) if proving else None
        used: dict[int, set[int]] = {}
        for seen in await client.remarks(block_hash, prove_events=prove):
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
