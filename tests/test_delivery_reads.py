"""Ledger reads of the EVM delivery path per message (issue #11, sustained rate).

Under a burst the relayer's one ledger thread is the bottleneck, so what each mined batch and
each polling round read matters: a receipt reads its batch's rows in ONE query (not one per
message), and a round's page of ``attested`` rows is only as large as the free in-flight slots
can take. Neither may change what is recorded: the rows are matched by id whatever the hint
says, and a message already in a batch is never batched again. SQLite ledger, stand-ins for
the chain (what is tested is the bookkeeping, not an RPC).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.evm.tx import MinedTx, SentTx
from adapters.rpc import LOGS_ANSWER_BYTES, logs_caps
from light_clients.ethereum.receipt import Log
from relayer.families.evm.delivery import (
    PROCESS,
    TOPIC_BATCH_CUT,
    TOPIC_DELIVERED,
    EvmDelivery,
    Submission,
    _current_rows,
)
from relayer.ledger import Ledger, MessageStatus, open_ledger
from relayer.relay import RelayerMetrics
from tests.test_inbox_truncation import _submitted
from tests.test_ledger import DEST, ORIGIN, checkpoint_for, disc, drive, msg_id

INBOX = b"\x1b" * 20


async def _db(function: Any, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)  # Relayer.db without its worker thread


def _delivery(ledger: Ledger, *, batch_size: int = 100, max_inflight: int = 16) -> EvmDelivery:
    relayer = SimpleNamespace(
        ledger=ledger,
        metrics=RelayerMetrics(),
        db=_db,
        batch_size=batch_size,
        max_inflight=max_inflight,
        confirm_timeout=60.0,
        lanes={},
        requeue_due=lambda _domain: 0,
    )
    chain = SimpleNamespace(name="beta", domain=DEST, contract=lambda _: bytes(12) + INBOX)
    return EvmDelivery(chain, relayer)  # type: ignore[arg-type]


def _attested(ledger: Ledger, nonces: range) -> list[str]:
    found = [disc(ORIGIN, n) for n in nonces]
    ledger.record_discovered(found)
    ids = [msg_id(d.message) for d in found]
    drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger, index=10_000))
    return ids


@contextmanager
def message_selects(ledger: Ledger) -> Iterator[list[str]]:
    """The SELECTs that read the ``messages`` table while the block runs."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and "from messages" in text:
            seen.append(text)

    sa.event.listen(ledger.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", count)


class Engine:
    """The part of a TxEngine ``_submit`` uses: the transaction is recorded through the real
    ``before_broadcast`` hook (so the ledger holds it as the relayer would), then mined with
    the receipt logs given; the ledger's reads are counted from the receipt on."""

    address = b"\x11" * 20
    gas_margin_percent = 25

    def __init__(self, ledger: Ledger, logs: Sequence[Log]) -> None:
        self.ledger = ledger
        self.logs = list(logs)
        self.hash = b"\x77" * 32
        self.counting: Any = None
        self.reads: list[str] = []

    async def current_fees(self) -> tuple[int, int]:
        return 10**9, 10**9

    async def estimate_gas(self, to: bytes, data: bytes, **_: Any) -> int:
        return 100_000

    async def send(
        self, to: bytes, data: bytes, *, gas: int, before_broadcast: Any, **_: Any
    ) -> SentTx:
        sent = SentTx(nonce=0, to=to, data=data, gas=gas, max_fee=10**9, priority_fee=10**9)
        await before_broadcast(sent, self.hash)
        sent.hashes.append(self.hash)
        return sent

    async def wait(self, sent: SentTx, **_: Any) -> MinedTx:
        self.counting = message_selects(self.ledger)
        self.reads = self.counting.__enter__()
        return MinedTx(self.hash, 0, 7, 90_000, 10**9, self.logs)


def test_a_mined_batch_is_read_in_one_query_and_recorded_as_before(tmp_path: Path) -> None:
    """A batch of 40 mined with 30 ``Delivered`` and a ``BatchCut`` before nonce 30: recording
    its receipt reads the messages table a constant number of times (one range read of the
    batch, one by each move), not once per message as before (43 reads). What is recorded is
    unchanged: 30 wait for finality on the mined hash, 10 go back to ``attested``."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, range(40))
        records = [r for i in ids if (r := ledger.get(i)) is not None]
        logs = [Log(INBOX, (TOPIC_DELIVERED, bytes.fromhex(i[2:])), bytes(64)) for i in ids[:30]]
        logs.append(Log(INBOX, (TOPIC_BATCH_CUT,), (30).to_bytes(32, "big") * 2))
        engine = Engine(ledger, logs)
        delivery = _delivery(ledger)

        async def final_header() -> Any:
            return SimpleNamespace(gas_limit=30_000_000)

        # The receipt cap the relayer sizes batches by: the default logs cap (adapters/rpc.py).
        rpc = SimpleNamespace(cap_of=logs_caps(LOGS_ANSWER_BYTES).__getitem__)
        evm = SimpleNamespace(final_header=final_header, rpc=rpc)
        submission = Submission(bytes(12) + INBOX, PROCESS, records)
        assert trio.run(delivery._submit, delivery.chain, evm, engine, submission) == []  # type: ignore[arg-type]
        engine.counting.__exit__(None, None, None)
        assert len(engine.reads) <= 3, engine.reads
        after = [ledger.get(i) for i in ids]
        assert all(
            r is not None
            and r.status is MessageStatus.SUBMITTED
            and r.delivery_tx_hash == "0x" + "77" * 32
            for r in after[:30]
        )
        assert all(r is not None and r.status is MessageStatus.ATTESTED for r in after[30:])
        assert delivery.relayer.metrics.cut_messages == 10


def test_a_lying_hint_changes_nothing_that_is_recorded(tmp_path: Path) -> None:
    """The hint (the batch as prepared) only says where to read. Records that claim other
    nonces (pointing the range read at messages of no concern), or a record of a message NOT
    in the receipt's batch inside the range: the receipt still moves exactly its own messages,
    by what their rows say now (cut before nonce 2: 2 and 3 back to ``attested``; 4 and 5,
    which the hint names, untouched)."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        batch_ids, tx_hash = _submitted(ledger)  # nonces 0..3 in one transaction
        others = [disc(ORIGIN, n) for n in (4, 5)]  # submitted too, in another one
        ledger.record_discovered(others)
        ids = batch_ids + [msg_id(d.message) for d in others]
        drive(ledger, ids[4:], MessageStatus.SUBMITTED, checkpoint_for(ledger))
        delivery = _delivery(ledger)
        real = {i: ledger.get(i) for i in ids}
        lies = [
            SimpleNamespace(id=i, origin=ORIGIN, nonce=4 + n % 2) for n, i in enumerate(batch_ids)
        ] + [real[ids[5]]]
        logs = [Log(INBOX, (TOPIC_BATCH_CUT,), (2).to_bytes(32, "big") * 2)]
        mined = MinedTx(tx_hash, 0, 7, 90_000, 10**9, logs)
        delivery._apply_receipt(delivery.chain, mined, batch_ids, known=lies)  # type: ignore[arg-type]
        statuses = [ledger.get(i).status for i in ids]  # type: ignore[union-attr]
        assert (
            statuses
            == [MessageStatus.SUBMITTED] * 2
            + [MessageStatus.ATTESTED] * 2
            + [MessageStatus.SUBMITTED] * 2
        )
        assert delivery.relayer.metrics.cut_messages == 2


_ROWS = 30


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_current_rows_are_the_rows_whatever_the_hint(tmp_path: Path, data: st.DataObject) -> None:
    """For any subset of ids (with unknown ones mixed in) and any hint (true, shifted nonces,
    another origin, records of other ids, sparse or empty), :func:`_current_rows` answers
    exactly what reading each id on its own answers."""
    path = tmp_path / "rows.db"
    with open_ledger(path) as ledger:
        if ledger.get(msg_id(disc(ORIGIN, 0).message)) is None:
            _attested(ledger, range(_ROWS))
        every = [msg_id(disc(ORIGIN, n).message) for n in range(_ROWS)]
        records = {r.id: r for i in every if (r := ledger.get(i)) is not None}
        ids = data.draw(st.lists(st.sampled_from(every), unique=True, max_size=12))
        ids += data.draw(
            st.lists(st.sampled_from(["0x" + "ee" * 32, "0x" + "dd" * 32]), unique=True)
        )
        hint: list[Any] = []
        for i in data.draw(st.lists(st.sampled_from(every), max_size=15)):
            kind = data.draw(st.sampled_from(["true", "shifted", "origin", "forged"]))
            record = records[i]
            if kind == "true":
                hint.append(record)
            elif kind == "shifted":
                shift = data.draw(st.integers(-40, 40))
                hint.append(
                    SimpleNamespace(id=i, origin=ORIGIN, nonce=max(0, record.nonce + shift))
                )
            elif kind == "origin":
                hint.append(SimpleNamespace(id=i, origin=ORIGIN + 1, nonce=record.nonce))
            else:
                hint.append(SimpleNamespace(id="0x" + "ee" * 32, origin=ORIGIN, nonce=record.nonce))
        with ledger.atomic() as batch:
            rows = _current_rows(batch, ids, hint)
            expected = {i: batch.get(i) for i in ids}
        assert {i: None if r is None else (r.nonce, r.status) for i, r in rows.items()} == {
            i: None if r is None else (r.nonce, r.status) for i, r in expected.items()
        }
