"""The Outbox's dispatch gas (issue #11: a route's ceiling is the smaller of what the origin can
dispatch and what the destination can deliver per block), on the session anvil.

What was cut must not change what is dispatched: the message bytes, its id, the accumulator and
its storage slots are checked against the Python reference here (tests/test_contracts.py checks
them for ``dispatch`` too). What changed is checked directly: the ``Dispatch`` log no longer
repeats the nonce (a 32-byte word of log data less per message), ``dispatchBatch`` dispatches
many messages in one transaction at a fraction of the gas each, and the one parser of the
event (:func:`adapters.evm.chain.dispatch_message`) refuses every other shape of log data.
benchmarks/bench_delivery_gas.py measures the gas against the baseline Outbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import httpx
import pytest
import trio
from eth_abi.abi import encode as abi_encode
from hypothesis import event, given
from hypothesis import strategies as st
from test_contracts import DEPLOYER, USER, assert_rejected, deploy, send
from test_paymaster import w3 as w3  # noqa: PLC0414 - the fixture
from web3 import Web3
from web3.contract import Contract

from adapters.errors import AdapterError
from adapters.evm.chain import DISPATCH_TOPIC, EvmChain, dispatch_message, selector
from adapters.rpc import JsonRpcClient
from devnet.anvil import AnvilProcess
from light_clients.hashing import keccak256
from light_clients.merkle import (
    MAX_LEAVES,
    TREE_DEPTH,
    IncrementalMerkleTree,
    frontier_append,
    root_from_branch,
)
from light_clients.message import HEADER_SIZE, Message

HERE, THERE = 1000, 2000
RECIPIENT = keccak256(b"a recipient")
BATCH = 40
BATCH_GAS_PER_MESSAGE = 7_000
"""Measured 5,434 per 89-byte message in a batch of 100 (benchmarks/bench_delivery_gas.py); this
test's batch of 40 (nonces 63..102, 13-byte bodies) shares its 21k among fewer messages and also
pays the first write of branch slot 6 (20k, once per 64 messages): 6,750 each. A lone
``dispatch`` costs 39k."""


# --------------------------------------------------------------------------- the parser


@given(st.binary(min_size=HEADER_SIZE, max_size=600))
def test_dispatch_data_parses_back_to_its_message(message: bytes) -> None:
    assert dispatch_message(abi_encode(["bytes"], [message])) == message


@given(st.binary(min_size=HEADER_SIZE, max_size=300), st.data())
def test_any_other_shape_of_dispatch_data_is_refused_in_one_line(
    message: bytes, data: st.DataObject
) -> None:
    good = abi_encode(["bytes"], [message])
    padding = len(good) - 64 - len(message)
    candidates = [
        abi_encode(["uint32", "bytes"], [7, message]),  # the old event's data: nonce first
        good + bytes(32),  # a trailing word
        good[:-1],  # cut short
        (64).to_bytes(32, "big") + good[32:],  # another offset
        good[:32] + (len(message) + 33).to_bytes(32, "big") + good[64:],  # a length past the end
        abi_encode(["bytes"], [message[: HEADER_SIZE - 1]]),  # shorter than any header
    ]
    if padding:
        at = data.draw(st.integers(len(good) - padding, len(good) - 1))
        candidates.append(good[:at] + b"\x01" + good[at + 1 :])  # dirty padding
    for bad in candidates:
        with pytest.raises(AdapterError, match="Dispatch log"):
            dispatch_message(bad)


# ------------------------------------------------------------ a hostile endpoint's log objects

JSON_ISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=8,
)
"""Anything ``json.loads`` can give: what an endpoint can put in place of any field."""
OUTBOX_ADDRESS = keccak256(b"the outbox")[-20:]


def genuine_log(message: Message) -> dict[str, object]:
    """The log the Outbox emits for ``message``, as an endpoint's JSON."""
    return {
        "address": "0x" + OUTBOX_ADDRESS.hex(),
        "topics": [
            "0x" + DISPATCH_TOPIC.hex(),
            "0x" + message.id.hex(),
            "0x" + message.destination.to_bytes(32, "big").hex(),
        ],
        "data": "0x" + abi_encode(["bytes"], [message.encode()]).hex(),
        "blockNumber": "0x10",
        "blockHash": "0x" + keccak256(b"block").hex(),
        "transactionHash": "0x" + keccak256(b"tx").hex(),
        "logIndex": "0x0",
    }


@cache
def offline_chain() -> EvmChain:
    """An EvmChain for the parser alone (never connected); one, because each client loads the
    system's CA certificates (0.1 s) and the property test makes a hundred."""
    return EvmChain(JsonRpcClient(["http://127.0.0.1:9"]), domain=HERE, finality="devnet-instant")


def field_or_garbage(genuine: object) -> st.SearchStrategy[object]:
    """The genuine value, or the genuine value mangled, or any JSON value at all."""
    mangled: list[st.SearchStrategy[object]] = [st.just(genuine), JSON_ISH]
    if isinstance(genuine, str):
        mangled.append(st.builds(lambda cut: genuine[:cut], st.integers(0, len(genuine))))
        mangled.append(
            st.builds(lambda tail: genuine + tail, st.text("0123456789abcdefg", max_size=66))
        )
    if isinstance(genuine, list):
        mangled.append(
            st.lists(st.sampled_from(genuine) | JSON_ISH, max_size=5)  # reordered, cut, grown
        )
    return st.one_of(*mangled)


@given(st.binary(max_size=80), st.data())
def test_a_dispatch_log_of_any_shape_is_a_message_or_one_adapter_error(
    body: bytes, data: st.DataObject
) -> None:
    """Review RC2 M1: ``"topics": null`` raised TypeError, which the relayer's and attester's
    scan loops do not catch (they catch AdapterError and VerificationError), so one endpoint
    answering it ended every lane. Every field of the log may be anything JSON can hold."""
    message = Message(1, 3, HERE, bytes(32), THERE, RECIPIENT, body)
    log = {k: data.draw(field_or_garbage(v), label=k) for k, v in genuine_log(message).items()}
    for key in data.draw(st.sets(st.sampled_from(sorted(log))), label="dropped"):
        del log[key]
    evm = offline_chain()
    try:
        parsed = evm._dispatch(log, OUTBOX_ADDRESS)
    except AdapterError as exc:
        assert "\n" not in str(exc)  # one line
        event("refused")
        return
    event("parsed")
    # Whatever got through is the genuine message, checked against its topics.
    assert parsed.message == message and parsed.raw == message.encode()
    assert parsed.id == message.id


@pytest.mark.parametrize(
    "topics",
    [None, {}, {"0": "0x00"}, "0x" + "00" * 32, 7, [None, None, None], [[], [], []]],
)
def test_topics_that_are_not_a_list_of_words_are_one_adapter_error(topics: object) -> None:
    log = dict(genuine_log(Message(1, 3, HERE, bytes(32), THERE, RECIPIENT, b"x")), topics=topics)
    evm = offline_chain()
    with pytest.raises(AdapterError, match="topic"):
        evm._dispatch(log, OUTBOX_ADDRESS)


# --------------------------------------------------------------------------- the contract


@pytest.fixture
def outbox(w3: Web3) -> Contract:
    return deploy(w3, "Outbox", HERE)


def expected(nonce: int, sender: str, body: bytes) -> Message:
    return Message(
        version=1,
        nonce=nonce,
        origin=HERE,
        sender=bytes(12) + bytes.fromhex(sender[2:]),
        destination=THERE,
        recipient=RECIPIENT,
        body=body,
    )


@pytest.mark.chain
def test_dispatch_batch_makes_exactly_the_messages_dispatch_would_for_a_fraction_of_the_gas(
    w3: Web3, outbox: Contract, anvil: AnvilProcess
) -> None:
    # A lone dispatch first (the cold slots' first writes), then a batch after it.
    lone = send(outbox.functions.dispatch(THERE, RECIPIENT, b"lone"), USER)
    bodies = [b"batch %07d" % i for i in range(61)] + [b"x" * 1000]
    ids = outbox.functions.dispatchBatch(THERE, RECIPIENT, bodies).call({"from": USER})
    receipt = send(outbox.functions.dispatchBatch(THERE, RECIPIENT, bodies), USER)
    want = [expected(0, USER, b"lone")] + [
        expected(n, USER, body) for n, body in enumerate(bodies, start=1)
    ]
    assert ids == [m.id for m in want[1:]]

    logs = [entry for r in (lone, receipt) for entry in r["logs"]]
    assert len(logs) == len(want)  # one Dispatch per message, nothing else
    for entry, message in zip(logs, want, strict=True):
        assert bytes(entry["topics"][0]) == DISPATCH_TOPIC
        assert bytes(entry["topics"][1]) == message.id
        assert int.from_bytes(entry["topics"][2], "big") == THERE
        data = bytes(entry["data"])
        # The message ABI-encoded alone: no nonce word before it (it is message[1:5]).
        assert len(data) == 64 + -(-len(message.encode()) // 32) * 32
        assert dispatch_message(data) == message.encode()

    # The relayer's scan reads them back, each checked against its topics.
    async def scan() -> list[bytes]:
        evm = EvmChain(JsonRpcClient([anvil.rpc_url]), domain=HERE, finality="devnet-instant")
        found = await evm.dispatches(bytes.fromhex(outbox.address[2:]), 0, receipt["blockNumber"])
        return [event.raw for event in found]

    assert trio.run(scan) == [m.encode() for m in want]

    # The accumulator is the reference tree over the same ids.
    tree = IncrementalMerkleTree()
    tree.extend([m.id for m in want])
    assert outbox.functions.count().call() == len(want)
    assert bytes(outbox.functions.root().call()) == tree.root()

    # Gas, past the first writes of branch slots 0..5 (nonces 0..62 above).
    measured = send(outbox.functions.dispatchBatch(THERE, RECIPIENT, bodies[:BATCH]), USER)
    assert len(measured["logs"]) == BATCH
    assert measured["gasUsed"] / BATCH < BATCH_GAS_PER_MESSAGE < lone["gasUsed"] / 6

    # Review RC2 M2: a batch reuses the scratch memory its previous message left dirty, so a
    # short body after a long one must still log zero padding. The strict parser refuses dirty
    # padding, and a scan that refuses a genuine log repeats for ever: every relayer and
    # attester on the origin would halt. Long before short, every padding length 0..31 touched.
    mixed = [b"\xff" * 1000, b"\xee" * 100, b"\xdd" * 33, b"", b"\xcc" * 31, b"\xbb", b"\xaa" * 64]
    receipt = send(outbox.functions.dispatchBatch(THERE, RECIPIENT, mixed), USER)
    first = len(want) + BATCH
    assert len(receipt["logs"]) == len(mixed)
    for entry, (nonce, body) in zip(receipt["logs"], enumerate(mixed, start=first), strict=True):
        assert dispatch_message(bytes(entry["data"])) == expected(nonce, USER, body).encode()


@pytest.mark.chain
def test_one_refused_body_reverts_the_whole_batch(w3: Web3, outbox: Contract) -> None:
    send(outbox.functions.dispatch(THERE, RECIPIENT, b"first"), DEPLOYER)
    too_large = b"\x00" * (64 * 1024 + 1)
    assert_rejected(
        outbox.functions.dispatchBatch(THERE, RECIPIENT, [b"fine", too_large]), "BodyTooLarge"
    )
    assert_rejected(outbox.functions.dispatchBatch(HERE, RECIPIENT, [b"x"]), "DestinationIsLocal")
    assert_rejected(outbox.functions.dispatchBatch(THERE, bytes(32), [b"x"]), "ZeroRecipient")
    assert outbox.functions.count().call() == 1  # nothing of a refused batch was committed
    empty = send(outbox.functions.dispatchBatch(THERE, RECIPIENT, []), DEPLOYER)
    assert empty["logs"] == [] and outbox.functions.count().call() == 1


@pytest.mark.chain
def test_a_log_whose_topics_disagree_with_its_message_is_refused(
    w3: Web3, outbox: Contract, anvil: AnvilProcess
) -> None:
    """A hostile endpoint re-labels a genuine message for another destination (the topic a
    route's scan would filter on): the message's own destination is what counts."""
    receipt = send(outbox.functions.dispatch(THERE, RECIPIENT, b"to THERE"), DEPLOYER)
    (entry,) = w3.eth.get_logs(
        {"address": outbox.address, "fromBlock": receipt["blockNumber"], "toBlock": "latest"}
    )
    topics = ["0x" + bytes(t).hex() for t in entry["topics"]]
    log: dict[str, object] = {
        "address": outbox.address.lower(),
        "topics": topics,
        "data": "0x" + bytes(entry["data"]).hex(),
        "blockNumber": hex(entry["blockNumber"]),
        "blockHash": "0x" + bytes(entry["blockHash"]).hex(),
        "transactionHash": "0x" + bytes(entry["transactionHash"]).hex(),
        "logIndex": hex(entry["logIndex"]),
    }
    evm = EvmChain(JsonRpcClient([anvil.rpc_url]), domain=HERE, finality="devnet-instant")
    outbox_id = bytes.fromhex(outbox.address[2:])
    assert evm._dispatch(log, outbox_id).message.destination == THERE  # the genuine one parses
    relabelled = dict(log, topics=[*topics[:2], "0x" + (4000).to_bytes(32, "big").hex()])
    with pytest.raises(AdapterError, match="does not match its message"):
        evm._dispatch(relabelled, outbox_id)
    with pytest.raises(AdapterError, match="Dispatch log"):
        evm._dispatch(dict(log, data=f"{log['data']}{'00' * 32}"), outbox_id)


# ------------------------------------------------------------- the tree at every height (RC2 L1)


def tree_counts() -> list[int]:
    """Counts where the insertion's walk changes length: just below and at every power of two
    (the walk goes up one more height at each), up to the last leaf the tree takes."""
    counts = {(1 << k) + d for k in range(TREE_DEPTH) for d in (-1, 0)} | {MAX_LEAVES - 1}
    return sorted(c for c in counts if 0 <= c < MAX_LEAVES)


@pytest.fixture
def rpc(anvil: AnvilProcess) -> Iterator[httpx.Client]:
    """One HTTP client to the session anvil for :func:`rpc_batch`."""
    with httpx.Client(base_url=anvil.rpc_url) as client:
        yield client


def rpc_batch(client: httpx.Client, calls: Sequence[tuple[str, Sequence[object]]]) -> list[Any]:
    """One JSON-RPC batch to anvil (``anvil_setStorageAt`` 33 times per state would otherwise
    be 33 round trips, for 65 states), through one open client (a new one per call loads the
    system's CA certificates each time: 0.1 s)."""
    answer = client.post(
        "",
        json=[
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ],
    ).json()
    assert all("error" not in a for a in answer), answer
    return [a["result"] for a in sorted(answer, key=lambda a: a["id"])]


def mined(client: httpx.Client, tx: object) -> dict[str, Any]:
    """The receipt of ``tx`` once anvil has mined it (its automine answers the hash first)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (receipt,) = rpc_batch(client, [("eth_getTransactionReceipt", [tx])])
        if isinstance(receipt, dict):
            return receipt
        time.sleep(0.005)  # polling for the receipt to appear, not waiting for something not to
    raise AssertionError(f"transaction {tx} not mined in 30 s")


@pytest.mark.chain
def test_the_assembly_tree_walk_matches_the_reference_at_every_height_and_refuses_a_full_tree(
    outbox: Contract, rpc: httpx.Client
) -> None:
    """``MerkleLib.insert`` walks the branch in assembly with no height bound of its own: it
    stops only because ``MAX_LEAVES`` and the check before it hold (else the walk at size 2^32
    would write a hash into ``count``, slot 32). The other tests reach counts of about 100
    (height 6). Here the tree's 33 slots are set to a random branch and a count around every
    power of two up to the last leaf, one message dispatched, and the slots, ``root()`` and
    the message's nonce compared with light_clients' frontier functions; at 2^32-1 the tree
    refuses any leaf, and a batch that would cross it is refused whole."""
    address, client = outbox.address, rpc
    root_call = ("eth_call", [{"to": address, "data": "0x" + selector("root()").hex()}, "latest"])
    slot_calls = [("eth_getStorageAt", [address, hex(i), "latest"]) for i in range(TREE_DEPTH + 2)]

    def set_state(branch: list[bytes], count: int) -> None:
        words = [*branch, count.to_bytes(32, "big")]
        rpc_batch(
            client,
            [
                ("anvil_setStorageAt", [address, hex(i), "0x" + w.hex()])
                for i, w in enumerate(words)
            ],
        )

    def slots() -> list[bytes]:
        return [bytes.fromhex(str(v)[2:].rjust(64, "0")) for v in rpc_batch(client, slot_calls)]

    for count in tree_counts():
        branch = [keccak256(b"%d/%d" % (count, i)) for i in range(TREE_DEPTH)]
        set_state(branch, count)
        # Raw RPC rather than web3's send (which polls for the receipt slowly): a few round
        # trips a state.
        call = outbox.encode_abi("dispatch", [THERE, RECIPIENT, b"at %d" % count])
        (tx,) = rpc_batch(
            client, [("eth_sendTransaction", [{"from": USER, "to": address, "data": call}])]
        )
        receipt = mined(client, tx)
        root = rpc_batch(client, [root_call])[0]
        assert receipt["status"] == "0x1"
        (entry,) = receipt["logs"]
        message = dispatch_message(bytes.fromhex(entry["data"][2:]))
        assert int.from_bytes(message[1:5], "big") == count  # the nonce is the leaf index
        want_branch, want_count = frontier_append(branch, count, [keccak256(message)])
        got = slots()
        assert got[:TREE_DEPTH] == list(want_branch), count
        assert int.from_bytes(got[TREE_DEPTH], "big") == want_count == count + 1
        assert got[TREE_DEPTH + 1] == bytes(32)  # nothing written past the tree
        assert bytes.fromhex(str(root)[2:]) == root_from_branch(want_branch, want_count)

    set_state([bytes(32)] * TREE_DEPTH, MAX_LEAVES)
    assert_rejected(outbox.functions.dispatch(THERE, RECIPIENT, b""), "MerkleTreeFull")
    assert_rejected(outbox.functions.dispatchBatch(THERE, RECIPIENT, [b""]), "MerkleTreeFull")
    set_state([bytes(32)] * TREE_DEPTH, MAX_LEAVES - 1)
    assert_rejected(outbox.functions.dispatchBatch(THERE, RECIPIENT, [b"", b""]), "MerkleTreeFull")
    assert int.from_bytes(slots()[TREE_DEPTH], "big") == MAX_LEAVES - 1  # all or none
