"""``ledger rebuild`` at scale, without chains (review rev-ops, finding 5).

* Delivered flags are read page by page of the ledger: the waiting messages of one page are
  read and recorded before the next page is fetched, so memory is bounded by the page size,
  not by the history (after a lost ledger, every message ever sent is "waiting").
* Every ``final`` message the newest checkpoint covers becomes ``attested``, however many:
  the relayer's step moves at most 10,000 per call, and the rebuild calls it until none move.

The destination's answer is the only thing replaced (a function of the message), as the
ledger, the pages and the control flow under test are all real; the chain-reading evidence
itself is tested on anvil in tests/test_ledger_rebuild.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from test_ledger import disc
from test_ledger_exclusion import config_for

from light_clients.hashing import keccak256
from relayer import rebuild as rebuild_module
from relayer.config import ChainConfig
from relayer.ledger import Ledger, MessageStatus, open_ledger
from relayer.relay import Lane, Relayer

ALPHA, BETA = 1, 2  # config_toml's domains


def final_messages(ledger: Ledger, count: int, *, dest: int = BETA) -> list[str]:
    """``count`` messages from alpha to ``dest``, recorded and moved to ``final``."""
    ledger.record_discovered([disc(ALPHA, nonce, dest=dest) for nonce in range(count)])
    ids = [m.id for m in ledger.messages(origin=ALPHA, limit=count)]
    ledger.transition(ids, MessageStatus.FINAL)
    return ids


def test_delivered_flags_are_read_and_recorded_page_by_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = str(tmp_path / "ledger.db")
    config = config_for(location, tmp_path)
    monkeypatch.setattr(rebuild_module, "PAGE", 10)
    monkeypatch.setattr(rebuild_module, "DELIVERED_BATCH", 4)
    events: list[str] = []

    async def delivered_on(
        _relayer: Relayer, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[bool]:
        events.append("read")
        # The destination shows every message with an even nonce delivered.
        return [int.from_bytes(m[1:5], "big") % 2 == 0 for m in messages]

    monkeypatch.setattr(rebuild_module, "delivered_on", delivered_on)
    with open_ledger(location) as ledger:
        ids = final_messages(ledger, 25)
        pages = ledger.messages

        def counted_messages(*args: object, **kwargs: object) -> object:
            events.append("page")
            return pages(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(ledger, "messages", counted_messages)
        lines: list[str] = []
        trio.run(rebuild_module._mark_delivered, Relayer(config, ledger), 10.0, lines.append)
        monkeypatch.undo()
        statuses = [ledger.get(i).status for i in ids]  # type: ignore[union-attr]
    assert events == ["page", "read", "read", "read"] * 2 + ["page", "read", "read"]
    assert statuses == [
        MessageStatus.DELIVERED if n % 2 == 0 else MessageStatus.FINAL for n in range(25)
    ]
    assert lines[-1] == "to beta: 13 of 25 message(s) delivered"


def test_every_covered_final_message_is_attested_past_ten_thousand(tmp_path: Path) -> None:
    location = str(tmp_path / "ledger.db")
    config = config_for(location, tmp_path)
    alpha = config.chain(ALPHA)
    count = 10_050
    with open_ledger(location) as ledger:
        started = time.monotonic()
        final_messages(ledger, count)
        ledger.save_checkpoint(
            ALPHA,
            alpha.outbox_id,
            keccak256(b"root"),
            count - 1,
            block_number=10,
            block_hash=keccak256(b"block 10"),
        )
        relayer = Relayer(config, ledger)
        rebuild_module._attach_all_final(relayer, Lane(chain=alpha, outbox=alpha.outbox_id))
        counts = ledger.counts_by_status()
    assert counts.get(MessageStatus.ATTESTED) == count and not counts.get(MessageStatus.FINAL)
    assert time.monotonic() - started < 60
