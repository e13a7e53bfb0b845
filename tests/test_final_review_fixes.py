"""Review RFINAL (session 7), the points fixed outside the Substrate delivery: no chain here.

* L1: the outbox's domain check is ONE :class:`relayer.relay.DomainCheck` per scan task,
  asked every round until read, so its 5 s → 5 min re-ask happens (a fresh check each time
  asked once, when the scan started, and never again).
* L5 (EVM side): a lone revert's count (``EvmDelivery._reverted``) reads a bounded slice of
  the message's audit trail (``Ledger.backoff_trail``), not the whole trail, inside the
  write transaction.
* L6: the Substrate client's node words go through :func:`adapters.text.one_line`: control
  characters (a forged second log line, a terminal escape) never reach a log or a reason.

(M2, the scan's read proofs only for blocks carrying ``PSRL``, is pinned against chopsticks in
tests/test_substrate_adapter.py, whose chain is already running.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
import trio.testing
from test_ledger import DEST, disc, msg_id, tx_for
from test_seam_leftovers import _trail
from test_substrate_route import config_toml
from test_substrate_route import load as load_config_text

from adapters.errors import AdapterError
from adapters.evm.tx import TxReverted
from adapters.substrate import client as substrate_client
from light_clients.hashing import keccak256
from relayer import relay
from relayer.families.evm.delivery import ALONE_REVERTS, EvmDelivery
from relayer.ledger import Ledger, MessageStatus, StatusEvent, open_ledger
from relayer.relay import DOMAIN_RECHECK_FIRST, MAX_DELIVERY_ATTEMPTS, Lane, Relayer, RouteHalted


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as opened:
        yield opened


# --------------------------------------------------------------------------- L1


class _Outbox:
    """A stand-in origin whose outbox's domain cannot be read at first (its node down), then
    reads as another chain's: what a wrong ``domain`` in the configuration looks like once
    the node is back."""

    endpoints: tuple[()] = ()

    def __init__(self, wrong: int) -> None:
        self.wrong = wrong
        self.asked: list[float] = []

    async def stamped_domain(self) -> int:
        self.asked.append(trio.current_time())
        if len(self.asked) == 1:
            raise AdapterError("outbox: node unreachable")
        return self.wrong


def test_an_outbox_unread_at_the_start_is_asked_again_and_halts_once_read_wrong(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan task keeps its outbox check: unread at the start (one ``rpc_errors``), it is
    asked again after :data:`DOMAIN_RECHECK_FIRST` (not every round: the rounds between do
    not ask), and the wrong domain it then reads halts the relayer, one line."""
    config = load_config_text(tmp_path, config_toml())
    chain = config.chain("alpha")
    relayer = Relayer(config, ledger, poll=0.5)
    outbox = _Outbox(chain.domain + 1)
    rounds: list[float] = []

    class Family:
        @asynccontextmanager
        async def open_origin(self, *_: Any, **__: Any) -> AsyncIterator[_Outbox]:
            yield outbox

    async def scan_once(self: Relayer, lane: Lane, origin: object) -> bool:
        rounds.append(trio.current_time())
        return True  # caught up: the loop sleeps its poll

    monkeypatch.setattr(relay, "family_of", lambda _: Family())
    monkeypatch.setattr(Relayer, "_scan_once", scan_once)

    async def main() -> None:
        with trio.move_on_after(3_600):  # virtual time: an hour of rounds at most
            await relayer._scan_loop(Lane(chain, chain.outbox_id))

    with pytest.raises(RouteHalted) as halted:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    text = str(halted.value)
    assert "\n" not in text and f"deployed for domain {chain.domain + 1}" in text
    assert len(outbox.asked) == 2  # was: 1, at the start, and the scan went on for ever
    first, again = outbox.asked
    assert again - first >= DOMAIN_RECHECK_FIRST
    assert len([t for t in rounds if first < t < again]) >= 5  # rounds that did not ask
    assert relayer.metrics.rpc_errors == 1  # one per attempt that could not be read


# --------------------------------------------------------------------------- L5


def test_a_lone_revert_counts_a_bounded_slice_of_a_long_trail(
    tmp_path: Path, ledger: Ledger
) -> None:
    """A message whose lone delivery reverted 5,000 times before (an operator re-queued it
    by SQL, a trail of a year) loads at most one page of its trail when it reverts again (it
    loaded all 10,000 events inside the write transaction), and is still given up: the count
    of its newest lone reverts reaches :data:`MAX_DELIVERY_ATTEMPTS`."""
    config = load_config_text(tmp_path, config_toml())
    relayer = Relayer(config, ledger)
    found = disc(1, 0)
    message_id = msg_id(found.message)
    ledger.record_discovered([found])
    ledger.transition([message_id], MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        1, "0x" + "0b" * 32, "0x" + "77" * 32, 5, block_number=5, block_hash=bytes(32)
    )
    ledger.transition([message_id], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
    _trail(ledger, message_id, [f"{ALONE_REVERTS} (old)", None] * 5_000)
    tx, tx_hash = tx_for(DEST, seed=7), keccak256(b"delivery 7")
    assert tx.hash == tx_hash
    ledger.record_transaction(tx, [message_id])
    loaded: list[object] = []
    listener = lambda target, context: loaded.append(target)  # noqa: E731
    sa.event.listen(StatusEvent, "load", listener)
    try:
        delivery = EvmDelivery(config.chain("beta"), relayer)
        delivery._reverted(DEST, TxReverted(tx_hash, 9, 21_000), [message_id])
    finally:
        sa.event.remove(StatusEvent, "load", listener)
    assert 0 < len(loaded) <= 64, len(loaded)  # one page, not 10,000 events
    record = ledger.get(message_id)
    assert record is not None and record.status == MessageStatus.FAILED
    assert record.reason == (
        f"{ALONE_REVERTS} (transaction 0x{tx_hash.hex()} reverted in block 9), "
        f"{MAX_DELIVERY_ATTEMPTS} times: gave up"
    )


# --------------------------------------------------------------------------- L6


def test_a_substrate_nodes_error_words_are_one_printable_bounded_line() -> None:
    """A node's JSON-RPC error (or any exception text substrate-interface raises) becomes one
    printable line of bounded length: a newline (a forged second log line), NUL and ESC (a
    terminal escape) were kept by the old whitespace-joining copy."""
    words = "bad block\n2026-12-07 WARNING forged\x1b[31m\x00" + "x" * 10_000
    for raised in (RuntimeError(words), RuntimeError({"code": -32000, "message": words})):
        line = substrate_client._describe(raised)
        assert line.isprintable(), repr(line[:80])
        assert len(line) <= 201 and "forged?" in line
