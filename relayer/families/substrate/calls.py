"""Substrate as a destination: the runtime calls that deliver a message, and its replay guard.

The committee's multisig executes ``Utility.batch_all`` of, per message,
``Uniques.mint(collection of its origin, item = nonce, owner = the multisig)`` (the replay
guard: a second mint of an item fails, so the whole batch does; the multisig keeps the item,
since an owner could burn it and re-open the message) and the delivery itself: an
``Assets.mint`` of the wrapped token for a transfer from the home chain's TokenBridge, else
``System.remark_with_event(message)`` — the message on chain, naming its recipient. A
token transfer that can never be minted (:func:`refund_reason`, judged by each attester on
chain state) is refunded instead: the guard item is minted *and frozen*, and the multisig
remarks ``PSRL ‖ REFUND`` back to the sending TokenBridge (:func:`refund_message`), a
message of this chain as an origin. One piece of code composes the calls for the relayer's
proposals and the attesters' approvals, so they cannot disagree about a call hash.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import Call, SubstrateClient, blake2_128_concat
from adapters.substrate.finality import (
    GET_READ_PROOF,
    GrandpaFinality,
    offered,
    read_proof,
    storage_key,
)
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, to_hex
from light_clients.message import Message
from light_clients.substrate.header import SubstrateHeader
from light_clients.substrate.remark import (
    ACTION_MINT,
    ACTION_REFUND,
    REMARK_PREFIX,
    U128_MAX,
    TokenBody,
    decode_token_body,
)
from relayer.accounts import bytes32
from relayer.config import (
    ChainConfig,
    Config,
    ConfigError,
    SubstrateSettings,
)
from relayer.families.substrate.connection import grandpa_follower

log = logging.getLogger("passerelle.substrate")


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


GUARD_DELIVERED = "delivered"


GUARD_REFUNDED = "refunded"


GUARD_KEY_PREFIX = storage_key("Uniques", "Asset")
"""``Uniques.Asset``, a double map of (collection, item) → ``ItemDetails``, both keys hashed
``Blake2_128Concat`` (pallet_uniques' own declaration; any runtime with the pallet)."""


def guard_key(collection: int, item: int) -> bytes:
    """The storage key of the replay-guard item ``(collection, item)`` (both ``u32``):
    ``twox128("Uniques") ‖ twox128("Asset") ‖ blake2_128concat(collection) ‖
    blake2_128concat(item)``.

    Computed here, not by substrate-interface's ``create_storage_key``: that costs about
    1.3 ms a key (metadata look-ups and SCALE objects), so the 1,242 keys of one relayer round
    of a 2,000-message burst took 7 s on a loaded host — the delay between a checkpoint being
    attested and its proposal (issue #12). This is microseconds. ValueError if either is no
    ``u32`` (no such item can exist)."""
    key = GUARD_KEY_PREFIX
    for part in (collection, item):
        if not 0 <= part < 2**32:
            raise ValueError(f"guard item ({collection}, {item}) is not a pair of u32")
        encoded = part.to_bytes(4, "little")
        key += blake2_128_concat(encoded)
    return key


def guard_state(raw: bytes) -> str:
    """What a present ``Uniques.Asset`` entry says: :data:`GUARD_REFUNDED` if frozen, else
    :data:`GUARD_DELIVERED`. The SCALE ``ItemDetails``: ``owner`` (32 bytes), ``approved``
    (``Option<AccountId32>``), ``is_frozen`` (bool), ``deposit`` (u128). VerificationError,
    one line, for anything else (the RPC's answer is not taken on trust)."""
    flag_at = {0: 33, 1: 65}.get(raw[32]) if len(raw) > 32 else None
    if flag_at is None or len(raw) != flag_at + 1 + 16 or raw[flag_at] not in (0, 1):
        raise VerificationError(f"not a Uniques item's details ({len(raw)} bytes)")
    return GUARD_REFUNDED if raw[flag_at] else GUARD_DELIVERED


GUARD_READ_CHUNK = 2048
"""Guard-item keys asked in one ``state_queryStorageAt``: about 200 kB of request and of
answer. A node refuses a request past its size limit (15 MiB by default, about 100k keys), and
the relayer's check reads the items of every live proposal at once, entries anyone planted in
the store included (up to 4 MB each, about 1,000 messages): unchunked, a few planted entries
would make that one read fail every round (review L3). Two full batches are one call."""


async def guard_items(
    client: SubstrateClient, settings: SubstrateSettings, messages: Sequence[Message]
) -> list[str | None]:
    """For each message, what its replay-guard item says, one round trip per
    :data:`GUARD_READ_CHUNK` messages (``state_queryStorageAt`` of :func:`guard_key` s): None
    (no item: not handled yet), :data:`GUARD_DELIVERED`, or :data:`GUARD_REFUNDED` (the
    committee froze the item in the batch that refunded the transfer: :func:`delivery_calls`).
    AdapterError, one line, for an answer that is not one (a key not asked for, a value that
    is no item)."""
    keys = _guard_keys(settings, messages)
    states: list[str | None] = []
    for at in range(0, len(keys), GUARD_READ_CHUNK):
        states.extend(await _guard_states(client, keys[at : at + GUARD_READ_CHUNK]))
    return states


def _guard_keys(settings: SubstrateSettings, messages: Sequence[Message]) -> list[str]:
    """The hex storage keys of ``messages``' guard items; AdapterError if one can have none."""
    try:
        return [to_hex(guard_key(collection_of(settings, m.origin), m.nonce)) for m in messages]
    except ValueError as exc:
        raise AdapterError(str(exc)) from None


class GuardReads:
    """:func:`guard_items` remembered per block: the relayer's delivery asks for the items of
    every live proposal each 0.2 s poll (about 1,500 keys in a burst: a tenth of its CPU,
    issue #12), while Asset Hub's state changes only with a block.

    A read is pinned to one block HASH: the node's best block (``chain_getBlockHash`` with no
    argument, a few bytes, asked each time), or a header the caller chose (``at``: the chain's
    final head, where the relayer reads what it RECORDS). What was read at a hash is answered
    from memory; a new hash (a new block: a batch executed; or a fork's block of the same
    number, a re-org) starts a fresh memory. Keyed on the hash, never the number: two blocks of
    one number can hold different items. The two most recently used memories are kept (the
    best block's and the final head's: on chopsticks, which finalizes every block it builds,
    they are one).

    ``proven`` reads (at a given header only) come with a ``state_getReadProof`` checked
    against the header's state root by the trie light client (:func:`proven_guard_states`), and
    are remembered apart: an unproven answer read at the best block is never handed out as a
    proven one when that block becomes final (review R2 M1).

    Refused (AdapterError, one line), never taken as "no item" nor remembered: an answer for
    another block than the one asked, none at all (a node that does not have the block
    answers ``[]``), one that leaves out a key it was asked (review M1: a short answer
    remembered would say "no item" for the life of the block), or a proof that does not
    prove."""

    MAX_REMEMBERED = 100_000
    """Items kept for one block at most (about 10 MB): an idle chain keeps its hash while new
    messages keep being asked about; a read that would go past it starts that block's memory
    over (a re-read, no harm), so the bound is exact."""

    BLOCKS = 2
    """Memories kept: the best block's and the final head's."""

    def __init__(self) -> None:
        self._blocks: dict[str, dict[str, str | None]] = {}
        self.reads = 0
        """Storage requests sent, ``state_queryStorageAt`` or ``state_getReadProof`` (for
        tests and profiles)."""

    async def items(
        self,
        client: SubstrateClient,
        settings: SubstrateSettings,
        messages: Sequence[Message],
        *,
        at: SubstrateHeader | None = None,
        proven: bool = False,
    ) -> list[str | None]:
        """:func:`guard_items` of ``messages`` at block ``at`` (a hash-checked header), read
        with proofs under its state root if ``proven``; or at the node's best block now (never
        proven: what is read there is never recorded).

        At the best block, a state read that fails is tried once more if the best hash moved
        meanwhile (review L4): the node (or another backend behind the same URL) may no longer
        serve the block it named a moment ago, a re-org or a reconnect; asked again, the
        answer is read at the new best block. Not moved, the error stands (the next poll tries
        again): nothing unpinned is ever taken as fact. At a given ``at`` there is no retry:
        the caller chose the block."""
        if proven and at is None:
            raise ValueError("a proven guard read needs the header whose state root proves it")
        keys = _guard_keys(settings, messages)
        if not keys:
            return []
        if at is not None:
            return await self._items_at(client, keys, to_hex(at.hash), at if proven else None)
        head = await self._best(client)
        try:
            return await self._items_at(client, keys, head, None)
        except AdapterError:
            moved = await self._best(client)
            if moved == head:
                raise
            return await self._items_at(client, keys, moved, None)

    @staticmethod
    async def _best(client: SubstrateClient) -> str:
        """The hex hash of the node's best block."""
        return to_hex(
            best_block_hash(await client.rpc("chain_getBlockHash", []), redact_url(client.url))
        )

    async def _items_at(
        self,
        client: SubstrateClient,
        keys: list[str],
        block: str,
        proving: SubstrateHeader | None,
    ) -> list[str | None]:
        """``keys``' guard items at ``block``: from memory, the rest read and remembered;
        with proofs under ``proving``'s state root if given (``proving`` is that block)."""
        memory = block if proving is None else f"{block} proven"
        states = self._blocks.pop(memory, {})
        self._blocks[memory] = states  # the most recently used last
        while len(self._blocks) > self.BLOCKS:
            del self._blocks[next(iter(self._blocks))]
        missing = [key for key in dict.fromkeys(keys) if key not in states]
        read: dict[str, str | None] = {}
        for start in range(0, len(missing), GUARD_READ_CHUNK):
            chunk = missing[start : start + GUARD_READ_CHUNK]
            self.reads += 1
            if proving is None:
                found = await _guard_states(client, chunk, at=block)
            else:
                found = await proven_guard_states(client, chunk, proving)
            read.update(zip(chunk, found, strict=True))
        answer = [states[key] if key in states else read[key] for key in keys]
        if len(states) + len(read) > self.MAX_REMEMBERED:
            states.clear()  # start over: at most MAX_REMEMBERED, exactly
        if len(states) + len(read) <= self.MAX_REMEMBERED:
            states.update(read)
        return answer


async def proven_guard_states(
    client: SubstrateClient, keys: Sequence[str], header: SubstrateHeader
) -> list[str | None]:
    """:func:`guard_items` for ``keys`` (hex storage keys) at ``header``, each value PROVEN:
    one ``state_getReadProof``, every node of it checked by the trie light client against
    ``header.state_root`` (:func:`~adapters.substrate.finality.read_proof`). An item the proof
    shows absent is None, one the proof does not cover is refused, never "absent". So what is
    recorded is the storage of that block, whatever the node would like it to be; that the
    block is final is :func:`~relayer.families.substrate.connection.final_header`'s part.
    AdapterError, one line, for a proof that does not prove or an item that is no item."""
    try:
        values = await read_proof(client, [bytes.fromhex(key[2:]) for key in keys], header)
        return [
            None if (value := values[bytes.fromhex(key[2:])]) is None else guard_state(value)
            for key in keys
        ]
    except VerificationError as exc:
        # read_proof's own errors already say where; an item's does not.
        where = f"{GET_READ_PROOF} on {redact_url(client.url)}"
        text = str(exc) if GET_READ_PROOF in str(exc) else f"{where}: {exc}"
        raise AdapterError(text) from None


_PROVING: dict[tuple[str, str], bool] = {}
""":func:`proves_storage`'s answer per endpoint, ``(chain name, URL)``, for the process: not per
connection, since the unpaid sweep and each ``ledger rebuild`` page open a new one per call, and
each asked ``rpc_methods`` and warned again (review RFINAL, LOW 4). Bounded by the configured
endpoints. What a stale answer can do is fail closed: a node that stopped offering proofs fails
the proven reads (AdapterError, one line a round); a "no" is never taken under a checkpoint
(:func:`proves_storage` asks again there)."""


async def proves_storage(client: SubstrateClient, chain: ChainConfig) -> bool:
    """Whether what is read at ``chain``'s final head and acted on for good is read with
    ``state_getReadProof`` proofs under the head's state root (:func:`proven_guard_states`,
    :func:`~adapters.substrate.finality.read_proof`): the replay-guard items the relayer's
    delivery records from, the same items the unpaid sweep and ``ledger rebuild`` record from
    (:func:`~relayer.families.substrate.user.final_delivered`), and the ``System.Events`` the
    origin's scan reads messages from (:func:`~relayer.families.substrate.scan.scan_remarks`).
    One rule for all three, cached per endpoint for the process (:data:`_PROVING`:
    ``rpc_methods`` is asked once an endpoint, however many connections are opened to it):

    * ``devnet-instant``: never (chopsticks lists the method but fails every call, and its
      zero state roots could prove nothing): False.
    * A GRANDPA checkpoint configured: REQUIRED (review R3 M1). The checkpoint proves the head
      final; unproven storage under it would be the node's word again, at the node's choice
      (leaving one name out of ``rpc_methods``). A node that does not list the method is
      refused as :func:`~relayer.families.substrate.connection.final_header` refuses one
      without ``grandpa_proveFinality``, but as AdapterError: the caller's final read fails
      (one line; nothing recorded, nothing scanned) and is tried again, never a fallback.
    * Any other policy: where the node lists the method, True; where it does not (many RPC
      gateways list nothing of the kind), False and ONE warning per endpoint and process
      saying that what is read there is the node's word.

    An ``rpc_methods`` that fails or is malformed is AdapterError too (review R3 L3): on every
    policy but ``devnet-instant`` nothing is recorded while the node cannot say what it offers
    (fails closed)."""
    if chain.finality.name == "devnet-instant":
        return False
    endpoint = (chain.name, client.url)
    known = _PROVING.get(endpoint)
    checkpointed = chain.settings().grandpa is not None
    # A "yes" holds for the process; a "no" only where no checkpoint requires proofs: there the
    # refusal is never cached, so a node offering them later is used at once.
    if known is not None and (known or not checkpointed):
        return known
    where = redact_url(client.url)
    proves = GET_READ_PROOF in await offered(client)
    if not proves and checkpointed:
        raise AdapterError(
            f"chain {chain.name!r}: a grandpa checkpoint is configured but {where} does not "
            f"offer {GET_READ_PROOF}: its storage at the proven final head cannot be proven, "
            "so nothing is read from it"
        )
    if not proves and known is None:
        log.warning(
            "%s: %s does not offer %s: what is read at its final head (the replay-guard items "
            "deliveries are recorded from, an origin's events) is the node's word, unproven",
            chain.name,
            where,
            GET_READ_PROOF,
        )
    _PROVING[endpoint] = proves
    return proves


_FOLLOWERS: dict[int, tuple[weakref.ref[Config], dict[str, GrandpaFinality]]] = {}


def shared_follower(config: Config, chain: ChainConfig) -> GrandpaFinality | None:
    """``chain``'s GRANDPA light client for everything of ``config`` that reads its final head
    to record a delivery: the relayer's delivery rounds, its unpaid sweep and ``ledger
    rebuild``'s pages (:meth:`SubstrateFamily.final_delivered`). One per configuration, i.e.
    one per relayer process and one per rebuild run, not one per call: each new follower starts
    at the checkpoint and walks (and proves) every header from there (review R2 L4). None
    without a checkpoint; ConfigError for a bad one. Concurrent users are safe: the follower
    proves under its own lock, and what it proved stays true."""
    if chain.settings().grandpa is None:
        return None
    entry = _FOLLOWERS.get(id(config))
    if entry is None or entry[0]() is not config:  # a new config (an id can be reused)
        key = id(config)

        def forget(dead: weakref.ref[Config]) -> None:
            if key in _FOLLOWERS and _FOLLOWERS[key][0] is dead:
                del _FOLLOWERS[key]

        entry = _FOLLOWERS[key] = (weakref.ref(config, forget), {})
    followers = entry[1]
    follower = followers.get(chain.name)
    if follower is None:
        follower = grandpa_follower(chain)
        if follower is not None:
            followers[chain.name] = follower
    return follower


def best_block_hash(value: object, where: str) -> bytes:
    """A node's answer that must be a 32-byte ``0x``-hex block hash; AdapterError if not."""
    try:
        return parse_data(value, "best block hash", 32)
    except VerificationError as exc:  # its message shows at most 80 characters of the answer
        raise AdapterError(f"chain_getBlockHash on {where}: {exc}") from None


async def _guard_states(
    client: SubstrateClient, keys: list[str], *, at: str | None = None
) -> list[str | None]:
    """:func:`guard_items` for ``keys`` (hex storage keys), in one ``state_queryStorageAt``
    (at block ``at``, a hex hash, if given: then every change set must say that block, and
    the answer must name every key)."""
    answer = await client.rpc("state_queryStorageAt", [keys] if at is None else [keys, at])
    where = f"state_queryStorageAt on {redact_url(client.url)}"
    found: dict[str, str | None] = {}
    try:
        for change_set in answer:
            if at is not None and str(change_set["block"]).lower() != at:
                raise AdapterError(f"{where}: answered for another block than {at}")
            for key, value in change_set["changes"]:
                found[str(key).lower()] = value
    except (TypeError, KeyError, ValueError, AttributeError):
        raise AdapterError(f"{where}: malformed answer") from None
    if at is not None and keys and not answer:
        # chopsticks' answer for a block it does not have: not "no items".
        raise AdapterError(f"{where}: no state for block {at}")
    if not set(found) <= set(keys):
        raise AdapterError(f"{where}: answered keys it was not asked")
    if at is not None and len(found) != len(set(keys)):
        # Both servers name every key asked at a pinned block, null included (chopsticks:
        # ``val || null``; Substrate's query_storage_at: every key at the range's first
        # block). A short answer is a node lying by omission, never "no item" (review M1).
        raise AdapterError(f"{where}: answered {len(found)} of {len(set(keys))} keys at {at}")
    states: list[str | None] = []
    for key in keys:
        value = found.get(key)
        try:
            states.append(None if value is None else guard_state(parse_data(value, "item")))
        except VerificationError as exc:
            raise AdapterError(f"{where}: {exc}") from None
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


async def compose_batch(client: SubstrateClient, calls: Sequence[RuntimeCall]) -> Call:
    """``Utility.batch_all`` of ``calls`` (:meth:`SubstrateClient.compose_batch_all`: written
    directly when every call is of a shape checked against the runtime, as delivery calls are;
    that time sat between a proposal and its opening, in every attester)."""
    return await client.compose_batch_all([(c.module, c.function, c.params) for c in calls])


def token_bridges(config: Config) -> dict[int, bytes]:
    """Each EVM domain's TokenBridge, left-padded (who may send token messages)."""
    return {
        c.domain: bytes32(c.contract("token_bridge"))
        for c in config.chains
        if "token_bridge" in c.contracts
    }
