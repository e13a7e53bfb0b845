"""The Substrate adapter (adapters/substrate) against a real runtime: Rococo Asset Hub under
chopsticks (one process for the module, ``Instant`` block mode, always stopped).

What is pinned here: headers come back as SCALE bytes whose blake2-256 is the block hash (the
light client checks every one); ``PSRL`` remarks are found in a block with their signer and
event, at top level and inside ``Utility.batch_all``, and the outbox rules accept the good one
and reject the others with the right reason; nonces survive a failed extrinsic; the computed
multisig account is the chain's; a 2-of-3 multisig delivery guarded by ``Uniques.mint(item =
nonce)`` executes once and a replay fails on chain, which :func:`executed_ok` reports.

chopsticks quirk to keep in mind: asking it for a block hash it does not know makes it answer
with its genesis header *and* report that hash as block 0's from then on, which breaks every
later signature (CheckGenesis). Nothing here asks it for an unknown hash; the "lying node" cases
are played against recorded answers instead.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import patch

import pytest
import trio
from conftest import running_chopsticks
from hypothesis import given, settings
from hypothesis import strategies as st
from reach import Reach
from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from test_substrate_route import ASSETHUB, GAMMA, config_toml
from test_substrate_route import load as load_config_text

from adapters.substrate import (
    AdapterError,
    Included,
    SubstrateClient,
    SubstrateEvent,
    approve,
    execute,
    executed_ok,
    multisig_account,
    pending,
)
from adapters.substrate import client as client_module
from adapters.substrate import encoding as encoding_module
from adapters.substrate import metadata as metadata_module
from adapters.substrate.client import BalanceTransfer, Fee, account_bytes, header_from_json
from adapters.substrate.encoding import SHAPES, FastCalls
from adapters.substrate.finality import SYSTEM_EVENTS_KEY
from adapters.substrate.metadata import SharedMetadataInterface, decoded_metadata
from devnet.chopsticks import (
    ALICE,
    DEV_BALANCE,
    GENESIS_HASH,
    ChopsticksProcess,
)
from light_clients.errors import DecodeError
from light_clients.hashing import blake2_256
from light_clients.hexstr import parse_data, to_hex
from light_clients.message import Message
from light_clients.substrate.header import SubstrateHeader, header_hash
from light_clients.substrate.remark import (
    REMARK_PREFIX,
    EventSenderMismatch,
    RemarkRejected,
    assign_nonces,
    validate_remark,
)
from light_clients.substrate.scale import encode_compact
from relayer.families.substrate import scan as scan_module
from relayer.families.substrate.payments import remark_fee
from relayer.families.substrate.scan import RemarkScan, escrow_routes, scan_remarks

pytestmark = pytest.mark.chain

T = TypeVar("T")

ALICE_KEY = Keypair.create_from_uri("//Alice")
BOB_KEY = Keypair.create_from_uri("//Bob")
CHARLIE_KEY = Keypair.create_from_uri("//Charlie")
ALICE_ID, BOB_ID, CHARLIE_ID = (bytes(k.public_key) for k in (ALICE_KEY, BOB_KEY, CHARLIE_KEY))
# Accounts the event-walk tests sign with outside the client (its nonce counts stay exact).
WALK_KEYS = tuple(Keypair.create_from_uri(uri) for uri in ("//Dave", "//Eve", "//Ferdie"))
ORIGIN, DESTINATION = 1000, 31337
RECIPIENT = b"\x00" * 12 + b"\x0b" * 20


def message(
    *, sender: bytes = ALICE_ID, origin: int = ORIGIN, nonce: int = 0, body: bytes = b"hi"
) -> Message:
    return Message(1, nonce, origin, sender, DESTINATION, RECIPIENT, body)


def psrl(msg: Message) -> bytes:
    return REMARK_PREFIX + msg.encode()


@pytest.fixture(scope="module")
def chain() -> Iterator[ChopsticksProcess]:
    """One chopsticks for the module (//Alice, //Bob, //Charlie funded), always stopped."""
    yield from running_chopsticks(
        {
            ALICE: DEV_BALANCE,
            to_hex(BOB_ID): DEV_BALANCE,
            to_hex(CHARLIE_ID): DEV_BALANCE,
            **{to_hex(bytes(k.public_key)): DEV_BALANCE for k in WALK_KEYS},
        }
    )


@pytest.fixture(scope="module")
def client(chain: ChopsticksProcess) -> Iterator[SubstrateClient]:
    """One connected client for the module (each test drives it from its own ``trio.run``)."""
    connected = SubstrateClient(chain.ws_url)
    trio.run(connected.connect)
    try:
        yield connected
    finally:
        trio.run(connected.aclose)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return trio.run(scenario)


# --- headers -------------------------------------------------------------------------------


def test_headers_are_scale_bytes_hashing_to_the_block_hash(client: SubstrateClient) -> None:
    async def scenario() -> tuple[list[SubstrateHeader], SubstrateHeader, list[Any]]:
        head = await client.finalized_head()
        headers = []
        for number in range(1, head.number + 1):
            block_hash = await client.block_hash(number)
            assert block_hash is not None
            headers.append(await client.header(block_hash))
        jsons = [await client.rpc("chain_getHeader", [to_hex(h.hash)]) for h in headers]
        assert await client.block_hash(head.number + 1000) is None
        assert to_hex(await client.genesis_hash()) == GENESIS_HASH
        # Block 0 is chopsticks' placeholder (0x4545…45), not the hash of a header.
        with pytest.raises(AdapterError, match=r"header hashes to 0x[0-9a-f]{64}, expected 0x4545"):
            await client.header(parse_data(GENESIS_HASH, "GENESIS_HASH"))
        return headers, head, jsons

    headers, head, jsons = run(scenario)
    assert headers[-1] == head  # chopsticks: the best block is final at once
    parent = parse_data(GENESIS_HASH, "GENESIS_HASH")
    for number, (header, obj) in enumerate(zip(headers, jsons, strict=True), start=1):
        assert header.hash == header_hash(header.raw) == blake2_256(header.raw)
        assert header.number == number
        assert header.parent_hash == parent
        # The JSON of chain_getHeader, re-encoded, is the same header (the fallback path).
        assert header_from_json(obj, header.hash) == header
        parent = header.hash


class RecordedNode(SubstrateClient):
    """A client whose node answers every request from a table (a node that may lie)."""

    def __init__(self, answers: dict[str, Any], raw_header_method: str | None) -> None:
        super().__init__("ws://recorded.invalid")
        self.answers = answers
        self._raw_header_method = raw_header_method

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        return self.answers[method]


def test_a_node_that_lies_about_a_header_is_an_adapter_error(client: SubstrateClient) -> None:
    async def scenario() -> tuple[bytes, Any, Any]:
        best = await client.finalized_head()
        genesis = await client.rpc("chain_getHeader", [GENESIS_HASH])
        return best.hash, await client.rpc("chain_getHeader", [to_hex(best.hash)]), genesis

    block_hash, obj, genesis = run(scenario)
    assert header_from_json(obj, block_hash).hash == block_hash
    tampered = [
        {**obj, "number": hex(int(obj["number"], 16) + 1)},
        {**obj, "stateRoot": "0x" + "11" * 32},
        {**obj, "digest": {"logs": []}},
        {**obj, "parentHash": "0x" + "22" * 32},
    ]
    for lie in tampered:
        with pytest.raises(AdapterError, match="header hashes to") as refused:
            header_from_json(lie, block_hash)
        assert "\n" not in str(refused.value)
    for malformed in (None, {**obj, "stateRoot": "0x12"}, {**obj, "digest": None}, {}):
        with pytest.raises(AdapterError, match=r"no header|malformed"):
            header_from_json(malformed, block_hash)

    # What chopsticks answers for a hash it does not know: its genesis header.
    unknown = b"\x12" * 32

    async def lied_to(node: RecordedNode) -> None:
        await node.header(unknown)

    for node in (
        RecordedNode({"chain_getHeader": genesis}, None),
        RecordedNode({"archive_v1_header": to_hex(_scale_of(genesis))}, "archive_v1_header"),
    ):
        with pytest.raises(AdapterError, match=f"expected {to_hex(unknown)}"):
            trio.run(lied_to, node)
    with pytest.raises(AdapterError, match="has no header"):
        trio.run(lied_to, RecordedNode({"archive_v1_header": None}, "archive_v1_header"))


def _scale_of(obj: dict[str, Any]) -> bytes:
    """SCALE bytes of a JSON header, whatever it hashes to."""
    logs = [parse_data(log, "log") for log in obj["digest"]["logs"]]
    return (
        parse_data(obj["parentHash"], "parentHash")
        + encode_compact(int(obj["number"], 16))
        + parse_data(obj["stateRoot"], "stateRoot")
        + parse_data(obj["extrinsicsRoot"], "extrinsicsRoot")
        + encode_compact(len(logs))
        + b"".join(logs)
    )


# --- remarks -------------------------------------------------------------------------------


def test_psrl_remark_is_found_and_accepted(client: SubstrateClient) -> None:
    sent = message(nonce=12345, body=b"hello, asset hub")  # the sender's nonce is ignored
    remark = psrl(sent)

    async def scenario() -> tuple[Included, list[Any]]:
        included = await client.submit(ALICE_KEY, "System", "remark_with_event", {"remark": remark})
        return included, await client.remarks(included.block_hash)

    included, seen = run(scenario)
    assert included.success and included.error is None
    [remarked] = included.named("System", "Remarked")
    assert account_bytes(remarked.attributes["sender"]) == ALICE_ID
    [found] = seen
    assert (found.block_number, found.block_hash) == (included.block_number, included.block_hash)
    assert found.extrinsic_index == included.extrinsic_index == 2  # after the two inherents
    assert found.signer == found.event_sender == ALICE_ID
    assert found.remark == remark
    assert found.event_hash == blake2_256(remark)
    accepted = found.validate(ORIGIN)
    assert accepted == validate_remark(
        found.remark, found.signer, found.event_sender, found.event_hash, ORIGIN
    )
    assert accepted.nonce == 0 and accepted.body == sent.body
    [canonical] = assign_nonces(7, [(found.block_number, found.extrinsic_index, accepted)])
    assert canonical.nonce == 7


def test_remarks_inside_batch_all_are_found_in_order_and_judged(client: SubstrateClient) -> None:
    remarks = [
        psrl(message(body=b"0x41")),  # valid; a body that looks like hex when shown as text
        psrl(message(sender=BOB_ID)),  # T14: Alice signs a message claiming to be Bob's
        psrl(message(origin=2000)),  # T14: another origin
        REMARK_PREFIX + b"\x01\x02\x03",  # malformed payload
        b"0x" + b"PSRL" * 3,  # not for us; would decode as hex if taken from the text form
    ]

    async def scenario() -> tuple[Included, list[Any]]:
        calls = [
            await client.compose("Balances", "transfer", {"dest": to_hex(BOB_ID), "value": 10**10})
        ]
        calls += [
            await client.compose("System", "remark_with_event", {"remark": r}) for r in remarks
        ]
        included = await client.submit(ALICE_KEY, "Utility", "batch_all", {"calls": calls})
        return included, await client.remarks(included.block_hash, fee_account=BOB_ID)

    included, seen = run(scenario)
    assert included.success, included.error
    assert [s.remark for s in seen] == remarks
    assert {(s.extrinsic_index, s.signer, s.event_sender) for s in seen} == {
        (included.extrinsic_index, ALICE_ID, ALICE_ID)
    }
    # The balance transfer before the first remark is what may pay for its delivery (paid
    # delivery from a Substrate origin), and only for that one remark.
    assert [s.balance_transfers for s in seen] == [
        (BalanceTransfer(ALICE_ID, BOB_ID, 10**10),),
        *[()] * (len(remarks) - 1),
    ]
    assert [remark_fee(s, BOB_ID) for s in seen] == [10**10, *[0] * (len(remarks) - 1)]
    assert remark_fee(seen[0], CHARLIE_ID) == 0  # paid to someone else: pays nothing
    outcomes: list[str] = []
    for found in seen:
        try:
            found.validate(ORIGIN)
            outcomes.append("accepted")
        except RemarkRejected as rejected:
            outcomes.append(rejected.reason)
    assert outcomes == [
        "accepted",
        "wrong-sender",
        "wrong-origin",
        "malformed-payload",
        "missing-prefix",
    ]


def test_an_interrupted_batch_gives_only_the_remarks_that_ran(client: SubstrateClient) -> None:
    ran, never = psrl(message(body=b"ran")), psrl(message(body=b"never"))

    async def scenario() -> tuple[Included, list[Any]]:
        calls = [
            await client.compose("System", "remark_with_event", {"remark": ran}),
            await client.compose(
                "Uniques", "mint", {"class": 4343, "instance": 1, "owner": to_hex(ALICE_ID)}
            ),
            await client.compose("System", "remark_with_event", {"remark": never}),
        ]
        # Utility.batch (not batch_all): stops at the failing call, keeps what ran before it.
        included = await client.submit(ALICE_KEY, "Utility", "batch", {"calls": calls})
        return included, await client.remarks(included.block_hash)

    included, seen = run(scenario)
    assert included.success  # batch itself succeeds; the interruption is an event
    [interrupted] = included.named("Utility", "BatchInterrupted")
    assert interrupted.error == "Uniques.UnknownClass"
    assert [s.remark for s in seen] == [ran]


# --- submission ----------------------------------------------------------------------------


def test_an_unreachable_node_is_one_adapter_error_line() -> None:
    async def scenario() -> None:
        async with SubstrateClient("ws://127.0.0.1:1", timeout=5):
            pass

    with pytest.raises(AdapterError, match=r"^cannot connect to ws://127\.0\.0\.1:1: ") as error:
        trio.run(scenario)
    assert "\n" not in str(error.value)

    async def unconnected() -> None:
        await SubstrateClient("ws://127.0.0.1:1").genesis_hash()

    with pytest.raises(AdapterError, match="not connected"):
        trio.run(unconnected)


def test_fees_and_nonces_across_a_failed_extrinsic(client: SubstrateClient) -> None:
    async def scenario() -> tuple[Any, Included, Included, list[Included]]:
        remark = await client.compose("System", "remark_with_event", {"remark": b"fee?"})
        fee = await client.estimate_fee(BOB_KEY, remark)
        # Dispatch fails (no such collection), but the extrinsic is in a block: nonce consumed.
        failed = await client.submit(
            BOB_KEY, "Uniques", "mint", {"class": 4242, "instance": 1, "owner": to_hex(BOB_ID)}
        )
        after = await client.submit(BOB_KEY, "System", "remark", {"remark": b"after"})
        # Two in flight at once (not waited for): two consecutive nonces.
        first = await client.submit(
            BOB_KEY, "System", "remark", {"remark": b"one"}, wait_for_inclusion=False
        )
        second = await client.submit(
            BOB_KEY, "System", "remark", {"remark": b"two"}, wait_for_inclusion=False
        )
        assert second.nonce == first.nonce + 1
        both = [await client.wait_included(s, timeout=60) for s in (first, second)]
        return fee, failed, after, both

    fee, failed, after, both = run(scenario)
    assert fee.partial_fee > 0 and fee.weight > 0
    assert not failed.success
    assert failed.error == "Uniques.UnknownClass"
    [failed_event] = failed.named("System", "ExtrinsicFailed")
    assert failed_event.error == "Uniques.UnknownClass"
    assert after.success and after.nonce == failed.nonce + 1
    assert [i.nonce for i in both] == [after.nonce + 1, after.nonce + 2]
    assert all(i.success for i in both)


# --- multisig ------------------------------------------------------------------------------


def test_multisig_account_is_pure_and_strict() -> None:
    keys = [ALICE_ID, BOB_ID, CHARLIE_ID]
    account = multisig_account(keys, 2)
    assert multisig_account(list(reversed(keys)), 2) == account  # order does not matter
    assert multisig_account(keys, 3) != account
    # That it is the chain's account is held by the multisig test below.
    for bad_keys, threshold, reason in [
        ([ALICE_ID, ALICE_ID], 1, "distinct"),
        ([ALICE_ID[:31]], 1, "32-byte"),
        ([], 1, "need 1 to"),
        (keys, 0, "threshold"),
        (keys, 4, "threshold"),
        (keys, True, "threshold"),
    ]:
        with pytest.raises(ValueError, match=reason):
            multisig_account(bad_keys, threshold)


def _included(events: Sequence[SubstrateEvent], *, success: bool = True) -> Included:
    return Included(
        block_hash=b"\x01" * 32,
        block_number=5,
        extrinsic_index=2,
        extrinsic_hash=b"\x02" * 32,
        nonce=0,
        success=success,
        error=None if success else "Multisig.MaxWeightTooLow",
        events=tuple(events),
    )


def test_executed_ok_reads_the_inner_result() -> None:
    executed = SubstrateEvent(2, "Multisig", "MultisigExecuted", {"result": {"Ok": ()}})
    err = {"Err": {"Module": {"index": 51, "error": "0x02000000"}}}
    failed = SubstrateEvent(
        2, "Multisig", "MultisigExecuted", {"result": err}, "Uniques.AlreadyExists"
    )
    approval = SubstrateEvent(2, "Multisig", "MultisigApproval", {})
    assert executed_ok(_included([executed])) == (True, None)
    assert executed_ok(_included([failed])) == (False, "Uniques.AlreadyExists")
    assert executed_ok(_included([approval]))[0] is False
    assert executed_ok(_included([], success=False)) == (False, "Multisig.MaxWeightTooLow")


def test_multisig_delivers_once_and_a_replay_fails_on_chain(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    signers = {ALICE_KEY: [BOB_ID, CHARLIE_ID], BOB_KEY: [ALICE_ID, CHARLIE_ID]}
    signers[CHARLIE_KEY] = [ALICE_ID, BOB_ID]
    multisig = multisig_account([ALICE_ID, BOB_ID, CHARLIE_ID], 2)
    collection, nonce = 77, 5

    async def flow(call: Any, last: Keypair) -> tuple[Any, Any, Included]:
        opened = await approve(client, ALICE_KEY, signers[ALICE_KEY], 2, call)
        seen = await pending(client, multisig, call.hash)
        done = await execute(client, last, signers[last], 2, call, timepoint=opened)
        assert await pending(client, multisig, call.hash) is None
        return opened, seen, done

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # Fund the computed account: if it were not the chain's, the multisig could not pay the
        # collection's deposit below.
        funded = await client.submit(
            ALICE_KEY, "Balances", "transfer", {"dest": to_hex(multisig), "value": 10 * 10**12}
        )
        assert funded.success, funded.error
        create = await client.compose(
            "Uniques", "create", {"class": collection, "admin": to_hex(multisig)}
        )
        out["create"] = await flow(create, BOB_KEY)
        out["class"] = await client.query("Uniques", "Class", [collection])
        delivery = await client.compose(
            "Utility",
            "batch_all",
            {
                "calls": [
                    await client.compose(
                        "Uniques",
                        "mint",
                        {"class": collection, "instance": nonce, "owner": to_hex(multisig)},
                    ),
                    await client.compose("System", "remark_with_event", {"remark": b"delivered 5"}),
                ]
            },
        )
        out["delivery"] = await flow(delivery, CHARLIE_KEY)
        counted = _count_decoding(monkeypatch)
        out["delivery_remarks"] = await client.remarks(out["delivery"][2].block_hash)
        out["decoded"] = sum(c.calls for c in counted.values())
        out["item"] = await client.query("Uniques", "Asset", [collection, nonce])
        out["replay"] = await flow(delivery, BOB_KEY)
        return out

    out = run(scenario)
    opened, seen, created = out["create"]
    assert seen == opened  # Multisig.Multisigs[(multisig, hash)].when is the first approval
    assert executed_ok(created) == (True, None)
    [executed] = created.named("Multisig", "MultisigExecuted")
    assert account_bytes(executed.attributes["multisig"]) == multisig
    assert {account_bytes(out["class"][role]) for role in ("owner", "admin", "issuer")} == {
        multisig
    }

    opened, _, delivered = out["delivery"]
    assert executed_ok(delivered) == (True, None)
    [remarked] = delivered.named("System", "Remarked")
    assert account_bytes(remarked.attributes["sender"]) == multisig
    # The delivery holds no PSRL anywhere (the committee's usual one), so remarks() does not
    # even decode it: this [] is the prefilter's. The rule that a remark the multisig made is
    # not the signer's (passed on only with the prefix) is pinned where the block carries
    # PSRL, by test_a_multisig_delivery_is_decoded_once (its 40 notes are the multisig's).
    assert out["delivery_remarks"] == []
    assert out["decoded"] == 0
    with pytest.raises(EventSenderMismatch):
        validate_remark(b"delivered 5", CHARLIE_ID, multisig, blake2_256(b"delivered 5"), ORIGIN)
    assert account_bytes(out["item"]["owner"]) == multisig

    replay_opened, _, replay = out["replay"]
    assert replay_opened != opened  # a new operation, new timepoint
    assert replay.success  # the as_multi extrinsic itself succeeds …
    assert executed_ok(replay) == (False, "Uniques.AlreadyExists")  # … the delivery does not
    assert replay.named("System", "Remarked") == []  # batch_all: nothing of it happened


# --- the scan's prefilter and decode-once (adapters/substrate/client.py) ------------------
# The runtime's real decoder, on this module's chain: no chain of their own.


def _substrate(client: SubstrateClient) -> Any:
    """The connected substrate-interface instance, for decoding only (no RPC is made)."""
    substrate = client._substrate
    assert substrate is not None
    return substrate


class _Counted:
    """``function`` wrapped to count its calls (the scan's decoders, to pin how often)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


def _count_decoding(monkeypatch: pytest.MonkeyPatch) -> dict[str, _Counted]:
    counted = {
        name: _Counted(getattr(client_module, name))
        for name in ("_events", "_extrinsic_signer_and_call", "_decode_call", "_split_batch")
    }
    for name, wrapper in counted.items():
        monkeypatch.setattr(client_module, name, wrapper)
    return counted


def test_a_block_without_the_prefix_is_neither_decoded_nor_reported(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    note, sent = b"a note, not for Passerelle", psrl(message(body=b"prefilter"))

    async def scenario() -> tuple[list[Included], list[list[Any]], list[SubstrateEvent]]:
        alone = await client.submit(ALICE_KEY, "System", "remark_with_event", {"remark": note})
        calls = [
            await client.compose("System", "remark_with_event", {"remark": r}) for r in (note, sent)
        ]
        mixed = await client.submit(ALICE_KEY, "Utility", "batch_all", {"calls": calls})
        events = await client.events(alone.block_hash)
        counted = _count_decoding(monkeypatch)
        seen = [await client.remarks(alone.block_hash)]
        assert {name: c.calls for name, c in counted.items()} == dict.fromkeys(counted, 0)
        seen.append(await client.remarks(mixed.block_hash))
        # The extrinsic that carries the prefix: its events and its call, each decoded once
        # (the batch's calls come with the extrinsic's own decode).
        assert {name: c.calls for name, c in counted.items()} == {
            "_events": 1,
            "_extrinsic_signer_and_call": 1,
            "_decode_call": 0,
            "_split_batch": 0,
        }
        return [alone, mixed], seen, events

    (alone, mixed), (nothing, both), events = run(scenario)
    # On chain, Alice's own note did emit its event: the old scan offered it (refused later as
    # missing-prefix by every consumer); now the block costs one byte search.
    [remarked] = [e for e in events if (e.pallet, e.name) == ("System", "Remarked")]
    assert remarked.extrinsic_index == alone.extrinsic_index
    assert nothing == []
    # An extrinsic with the prefix anywhere is read whole, its other remarks included.
    assert [(s.remark, s.extrinsic_index, s.signer) for s in both] == [
        (note, mixed.extrinsic_index, ALICE_ID),
        (sent, mixed.extrinsic_index, ALICE_ID),
    ]


def test_a_multisig_delivery_is_decoded_once(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committee's delivery shape (as_multi around a batch_all): the opaque call is
    decoded once, its calls taken from that decode; the result is what the call-by-call
    decoding (the old path, hints off) gives."""
    others = {ALICE_KEY: [BOB_ID, CHARLIE_ID], BOB_KEY: [ALICE_ID, CHARLIE_ID]}
    multisig = multisig_account([ALICE_ID, BOB_ID, CHARLIE_ID], 2)
    refund = psrl(message(sender=multisig, body=b"a refund by the committee"))
    notes = [b"delivered %d" % i for i in range(40)]

    async def deliver(remarks: list[bytes]) -> Included:
        call = await client.compose(
            "Utility",
            "batch_all",
            {
                "calls": [
                    await client.compose("System", "remark_with_event", {"remark": r})
                    for r in remarks
                ]
            },
        )
        opened = await approve(client, ALICE_KEY, others[ALICE_KEY], 2, call)
        return await execute(client, BOB_KEY, others[BOB_KEY], 2, call, timepoint=opened)

    async def scenario() -> dict[str, Any]:
        # (The multisig pays nothing here: the approvals' deposits and fees are the signers'.)
        out: dict[str, Any] = {}
        out["with_refund"] = with_refund = await deliver([*notes[:20], refund, *notes[20:]])
        counted = _count_decoding(monkeypatch)
        substrate = client._substrate
        assert substrate is not None
        initialised: list[object] = []
        init_runtime = substrate.init_runtime

        def counted_init(*args: Any, **kwargs: Any) -> Any:
            initialised.append(kwargs.get("block_hash", args[0] if args else None))
            return init_runtime(*args, **kwargs)

        monkeypatch.setattr(substrate, "init_runtime", counted_init)
        out["seen"] = await client.remarks(with_refund.block_hash)
        out["initialised"] = initialised
        out["counts"] = {name: c.calls for name, c in counted.items()}
        monkeypatch.setattr(client_module, "_batch_calls", lambda *_: None)
        out["old_path"] = await client.remarks(with_refund.block_hash)
        return out

    out = run(scenario)
    assert executed_ok(out["with_refund"]) == (True, None)
    # The refund (dispatched by the multisig, with the prefix) is found; the 40 deliveries
    # (no prefix) are stepped over as before.
    [seen] = out["seen"]
    assert (seen.remark, seen.signer, seen.event_sender) == (refund, BOB_ID, multisig)
    assert seen.validate(ORIGIN, committee=multisig).body == b"a refund by the committee"
    # Decoded: the events once, the extrinsic once, its opaque call once; no call of the
    # batch decoded again. (It was five full decodes of the batch before.)
    assert out["counts"] == {
        "_events": 1,
        "_extrinsic_signer_and_call": 1,
        "_decode_call": 1,
        "_split_batch": 0,
    }
    # The as_multi's call layout (OpaqueCall or boxed) is read from the metadata remarks()
    # loaded for this block: every runtime initialisation during the scan names the block.
    # (get_metadata_call_function would initialise at the chain head: three round trips per
    # as_multi, and the head's layout for a block from before a runtime upgrade.)
    block = "0x" + out["with_refund"].block_hash.hex()
    assert out["initialised"] and set(out["initialised"]) == {block}
    assert out["old_path"] == out["seen"]


# --- generated nestings against the real decoder ------------------------------------------

_SIGNATORY = b"\x11" * 32
_WEIGHT = (10**9).to_bytes(8, "little")  # this runtime's Weight is a u64 (weights v1)


class _Encoder:
    """Calls encoded by hand from their call indexes (checked once against scalecodec), so
    that an ``OpaqueCall`` can also hold bytes that are no call at all."""

    def __init__(self, substrate: Any) -> None:
        self.substrate = substrate
        shapes: dict[str, tuple[str, str, dict[str, Any]]] = {
            "remark_with_event": ("System", "remark_with_event", {"remark": b""}),
            "remark": ("System", "remark", {"remark": b""}),
            "batch": ("Utility", "batch", {"calls": []}),
            "batch_all": ("Utility", "batch_all", {"calls": []}),
            "as_multi": ("Multisig", "as_multi", self._as_multi_args(None)),
        }
        self.index = {name: self._scale(*shape)[:2] for name, shape in shapes.items()}

    @staticmethod
    def _as_multi_args(call: Any) -> dict[str, Any]:
        return {
            "threshold": 2,
            "other_signatories": [to_hex(_SIGNATORY)],
            "maybe_timepoint": None,
            "call": call
            or {"call_module": "System", "call_function": "remark", "call_args": {"remark": b""}},
            "store_call": False,
            "max_weight": 10**9,
        }

    def _scale(self, pallet: str, function: str, args: dict[str, Any]) -> bytes:
        obj = self.substrate.runtime_config.create_scale_object(
            "Call", metadata=self.substrate.metadata
        )
        value = {"call_module": pallet, "call_function": function, "call_args": args}
        return bytes(obj.encode(value).data)

    def encode(self, node: tuple[Any, ...]) -> bytes:
        kind = node[0]
        if kind in ("remark_with_event", "remark"):
            return self.index[kind] + encode_compact(len(node[1])) + bytes(node[1])
        if kind in ("batch", "batch_all"):
            inner = b"".join(self.encode(child) for child in node[1])
            return self.index[kind] + encode_compact(len(node[1])) + inner
        opaque = node[1] if kind == "garbage" else self.encode(node[1])
        return (
            self.index["as_multi"]
            + (2).to_bytes(2, "little")
            + encode_compact(1)
            + _SIGNATORY
            + b"\x00"  # no timepoint
            + encode_compact(len(opaque))
            + opaque
            + b"\x00"  # store_call: false
            + _WEIGHT
        )

    def check_encoding(self) -> None:
        call: dict[str, Any] = {"call_module": "System", "call_function": "remark_with_event"}
        call["call_args"] = {"remark": b"PSRL"}
        scale = self._scale("Multisig", "as_multi", self._as_multi_args(call))
        assert self.encode(("as_multi", ("remark_with_event", b"PSRL"))) == scale


def _expected(node: tuple[Any, ...], depth: int = 0, multisig: bool = False) -> list[Any]:
    """What the scan must find in ``node``: the model the generated calls were built from."""
    kind = node[0]
    if kind == "remark_with_event":
        return [(node[1], multisig)]
    if depth >= client_module.MAX_CALL_DEPTH or kind in ("remark", "garbage"):
        return []
    if kind == "as_multi":
        return _expected(node[1], depth + 1, True)
    return [found for child in node[1] for found in _expected(child, depth + 1, multisig)]


_BODIES = st.one_of(
    st.binary(max_size=24),
    st.binary(max_size=16).map(lambda b: REMARK_PREFIX + b),
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=8)).map(
        lambda t: t[0] + REMARK_PREFIX + t[1]  # the prefix inside, not at the start
    ),
)
_LEAVES = st.one_of(
    _BODIES.map(lambda b: ("remark_with_event", b)),
    _BODIES.map(lambda b: ("remark", b)),  # System.remark: emits nothing, is never a message
)


def _nest(children: Any) -> Any:
    return st.one_of(
        st.tuples(st.sampled_from(["batch", "batch_all"]), st.lists(children, max_size=4)),
        st.tuples(st.just("as_multi"), children),
        # An OpaqueCall of bytes that are no call the scan looks into (never executes).
        st.tuples(st.just("garbage"), st.binary(max_size=24)),
    )


def test_generated_nestings_lose_no_prefixed_remark(client: SubstrateClient) -> None:
    substrate = _substrate(client)
    encoder = _Encoder(substrate)
    encoder.check_encoding()
    looked_into = {encoder.index[k] for k in ("remark_with_event", "batch", "batch_all")}
    looked_into.add(encoder.index["as_multi"])
    reach = Reach("skipped", "message", "hinted")

    @settings(max_examples=80)
    @given(st.recursive(_LEAVES, _nest, max_leaves=10))
    def check(tree: tuple[Any, ...]) -> None:
        if _garbage_looks_like_a_call(tree, looked_into):
            return
        data = encoder.encode(tree)
        decoded = client_module._decode_call(substrate, data)
        assert decoded.used == data
        found = client_module._remarks_in_call(substrate, decoded)
        assert found == _expected(tree)
        with patch.object(client_module, "_batch_calls", lambda *_: None):
            old_path = client_module._remarks_in_call(
                substrate, client_module._decode_call(substrate, data)
            )
        assert found == old_path
        # The prefilter's premise: every remark is a slice of the bytes it came from, so a
        # call without the prefix holds no remark that starts with it.
        assert all(remark in data for remark, _ in found)
        if REMARK_PREFIX not in data:
            assert not any(remark.startswith(REMARK_PREFIX) for remark, _ in found)
            reach.hit("skipped")
        elif any(remark.startswith(REMARK_PREFIX) for remark, _ in found):
            reach.hit("message")
        if decoded.calls is not None:
            reach.hit("hinted")

    check()
    reach.assert_reached()


def _garbage_looks_like_a_call(node: tuple[Any, ...], looked_into: set[bytes]) -> bool:
    """Whether a generated opaque blob starts like a call the scan looks into (then the model,
    which says "nothing in it", could be wrong by chance: such draws are left out)."""
    kind = node[0]
    if kind == "garbage":
        return bytes(node[1][:2]) in looked_into
    if kind == "as_multi":
        return _garbage_looks_like_a_call(node[1], looked_into)
    if kind in ("batch", "batch_all"):
        return any(_garbage_looks_like_a_call(child, looked_into) for child in node[1])
    return False


def test_a_scan_proves_the_events_of_prefixed_blocks_only(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Review RFINAL M2: with read proofs in use (required with a checkpoint), the scan reads
    a block's body first and fetches and checks the proof of its ``System.Events`` only when
    the body carries ``PSRL``. The node here plays one that proves storage: chopsticks' state
    roots are zero, so the stand-in ``read_proof`` counts the reads and hands back the node's
    own events value (what a proof would establish)."""
    note = b"a note, not for Passerelle"
    sent = Message(1, 0, ASSETHUB, ALICE_ID, GAMMA, b"\x0d" * 32, b"proven where it can be")
    text = config_toml(substrate={"recipients": f'{{ "{GAMMA}" = ["0x{"0d" * 32}"] }}'})
    config = load_config_text(tmp_path, text)
    chain = config.chain("assethub")
    proofs: list[int] = []

    async def proves(*_: object) -> bool:
        return True

    async def read_proof(
        node: SubstrateClient, keys: Sequence[bytes], header: SubstrateHeader
    ) -> dict[bytes, bytes | None]:
        assert list(keys) == [SYSTEM_EVENTS_KEY]
        proofs.append(header.number)
        raw = await node.rpc("state_getStorage", [to_hex(SYSTEM_EVENTS_KEY), to_hex(header.hash)])
        return {SYSTEM_EVENTS_KEY: parse_data(raw, "System.Events")}

    monkeypatch.setattr(scan_module, "proves_storage", proves)
    monkeypatch.setattr(scan_module, "read_proof", read_proof)

    async def scenario() -> tuple[Included, Included, RemarkScan]:
        alone = await client.submit(ALICE_KEY, "System", "remark_with_event", {"remark": note})
        carrying = await client.submit(
            ALICE_KEY, "System", "remark_with_event", {"remark": psrl(sent)}
        )
        blocks = range(alone.block_number, carrying.block_number + 1)
        routes = escrow_routes(config, chain)
        return alone, carrying, await scan_remarks(client, chain, routes, blocks, 7)

    alone, carrying, scan = run(scenario)
    assert alone.success and carrying.success
    assert carrying.block_number == alone.block_number + 1
    # The note's block: its body only (was: a proof read and checked for it too).
    assert proofs == [carrying.block_number]
    # The PSRL block: its events came from the proven value, and matched as before.
    [found] = scan.messages
    assert (found.block_number, found.extrinsic_index) == (
        carrying.block_number,
        carrying.extrinsic_index,
    )
    assert found.message == Message(1, 7, ASSETHUB, ALICE_ID, GAMMA, b"\x0d" * 32, sent.body)
    assert scan.skipped == [] and scan.last_hash == carrying.block_hash


# --- fast paths: a delivery batch's bytes, one extrinsic's events, a fee estimate ---------
# Each is checked against substrate-interface itself, in this module's real runtime.

_U32_EDGES = st.sampled_from([0, 1, 63, 64, 2**14 - 1, 2**14, 2**30 - 1, 2**30, 2**32 - 1])
_COMPACT_EDGES = st.sampled_from([0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**64, 2**128 - 1])
_ACCOUNTS = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
_DELIVERY_CALLS = st.one_of(
    st.tuples(
        st.just("Uniques"),
        st.just("mint"),
        st.fixed_dictionaries(
            {
                "class": _U32_EDGES | st.integers(0, 2**32 - 1),
                "instance": _U32_EDGES | st.integers(0, 2**32 - 1),
                "owner": _ACCOUNTS,
            }
        ),
    ),
    st.tuples(
        st.just("Uniques"),
        st.just("freeze"),
        st.fixed_dictionaries(
            {"class": st.integers(0, 2**32 - 1), "instance": st.integers(0, 2**32 - 1)}
        ),
    ),
    st.tuples(
        st.just("System"),
        st.just("remark_with_event"),
        st.fixed_dictionaries({"remark": st.binary(max_size=300)}),
    ),
    st.tuples(
        st.just("Assets"),
        st.just("mint"),
        st.fixed_dictionaries(
            {
                "id": _COMPACT_EDGES | st.integers(0, 2**32 - 1),
                "beneficiary": _ACCOUNTS,
                "amount": _COMPACT_EDGES | st.integers(0, 2**128 - 1),
            }
        ),
    ),
)


def _library_batch(substrate: Any, calls: Sequence[tuple[str, str, dict[str, Any]]]) -> bytes:
    nested = [{"call_module": m, "call_function": f, "call_args": a} for m, f, a in calls]
    call = substrate.runtime_config.create_scale_object("Call", metadata=substrate.metadata)
    return bytes(
        call.encode(
            {"call_module": "Utility", "call_function": "batch_all", "call_args": {"calls": nested}}
        ).data
    )


@settings(max_examples=120, deadline=None)
@given(calls=st.lists(_DELIVERY_CALLS, min_size=1, max_size=12))
def test_a_fast_delivery_batch_is_byte_for_byte_substrate_interfaces(
    client: SubstrateClient, calls: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Every shape probed in this runtime, every value at SCALE's edges (the compact modes'
    boundaries, u32's and u128's maxima): FastCalls writes what substrate-interface encodes."""
    substrate = _substrate(client)
    fast = FastCalls.probe(substrate)
    assert fast.shapes == set(SHAPES)
    assert fast.batch_all(calls) == _library_batch(substrate, calls)


def test_a_shape_or_value_the_fast_path_does_not_take_goes_the_librarys_way(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shape whose declared kinds are not this runtime's (here ``instance`` claimed compact)
    is left out by the probe, and any value FastCalls does not take (an SS58 account, a u32 out
    of range, a remark given as text) makes it answer None: the client then composes through
    substrate-interface, the same bytes, or its one error line."""
    substrate = _substrate(client)
    owner = "0x" + "ab" * 32
    mint = ("Uniques", "mint", {"class": 7, "instance": 9, "owner": owner})
    remark = ("System", "remark_with_event", {"remark": b"x"})
    wrong = dict(SHAPES)
    wrong[("Uniques", "mint")] = (("class", "u32"), ("instance", "compact"), ("owner", "account"))
    monkeypatch.setattr(encoding_module, "SHAPES", wrong)
    probed = FastCalls.probe(substrate)
    assert ("Uniques", "mint") not in probed.shapes
    assert probed.batch_all([mint]) is None and probed.batch_all([remark]) is not None
    # The arguments' ORDER shows too (review REVIEW1 F1): two u32 arguments declared the other
    # way round would encode each other's values, and the guard item would be minted under
    # (nonce, collection).
    swapped = dict(SHAPES)
    swapped[("Uniques", "freeze")] = (("instance", "u32"), ("class", "u32"))
    swapped[("Assets", "mint")] = (
        ("amount", "compact"),
        ("beneficiary", "account"),
        ("id", "compact"),
    )
    monkeypatch.setattr(encoding_module, "SHAPES", swapped)
    probed = FastCalls.probe(substrate)
    assert probed.shapes == set(SHAPES) - {("Uniques", "freeze"), ("Assets", "mint")}
    monkeypatch.undo()
    fast = FastCalls.probe(substrate)
    for odd in (
        ("Uniques", "mint", {"class": 7, "instance": 9, "owner": ALICE_KEY.ss58_address}),
        ("Uniques", "freeze", {"class": 2**32, "instance": 1}),
        ("System", "remark_with_event", {"remark": "text"}),
        ("System", "remark_with_event", {"remark": b"x", "extra": 1}),
        ("System", "remark", {"remark": b"x"}),
    ):
        assert fast.batch_all([mint, odd]) is None, odd
    ss58 = ("Uniques", "mint", {"class": 7, "instance": 9, "owner": ALICE_KEY.ss58_address})
    composed = run(lambda: client.compose_batch_all([mint, ss58]))
    assert composed.data == _library_batch(substrate, [mint, ss58])
    assert composed.hash == blake2_256(composed.data)
    with pytest.raises(AdapterError, match=r"compose Utility\.batch_all"):
        run(lambda: client.compose_batch_all([("Uniques", "freeze", {"class": -1, "instance": 1})]))


def _block_with_several_extrinsics(client: SubstrateClient) -> tuple[bytes, int]:
    """One block holding three ``batch_all``s of 40 remarks from three accounts of their own
    (built by ``dev_newBlock`` with exactly these transactions: no timing involved; a first
    version that sent them one after another found them in three blocks on a loaded run);
    its hash and how many extrinsics of ours it holds."""
    substrate = _substrate(client)

    async def compose(k: int) -> Any:
        return await client.compose_batch_all(
            [("System", "remark_with_event", {"remark": bytes([k, n])}) for n in range(40)]
        )

    calls = [run(lambda k=k: compose(k)) for k in range(3)]
    signed = [
        substrate.create_signed_extrinsic(
            call=call.generic, keypair=key, nonce=substrate.get_account_nonce(key.ss58_address)
        )
        for key, call in zip(WALK_KEYS, calls, strict=True)
    ]
    after = substrate.get_block_number(None)
    answer = substrate.rpc_request(
        "dev_newBlock", [{"transactions": [str(x.data) for x in signed]}]
    )
    assert "result" in answer, answer
    block_hash = parse_data(substrate.get_block_hash(after + 1), "block hash")
    body = substrate.rpc_request("chain_getBlock", [to_hex(block_hash)])["result"]["block"]
    ours = {blake2_256(bytes(x.data.data)) for x in signed}
    found = [blake2_256(parse_data(e, "extrinsic")) for e in body["extrinsics"]]
    return block_hash, len(ours & set(found))


def test_one_extrinsics_events_are_the_same_as_every_event_filtered(
    client: SubstrateClient,
) -> None:
    """`wait_included` decodes only its extrinsic's records (event_records' walk over the
    runtime's registry): the events must be exactly those of a full decode, filtered, for every
    extrinsic of a block of several (inherents included), and for blocks with no extrinsic of
    that index."""
    substrate = _substrate(client)
    block_hash, count = _block_with_several_extrinsics(client)
    assert count == 3
    walker = client_module.EventWalker()
    every = client_module._events(substrate, block_hash)
    indexes = {e.extrinsic_index for e in every}
    assert len(indexes - {None}) >= 3  # inherents and ours
    for index in [*sorted(i for i in indexes if i is not None), 99]:
        ours = client_module._extrinsic_events(substrate, block_hash, index, walker)
        assert ours == [e for e in every if e.extrinsic_index == index], index
        # Only some kinds asked for (a multisig outcome's): only those decoded, the same ones.
        kinds = {("System", "ExtrinsicSuccess"), ("Utility", "BatchCompleted")}
        some = client_module._extrinsic_events(substrate, block_hash, index, walker, kinds)
        assert some == [e for e in ours if (e.pallet, e.name) in kinds], index
    assert any(e.name == "BatchCompleted" for e in every)  # the kinds above were there


def test_events_that_cannot_be_walked_are_decoded_whole(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry the walk cannot use, or stored bytes it does not end exactly on, are no error:
    the whole value is decoded and filtered, as before the walk existed."""
    substrate = _substrate(client)
    block_hash = parse_data(substrate.get_block_hash(1), "hash")
    every = client_module._events(substrate, block_hash)

    def refuse(*_: Any) -> Any:
        raise DecodeError("cannot step over a bitsequence (1)")

    monkeypatch.setattr(client_module.EventWalker, "spans", refuse)
    index = next(e.extrinsic_index for e in every if e.extrinsic_index is not None)
    got = client_module._extrinsic_events(substrate, block_hash, index, client_module.EventWalker())
    assert got == [e for e in every if e.extrinsic_index == index]


def test_the_event_walk_refuses_bytes_that_are_not_the_events_value(
    client: SubstrateClient,
) -> None:
    """Hostile or corrupt bytes (a node answers ``state_getStorage``): a record cut short, a
    byte too many, a phase or event index the runtime does not have — each a DecodeError,
    never another exception or a span past the data."""
    substrate = _substrate(client)
    block_hash, _ = _block_with_several_extrinsics(client)
    raw = substrate.rpc_request("state_getStorage", [to_hex(SYSTEM_EVENTS_KEY), to_hex(block_hash)])
    data = parse_data(raw["result"], "events")
    walker = client_module.EventWalker()
    spans = walker.spans(substrate, data)
    assert spans[-1].end == len(data) and all(s.start < s.end for s in spans)
    first = spans[0].start
    for bad in (
        data[:-1],
        data + b"\x00",
        data[:first] + b"\x07" + data[first + 1 :],  # phase variant 7: none
        data[:first] + b"\x01\xff" + data[first + 2 :],  # Finalization, then pallet 255: none
    ):
        with pytest.raises(DecodeError):
            walker.spans(substrate, bad)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_the_event_walk_of_random_bytes_is_spans_or_one_decode_error(
    client: SubstrateClient, data: bytes
) -> None:
    walker = client_module.EventWalker()
    try:
        spans = walker.spans(_substrate(client), data)
    except DecodeError:
        return
    assert not spans or spans[-1].end == len(data)
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))  # they tile the data


def test_a_spliced_fee_estimate_is_what_substrate_interface_asks(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fee of a delivery-sized batch and of the ``as_multi`` around it: the extrinsic with
    the call's bytes spliced in gives the node's same answer as substrate-interface's own
    (which re-encodes the call from its value); and when the splice does not reproduce the
    library's extrinsic for the sample, the library is asked."""
    calls = [
        ("System", "remark_with_event", {"remark": bytes([n % 256]) * 144}) for n in range(300)
    ]

    async def fees() -> list[Fee]:
        batch = await client.compose_batch_all(calls)
        wrapped = await client.compose(
            "Multisig",
            "as_multi",
            {
                "threshold": 2,
                "other_signatories": [to_hex(BOB_ID), to_hex(CHARLIE_ID)],
                "maybe_timepoint": None,
                "call": batch,
                "store_call": False,
                "max_weight": client.weight_arg(10**11),
            },
        )
        return [await client.estimate_fee(ALICE_KEY, c) for c in (batch, wrapped)]

    asked: list[Any] = []
    real = type(_substrate(client)).get_payment_info

    def counting(self: Any, call: Any, keypair: Any) -> Any:
        asked.append(call)
        return real(self, call, keypair)

    monkeypatch.setattr(type(_substrate(client)), "get_payment_info", counting)
    client._fee_extrinsics = client_module.FeeExtrinsics()
    spliced = run(fees)
    assert asked == []  # both estimates were spliced (review REVIEW1 F8)
    client._fee_extrinsics = client_module.FeeExtrinsics()
    monkeypatch.setattr(client_module.FeeExtrinsics, "_splice", staticmethod(lambda *a, **k: b""))
    assert run(fees) == spliced
    assert len(asked) == 2


def test_waits_of_one_client_fetch_each_block_body_once(
    client: SubstrateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several extrinsics in flight, each waited for: every wait looks at each new block, and a
    delivery's block is ~100 KB of JSON from a node whose RPC thread also serves its block
    builder's storage reads. One client asks for each block's body once."""
    asked: list[str] = []
    rpc = client.rpc

    async def counting(method: str, params: Sequence[Any] = ()) -> Any:
        if method == "chain_getBlock":
            asked.append(str(params[0]))
        return await rpc(method, params)

    monkeypatch.setattr(client, "rpc", counting)

    async def scenario() -> list[Included]:
        calls = [
            await client.compose("System", "remark", {"remark": b"wait %d" % k}) for k in range(3)
        ]
        submitted = [
            await client.submit_call(key, call, wait_for_inclusion=False)
            for key, call in zip((ALICE_KEY, BOB_KEY, CHARLIE_KEY), calls, strict=True)
        ]
        landed: list[Included] = []

        async def wait(one: Any) -> None:
            landed.append(await client.wait_included(one))

        async with trio.open_nursery() as nursery:
            for one in submitted:
                nursery.start_soon(wait, one)
        return landed

    landed = run(scenario)
    assert len(landed) == 3 and all(i.success for i in landed)
    assert asked and len(asked) == len(set(asked)), asked


# --- one metadata decode per process (adapters/substrate/metadata.py) ----------------------


def _metadata_hex(client: SubstrateClient) -> str:
    answer = _substrate(client).rpc_request("state_getMetadata", [])
    raw = answer["result"]
    assert isinstance(raw, str) and raw.startswith("0x")
    return raw


def _forged(raw: str) -> str:
    """The same metadata with one letter of a pallet's documentation changed: decodable, as
    long, and announced by a node under the same spec version as the real one."""
    text = b"Make some on-chain remark.".hex()
    assert raw.count(text) == 1, "the System pallet's remark documentation moved"
    return raw.replace(text, b"Make some on-chain remarK.".hex())


class _Serving:
    """``rpc_request`` of one interface, with ``state_getMetadata`` answered by ``answer`` (a
    lying node) and its calls counted."""

    def __init__(self, interface: Any, answer: Callable[[], Any] | None = None) -> None:
        self.rpc_request, self.answer, self.asked = interface.rpc_request, answer, 0

    def __call__(self, method: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        if method == "state_getMetadata":
            self.asked += 1
            if self.answer is not None:
                return {"jsonrpc": "2.0", "id": 1, "result": self.answer()}
        return self.rpc_request(method, params, *args, **kwargs)


def _interface(chain: ChopsticksProcess, answer: Callable[[], Any] | None = None) -> Any:
    """A SharedMetadataInterface to the module's chain, not initialised yet, whose node answers
    ``state_getMetadata`` with ``answer()`` (the truth if None); ``.serving`` counts the asks."""
    interface = SharedMetadataInterface(url=chain.ws_url)
    interface.serving = _Serving(interface, answer)
    interface.rpc_request = interface.serving
    return interface


def _composes_as(interface: Any, plain: Any, remark: str) -> None:
    """``interface`` composes a System.remark to the bytes substrate-interface alone does."""
    ours = interface.compose_call("System", "remark", {"remark": remark})
    assert ours.data.data == plain.compose_call("System", "remark", {"remark": remark}).data.data


def test_a_second_connection_to_the_same_runtime_does_not_decode_its_metadata_again(
    client: SubstrateClient, chain: ChopsticksProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metadata decode (1.5-3 CPU s, holding the process's one Substrate slot) happens once
    per process for the same bytes: a reconnect, or a second client of the same chain, reuses
    it; the bytes are still fetched each time; and what a connection then composes is what
    substrate-interface alone composes."""
    decodes = _Counted(metadata_module._decode)
    monkeypatch.setattr(metadata_module, "_decode", decodes)
    first, second = _interface(chain), _interface(chain)
    plain = SubstrateInterface(url=chain.ws_url)
    try:
        first.init_runtime()  # the module's client holds the decode: neither decodes
        second.init_runtime()
        assert decodes.calls == 0 and first.serving.asked == second.serving.asked == 1
        assert second.metadata is first.metadata is _substrate(client).metadata
        plain.init_runtime()
        assert plain.metadata.value == second.metadata.value
        for interface in (second, _substrate(client)):
            _composes_as(interface, plain, "0x63616368")
    finally:
        for interface in (first, second, plain):
            interface.close()


def test_a_node_serving_other_metadata_under_the_same_spec_version_gets_its_own_decode(
    client: SubstrateClient, chain: ChopsticksProcess
) -> None:
    """A node (lying, or another chain) serving other metadata under the spec version the
    honest node announces gets the decode of what it served, not the cached one: the key is
    the bytes. substrate-interface's own cache, keyed by spec version, would have handed it
    the honest decode; and the honest connections keep theirs."""
    raw = _metadata_hex(client)
    honest = _substrate(client).metadata
    liar = _interface(chain, lambda: _forged(raw))
    try:
        liar.init_runtime()
        assert (
            liar.serving.asked == 1 and liar.runtime_version == _substrate(client).runtime_version
        )
        assert liar.metadata is not honest and liar.metadata is decoded_metadata(_forged(raw))
        assert "remarK" in json.dumps(liar.metadata.value)
        assert "remarK" not in json.dumps(honest.value)
        assert decoded_metadata(raw) is honest
    finally:
        liar.close()


def test_a_decoders_registry_rebuilt_changes_nothing_another_connection_resolves(
    client: SubstrateClient, chain: ChopsticksProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection that decoded the metadata later follows a runtime upgrade: it clears and
    rebuilds its own type registry (substrate-interface's ``reload_type_registry``). The
    shared decode resolves its pallets' calls and events in a registry of its own, so another
    connection still finds them and composes what substrate-interface alone composes; decoded
    in its decoder's registry, as the library does, it would resolve nothing now."""
    # This test's connection must be the decoder: the cache emptied (restored after).
    monkeypatch.setattr(metadata_module, "_decoded", weakref.WeakValueDictionary())
    monkeypatch.setattr(metadata_module, "_latest", [])
    decoder, other = _interface(chain), _interface(chain)
    plain = SubstrateInterface(url=chain.ws_url)
    try:
        decoder.init_runtime()
        assert decoder.metadata is not _substrate(client).metadata  # decoded here, afresh
        decoder.runtime_config.clear_type_registry()
        other.init_runtime()
        assert other.metadata is decoder.metadata
        system = other.metadata.get_metadata_pallet("System")
        assert any(call["name"] == "remark" for call in system.calls)
        assert any(event["name"] == "Remarked" for event in system.events)
        plain.init_runtime()
        _composes_as(other, plain, "0x6166746572")
    finally:
        for interface in (decoder, other, plain):
            interface.close()


def test_a_runtime_switch_that_fails_is_forgotten_not_half_made(
    chain: ChopsticksProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a runtime upgrade the node errs, or answers what is not metadata: the connection
    must not keep the old metadata under the new spec version (substrate-interface records
    the version first, and its next call for it would return at once: calls composed with
    the old layout, signed for the new runtime). The next call starts over and fetches."""
    answers: list[Any] = [{"not": "metadata"}, 7]
    interface = _interface(chain, lambda: answers.pop(0) if answers else None)
    try:
        with pytest.raises(SubstrateRequestException, match="answered dict, not metadata"):
            interface.init_runtime()
        assert interface.runtime_version is None and interface.block_hash is None
        with pytest.raises(SubstrateRequestException, match="answered int, not metadata"):
            interface.init_runtime()  # asked again: nothing was kept from the failed switch
        assert interface.serving.asked == 2 and interface.runtime_version is None
        interface.serving.answer = None  # the node answers truly again
        interface.init_runtime()
        assert interface.serving.asked == 3 and interface.runtime_version is not None
        assert interface.metadata.get_metadata_pallet("System") is not None
    finally:
        interface.close()
