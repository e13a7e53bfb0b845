"""The same signed transaction broadcast again after the node refused it.

A delivery is recorded BEFORE its broadcast (``record_transaction`` from the engine's
``before_broadcast``), and a refused broadcast marks it ``failed`` and puts its messages back to
``attested`` (``EvmDelivery._broadcast_failed``). The next round builds the same batch: same
messages, same nonce (a refused broadcast consumed none), and on a quiet chain the same fees, so
the engine signs byte for byte the same transaction, with the same hash. Recording it again must
work: before, the ledger refused to link messages to a ``failed`` transaction, the send was
abandoned before its broadcast, and the lane waited until the base fee happened to move.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_delivery_reads import _delivery
from test_ledger import Clock, checkpoint_for, disc, drive, msg_id, tx_for

from adapters.evm.tx import MinedTx
from relayer.ledger import InvalidReference, MessageStatus, NewTransaction, TxStatus, open_ledger

S = MessageStatus


def test_a_refused_broadcast_sent_again_byte_for_byte_is_recorded(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db", clock=Clock())
    try:
        records = [disc(1, n) for n in range(2)]
        ledger.record_discovered(records)
        ids = [msg_id(r.message) for r in records]
        drive(ledger, ids, S.ATTESTED, checkpoint_for(ledger))

        tx = tx_for(seed=7)
        ledger.record_transaction(tx, ids)
        with ledger.atomic() as batch:  # what _broadcast_failed does
            batch.update_transaction(2, tx.hash, TxStatus.FAILED, error="nonce too low")
            batch.transition(ids, S.ATTESTED, reason="broadcast failed: nonce too low")

        again = ledger.record_transaction(tx, ids)  # the same bytes, the same hash
        assert again.status is TxStatus.PENDING and again.error is None
        assert all(ledger.get(i).status is S.SUBMITTED for i in ids)  # type: ignore[union-attr]
        assert ledger.transaction_messages(2, tx.hash) == sorted(ids)

        # A transaction that was MINED and failed (it has a block) is final: its nonce is used,
        # nothing can broadcast those bytes again, and nothing may be linked to it.
        with ledger.atomic() as batch:
            batch.update_transaction(2, tx.hash, TxStatus.FAILED, block_number=9, gas_used=1)
            batch.transition(ids, S.ATTESTED, reason="reverted")
        with pytest.raises(InvalidReference, match="cannot carry"):
            ledger.record_transaction(tx, ids)
    finally:
        ledger.close()


def test_another_keys_transaction_at_the_same_nonce_is_not_replaced(tmp_path: Path) -> None:
    """Several relayers deliver to one chain, each from its own key with its own nonces. A
    mined transaction replaces only the other broadcasts of ITS key's nonce: the taken-over
    predecessor's transaction at the same nonce NUMBER (watched in the pool) is still on its
    way. Before, it was marked replaced ("another hash mined") and its messages stayed
    ``submitted`` on a replaced carrier for good: nothing settles or finalizes those (found by
    the three-relayer kill test). And a same-key sibling that carried ANOTHER batch gives its
    messages back to ``attested``."""
    ledger = open_ledger(tmp_path / "ledger.db", clock=Clock())
    try:
        records = [disc(1, n) for n in range(6)]
        ledger.record_discovered(records)
        ids = [msg_id(r.message) for r in records]
        drive(ledger, ids, S.ATTESTED, checkpoint_for(ledger))
        ours, theirs = b"\x11" * 20, b"\x22" * 20

        def sent(seed: int, sender: bytes, carried: list[str]) -> bytes:
            tx = NewTransaction(
                chain=2,
                hash=bytes([seed]) * 32,
                sender=sender,
                nonce=5,
                gas_limit=1,
                max_fee_per_gas=1,
                max_priority_fee_per_gas=1,
            )
            ledger.record_transaction(tx, carried)
            return tx.hash

        predecessor = sent(1, theirs, ids[:2])  # another key, nonce 5, in the pool
        other_batch = sent(2, ours, ids[2:4])  # our key, nonce 5, another batch
        mined = sent(3, ours, ids[4:])  # our key, nonce 5: mined
        delivery = _delivery(ledger)
        delivery._apply_receipt(delivery.chain, MinedTx(mined, 5, 7, 90_000, 10**9, []), ids[4:])

        def status(tx_hash: bytes) -> TxStatus:
            row = ledger.get_transaction(2, tx_hash)
            assert row is not None
            return row.status

        assert status(predecessor) is TxStatus.PENDING  # another key's: still on its way
        assert status(other_batch) is TxStatus.REPLACED
        assert status(mined) is TxStatus.CONFIRMED
        got = {i: ledger.get(i).status for i in ids}  # type: ignore[union-attr]
        assert [got[i] for i in ids] == [S.SUBMITTED] * 2 + [S.ATTESTED] * 2 + [S.SUBMITTED] * 2
    finally:
        ledger.close()
