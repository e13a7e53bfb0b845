"""Cut batches (issue #11): ``Inbox.processOrCut`` stops before a message it cannot fund.

A relayer that under-funds a batch, on purpose or because a recipient burned in the real
transaction what it did not burn in the dry run, must only ever DELAY messages: a message is
either delivered whole (its recipient got the full HANDLE_GAS stipend, a failure was the
recipient's own) or not touched at all (replay bit clear, no failure record) and deliverable by
a later batch. Real anvil (the session's), one fresh route.

The hostile sweep: for every message of a batch, the smallest gas limit at which the inbox
starts it is found to the gas (binary search, each try mined then rolled back with
``evm_snapshot``/``evm_revert``). At that limit the message has the least gas it can ever be
started with, so its worst case runs there: the batch's first message writes a FRESH guard
word, carries the largest body the inbox accepts (64 KiB to stage) and goes to a recipient
that burns its whole stipend (a fresh failure record after it). One gas less must cut the
batch cleanly before that message, never run out of gas inside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from web3 import Web3

from adapters.evm.tx import MinedTx
from adapters.rpc import LOGS_ANSWER_BYTES, logs_caps
from devnet.anvil import AnvilProcess
from light_clients.ethereum.receipt import Log
from light_clients.hashing import keccak256
from light_clients.message import MAX_BODY_BYTES
from relayer.families.evm.delivery import (
    MAX_BATCH_CALLDATA,
    MESSAGE_GAS_NEEDED,
    PROCESS,
    TOO_BIG_FOR_A_BLOCK,
    TOPIC_ALREADY,
    TOPIC_BATCH_CUT,
    TOPIC_DELIVERED,
    EvmDelivery,
    Submission,
    _receipt_outcome,
)
from relayer.ledger import Ledger, MessageStatus, open_ledger
from relayer.relay import RelayerMetrics
from tests.test_contracts import (
    DEPLOYER,
    B,
    Route,
    decode_error,
    deploy,
    events,
    failed_id,
    is_delivered,
    make_route,
    pad,
    revert_data,
    send,
)
from tests.test_ledger import DEST, ORIGIN, checkpoint_for, disc, drive, msg_id

pytestmark = pytest.mark.chain

BURN_GAS = 2  # TestRecipient.Mode


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    """The session's anvil (tests/conftest.py), shared with the other contract tests."""
    return Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))


@dataclass(frozen=True)
class Outcome:
    """What one ``processOrCut`` transaction did, from its receipt (the inbox's own logs)."""

    status: int
    started: int  # messages the inbox started: the cut position, or all of them
    delivered: list[bytes]
    failed: list[bytes]
    cut: list[tuple[int, int]]  # (position, nonce) of each BatchCut
    already: list[bytes]  # AlreadyDelivered: never expected here (each trial starts afresh)
    gas_used: int


def outcome(route: Route, receipt: Any, count: int) -> Outcome:
    inbox = route.inbox
    cut = [(e["position"], e["nonce"]) for e in events(inbox, "BatchCut", receipt)]
    status = int(receipt["status"])
    return Outcome(
        status=status,
        started=0 if status == 0 else (cut[0][0] if cut else count),
        delivered=[e["id"] for e in events(inbox, "Delivered", receipt)],
        failed=[e["id"] for e in events(inbox, "HandleFailed", receipt)],
        cut=cut,
        already=[e["id"] for e in events(inbox, "AlreadyDelivered", receipt)],
        gas_used=int(receipt["gasUsed"]),
    )


class Sandbox:
    """Mine ``processOrCut`` at a chosen gas limit, read what it did, roll the chain back."""

    def __init__(self, route: Route, args: tuple[Any, ...], messages: Sequence[bytes]) -> None:
        self.route = route
        self.args = args
        self.messages = list(messages)

    def _rpc(self, method: str, params: list[Any]) -> Any:
        answer = self.route.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        assert "error" not in answer, answer
        return answer["result"]

    def send(self, gas: int) -> Outcome:
        """Mine the batch at ``gas``: it must be the only transaction of the next block, so
        that what the receipt says is what this limit does to the state before it (in a
        trial, the snapshot's), and nothing else."""
        base = self.route.w3.eth.block_number
        fn = self.route.inbox.functions.processOrCut(*self.args)
        tx = fn.transact({"from": DEPLOYER, "gas": gas})
        receipt = self.route.w3.eth.wait_for_transaction_receipt(tx, timeout=10)
        block = self.route.w3.eth.get_block(receipt["blockNumber"])
        assert receipt["blockNumber"] == base + 1 and block["transactions"] == [tx], (
            "not mined alone on the snapshot's block",
            base,
            receipt["blockNumber"],
            block["transactions"],
        )
        result = outcome(self.route, receipt, len(self.messages))
        assert not result.already, ("a trial found a delivery an earlier one left", result)
        return result

    def trial(self, gas: int, check: bool = False) -> Outcome:
        """The outcome at ``gas``; with ``check``, the chain state it left is verified first:
        every started message has its bit set, every other one has neither bit nor record."""
        snapshot = self._rpc("evm_snapshot", [])
        try:
            result = self.send(gas)
            if check:
                inbox = self.route.inbox
                for position, message in enumerate(self.messages):
                    touched = position < result.started
                    assert is_delivered(inbox, message) == touched, (gas, position)
                    if not touched:
                        assert failed_id(inbox, message) == bytes(24), (gas, position)
            return result
        finally:
            assert self._rpc("evm_revert", [snapshot]) is True

    def least_gas_starting(self, started: int, low: int, high: int) -> int:
        """The smallest gas limit in (low, high] at which at least ``started`` messages are
        started (``low`` starts fewer, ``high`` at least that many)."""
        while high - low > 1:
            middle = (low + high) // 2
            if self.trial(middle).started >= started:
                high = middle
            else:
                low = middle
        return high


def test_underfunding_only_ever_cuts_a_batch_never_fails_or_half_delivers(w3: Web3) -> None:
    """Every cut point of a 4-message batch, at the exact gas (see the module docstring): the
    messages before it are delivered, the healthy ones with no failure; the cut message and the
    rest keep a clear bit and no record, named by one ``BatchCut``; one gas less moves the cut
    one message earlier (or, before the first, reverts with nothing done). Then a real cut
    batch, and the later batch that delivers what it left."""
    route = make_route(w3)  # fresh: the first message's guard word is a fresh slot
    send(route.flaky.functions.setMode(BURN_GAS))
    hungry = deploy(w3, "TestRecipient")  # Accept: stores the body, ~250k of its stipend
    lane = route.lane
    # Zero bytes: staging costs the same for any content, and EIP-7623's calldata floor (10
    # gas a zero byte, 40 a non-zero one) then still leaves a limit below the first start.
    burner, _ = lane.dispatch(B, pad(route.flaky.address), bytes(MAX_BODY_BYTES))
    healthy, _ = lane.dispatch(B, pad(hungry.address), bytes(range(256)) + b"\x01" * 64)
    pings = [lane.dispatch(B, pad(route.ping.address), b"ping %d" % n)[0] for n in range(2)]
    messages = [burner, healthy, *pings]
    ids = [keccak256(m) for m in messages]
    args = lane.batch([0, 1, 2, 3])
    sandbox = Sandbox(route, args, messages)
    # What an honest relayer would size: eth_estimateGas of the all-or-nothing process.
    whole = route.inbox.functions.process(*args).estimate_gas({"from": DEPLOYER})
    assert sandbox.trial(whole, check=True).started == len(messages)

    # Below the calldata floor a transaction is not even valid: the search starts there.
    calldata = bytes.fromhex(route.inbox.encode_abi("processOrCut", args)[2:])
    low = 21_000 + 10 * sum(1 if byte == 0 else 4 for byte in calldata)
    assert sandbox.trial(low, check=True).started == 0
    for position in range(len(messages)):
        least = sandbox.least_gas_starting(position + 1, low, whole)
        tight = sandbox.trial(least, check=True)
        assert tight.status == 1 and tight.started == position + 1, (position, least, tight)
        assert tight.failed == [ids[0]]  # only the burner's own doing, never the healthy one
        assert tight.delivered == ids[1 : position + 1], (position, least, tight)
        following = position + 1
        expected_cut = [] if following == len(messages) else [(following, following)]
        assert tight.cut == expected_cut, (position, tight)
        short = sandbox.trial(least - 1, check=True)
        if position == 0:
            # Nothing done, and for the cut's reason: the check before the message, not the
            # inbox's guard at the call (StipendUnavailable) nor an out-of-gas inside it.
            assert short.status == 0 and short.started == 0
            call = route.inbox.functions.processOrCut(*args)
            reason = decode_error(revert_data(call, DEPLOYER, least - 1))
            assert reason == ("InsufficientGas", ()), reason
        else:
            assert short.status == 1 and short.cut == [(position, position)]
            assert short.delivered == ids[1:position] and short.failed == [ids[0]]
        low = least
    assert hungry.functions.handled().call() == 0  # every trial above was rolled back

    # For real now: cut before the last message, then a later batch delivers it (and skips
    # the ones already delivered as replays, not errors).
    cut = sandbox.send(low - 1)
    assert cut.cut == [(3, 3)] and not is_delivered(route.inbox, pings[1])
    later = route.process(*args)
    assert [e["id"] for e in events(route.inbox, "Delivered", later)] == [ids[3]]
    assert len(events(route.inbox, "AlreadyDelivered", later)) == 3
    assert all(is_delivered(route.inbox, m) for m in messages)
    assert hungry.functions.handled().call() == 1


def test_process_stays_all_or_nothing_and_estimable(w3: Web3) -> None:
    """``process`` never cuts: short of gas for any message it reverts with InsufficientGas
    and nothing is written; ``processOrCut`` with the same arguments and gas delivers the
    prefix. eth_estimateGas of ``processOrCut`` is NOT the whole batch's gas (every limit
    succeeds once the proofs pass), which is why the relayer estimates ``process``."""
    route = make_route(w3)
    nonces = route.ping_messages(3)
    args = route.lane.batch(nonces)
    whole = route.inbox.functions.process(*args).estimate_gas({"from": DEPLOYER})
    cut_estimate = route.inbox.functions.processOrCut(*args).estimate_gas({"from": DEPLOYER})
    assert cut_estimate < whole
    sandbox = Sandbox(route, args, [route.lane.messages[n] for n in nonces])
    short = cut_estimate + 1_000
    assert 0 < sandbox.trial(short, check=True).started < len(nonces)
    receipt = w3.eth.wait_for_transaction_receipt(
        route.inbox.functions.process(*args).transact({"from": DEPLOYER, "gas": short})
    )
    assert receipt["status"] == 0
    assert not any(is_delivered(route.inbox, route.lane.messages[n]) for n in nonces)


# --------------------------------------------------------------------------- the relayer's side

INBOX = b"\x1b" * 20


def cut_log(position: int, nonce: int, address: bytes = INBOX) -> Log:
    return Log(
        address, (TOPIC_BATCH_CUT,), position.to_bytes(32, "big") + nonce.to_bytes(32, "big")
    )


async def _db(function: Any, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)  # Relayer.db without its worker thread


def _delivery(ledger: Ledger) -> EvmDelivery:
    """An EvmDelivery to DEST on ``ledger``, with only what its receipt and submit paths use
    of a relayer (the ledger, the metrics, ``db``)."""
    relayer = SimpleNamespace(ledger=ledger, metrics=RelayerMetrics(), db=_db)
    chain = SimpleNamespace(domain=DEST, contract=lambda _: bytes(12) + INBOX)
    return EvmDelivery(chain, relayer)  # type: ignore[arg-type]


def _submitted(ledger: Ledger) -> tuple[list[str], bytes]:
    """Nonces 0..3 of ORIGIN submitted in one recorded transaction: their ids, its hash."""
    found = [disc(ORIGIN, n) for n in range(4)]
    ledger.record_discovered(found)
    ids = [msg_id(d.message) for d in found]
    drive(ledger, ids, MessageStatus.SUBMITTED, checkpoint_for(ledger))
    carrier = ledger.get(ids[0])
    assert carrier is not None and carrier.delivery_tx_hash is not None
    return ids, bytes.fromhex(carrier.delivery_tx_hash[2:])


def test_the_relayer_puts_cut_messages_back_and_counts_replays(tmp_path: Path) -> None:
    """A mined delivery of nonces 0..3 whose receipt says: 0 was already delivered (a replay),
    1 delivered, cut before 2. Nonces 2 and 3 go straight back to ``attested`` (not failed,
    not submitted, no attempt counted) and are batched again; 0 and 1 wait for finality.
    A ``BatchCut`` look-alike emitted by a recipient (another address) moves nothing."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids, tx_hash = _submitted(ledger)
        delivery = _delivery(ledger)
        chain, metrics = delivery.chain, delivery.relayer.metrics
        topic = bytes.fromhex(ids[0][2:])
        logs = [
            cut_log(0, 0, address=b"\x66" * 20),  # a recipient's forgery: ignored
            Log(INBOX, (TOPIC_ALREADY, topic), b""),
            Log(INBOX, (TOPIC_DELIVERED, bytes.fromhex(ids[1][2:])), bytes(64)),
            cut_log(2, 2),
        ]
        mined = MinedTx(tx_hash, 0, 7, 1_000_000, 10**9, logs)
        attempts = {i: ledger.get(i).attempts for i in ids}  # type: ignore[union-attr]
        delivery._apply_receipt(chain, mined, ids)
        after = {i: ledger.get(i) for i in ids}
        assert [after[i].status for i in ids] == [  # type: ignore[union-attr]
            MessageStatus.SUBMITTED,
            MessageStatus.SUBMITTED,
            MessageStatus.ATTESTED,
            MessageStatus.ATTESTED,
        ]
        assert all(after[i].attempts == attempts[i] for i in ids)  # type: ignore[union-attr]
        reason = after[ids[2]].reason  # type: ignore[union-attr]
        assert reason is not None and "BatchCut" in reason and "nonce 2" in reason
        assert (metrics.cut_messages, metrics.redundant_deliveries) == (2, 1)
        again = ledger.by_status(MessageStatus.ATTESTED, 10, destination=DEST)
        assert [r.id for r in again] == ids[2:]


def test_receipt_outcome_reads_the_cut_only_from_the_inbox() -> None:
    """Malformed or foreign ``BatchCut`` logs are noise; the inbox's LAST one is the outer
    batch's (the inbox returns right after emitting it), and it counts only if it matches the
    batch: its nonce at its position among the batch's nonces in ascending order."""
    ids = ["0x" + "ab" * 32]
    inbox = bytes(12) + INBOX
    batch = [9, 4, 7]  # in any order: the inbox numbers them ascending (4, 7, 9)

    def read(*logs: Log) -> int | None:
        mined = MinedTx(b"\x00" * 32, 0, 1, 1, 1, list(logs))
        return _receipt_outcome(mined, inbox, ids).cut_nonce(batch)

    assert read() is None
    assert read(cut_log(1, 7, address=b"\x66" * 20)) is None
    assert read(Log(INBOX, (TOPIC_BATCH_CUT,), b"\x01" * 63)) is None
    assert read(cut_log(1, 7)) == 7
    assert read(cut_log(1, 7), cut_log(2, 9)) == 9  # the later cut counts
    assert read(cut_log(2, 9), cut_log(1, 7)) == 7
    assert read(cut_log(2, 7)) is None  # its nonce, not at its position
    assert read(cut_log(1, 8)) is None  # not a nonce of this batch
    assert read(cut_log(3, 10)) is None  # past the batch's end
    assert read(cut_log(2**255, 7)) is None
    assert read(cut_log(1, 7), cut_log(0, 5)) is None  # the last one decides, and it is wrong


def test_a_cut_that_does_not_match_the_batch_moves_nothing(tmp_path: Path) -> None:
    """A receipt whose inbox ``BatchCut`` names nonce 2 at position 1 of a batch of nonces
    0..3 (where nonce 2 is at position 2) is not this batch's cut: believed, it would send
    nonces 2 and 3 back to ``attested`` although the inbox may have delivered them. Every
    message waits for finality as mined, nothing is counted as cut."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids, tx_hash = _submitted(ledger)
        delivery = _delivery(ledger)
        mined = MinedTx(tx_hash, 0, 7, 1_000_000, 10**9, [cut_log(1, 2)])
        delivery._apply_receipt(delivery.chain, mined, ids)
        assert {ledger.get(i).status for i in ids} == {MessageStatus.SUBMITTED}  # type: ignore[union-attr]
        assert delivery.relayer.metrics.cut_messages == 0


# ------------------------------------------------------------------ gas limits and batch size


def test_a_lone_message_needs_no_stipend_on_top_of_its_estimate(w3: Web3) -> None:
    """One message to a recipient that burns its whole stipend, sent with ``processOrCut`` at
    exactly ``eth_estimateGas(process)`` and no stipend on top: mined, the recipient's
    handle failed (its own doing), no cut and no out-of-gas. The inbox's check before message
    0 (``MESSAGE_GAS_NEEDED``, inside the estimate) already funds its worst case, so the
    relayer adds no stipend to a lone message (which would push a large one over a block)."""
    route = make_route(w3)
    send(route.flaky.functions.setMode(BURN_GAS))
    message, _ = route.lane.dispatch(B, pad(route.flaky.address), b"\x01" * 4096)
    args = route.lane.batch([0])
    exact = route.inbox.functions.process(*args).estimate_gas({"from": DEPLOYER})
    done = Sandbox(route, args, [message]).send(exact)
    assert (done.status, done.started, done.cut) == (1, 1, [])
    assert done.failed == [keccak256(message)] and done.delivered == []
    assert is_delivered(route.inbox, message)


class Sent(Exception):
    """What the fake engine raises instead of broadcasting: the gas it was asked to send."""

    def __init__(self, gas: int) -> None:
        super().__init__(gas)
        self.gas = gas


class FakeEngine:
    """The engine's side of ``_submit`` without a chain: a fixed (margined) estimate, and a
    ``send`` that records its gas and stops the submission there."""

    gas_margin_percent = 25
    address = b"\x0e" * 20

    def __init__(self, estimate: int) -> None:
        self.estimate = estimate
        self.estimates = 0

    async def current_fees(self) -> tuple[int, int]:
        return (2, 1)

    async def estimate_gas(self, to: bytes, data: bytes, **_: Any) -> int:
        self.estimates += 1
        return self.estimate

    async def send(self, to: bytes, data: bytes, *, gas: int, **_: Any) -> Any:
        raise Sent(gas)


def _submit(
    ledger: Ledger, nonces: range, *, estimate: int, block: int, calldata: bytes = b""
) -> tuple[Any, FakeEngine, list[str]]:
    """``EvmDelivery._submit`` of messages at ``nonces`` (attested on ``ledger``), with the
    engine's estimate and the final block's gas limit given: (its result or the ``Sent`` it
    raised, the engine, the ids)."""
    found = [disc(ORIGIN, n) for n in nonces]
    ledger.record_discovered(found)
    ids = [msg_id(d.message) for d in found]
    drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger))

    async def final_header() -> Any:
        return SimpleNamespace(gas_limit=block)

    # The receipt cap the relayer sizes batches by: the default logs cap (adapters/rpc.py).
    rpc = SimpleNamespace(cap_of=logs_caps(LOGS_ANSWER_BYTES).__getitem__)
    evm = SimpleNamespace(final_header=final_header, rpc=rpc)
    engine = FakeEngine(estimate)
    records = [r for i in ids if (r := ledger.get(i)) is not None]
    submission = Submission(bytes(12) + INBOX, PROCESS + calldata, records)
    delivery = _delivery(ledger)

    async def run() -> Any:
        try:
            return await delivery._submit(delivery.chain, evm, engine, submission)  # type: ignore[arg-type]
        except Sent as sent:
            return sent

    return trio.run(run), engine, ids


def test_a_lone_message_is_sized_against_a_whole_block_and_fails_once_if_too_big(
    tmp_path: Path,
) -> None:
    """A lone message asks its estimate plus the stipend when that fits the final block (a
    node whose estimate is the gas USED would otherwise under-fund it: the PoS devnet's
    EthereumJS), else its estimate (margin included) with NO stipend; above the block the
    un-margined estimate if that fits; if even that does not fit, it is failed with the reason
    and a growing backoff, never sent: a node refuses it, and before it was dry-run and
    refused again at every round with nothing to show for it."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        result, _, _ = _submit(ledger, range(100, 101), estimate=125_000, block=2_000_000)
        assert isinstance(result, Sent) and result.gas == 125_000 + MESSAGE_GAS_NEEDED
        # 1.6 M + the stipend is above the 2 M block: the estimate alone.
        result, _, _ = _submit(ledger, range(1), estimate=1_600_000, block=2_000_000)
        assert isinstance(result, Sent) and result.gas == 1_600_000
        # 2.25 M with its margin: above the block, but the dry run's own 1.8 M fits.
        result, _, _ = _submit(ledger, range(1, 2), estimate=2_250_000, block=2_000_000)
        assert isinstance(result, Sent) and result.gas == 1_800_000
        result, _, ids = _submit(ledger, range(2, 3), estimate=2_600_000, block=2_000_000)
        assert result == []  # not sent
        record = ledger.get(ids[0])
        assert record is not None and record.status == MessageStatus.FAILED
        assert record.reason is not None and record.reason.startswith(TOO_BIG_FOR_A_BLOCK)
        assert "2,080,000 gas" in record.reason and "2,000,000" in record.reason
        first = record.next_attempt_at
        assert first is not None and first > time.time() + 1
        # Its retry comes round (Relayer.requeue_due): the same, with a longer wait.
        ledger.transition(ids, MessageStatus.ATTESTED)
        _delivery(ledger)._too_big_for_a_block(DEST, record, 2_080_000, 2_000_000)
        again = ledger.get(ids[0])
        assert again is not None and again.status == MessageStatus.FAILED
        assert again.next_attempt_at is not None and again.next_attempt_at > first + 1


def test_a_batch_asks_one_stipend_and_is_split_on_calldata_size(tmp_path: Path) -> None:
    """Two or more messages: the estimate plus ONE stipend (not one per message), split in
    halves above half a block; and split before any RPC when the calldata is above
    MAX_BATCH_CALLDATA (geth's pool refuses transactions over 128 KiB whatever their gas)."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        result, _, _ = _submit(ledger, range(5), estimate=1_000_000, block=30_000_000)
        assert isinstance(result, Sent) and result.gas == 1_000_000 + MESSAGE_GAS_NEEDED
        result, _, ids = _submit(ledger, range(5, 10), estimate=1_000_000, block=3_000_000)
        # 1.52 M > half of 3 M: halves, the later one first (a stack)
        assert [[r.id for r in half] for half in result] == [ids[3:], ids[:3]]
        big = bytes(MAX_BATCH_CALLDATA - len(PROCESS) + 1)
        result, engine, ids = _submit(
            ledger, range(10, 12), estimate=100_000, block=30_000_000, calldata=big
        )
        assert [[r.id for r in half] for half in result] == [ids[1:], ids[:1]]
        assert engine.estimates == 0
        # At the bound, and a lone message of any size: sent.
        result, _, _ = _submit(
            ledger, range(12, 14), estimate=100_000, block=30_000_000, calldata=big[1:]
        )
        assert isinstance(result, Sent)
        result, _, _ = _submit(
            ledger, range(14, 15), estimate=100_000, block=30_000_000, calldata=big
        )
        assert isinstance(result, Sent)


# ------------------------------------------------------------------ memory: a per-message constant

RETURN_BOMB = 3  # TestRecipient.Mode: reverts with 100,000 bytes (the inbox keeps 256)
MEMORY_OPS = ("MLOAD", "MSTORE", "MSTORE8")  # static cost 3: more means memory grew


def test_no_message_grows_memory_whatever_the_batch(w3: Web3) -> None:
    """``MESSAGE_OVERHEAD`` is a constant, so what the inbox spends on a message must not depend
    on the batch around it. Memory is where it could: each new word costs 3 + W/256 gas, W the
    memory already in use, and ``_readBatch``'s tables grow with the batch (review R5, finding
    2). So while it reads the batch, before the first message, the inbox grows memory to the
    most any message of the batch can use (``MESSAGE_MEMORY``), and no message grows it.

    Traced (``debug_traceCall``, the inbox's own steps): a batch of two 64 KiB messages to a
    recipient reverting with 100 KB, the most memory a message can take (the longest body, the
    longest reason kept, a failure record and its event). In the delivery loop every memory
    access costs its static 3 gas, and the two messages' staging copies cost the same (before:
    the first one paid 2,642 gas more, and a dozen of its writes grew memory)."""
    route = make_route(w3)
    send(route.flaky.functions.setMode(RETURN_BOMB))
    lane = route.lane
    for n in range(2):
        lane.dispatch(B, pad(route.flaky.address), bytes([n + 1]) * MAX_BODY_BYTES)
    data = route.inbox.encode_abi("processOrCut", lane.batch([0, 1]))
    call = {"from": DEPLOYER, "to": route.inbox.address, "data": data, "gas": hex(10**7)}
    options = {"disableStack": True, "disableStorage": True, "enableMemory": False}
    answer = w3.provider.make_request("debug_traceCall", [call, "latest", options])  # type: ignore[arg-type]
    assert "error" not in answer, answer
    steps = [s for s in answer["result"]["structLogs"] if s["depth"] == 1]
    # The loop starts at its first gas check, after the signatures' ecrecover calls.
    after_signatures = max(i for i, s in enumerate(steps) if s["op"] == "STATICCALL")
    start = next(i for i in range(after_signatures, len(steps)) if steps[i]["op"] == "GAS")
    loop = steps[start:]
    assert [s["op"] for s in loop].count("CALL") == 2  # both recipients called
    grew = [(s["op"], s["gasCost"]) for s in loop if s["op"] in MEMORY_OPS and s["gasCost"] != 3]
    assert grew == [], grew
    # Copies (the staging one, the reason's zero-fill) and events (HandleFailed): the same
    # sequence of costs for the first message as for the second.
    for ops in (("CALLDATACOPY",), ("LOG0", "LOG1", "LOG2", "LOG3", "LOG4")):
        costs = [s["gasCost"] for s in loop if s["op"] in ops]
        half = len(costs) // 2
        assert costs and len(costs) % 2 == 0 and costs[:half] == costs[half:], (ops, costs)
