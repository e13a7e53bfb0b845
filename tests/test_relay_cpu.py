"""The collect loop's per-round ledger work stays proportional to what changed (issue #11).

``Relayer._attach_final`` moves an origin's ``final`` messages covered by its newest checkpoint
to ``attested``. It used to read every ``final`` row of the origin (each a full ORM object) in
every collect round, five times a second: in a burst thousands of them wait for the next
checkpoint, so the relayer re-read them for nothing between two checkpoints. It now reads only
when the checkpoint or the lane's tree changed, or :data:`relayer.relay.ATTACH_RECHECK` seconds
have passed (an operator's ``retry`` turns a message ``final`` behind the relayer's back), and
again at once after a full page. Pure ledger work on SQLite: no chain needed.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from test_ledger import DEST, ORIGIN, disc

from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from relayer import relay
from relayer.config import ChainConfig
from relayer.ledger import Ledger, MessageStatus, open_ledger
from relayer.operator import retry
from relayer.relay import ATTACH_RECHECK, Lane, Relayer

S = MessageStatus
OUTBOX = b"\x0b" * 32


class Counting:
    """``ledger.by_status`` wrapped: how often the collect loop read the ``final`` rows."""

    def __init__(self, ledger: Ledger) -> None:
        self.reads = 0
        self._by_status = ledger.by_status
        ledger.by_status = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self._by_status(*args, **kwargs)


def _origin_with(ledger: Ledger, count: int) -> tuple[Lane, list[str]]:
    """``count`` messages of ORIGIN recorded ``final``, and the relayer's lane holding them."""
    found = [disc(ORIGIN, nonce) for nonce in range(count)]
    ledger.record_discovered(found)
    ids = ["0x" + keccak256(d.message).hex() for d in found]
    ledger.transition(ids, S.FINAL)
    tree = IncrementalMerkleTree()
    for message_id in ids:
        tree.append(bytes.fromhex(message_id[2:]))
    chain = cast(ChainConfig, SimpleNamespace(domain=ORIGIN, name="origin"))
    return Lane(chain=chain, outbox=OUTBOX, tree=tree), ids


def _checkpoint(ledger: Ledger, index: int) -> int:
    return ledger.save_checkpoint(
        ORIGIN,
        OUTBOX,
        keccak256(b"root %d" % index),
        index,
        block_number=10 + index,
        block_hash=keccak256(b"block %d" % index),
    )


def _statuses(ledger: Ledger, ids: list[str]) -> list[str]:
    records = [ledger.get(i) for i in ids]
    return [str(r.status) for r in records if r is not None]


def _attach(ledger: Ledger, lane: Lane) -> None:
    """One collect round's ``_attach_final`` (it uses nothing of the relayer but its ledger)."""
    Relayer._attach_final(cast(Relayer, SimpleNamespace(ledger=ledger)), lane)


def test_final_messages_are_read_again_only_when_something_changed(tmp_path: Path) -> None:
    with open_ledger(tmp_path / "ledger.db") as ledger:
        lane, ids = _origin_with(ledger, 5)
        counter = Counting(ledger)
        _checkpoint(ledger, 2)
        _attach(ledger, lane)
        assert counter.reads == 1
        assert _statuses(ledger, ids) == ["attested"] * 3 + ["final"] * 2

        for _ in range(5):  # rounds with no new checkpoint and no new message: no read
            _attach(ledger, lane)
        assert counter.reads == 1

        _checkpoint(ledger, 4)  # a newer checkpoint covers the rest at the next round
        _attach(ledger, lane)
        assert counter.reads == 2
        assert _statuses(ledger, ids) == ["attested"] * 5

        # A new message in the tree (this relayer's scan or another's): read again.
        ledger.record_discovered([disc(ORIGIN, 5)])
        new = "0x" + keccak256(disc(ORIGIN, 5).message).hex()
        ledger.transition([new], S.FINAL)
        lane.tree.append(bytes.fromhex(new[2:]))
        _attach(ledger, lane)
        assert counter.reads == 3
        assert _statuses(ledger, [new]) == ["final"]  # not covered: nothing signed it yet


def test_a_message_the_operator_retries_is_attested_within_the_recheck(tmp_path: Path) -> None:
    """A skipped message the operator retries turns ``final`` with neither the checkpoint nor
    the tree changing: it must not wait for the origin's next message (which may never come),
    only for :data:`ATTACH_RECHECK`."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        lane, ids = _origin_with(ledger, 2)
        ledger.transition(ids[1:], S.SKIPPED, reason="relay policy: denied")
        _checkpoint(ledger, 1)
        counter = Counting(ledger)
        _attach(ledger, lane)
        assert _statuses(ledger, ids) == ["attested", "skipped"]

        retry(ledger, ids[1:], routed={DEST})
        assert _statuses(ledger, ids) == ["attested", "final"]
        _attach(ledger, lane)  # within the recheck interval: not read yet
        assert counter.reads == 1
        assert lane.attached is not None
        checkpoint_id, count, read_at = lane.attached
        lane.attached = (checkpoint_id, count, read_at - ATTACH_RECHECK)  # time has passed
        _attach(ledger, lane)
        assert counter.reads == 2
        assert _statuses(ledger, ids) == ["attested", "attested"]


def test_a_full_page_is_followed_by_another_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More covered ``final`` messages than one read returns: the rest go at the next rounds,
    not ATTACH_RECHECK later."""
    monkeypatch.setattr(relay, "ATTACH_PAGE", 2)
    with open_ledger(tmp_path / "ledger.db") as ledger:
        lane, ids = _origin_with(ledger, 5)
        _checkpoint(ledger, 4)
        counter = Counting(ledger)
        for _ in range(3):  # pages of 2, 2 and 1: each round reads the next
            _attach(ledger, lane)
        assert counter.reads == 3
        assert _statuses(ledger, ids) == ["attested"] * 5
        _attach(ledger, lane)  # the last page was not full: nothing left behind it
        _attach(ledger, lane)
        assert counter.reads == 3
