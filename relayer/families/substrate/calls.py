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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import Call, SubstrateClient
from adapters.substrate.finality import storage_key
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, to_hex
from light_clients.message import Message
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
    Config,
    ConfigError,
    SubstrateSettings,
)


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
        key += blake2b(encoded, digest_size=16).digest() + encoded
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
    try:
        keys = [to_hex(guard_key(collection_of(settings, m.origin), m.nonce)) for m in messages]
    except ValueError as exc:
        raise AdapterError(str(exc)) from None
    states: list[str | None] = []
    for at in range(0, len(keys), GUARD_READ_CHUNK):
        states.extend(await _guard_states(client, keys[at : at + GUARD_READ_CHUNK]))
    return states


async def _guard_states(client: SubstrateClient, keys: list[str]) -> list[str | None]:
    """:func:`guard_items` for ``keys`` (hex storage keys), in one ``state_queryStorageAt``."""
    answer = await client.rpc("state_queryStorageAt", [keys])
    where = f"state_queryStorageAt on {redact_url(client.url)}"
    found: dict[str, str | None] = {}
    try:
        for change_set in answer:
            for key, value in change_set["changes"]:
                found[str(key).lower()] = value
    except (TypeError, KeyError, ValueError, AttributeError):
        raise AdapterError(f"{where}: malformed answer") from None
    if not set(found) <= set(keys):
        raise AdapterError(f"{where}: answered keys it was not asked")
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
    """``Utility.batch_all`` of ``calls``, composed in one go: the nested calls are handed to
    substrate-interface as plain ``call_module`` / ``call_function`` / ``call_args`` dicts
    rather than composed one by one. The encoding and the hash are the same; the time is not
    (600 calls: 0.2 s against 9.8 s on a loaded devnet host, one worker-thread trip each), and
    that time sat between a proposal and its opening."""
    return await client.compose(
        "Utility",
        "batch_all",
        {
            "calls": [
                {"call_module": c.module, "call_function": c.function, "call_args": dict(c.params)}
                for c in calls
            ]
        },
    )


def token_bridges(config: Config) -> dict[int, bytes]:
    """Each EVM domain's TokenBridge, left-padded (who may send token messages)."""
    return {
        c.domain: bytes32(c.contract("token_bridge"))
        for c in config.chains
        if "token_bridge" in c.contracts
    }
