"""The EVM delivery's cheaper reads per round and per batch (issue #11, session 6, "S").

What a delivery round reads must cost little per message, and must not change what is
recorded: a round settles only messages whose carrier is mined at or below the final block
(one join, however many messages are in flight or stuck ahead of them in nonce order); a
batch's "already delivered?" hint is one storage read per 256 nonces, a hint only (a lying
answer buys a proven read or one redundant delivery, never a ``delivered`` record); and the
batches waiting for receipts share one block-number read instead of each polling its receipt.
SQLite ledgers; the session ``anvil`` for the storage reads; stand-ins where what is tested is
the bookkeeping, not an RPC.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from adapters.errors import AdapterError
from adapters.evm.chain import EvmChain
from adapters.evm.tx import MinedTx, SentTx, TxEngine, TxError, TxReverted
from adapters.jsonrpc import MalformedAnswer, call_sync
from adapters.rpc import JsonRpcClient, RpcError
from devnet.anvil import AnvilProcess
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from relayer.families.evm.delivery import (
    CLOCK_READ_BOUND,
    GATE_WAIT,
    RECEIPT_POLL,
    BlockClock,
    EvmDelivery,
    guard_slot,
    latest_accepted,
)
from relayer.ledger import Ledger, MessageRecord, MessageStatus, TxStatus, open_ledger
from tests.test_delivery_reads import _attested, _delivery
from tests.test_ledger import DEST, ORIGIN, disc, msg_id, tx_for

OUTBOX = b"\x0b" * 32


def _carried(ledger: Ledger, ids: list[str], seed: int, *, chain: int = DEST) -> str:
    """``ids`` submitted in a recorded (pending) transaction on ``chain``; its hash."""
    return ledger.record_transaction(tx_for(chain, seed=seed), ids).hash


def _mined(ledger: Ledger, tx_hash: str, block: int, *, chain: int = DEST) -> None:
    ledger.update_transaction(chain, tx_hash, TxStatus.CONFIRMED, block_number=block, gas_used=1)


# --------------------------------------------------------------------------- settled carriers


def test_settled_deliveries_are_the_final_mined_carriers_and_nothing_else(tmp_path: Path) -> None:
    """Only ``submitted`` messages whose carrier ON THEIR DESTINATION is mined at or below
    the final block. Not: a carrier still pending, one mined above the final block, a
    message moved on meanwhile, a transaction of the same hash recorded for another chain
    (what a hostile record could try: it must not settle a message on that chain's block)."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, range(8))
        pending = _carried(ledger, ids[0:2], seed=1)
        final = _carried(ledger, ids[2:4], seed=2)
        _mined(ledger, final, block=5)
        young = _carried(ledger, ids[4:6], seed=3)
        _mined(ledger, young, block=9)
        moved = _carried(ledger, ids[6:7], seed=4)
        _mined(ledger, moved, block=4)
        ledger.transition(ids[6:7], MessageStatus.ATTESTED, reason="requeued by the operator")
        # Same hash as the pending carrier, on another chain, mined low: not this carrier.
        ledger.record_transaction(tx_for(DEST + 1, seed=1), [])
        _mined(ledger, pending, block=1, chain=DEST + 1)

        assert ledger.lowest_mined_delivery(DEST) == 5
        assert ledger.lowest_mined_delivery(DEST + 7) is None
        settled = ledger.settled_deliveries(DEST, final_block=8, limit=100)
        assert [(h, i) for h, i, _ in settled] == [(final, ids[2]), (final, ids[3])]
        stored = {i: r.message for i in ids[2:4] if (r := ledger.get(i)) is not None}
        assert [m for _, _, m in settled] == [stored[ids[2]], stored[ids[3]]]
        assert len(ledger.settled_deliveries(DEST, final_block=9, limit=100)) == 4
        assert (
            ledger.settled_deliveries(DEST, final_block=9, limit=3)
            == (ledger.settled_deliveries(DEST, final_block=9, limit=100)[:3])
        )
        assert ledger.settled_deliveries(DEST, final_block=4, limit=100) == []


def _finalizer(ledger: Ledger, *, batch_size: int, max_inflight: int) -> tuple[EvmDelivery, Any]:
    """An EvmDelivery whose proven delivery state says "accepted, handled" for every message
    asked (what is tested is which messages a round asks about and records), and a stand-in
    destination that counts its final-header reads."""
    delivery = _delivery(ledger, batch_size=batch_size, max_inflight=max_inflight)
    delivery.relayer.last_delivered = {}
    evm = SimpleNamespace(asked=[], finals=0)

    async def final_header() -> Any:
        evm.finals += 1
        return SimpleNamespace(number=10)

    async def state(_c: Any, _e: Any, _h: Any, messages: list[bytes]) -> Any:
        evm.asked.append(len(messages))
        return {keccak256(m): (True, False) for m in messages}

    async def evidence(*_: Any) -> bool:
        return True

    evm.final_header = final_header
    delivery._delivery_state = state  # type: ignore[method-assign,assignment]
    delivery._bit_is_evidence = evidence  # type: ignore[method-assign,assignment]
    return delivery, evm


def test_a_round_settles_final_deliveries_behind_a_stuck_batch(tmp_path: Path) -> None:
    """Nonces 0-1 ride a transaction stuck in the pool; 2-3 one mined and final. A round read
    a page of the first ``batch_size × max_inflight`` submitted rows, all stuck: 2-3 were not
    recorded delivered until the stuck batch settled (with 1,600-row pages, a stuck batch hid
    every final one after it in nonce order). They are now, the stuck ones stay submitted, and
    a round with nothing mined asks no node for its final block."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, range(4))
        _carried(ledger, ids[0:2], seed=1)
        delivery, evm = _finalizer(ledger, batch_size=1, max_inflight=2)
        trio.run(delivery._finalize_deliveries, delivery.chain, evm)
        assert evm.finals == 0  # nothing mined: no RPC

        final = _carried(ledger, ids[2:4], seed=2)
        _mined(ledger, final, block=7)
        trio.run(delivery._finalize_deliveries, delivery.chain, evm)
        status = {i: r.status for i in ids if (r := ledger.get(i)) is not None}
        assert [status[i] for i in ids] == [MessageStatus.SUBMITTED] * 2 + [
            MessageStatus.DELIVERED
        ] * 2
        assert evm.asked == [2]  # only the settled ones were proven
        assert delivery.relayer.metrics.delivered == 2


# --------------------------------------------------------------------------- the guard hint


def _records(nonces: list[int]) -> list[MessageRecord]:
    found = [disc(ORIGIN, n) for n in nonces]
    return [
        MessageRecord(id=msg_id(d.message), origin=ORIGIN, nonce=n, message=d.message)
        for n, d in zip(nonces, found, strict=True)
    ]


def test_the_delivered_hint_is_one_storage_read_per_guard_word(anvil: AnvilProcess) -> None:
    """Bits set in the guard words of a contract on a real node (``anvil_setStorageAt``):
    the records whose bit is set come back, the others not, with ONE read per 256-nonce word
    (nonces 0-299 span two words), all in one JSON-RPC batch."""
    inbox = keccak256(b"a stand-in inbox")[:20]
    set_bits = [1, 255, 256, 299]
    words: dict[int, int] = {}
    for nonce in set_bits:
        slot = guard_slot(ORIGIN, OUTBOX, nonce)
        words[slot] = words.get(slot, 0) | 1 << (nonce & 0xFF)
    for slot, word in words.items():
        value = to_hex(word.to_bytes(32, "big"))
        call_sync(anvil.rpc_url, "anvil_setStorageAt", [to_hex(inbox), hex(slot), value])
    records = _records(list(range(300)))

    async def read() -> tuple[list[int], list[Any]]:
        async with JsonRpcClient([anvil.rpc_url]) as client:
            batches: list[Any] = []
            honest = client.call_batch

            async def counted(calls: Any) -> Any:
                batches.append([method for method, _ in calls])
                return await honest(calls)

            client.call_batch = counted  # type: ignore[method-assign]
            evm = EvmChain(client, domain=DEST, finality="devnet-instant")
            seen = await latest_accepted(evm, bytes(12) + inbox, OUTBOX, records)
            return [r.nonce for r in seen], batches

    seen, batches = trio.run(read)
    assert seen == set_bits
    assert batches == [["eth_getStorageAt", "eth_getStorageAt"]]


@pytest.mark.parametrize("answer", ["0x" + "ff" * 33, "yes", None, 1])
def test_a_garbled_guard_word_is_refused_in_one_line(answer: Any) -> None:
    """An endpoint answering something that is no 32-byte word: MalformedAnswer (an
    AdapterError: the batch is logged and retried next round), never a traceback or a guess."""

    async def call_batch(calls: Any) -> list[Any]:
        return [answer for _ in calls]

    evm = SimpleNamespace(rpc=SimpleNamespace(call_batch=call_batch))
    with pytest.raises(MalformedAnswer, match="guard word"):
        trio.run(latest_accepted, evm, bytes(32), OUTBOX, _records([3]))  # type: ignore[arg-type]
    assert issubclass(MalformedAnswer, AdapterError)


# --------------------------------------------------------------------------- the block clock


class _Chain:
    """A stand-in destination whose latest block number is ``number`` (or an RPC error)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.reads = 0
        self.failing = False

    async def latest_number(self) -> int:
        self.reads += 1
        if self.failing:
            raise RpcError("every endpoint failed")
        await trio.sleep(0.01)  # a round trip, during which the other waiters queue
        return self.number


def test_waiting_batches_share_one_block_number_read() -> None:
    """Sixteen batches sent at block 7 wait for block 8 with ONE block-number read per
    ``every`` seconds between them (not a receipt poll each every 0.25 s), and all go on
    once the chain is past block 7."""
    chain = _Chain(7)
    clock = BlockClock(every=0.2)
    woke: list[float] = []

    async def main() -> None:
        async def batch() -> None:
            await clock.changed(chain, 7, bound=30.0)  # type: ignore[arg-type]
            woke.append(trio.current_time())

        async def chain_moves() -> None:
            await trio.sleep(1.0)
            chain.number = 8

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chain_moves)
            for _ in range(16):
                nursery.start_soon(batch)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(woke) == 16
    assert all(1.0 <= t <= 1.3 for t in woke)
    # ~1 s / 0.2 s (+ the first read and one past the move), not 16 × 4 polls.
    assert chain.reads <= math.ceil(1.0 / 0.2) + 2


def test_a_frozen_or_failing_block_number_does_not_hold_a_receipt_back() -> None:
    """A node whose block number never moves is outwaited after ``bound`` (the fee
    escalation's delay: never later than before); one that fails lets the batch poll its
    receipt at once."""
    frozen = _Chain(7)
    clock = BlockClock(every=0.2)

    async def timed(chain: _Chain) -> tuple[bool, float]:
        start = trio.current_time()
        ask = await clock.changed(chain, 7, bound=12.0)  # type: ignore[arg-type]
        return ask, trio.current_time() - start

    ask, waited = trio.run(timed, frozen, clock=trio.testing.MockClock(autojump_threshold=0))
    assert ask and 12.0 <= waited < 12.5
    failing = _Chain(7)
    failing.failing = True
    clock = BlockClock(every=0.2)
    mock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(timed, failing, clock=mock) == (False, 0)


class _Engine:
    """The part of a TxEngine ``EvmDelivery._mined`` uses: ``sent`` is mined in block
    ``mined_in`` of ``chain`` (or at time ``mined_at``; reverted there if ``reverts``); every
    receipt asked is counted, each a round trip. ``wait`` is TxEngine.wait's polling (every
    0.25 s, within ``timeout``: none at all if it is not positive, TxError after it), counted
    the same way; each hand-over to it is recorded as (when, timeout)."""

    escalate_after = 12.0

    def __init__(
        self,
        chain: _Chain,
        mined_in: int,
        *,
        mined_at: float | None = None,
        reverts: bool = False,
    ) -> None:
        self.chain, self.mined_in, self.mined_at, self.reverts = chain, mined_in, mined_at, reverts
        self.asked = 0
        self.asked_at: list[float] = []
        self.waits: list[tuple[float, float]] = []

    async def receipt(self, tx_hash: bytes) -> MinedTx | None:
        await trio.sleep(0.01)  # the round trip: where a timeout cuts an ask short
        self.asked += 1
        self.asked_at.append(trio.current_time())
        if self.mined_at is not None:
            mined = trio.current_time() >= self.mined_at
        else:
            mined = self.chain.number >= self.mined_in
        if not mined:
            return None
        if self.reverts:
            raise TxReverted(tx_hash, self.mined_in, 90_000)
        return MinedTx(tx_hash, -1, self.mined_in, 90_000, 10**9, [])

    async def wait(self, sent: SentTx, *, timeout: float, **_: Any) -> MinedTx:
        self.waits.append((trio.current_time(), timeout))
        with trio.move_on_after(timeout):
            while (found := await self.receipt(sent.hashes[-1])) is None:
                await trio.sleep(0.25)
            return replace(found, nonce=sent.nonce, fee_model=sent.fee_model)
        raise TxError(f"nonce {sent.nonce} not mined within {timeout:.0f} s")


def test_a_receipt_is_asked_for_once_per_block(tmp_path: Path) -> None:
    """A batch sent at block 7 and mined in block 9 (1-second blocks; the first block after
    it was full): its receipt is asked for twice, once per new block, instead of ~8 times
    (every 0.25 s), and what comes back carries the sent nonce. A failing block number falls
    back to TxEngine.wait's polling at once, still returning the receipt."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        delivery = _delivery(ledger)
        delivery.relayer.poll = 0.2
        sent = SentTx(nonce=41, to=bytes(20), data=b"", gas=1, max_fee=1, priority_fee=1)
        sent.hashes.append(b"\x77" * 32)

        async def run(chain: _Chain, engine: _Engine) -> MinedTx:
            delivery._blocks = BlockClock(0.2)

            async def blocks() -> None:
                for _ in range(5):
                    await trio.sleep(1.0)
                    chain.number += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocks)
                mined = await delivery._mined(chain, engine, sent, 7, _record)  # type: ignore[arg-type]
                nursery.cancel_scope.cancel()
            return mined

        chain = _Chain(7)
        engine = _Engine(chain, mined_in=9)
        mined = trio.run(run, chain, engine, clock=trio.testing.MockClock(autojump_threshold=0))
        assert (mined.block_number, mined.nonce, engine.asked) == (9, 41, 2)

        failing = _Chain(7)
        failing.failing = True
        engine = _Engine(failing, mined_in=7)
        mined = trio.run(run, failing, engine, clock=trio.testing.MockClock(autojump_threshold=0))
        assert (mined.block_number, mined.nonce, engine.asked) == (7, 41, 1)


async def _record(_sent: SentTx, _tx_hash: bytes) -> None:
    raise AssertionError("no fee bump in this test")


# --------------------------------------------------------------------------- review fixes (FS)


class _Scripted(_Chain):
    """A destination whose block-number answers are first ``script`` (lies, a lagging
    backend), then the truth: ``number``."""

    def __init__(self, number: int, script: list[int]) -> None:
        super().__init__(number)
        self.script = list(script)

    async def latest_number(self) -> int:
        if not self.script:
            return await super().latest_number()
        self.reads += 1
        await trio.sleep(0.01)
        return self.script.pop(0)


def _gated(
    tmp_path: Path,
    chain: _Chain,
    engine: _Engine,
    *,
    stamp: int | None = None,
    poll: float = 0.2,
    confirm_timeout: float = 60.0,
    block_time: float | None = 1.0,
) -> tuple[MinedTx | BaseException, float]:
    """``EvmDelivery._mined`` of a batch sent now (stamped ``stamp``, or with the clock's
    first read as ``_submit`` does), with the delivery loop's clock for ``poll`` and ``chain``
    making a block every ``block_time`` seconds (none if None): what it returned or raised, and
    after how long (trio's mock clock: simulated seconds, no real waiting)."""
    with open_ledger(tmp_path / "gated.db") as ledger:
        delivery = _delivery(ledger)
        delivery.relayer.confirm_timeout = confirm_timeout
        sent = SentTx(nonce=41, to=bytes(20), data=b"", gas=1, max_fee=1, priority_fee=1)
        sent.hashes.append(b"\x77" * 32)
        out: list[Any] = []

        async def run() -> None:
            delivery._blocks = BlockClock.for_receipts(poll)

            async def blocks() -> None:
                while block_time is not None:
                    await trio.sleep(block_time)
                    chain.number += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocks)
                start = trio.current_time()
                stamped = stamp if stamp is not None else await delivery._blocks.latest(chain)  # type: ignore[arg-type]
                try:
                    out.append(await delivery._mined(chain, engine, sent, stamped, _record))  # type: ignore[arg-type]
                except TxError as exc:
                    out.append(exc)
                out.append(trio.current_time() - start)
                nursery.cancel_scope.cancel()

        trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
        return out[0], out[1]


def test_one_lying_block_number_does_not_hold_receipts_back(tmp_path: Path) -> None:
    """The clock is shared, so one bogus block number (2^64) reaches every batch in flight.
    Before, receipts were asked only once the number went ABOVE the one seen, so one lie
    (at the broadcast's stamp, or while waiting) held every receipt for ``escalate_after``
    (12 s for a transaction mined 1 s after its broadcast). Now any change triggers the ask:
    the receipt still arrives within about a block. A lagging backend's number going
    backwards (9, then 8: the block the transaction is in) is a change too. A number that
    never moves gets an ask every GATE_WAIT seconds, not one at 12 s."""
    lie = 2**64
    for script in ([lie], [7, lie]):  # lying at the stamp; lying once while waiting
        engine = _Engine(chain := _Scripted(7, script), mined_in=8)
        mined, took = _gated(tmp_path, chain, engine)
        assert isinstance(mined, MinedTx) and mined.block_number == 8, script
        assert took < 1.5, (script, took)
        assert engine.asked <= 3 and engine.waits == []  # found in the gate, a few asks

    behind = _Scripted(8, [9])  # stamped 9 by one backend, the next answers 8
    engine = _Engine(behind, mined_in=8)
    mined, took = _gated(tmp_path, behind, engine, block_time=None)
    assert isinstance(mined, MinedTx) and took < 0.5 and engine.asked == 1

    frozen = _Chain(7)
    engine = _Engine(frozen, mined_in=7, mined_at=3.0)
    mined, took = _gated(tmp_path, frozen, engine, block_time=None)
    assert isinstance(mined, MinedTx) and GATE_WAIT * 2 <= took < GATE_WAIT * 2 + 0.5
    assert engine.asked == 2  # at 2 s (not mined yet) and 4 s


def test_the_receipt_gate_does_not_follow_the_operators_poll(tmp_path: Path) -> None:
    """``--poll 30`` (slow idle rounds on a paid RPC) used to pace the gate: a batch mined a
    block after its broadcast was seen 30 s... in fact only at ``escalate_after``, 12 s,
    later. The gate reads the block number every RECEIPT_POLL seconds whatever ``--poll``
    is (``--poll`` shorter than that is kept)."""
    assert BlockClock.for_receipts(30.0).every == RECEIPT_POLL
    assert BlockClock.for_receipts(0.1).every == 0.1
    engine = _Engine(chain := _Chain(7), mined_in=8)
    mined, took = _gated(tmp_path, chain, engine, poll=30.0)
    assert isinstance(mined, MinedTx) and mined.block_number == 8
    assert 1.0 <= took < 1.0 + RECEIPT_POLL + 0.1


def test_the_gate_hands_over_to_the_normal_wait_and_asks_once_more_at_the_end(
    tmp_path: Path,
) -> None:
    """The gate's ends, each with what it hands over:
    - a transaction not mined by ``escalate_after`` (12 s) while blocks move goes to
      ``TxEngine.wait`` then, with what is left of ``confirm_timeout`` (60 - 12 s): the wait
      that bumps its fee at once (sent ``escalate_after`` ago) and keeps polling;
    - with ``confirm_timeout`` (5 s) shorter than that, the gate uses all of it; the hand-over
      still gets one last ask (before: ``wait(timeout <= 0)``, which raised "not mined"
      without asking, for a transaction mined just after the gate's last ask);
    - a transaction that reverted is reported as such from inside the gate."""
    late = _Engine(chain := _Chain(7), mined_in=7, mined_at=20.0)
    mined, took = _gated(tmp_path, chain, late)
    assert isinstance(mined, MinedTx) and 20.0 <= took < 20.5
    [(handed_at, timeout)] = late.waits
    assert 12.0 <= handed_at < 12.1 and 47.9 < timeout <= 48.0
    in_gate = [t for t in late.asked_at if t < handed_at]
    assert 11 <= len(in_gate) <= 12  # once per 1-second block until the hand-over

    frozen = _Chain(7)
    last = _Engine(frozen, mined_in=7, mined_at=5.025)  # the gate's last ask: 5.02 s
    mined, took = _gated(tmp_path, frozen, last, confirm_timeout=5.0, block_time=None)
    assert isinstance(mined, MinedTx), mined
    [(handed_at, timeout)] = last.waits
    assert 5.0 <= handed_at < 5.1 and timeout == RECEIPT_POLL
    assert last.asked_at[-2] < 5.025 <= last.asked_at[-1]  # the gate's last ask was too early

    reverted = _Engine(chain := _Chain(7), mined_in=8, reverts=True)
    failed, took = _gated(tmp_path, chain, reverted)
    assert isinstance(failed, TxReverted) and failed.block_number == 8 and took < 1.5
    assert reverted.waits == []


def _sent_on_anvil(anvil: AnvilProcess) -> bytes:
    """A real transaction mined on the session anvil (a dev account pays itself nothing)."""
    account = call_sync(anvil.rpc_url, "eth_accounts")[0]
    tx_hash = call_sync(anvil.rpc_url, "eth_sendTransaction", [{"from": account, "to": account}])
    return bytes.fromhex(tx_hash[2:])


def test_a_receipt_claiming_a_block_the_chain_lacks_is_not_recorded(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """An endpoint answering our carrier's receipt with block 2^62 had the carrier recorded
    ``confirmed`` there: finality never reaches it, nothing requeues a confirmed carrier, so
    its messages stayed ``submitted`` for ever. The receipt is now held against the block at
    that number (a real anvil's): one the chain does not have, or whose hash is not the
    receipt's, is "not mined yet". The carrier stays pending (the settle asks again, and
    drops and resends it if never honestly mined) and is recorded at its true block as soon
    as an honest receipt comes.

    The same for a REVERTED receipt (review R2a M2): believed at once, it recorded the carrier
    failed (terminal, no finality awaited) and its messages failed, though the transaction had
    succeeded on the canonical chain. A revert is believed only from the block the chain has."""
    tx_hash = _sent_on_anvil(anvil)
    lies: dict[str, Any] = {}

    async def settle(delivery: EvmDelivery | None, hex_hash: str) -> MinedTx | None:
        async with JsonRpcClient([anvil.rpc_url]) as client:
            honest = client.call

            async def lying(method: str, params: Any = ()) -> Any:
                answer = await honest(method, params)
                if method == "eth_getTransactionReceipt" and answer is not None:
                    answer = {**answer, **lies}
                return answer

            client.call = lying  # type: ignore[method-assign]
            engine = TxEngine(client, SimpleNamespace(address=b"\x01" * 20), 31337)
            if delivery is not None:  # None: the engine's answer alone
                await delivery._settle_one(delivery.chain, engine, hex_hash, young=True)
            return await engine.receipt(tx_hash)

    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, range(2))
        carrier = ledger.record_transaction(replace(tx_for(DEST, seed=1), hash=tx_hash), ids)
        delivery = _delivery(ledger)
        block = call_sync(anvil.rpc_url, "eth_getTransactionReceipt", [to_hex(tx_hash)])
        made_up = ({"blockNumber": hex(2**62)}, {"blockHash": to_hex(b"\x42" * 32)})
        for lie in [*made_up, *({**one, "status": "0x0"} for one in made_up)]:
            lies.clear()
            lies.update(lie)
            asked_again = trio.run(settle, delivery, carrier.hash)
            tx = ledger.get_transaction(DEST, carrier.hash)
            assert tx is not None and tx.status == TxStatus.PENDING, (lie, tx)
            assert tx.block_number is None and asked_again is None
            assert carrier.hash in delivery._watched  # asked again at the next round
            assert ledger.lowest_mined_delivery(DEST) is None
            statuses = {m.id: m.status for m in ledger.messages()}
            assert statuses == dict.fromkeys(ids, MessageStatus.SUBMITTED), (lie, statuses)
        lies.clear()
        mined = trio.run(settle, delivery, carrier.hash)
        assert mined is not None and mined.block_hash == bytes.fromhex(block["blockHash"][2:])
        tx = ledger.get_transaction(DEST, carrier.hash)
        assert tx is not None and tx.status == TxStatus.CONFIRMED
        assert tx.block_number == int(block["blockNumber"], 16)
        assert ledger.lowest_mined_delivery(DEST) == tx.block_number
        lies.update(status="0x0")  # a revert from the block the chain has is still believed
        with pytest.raises(TxReverted) as reverted:
            trio.run(settle, None, carrier.hash)
        assert reverted.value.block_number == tx.block_number
        assert reverted.value.block_hash == bytes.fromhex(block["blockHash"][2:])


def test_finalization_reads_the_ledger_only_when_something_can_have_settled(
    tmp_path: Path,
) -> None:
    """Both finalization reads scale with the not-yet-final backlog; they ran every 0.2 s
    round. Now a round after one that left nothing settleable reads only the final header,
    and the ledger again only once the final block moved or a receipt was applied."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, range(4))
        delivery, evm = _finalizer(ledger, batch_size=10, max_inflight=2)
        final_number = [10]

        async def final_header() -> Any:
            evm.finals += 1
            return SimpleNamespace(number=final_number[0])

        evm.final_header = final_header
        reads: list[str] = []
        for name in ("lowest_mined_delivery", "settled_deliveries"):
            honest = getattr(ledger, name)

            def counted(*args: Any, _name: str = name, _honest: Any = honest) -> Any:
                reads.append(_name)
                return _honest(*args)

            setattr(ledger, name, counted)

        def round_reads() -> list[str]:
            reads.clear()
            trio.run(delivery._finalize_deliveries, delivery.chain, evm)
            return list(reads)

        young = _carried(ledger, ids[0:2], seed=1)
        mined = MinedTx(bytes.fromhex(young[2:]), 1, 12, 90_000, 10**9, [])
        delivery._apply_receipt(delivery.chain, mined, ids[0:2])  # above final 10
        assert round_reads() == ["lowest_mined_delivery"]
        assert round_reads() == []  # same final block, no receipt: no ledger read
        final_number[0] = 11
        assert round_reads() == ["lowest_mined_delivery"]  # moved, but not far enough
        final_number[0] = 12
        assert round_reads() == ["lowest_mined_delivery", "settled_deliveries"]
        assert [r.status for i in ids[0:2] if (r := ledger.get(i))] == [MessageStatus.DELIVERED] * 2
        assert round_reads() == []
        other = _carried(ledger, ids[2:4], seed=2)
        mined = MinedTx(bytes.fromhex(other[2:]), 2, 12, 90_000, 10**9, [])
        delivery._apply_receipt(delivery.chain, mined, ids[2:4])  # a receipt: look again
        assert round_reads() == ["lowest_mined_delivery", "settled_deliveries"]
        assert delivery.relayer.metrics.delivered == 4


def test_a_slow_block_number_does_not_delay_a_broadcast(tmp_path: Path) -> None:
    """The block number a batch is stamped with before its broadcast is read with a bound:
    an ``eth_blockNumber`` that takes 30 s (the RPC timeout) delayed the broadcast by all of
    it. Now the batch goes after CLOCK_READ_BOUND without a stamp (its receipt is polled from
    the start); a failing read or no clock gives no stamp at once, a quick one the number."""

    class _Slow(_Chain):
        async def latest_number(self) -> int:
            await trio.sleep(30.0)
            return self.number

    with open_ledger(tmp_path / "ledger.db") as ledger:
        delivery = _delivery(ledger)

        async def stamp(chain: _Chain) -> tuple[int | None, float]:
            delivery._blocks = BlockClock.for_receipts(0.2)
            start = trio.current_time()
            stamped = await delivery._stamp(chain)  # type: ignore[arg-type]
            return stamped, trio.current_time() - start

        def run(chain: _Chain) -> tuple[int | None, float]:
            return trio.run(stamp, chain, clock=trio.testing.MockClock(autojump_threshold=0))

        stamped, took = run(_Slow(7))
        assert stamped is None and took == CLOCK_READ_BOUND
        failing = _Chain(7)
        failing.failing = True
        assert run(failing) == (None, 0)
        assert run(_Chain(7)) == (7, 0.01)
        delivery._blocks = None
        assert trio.run(delivery._stamp, _Chain(7)) is None  # type: ignore[arg-type]
