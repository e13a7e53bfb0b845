"""The relayer's delivery round to Asset Hub, made cheap enough for issue #12 without losing what
it protects.

* The attested messages a round may propose are read with the held-back ones (the messages of
  our live proposals) left out by the database (``Ledger.by_status(excluding=...)``): one
  statement, one bound parameter whatever the number held back, linear in it, on SQLite and
  PostgreSQL. Hostile: a held-back set larger than either database's bind-parameter limit.
* The replay-guard items are read again only when Asset Hub's best block changed, keyed on its
  HASH (:class:`~relayer.families.substrate.calls.GuardReads`): a delivery in a new block is
  seen, and so is a fork's block of the same number. Hostile: a node answering for another
  block than the one asked, or with nothing (a block it does not have).
* A round whose proposing failed AND whose check failed says both, one line each.
* A write outside the lease's domain ends the delivery task instead of being retried for ever.
* (Session 7 review fixes, FHUB.) A pinned read that leaves out a key is refused, not "no
  item" (M1); a state read failing at a best block the node has since left is tried once at
  the new one (L4); ``excluding`` ids are normalised (L1); a WriteOutsideDomain from proposing
  ends the task even when the check fails too (L2). And what the ledger RECORDS (delivered,
  refunded) is read at the chain's FINAL head: a best block can be orphaned, and a delivery
  recorded from it would never be delivered.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
import trio
from test_grandpa_route import grandpa_table, with_grandpa
from test_hub_pipeline import HUB, Round, mid, proposal, raw, status
from test_hub_pipeline import ledger as ledger  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import DEST, ORIGIN, OTHER_ORIGIN, Backend, disc
from test_ledger import backend as backend  # noqa: PLC0414
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_ledger_migrations import run_statements
from test_ledger_queries import captured, sqlite_steps
from test_substrate_batching import HUB_SETTINGS, _item_details
from test_substrate_route import ASSETHUB, load
from test_substrate_trie import RefTrie, ref_trie

from adapters.errors import AdapterError
from adapters.substrate import finality as finality_module
from adapters.substrate.finality import (
    MAX_READ_PROOF_HEX,
    MAX_READ_PROOF_NODES_PER_KEY,
    read_proof,
)
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.message import decode_message
from relayer.checkpoints import CheckpointStoreError
from relayer.config import SUBSTRATE_BATCH_SIZE, ChainConfig, Config
from relayer.families.substrate import calls as calls_module
from relayer.families.substrate import delivery as delivery_module
from relayer.families.substrate.calls import (
    GUARD_DELIVERED,
    GUARD_REFUNDED,
    GuardReads,
    guard_key,
    proves_storage,
    shared_follower,
)
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.families.substrate.scan import escrow_routes, scan_remarks
from relayer.leases import LeaseBoard
from relayer.ledger import (
    DiscoveredMessage,
    Ledger,
    MessageRecord,
    MessageStatus,
    StatusEvent,
    WriteOutsideDomain,
    fenced_by,
    open_ledger,
)
from relayer.relay import MAX_DELIVERY_ATTEMPTS, Relayer

S = MessageStatus

ATTESTED = 3_000
"""Attested messages to DEST (two origins): a burst's backlog."""
HELD = 1_500
"""Of them, held back (in live proposals of ours): the burst the profile measured."""
PLANTED = 70_000
"""Extra held-back ids no attested message has (messages of live proposals since delivered,
or whatever a store entry that passed as ours names): more than SQLite's 32,766 and
PostgreSQL's 65,535 bound parameters, were each id one parameter."""


def _fake_id(n: int) -> str:
    return "0x" + keccak256(b"planted %d" % n).hex()


@pytest.fixture
def burst(backend: Backend) -> Iterator[tuple[Backend, str, Ledger, list[str]]]:
    """A ledger with ATTESTED attested messages to DEST (origin ORIGIN, then OTHER_ORIGIN),
    a few to another destination, and the ids of the attested ones in (origin, nonce) order."""
    location = backend.fresh("burst")
    ledger = open_ledger(location)
    try:
        half = ATTESTED // 2
        found = [disc(ORIGIN, n) for n in range(half)]
        found += [disc(OTHER_ORIGIN, n) for n in range(ATTESTED - half)]
        found += [disc(ORIGIN, n, dest=DEST + 1) for n in range(half, half + 5)]
        ledger.record_discovered(found)
        ids: list[str] = []
        for origin in (ORIGIN, OTHER_ORIGIN):
            checkpoint = ledger.save_checkpoint(
                origin,
                b"\x0b" * 32,
                keccak256(b"root %d" % origin),
                ATTESTED,
                block_number=10,
                block_hash=keccak256(b"block 10"),
            )
            page = ledger.messages(origin=origin, limit=10_000)
            ledger.transition([m.id for m in page], S.FINAL)
            ledger.transition([m.id for m in page], S.ATTESTED, checkpoint_id=checkpoint)
            ids += [m.id for m in page if m.destination == DEST]
        if backend.admin is not None:
            run_statements(backend, location, ["ANALYZE"])  # the planner needs statistics
        yield backend, location, ledger, ids
    finally:
        ledger.close()


def _selects(ledger: Ledger, action: Callable[[], Any]) -> tuple[Any, list[tuple[str, Any]]]:
    """``action()``'s result and every SELECT of ``messages`` it sent, with its parameters
    (PostgreSQL's session settings are SELECTs too: left out)."""
    result: list[Any] = []
    sent = captured(ledger, lambda _ledger: result.append(action()))
    return result[0], [(text, params) for text, params in sent if "messages" in text]


def test_held_back_messages_are_left_out_by_the_database_in_one_bounded_statement(
    burst: tuple[Backend, str, Ledger, list[str]],
) -> None:
    """The round's read of attested messages: the held back are not loaded, whatever their
    number; one SELECT with one parameter for them; its cost grows with the set, not with
    rows × set."""
    backend, location, ledger, ids = burst
    wanted = 2 * SUBSTRATE_BATCH_SIZE  # what a round asks for
    # Held back: every other message of the first 3,000 (so both origins' pages have gaps),
    # and PLANTED ids no attested message has.
    held = set(ids[: 2 * HELD : 2])
    hostile = held | {_fake_id(n) for n in range(PLANTED)}

    def read(excluded: set[str]) -> Any:
        return ledger.by_status(S.ATTESTED, wanted, destination=DEST, excluding=excluded)

    records, sent = _selects(ledger, lambda: read(hostile))
    expected = [i for i in ids if i not in held][:wanted]
    assert [r.id for r in records] == expected
    assert all(r.destination == DEST and r.status == S.ATTESTED for r in records)
    (statement, params), *_others = sent
    assert len(sent) == 1  # no page loop, no per-chunk statements
    values = params.values() if isinstance(params, dict) else params
    assert len(values) <= 5  # status, destination, the id set, the limit: not one per id
    # Nothing held back: the plain read, unchanged.
    assert [r.id for r in read(set())] == ids[:wanted]

    if backend.admin is None:
        # Linear (n log n) in the set, not quadratic: 4x the set costs about 4x the steps.
        small = {_fake_id(n) for n in range(PLANTED // 4)}
        _, (small_sent,) = _selects(ledger, lambda: read(small))
        big = small | {_fake_id(-n) for n in range(1, 3 * PLANTED // 4)}
        _, (big_sent,) = _selects(ledger, lambda: read(big))
        raw = backend.raw(location)
        try:
            cost_small = sqlite_steps(raw, *small_sent)
            cost_big = sqlite_steps(raw, *big_sent)
        finally:
            raw.close()
        assert cost_big < 6 * cost_small, (cost_small, cost_big)
    else:
        raw = backend.raw(location)
        try:
            (plan,) = raw.execute(f"EXPLAIN (FORMAT JSON) {statement}", params).fetchone()
        finally:
            raw.close()
        text = json.dumps(plan)
        # A hash of the set built once (or an anti join), never a rescan per row.
        assert "hashed SubPlan" in text or "Anti" in text, text


# ------------------------------------------------------------------ the round's ledger read


def test_a_round_with_1500_held_back_loads_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One proposing round, 3,000 attested messages of which 1,500 sit in live proposals of
    ours: the ledger hands the round only messages it may propose (two batches' worth), in
    nonce order, none held back; and the held-back ones are neither proposed nor read on
    chain. Before, the round loaded every held-back row too, only to drop it in Python."""
    count, held = 3_000, 1_500
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ledger.record_discovered(
            [DiscoveredMessage(raw(n), n, b"\x01" * 32, b"\x02" * 32, 0) for n in range(count)]
        )
        ids = [mid(n) for n in range(count)]
        ledger.transition(ids, MessageStatus.FINAL)
        checkpoint = ledger.save_checkpoint(
            1, b"\x11" * 32, b"\x33" * 32, count, block_number=1, block_hash=b"\x01" * 32
        )
        ledger.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        r = Round(tmp_path, ledger, monkeypatch)
        # Our live proposals: every other message of the first 3,000 (gaps in every page).
        for start in range(0, 2 * held, 100):
            r.store.publish(proposal(*range(start, start + 100, 2)))
        held_ids = {mid(n) for n in range(0, 2 * held, 2)}
        loaded: list[list[str]] = []
        by_status = ledger.by_status

        def watched(*args: Any, **kwargs: Any) -> list[MessageRecord]:
            records = by_status(*args, **kwargs)
            loaded.append([record.id for record in records])
            return records

        monkeypatch.setattr(ledger, "by_status", watched)
        r.events.clear()
        started = time.perf_counter()
        r.run()
        took = time.perf_counter() - started
    (rows,) = loaded
    assert not held_ids & set(rows)  # none loaded only to be dropped
    assert rows == [i for i in ids if i not in held_ids][: 2 * SUBSTRATE_BATCH_SIZE]
    proposed = {n for event, nonces in r.events if event == "publish" for n in nonces}
    guard_read = {n for event, nonces in r.events[:1] for n in nonces}
    assert proposed == guard_read == set(range(count)) - set(range(0, 2 * held, 2))
    print(f"one round, {held} held back: {took * 1000:.0f} ms")


# ------------------------------------------------------------------ guard reads per block


class _Hub:
    """A stand-in Asset Hub node: blocks by hash, each with its replay-guard items; the best
    block is :attr:`head`. Records every ``state_queryStorageAt`` (the keys it asked). With
    :attr:`proving` it offers ``state_getReadProof``: real trie proofs (the reference trie of
    test_substrate_trie) under each block's real state root."""

    url = "ws://stand-in:9944"

    def __init__(self) -> None:
        self.blocks: dict[str, dict[str, str]] = {}
        self.numbers: dict[str, int] = {}
        self.head = ""
        self.final = ""  # the finalized head (:meth:`finalized_head`)
        self.heads: list[str] = []  # best hashes to answer first, in order, before ``head``
        self.storage_reads: list[list[str]] = []
        self.proof_reads: list[list[str]] = []
        self.final_heads = 0  # chain_getFinalizedHead calls
        self.methods_asked = 0  # rpc_methods calls
        self.proving = False
        self.lie: Any = None  # if set: (method, params) -> the answer instead of the truth

    def build(self, name: str, items: dict[int, bytes]) -> str:
        """A new best block ``name`` holding the items of ``items`` (nonce -> details)."""
        block = to_hex(keccak256(name.encode()))
        self.blocks[block] = {to_hex(guard_key(1, n)): to_hex(v) for n, v in items.items()}
        self.numbers[block] = int(name.split()[1].rstrip(","))
        self.head = block
        return block

    def trie(self, block: str) -> RefTrie:
        """``block``'s state: its guard items and one other entry (never an empty trie)."""
        items = {bytes.fromhex(k[2:]): bytes.fromhex(v[2:]) for k, v in self.blocks[block].items()}
        return ref_trie({b"\x01other": b"state", **items}, v1=True)

    def proof(self, block: str, keys: list[str]) -> list[str]:
        """The trie nodes proving ``keys`` (hex) in ``block``'s state, as hex."""
        trie = self.trie(block)
        nodes = {n for k in keys for n in trie.proof_and_value(bytes.fromhex(k[2:]))[0]}
        return [to_hex(n) for n in sorted(nodes)]

    async def rpc(self, method: str, params: Any = ()) -> Any:
        if self.lie is not None:
            return self.lie(method, params)
        if method == "chain_getBlockHash":
            assert params == []  # the best block's
            return self.heads.pop(0) if self.heads else self.head
        if method == "rpc_methods":
            self.methods_asked += 1
            return {"methods": ["state_getReadProof"] if self.proving else []}
        if method == "state_getReadProof":
            keys, at = params
            self.proof_reads.append(list(keys))
            return {"at": at, "proof": self.proof(at, keys)}
        assert method == "state_queryStorageAt"
        keys = params[0]
        at = params[1] if len(params) > 1 else self.head
        self.storage_reads.append(list(keys))
        state = self.blocks.get(at)
        if state is None:
            return []  # what chopsticks answers for a block it does not have
        return [{"block": at, "changes": [[k, state.get(k)] for k in keys]}]

    async def finalized_head(self) -> SimpleNamespace:
        """:meth:`SubstrateClient.finalized_head`: its hash, number and state root."""
        self.final_heads += 1
        return SimpleNamespace(
            hash=bytes.fromhex(self.final[2:]),
            number=self.numbers[self.final],
            state_root=self.trie(self.final).root_hash,
        )

    async def genesis_hash(self) -> bytes:
        return HUB_SETTINGS.genesis_hash

    async def block_hash(self, number: int) -> bytes:
        """:meth:`SubstrateClient.block_hash`: the hash of the block of that number."""
        return next(bytes.fromhex(h[2:]) for h, n in self.numbers.items() if n == number)


DELIVERED = _item_details(None, False, 1)
REFUNDED = _item_details(b"\x01" * 32, True, 1)


def test_guard_items_are_read_once_per_best_block_hash_and_again_on_a_fork() -> None:
    """The delivery reads a message's guard item once per best block: asked again at the
    same hash, it answers from memory (the chain's state changes only with a block). A new
    block (a batch executed in it) is read afresh, and so is a fork's block of the same
    number: the memory is keyed on the block's HASH. A node answering for another block, or
    with nothing (chopsticks' answer for a block it does not have), or with no hash is one
    AdapterError line, and what was read right stays right."""
    hub = _Hub()
    chain = cast(ChainConfig, SimpleNamespace(name="hub", settings=lambda: HUB_SETTINGS))
    delivery = SubstrateDelivery(chain, cast(Relayer, SimpleNamespace()))
    client = cast(Any, hub)
    m1, m2, m3 = (raw(n) for n in (1, 2, 3))

    def read(*messages: bytes) -> list[str | None]:
        return trio.run(delivery._delivered_items, client, chain, list(messages))

    hub.build("block 5", {})
    assert read(m1, m2) == [None, None]
    assert read(m1, m2) == [None, None]  # the same block: from memory
    assert read(m3, m1) == [None, None]  # only the key not asked at this block yet is read
    assert hub.storage_reads == [
        [to_hex(guard_key(1, n)) for n in (1, 2)],
        [to_hex(guard_key(1, 3))],
    ]

    block_6 = hub.build("block 6", {1: DELIVERED})  # our batch executed
    assert read(m1, m2) == [GUARD_DELIVERED, None]
    hub.build("block 6, a fork", {2: REFUNDED})  # the same number, another block
    assert read(m1, m2) == [None, GUARD_REFUNDED]
    hub.head = block_6  # and back: two blocks are remembered (the best and the final head)
    assert read(m1, m2) == [GUARD_DELIVERED, None]
    assert len(hub.storage_reads) == 4

    lies = [
        (lambda m, p: hub.head if m == "chain_getBlockHash" else [], "no state for block"),
        (
            lambda m, p: (
                "0x" + "ab" * 32
                if m == "chain_getBlockHash"
                else [{"block": "0x" + "cd" * 32, "changes": [[p[0][0], None]]}]
            ),
            "answered for another block",
        ),
        (lambda m, p: "0x1234", "chain_getBlockHash on ws://stand-in:9944: best block hash is"),
        (lambda m, p: None, "chain_getBlockHash on ws://stand-in:9944: best block hash must"),
    ]
    for lie, says in lies:
        hub.lie = lie
        with pytest.raises(AdapterError, match=says) as refused:
            read(m1, m3)
        assert "\n" not in str(refused.value)
    hub.lie = None
    assert read(m1, m2, m3) == [GUARD_DELIVERED, None, None]

    # Review M1: a short answer at a pinned block (a key left out, or no change at all) hides
    # an item; refused, and nothing of it remembered: the honest answer is read next.
    hub.build("block 7", {1: DELIVERED, 2: DELIVERED})
    for changes in (lambda p: [[p[0][0], None]], lambda p: []):
        hub.lie = lambda m, p, changes=changes: (
            hub.head if m == "chain_getBlockHash" else [{"block": p[1], "changes": changes(p)}]
        )
        with pytest.raises(AdapterError, match=r"answered [01] of 2 keys at 0x") as refused:
            read(m1, m2)
        assert "\n" not in str(refused.value)
    hub.lie = None
    reads = len(hub.storage_reads)
    assert read(m1, m2) == [GUARD_DELIVERED, GUARD_DELIVERED]
    assert len(hub.storage_reads) == reads + 1  # asked the node: the lie was not remembered

    # Review L4: the node names a best block, then cannot serve its state (a re-org, another
    # backend behind the URL): asked again, it names another block, read there. Named again,
    # the same block: the error stands (one line; the next poll tries again).
    gone = to_hex(keccak256(b"block 8, orphaned"))
    hub.build("block 8", {3: REFUNDED})
    hub.heads = [gone]
    assert read(m3) == [GUARD_REFUNDED]
    hub.heads = [gone, gone]
    with pytest.raises(AdapterError, match=f"no state for block {gone}"):
        read(m2)


def test_the_memory_of_a_block_never_holds_more_than_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review L3: the bound is checked AFTER a read, so no call takes a block's memory past
    MAX_REMEMBERED (it used to be checked before, allowing MAX_REMEMBERED + one call's keys);
    a read past it starts that memory over, answered right all the same."""
    monkeypatch.setattr(GuardReads, "MAX_REMEMBERED", 3)
    hub = _Hub()
    hub.build("block 1", {2: DELIVERED})
    guards = GuardReads()
    messages = [decode_message(raw(n)) for n in range(1, 7)]

    def read(*nonces: int) -> list[str | None]:
        chosen = [messages[n - 1] for n in nonces]
        answer = trio.run(guards.items, cast(Any, hub), HUB_SETTINGS, chosen)
        assert max(len(states) for states in guards._blocks.values()) <= 3
        return answer

    assert read(1, 2) == [None, GUARD_DELIVERED]
    assert read(3, 4) == [None, None]  # 2 + 2 > 3: starts over, keeps these two
    assert read(5, 6, 1, 2) == [None, None, None, GUARD_DELIVERED]  # 4 > 3: kept none
    reads = guards.reads
    assert read(3) == [None]  # the start over dropped (3, 4): read again, no harm
    assert guards.reads == reads + 1


# ------------------------------------------------------------------ the round's errors


def _run_loop(
    r: Round, monkeypatch: pytest.MonkeyPatch, chain: ChainConfig = HUB, rounds: int = 2
) -> int:
    """Run the delivery loop (:meth:`SubstrateDelivery._deliver_substrate_loop`) on ``r``'s
    store for at most ``rounds`` rounds (each noted in ``r.events``); the number it began."""
    began = 0
    scope = trio.CancelScope()
    once = r.delivery._deliver_substrate_once

    async def counted(*args: Any) -> None:
        nonlocal began
        began += 1
        r.events.append(("round", ()))
        try:
            await once(*args)
        finally:
            if began >= rounds:
                scope.cancel()

    @asynccontextmanager
    async def no_connection(_chain: Any) -> AsyncIterator[None]:
        yield None

    monkeypatch.setattr(r.delivery, "_deliver_substrate_once", counted)
    monkeypatch.setattr(delivery_module, "connected", no_connection)
    monkeypatch.setattr(delivery_module, "open_proposal_store", lambda _where: r.store)
    r.delivery.relayer.poll = 0

    async def loop() -> None:
        with scope:
            await r.delivery._deliver_substrate_loop(chain)

    trio.run(loop)
    return began


def _both_fail(r: Round, monkeypatch: pytest.MonkeyPatch, proposing: Exception) -> Round:
    """``r`` with a live proposal of ours executed on chain, planning its next batches raising
    ``proposing`` and the store refusing the removal of the executed one (the check fails)."""
    r.store.publish(proposal(1, 2))
    r.on_chain = {raw(1), raw(2)}

    async def plan(*_args: Any) -> list[list[MessageRecord]]:
        raise proposing

    def refuse(_key: Any) -> None:
        raise CheckpointStoreError("proposal store: disk full")

    monkeypatch.setattr(r.delivery, "_plan", plan)
    monkeypatch.setattr(r.store, "remove", refuse)
    return r


def test_a_round_whose_proposing_and_check_both_fail_says_both_in_one_line_each(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review R2b: proposing fails (the batch limits unmeasurable), and so does the check of
    the live proposals after it (the store refuses the removal of an executed one). The check's
    error used to replace proposing's; now each is one line, no traceback, every round, and the
    relayer goes on."""
    r = _both_fail(
        Round(tmp_path, ledger, monkeypatch),
        monkeypatch,
        AdapterError("batch limits on ws://hub: the runtime's answer is not a weight"),
    )
    caplog.set_level(logging.INFO, logger="passerelle.relayer")
    assert _run_loop(r, monkeypatch, rounds=2) == 2
    lines = [
        (rec.levelno, rec.getMessage()) for rec in caplog.records if rec.levelno >= logging.WARNING
    ]
    one_round = [
        (
            logging.WARNING,
            "deliver to hub: proposing: batch limits on ws://hub: the runtime's "
            "answer is not a weight",
        ),
        (logging.WARNING, "deliver to hub: proposals: proposal store: disk full"),
    ]
    assert lines == one_round * 2
    assert not [rec for rec in caplog.records if rec.exc_info]
    assert r.delivery.relayer.metrics.rpc_errors == 2  # proposing's, counted as before


def test_a_write_outside_the_domain_from_proposing_ends_the_task_when_the_check_fails_too(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review L2: proposing raises WriteOutsideDomain (must end the task: the lease keeper
    gives the lease back) while the check fails with an error it would log (the store refuses
    the removal). The loop raises WriteOutsideDomain after its first round, and the check's
    error is exactly one line; logged and swallowed instead, the route would be held for ever."""
    r = _both_fail(
        Round(tmp_path, ledger, monkeypatch),
        monkeypatch,
        WriteOutsideDomain("deliver:99 moved a message bound for 1000"),
    )
    caplog.set_level(logging.INFO, logger="passerelle.relayer")
    with pytest.raises(WriteOutsideDomain, match="deliver:99"):
        _run_loop(r, monkeypatch, rounds=3)
    assert r.events.count(("round", ())) == 1
    lines = [
        (rec.levelno, rec.getMessage()) for rec in caplog.records if rec.levelno >= logging.WARNING
    ]
    assert lines == [
        (
            logging.WARNING,
            "deliver to hub: checking live proposals: proposals: proposal store: disk full",
        )
    ]
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_a_write_outside_the_lease_domain_ends_the_delivery_task(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asset Hub's delivery running under the lease of another destination (the lease named
    from a configuration that disagrees with the chain) records Asset Hub's deliveries: the
    ledger refuses each write (WriteOutsideDomain, a kind of InvalidReference). The loop used
    to log it as a refused move and try again every round, for ever, the lease held; now the
    error ends the task at once, so the lease keeper stops that lease for good and gives it
    back (relayer/leases.py), as it does for the scan."""
    wrong = ASSETHUB + 10
    r = Round(tmp_path, ledger, monkeypatch)
    r.store.publish(proposal(1, 2))
    r.on_chain = {raw(1), raw(2)}  # executed: the check records them delivered
    board = LeaseBoard(ledger, [f"deliver:{wrong}"], holder="relayer-a", lease_seconds=600)
    (claim,) = board.round({}).claimed
    with fenced_by(claim.fence), pytest.raises(WriteOutsideDomain, match=f"deliver:{wrong}"):
        _run_loop(r, monkeypatch, rounds=3)
    assert r.events.count(("round", ())) == 1  # the first round's error ended the loop
    assert [ledger.get(mid(n)).status for n in (1, 2)] == [  # type: ignore[union-attr]
        MessageStatus.ATTESTED
    ] * 2


# ------------------------------------------------------------------ excluding ids (review L1)


def test_excluded_ids_are_normalised_like_every_ledger_id(ledger: Ledger) -> None:
    """Bytes and upper-case hex exclude the message they name (they used to exclude nothing,
    so a held-back message was proposed twice); one id passed alone, or no id at all, is one
    ValueError line, before any SQL (a NUL or a lone surrogate used to reach PostgreSQL)."""

    def left(excluding: Any) -> list[str]:
        return [r.id for r in ledger.by_status(S.ATTESTED, 10, excluding=excluding)]

    everything = [mid(n) for n in range(1, 7)]
    assert left([]) == everything
    as_bytes = bytes.fromhex(mid(1)[2:])
    shouting = "0x" + mid(2)[2:].upper()
    assert left([as_bytes, shouting]) == everything[2:]
    for bad in (mid(1), ["0x1234"], [mid(1)[:-1] + "\x00"], [mid(1)[2:]], ["0x" + "\ud800" * 32]):
        with pytest.raises(
            ValueError, match=r"^(excluding must be a collection|excluded message id )"
        ) as refused:
            left(bad)
        assert "\n" not in str(refused.value)


# ------------------------------------------------------------------ recorded at the final head


HUB_FINAL = cast(
    ChainConfig,
    SimpleNamespace(
        name="hub",
        domain=ASSETHUB,
        settings=lambda: HUB_SETTINGS,
        finality=SimpleNamespace(name="devnet-instant"),  # the node's finalized head
    ),
)


def test_deliveries_are_recorded_from_the_final_head_never_from_a_best_block(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A best block shows our proposal (1, 2) and messages 5 and 6 (delivered by a batch that
    is not ours) executed; the final head does not yet. Nothing is recorded: a best block can
    be orphaned, and a message recorded delivered from it would never be delivered. Nor is any
    of them proposed again or failed (the best block has them): the proposal is kept, timed out
    or not. Then the best block is orphaned by a fork block of the same number, final, which
    holds 1, 2 and 5 but not 6: those three are recorded delivered, 6 is proposed again, and
    (3, 4), timed out and nowhere on chain, failed as before. On that chain (best = final, as
    chopsticks finalizes every block it builds) the recording read costs no second read."""
    r = Round(tmp_path, ledger, monkeypatch)
    monkeypatch.delattr(r.delivery, "_delivered_items")  # the real reads, on the stand-in node
    monkeypatch.delattr(r.delivery, "_final_items", raising=False)
    r.delivery.relayer.confirm_timeout = 0.0  # every proposal timed out at once
    hub = _Hub()
    client = cast(Any, hub)
    r.store.publish(proposal(1, 2))
    hub.final = hub.build("block 1", {})
    hub.build("block 2", dict.fromkeys((1, 2, 5, 6), DELIVERED))

    def run() -> None:
        trio.run(r.delivery._deliver_substrate_once, HUB_FINAL, client, r.store)

    r.events.clear()
    run()
    assert [status(ledger, n) for n in range(1, 7)] == [S.ATTESTED] * 6
    assert r.events == [("publish", (3, 4))]  # not 5 and 6: in the best block
    kept = sorted(list(p.messages) for _, p in r.store.pending(ASSETHUB))
    assert kept == sorted([[raw(1), raw(2)], [raw(3), raw(4)]])  # (1, 2) kept, not failed

    hub.final = hub.build("block 2, a fork", dict.fromkeys((1, 2, 5), DELIVERED))
    r.events.clear()
    reads = len(hub.storage_reads)
    run()
    assert [status(ledger, n) for n in range(1, 7)] == [
        S.DELIVERED,
        S.DELIVERED,
        S.FAILED,
        S.FAILED,
        S.DELIVERED,
        S.ATTESTED,
    ]
    assert r.events == [("publish", (6,))]
    assert [list(p.messages) for _, p in r.store.pending(ASSETHUB)] == [[raw(6)]]
    assert len(hub.storage_reads) == reads + 2  # the candidates and the check: best reads only
    assert hub.final_heads == 2  # one final head a round (R2 L4), though both steps record


# ------------------------------------------------------------------ second review (R2HUB)


HUB_PROVEN = cast(
    ChainConfig,
    SimpleNamespace(
        name="hub",
        domain=ASSETHUB,
        settings=lambda: HUB_SETTINGS,
        finality=SimpleNamespace(name="finalized"),  # a node that can prove its storage
    ),
)


def _real_round(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> tuple[Round, _Hub]:
    """A delivery round making the real guard reads and final-head read on a stand-in node."""
    r = Round(tmp_path, ledger, monkeypatch)
    monkeypatch.delattr(r.delivery, "_delivered_items")
    monkeypatch.delattr(r.delivery, "_final_items", raising=False)
    return r, _Hub()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    caplog.clear()
    return lines


def test_what_is_recorded_is_proven_under_the_final_heads_state_root(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R2 M1: where the node can prove its storage (``state_getReadProof`` offered, a policy
    other than devnet-instant), the guard items the ledger records from are read with a proof
    under the final head's state root, never from ``state_queryStorageAt``. The node lies there
    (5 delivered, though no block holds it): 5 is neither recorded nor (the best block "shows"
    it) proposed; 1 and 2 (ours, really delivered) and 6 (really refunded) are recorded, as the
    proof shows them. Then a forged proof (another block's trie) is one warning line and
    nothing recorded that round; the round itself goes on."""
    caplog.set_level(logging.WARNING, logger="passerelle.relayer")
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    hub.proving = True
    r.store.publish(proposal(1, 2))
    hub.final = hub.build("block 1", {1: DELIVERED, 2: DELIVERED, 6: REFUNDED})
    truth = hub.rpc

    async def lying(method: str, params: Any = ()) -> Any:
        answer = await truth(method, params)
        if method == "state_queryStorageAt":
            five = to_hex(guard_key(1, 5))
            answer[0]["changes"] = [
                [k, to_hex(DELIVERED) if k == five else v] for k, v in answer[0]["changes"]
            ]
        return answer

    hub.rpc = lying  # type: ignore[method-assign]
    r.events.clear()
    trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
    assert [status(ledger, n) for n in range(1, 7)] == [
        S.DELIVERED,
        S.DELIVERED,
        S.ATTESTED,
        S.ATTESTED,
        S.ATTESTED,
        S.FAILED,
    ]
    assert r.events == [("publish", (3, 4))]  # 5 not proposed: the best block "has" it
    assert hub.proof_reads and hub.final_heads == 1
    assert _warnings(caplog) == ["1 message(s) to hub refunded by the committee"]

    # A forged proof: the right block named, another block's trie (3 and 4 delivered there).
    hub.rpc = truth  # type: ignore[method-assign]
    hub.final = hub.build("block 2", dict.fromkeys((3, 4), DELIVERED))
    forged = hub.build("block 3", {**dict.fromkeys((3, 4), DELIVERED), 9: DELIVERED})
    hub.head = hub.final

    def forge(method: str, params: list[Any]) -> Any:
        if method != "state_getReadProof":
            return None
        keys, at = params
        return {"at": at, "proof": hub.proof(forged, keys)}

    async def forging(method: str, params: Any = ()) -> Any:
        return forge(method, params) or await truth(method, params)

    hub.rpc = forging  # type: ignore[method-assign]
    r.events.clear()
    trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
    assert [status(ledger, n) for n in (3, 4)] == [S.ATTESTED] * 2  # nothing recorded
    assert r.events == [("publish", (5,))]  # the round went on (no block has 5 now)
    kept = sorted(list(p.messages) for _, p in r.store.pending(ASSETHUB))
    assert kept == [[raw(3), raw(4)], [raw(5)]]  # (3, 4) kept: the best block shows it
    [line] = _warnings(caplog)
    assert line.startswith("deliver to hub: the guard items at the final head #2 not read")
    assert "state_getReadProof" in line and "\n" not in line


def test_a_failing_final_read_is_one_line_and_a_kept_proposal_times_out_from_its_last_sighting(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R2 L1-L4. (1, 2) and (3, 4), ours, proposed 100 s ago (confirm_timeout 60): the best
    block shows (1, 2) and 5 executed, the final head cannot be read. Each round that is one
    warning line (one final head asked a round, though both steps need it) and "nothing
    final yet": (1, 2) is kept and 5 neither recorded nor proposed, while (3, 4), nowhere on
    chain, still times out and 6 is still proposed. A line says once that (1, 2) waits for
    finality past confirm_timeout. Then the best block is orphaned: (1, 2)'s timeout counts
    from its last sighting, not its creation: kept until 60 s after it, then failed."""
    caplog.set_level(logging.WARNING, logger="passerelle.relayer")
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    r.delivery.relayer.confirm_timeout = 60.0
    clock = [time.time()]
    monkeypatch.setattr(
        delivery_module, "time", SimpleNamespace(time=lambda: clock[0], monotonic=time.monotonic)
    )
    r.store.publish(proposal(1, 2, created=clock[0] - 100))
    r.store.publish(proposal(3, 4, created=clock[0] - 100))
    hub.final = hub.build("block 1", {})
    hub.build("block 2", dict.fromkeys((1, 2, 5), DELIVERED))
    honest_head = hub.finalized_head

    async def broken() -> Any:
        hub.final_heads += 1
        raise AdapterError("chain_getFinalizedHead on ws://stand-in:9944: boom")

    hub.finalized_head = broken  # type: ignore[method-assign]

    def run() -> None:
        trio.run(r.delivery._deliver_substrate_once, HUB_FINAL, cast(Any, hub), r.store)

    r.events.clear()
    run()
    assert [status(ledger, n) for n in range(1, 7)] == [
        S.ATTESTED,
        S.ATTESTED,
        S.FAILED,
        S.FAILED,
        S.ATTESTED,
        S.ATTESTED,
    ]
    assert r.events == [("publish", (6,))]
    assert hub.final_heads == 1
    final_line, waiting, failed = _warnings(caplog)
    assert final_line == (
        "deliver to hub: the final head not read, nothing recorded delivered this round: "
        "chain_getFinalizedHead on ws://stand-in:9944: boom"
    )
    assert "executed in the best block, the final head could not be read this round: " in (waiting)
    assert failed.startswith("proposal ") and "not executed in time" in failed

    clock[0] += 30
    run()  # still no final head: one line again, no second "waiting"
    assert _warnings(caplog) == [final_line]
    assert hub.final_heads == 2

    hub.finalized_head = honest_head  # type: ignore[method-assign]
    hub.final = hub.build("block 2, a fork", {})  # (1, 2)'s block orphaned
    clock[0] += 59
    run()  # 59 s after its last sighting (159 s after its creation): kept
    assert [status(ledger, n) for n in (1, 2)] == [S.ATTESTED] * 2
    assert [raw(1), raw(2)] in [list(p.messages) for _, p in r.store.pending(ASSETHUB)]
    clock[0] += 2
    run()  # 61 s: failed, retried in halves after the backoff
    assert [status(ledger, n) for n in (1, 2)] == [S.FAILED] * 2
    assert all(raw(1) not in p.messages for _, p in r.store.pending(ASSETHUB))
    assert any("not executed in time" in line for line in _warnings(caplog))


def test_final_delivered_reads_the_final_head_and_a_refund_is_not_a_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R2 M2: what the unpaid sweep (relay._sweep_page) and ``ledger rebuild`` (_mark_page)
    record ``delivered`` from, SubstrateFamily.final_delivered, reads as the delivery records:
    at the final head (the best block holds 1 delivered and 2 refunded: neither counts), and a
    refunded item is no delivery (4, refunded at the final head: False; the delivery records
    it failed). With proofs where the node offers them: a lie of state_queryStorageAt at the
    final head changes nothing."""
    from relayer.families.substrate import SubstrateFamily  # noqa: PLC0415
    from relayer.families.substrate import user as user_module  # noqa: PLC0415

    hub = _Hub()
    hub.final = hub.build("block 1", {3: DELIVERED, 4: REFUNDED})
    hub.build("block 2", {1: DELIVERED, 2: REFUNDED, 3: DELIVERED, 4: REFUNDED})

    @asynccontextmanager
    async def stand_in(_chain: Any) -> AsyncIterator[Any]:
        yield hub

    monkeypatch.setattr(user_module, "_substrate", stand_in)
    family = SubstrateFamily()
    messages = [raw(n) for n in (1, 2, 3, 4, 5)]

    def ask(chain: ChainConfig) -> list[bool]:
        return trio.run(family.final_delivered, cast(Any, None), chain, messages, {})

    assert ask(HUB_FINAL) == [False, False, True, False, False]
    hub.proving = True
    truth = hub.rpc

    async def lying(method: str, params: Any = ()) -> Any:
        if method == "state_queryStorageAt":
            return [{"block": params[1], "changes": [[k, to_hex(DELIVERED)] for k in params[0]]}]
        return await truth(method, params)

    hub.rpc = lying  # type: ignore[method-assign]
    assert ask(HUB_PROVEN) == [False, False, True, False, False]
    assert hub.proof_reads


# ------------------------------------------------------------------ third review (R3HUB)


def _checkpointed(tmp_path: Path) -> tuple[Config, ChainConfig]:
    """A loaded configuration with a GRANDPA checkpoint on Asset Hub, and HUB_PROVEN with that
    checkpoint in its settings (the stand-in node's guard items and genesis)."""
    config = load(tmp_path, with_grandpa(grandpa_table()))
    settings = dataclasses.replace(
        HUB_SETTINGS, grandpa=config.chain("assethub").settings().grandpa
    )
    chain = SimpleNamespace(
        name="hub",
        domain=ASSETHUB,
        settings=lambda: settings,
        finality=SimpleNamespace(name="finalized"),
    )
    return config, cast(ChainConfig, chain)


def _clear(store: Any) -> None:
    for key, _ in store.pending(ASSETHUB):
        store.remove(key)


def test_a_checkpoint_requires_read_proofs_and_elsewhere_their_absence_is_said_once(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R3 M1: whether the recorded guard items are proven was the node's choice (leave
    ``state_getReadProof`` out of ``rpc_methods``), silently, even under a GRANDPA checkpoint.
    Without a checkpoint (policy ``finalized``) they are still the node's word then, but ONE
    warning line says so, and ``rpc_methods`` is asked once (R3 L1: the cache), once an
    endpoint for the process since RFINAL L4: a new connection to it neither asks nor warns
    again. With a checkpoint, read proofs are
    required: a node without them is "the final head not read, nothing recorded" each round
    (before any head is read), and the best block's (1, 2) is neither recorded nor dropped."""
    caplog.set_level(logging.WARNING)
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    hub.final = hub.build("block 1", {5: DELIVERED})
    trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
    hub.final = hub.build("block 2", dict.fromkeys((5, 6), DELIVERED))  # final read again
    trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
    unproven = (
        "hub: ws://stand-in:9944 does not offer state_getReadProof: what is read at its final "
        "head (the replay-guard items deliveries are recorded from, an origin's events) is the "
        "node's word, unproven"
    )
    assert _warnings(caplog) == [unproven]
    assert hub.methods_asked == 1 and not hub.proof_reads
    assert [status(ledger, n) for n in (5, 6)] == [S.DELIVERED] * 2  # the node's word, said
    hub.final = hub.build("block 4", dict.fromkeys((4, 5, 6), DELIVERED))
    again = copy.copy(hub)  # another connection to the same node: the same endpoint
    again.methods_asked = 0
    trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, again), r.store)
    assert _warnings(caplog) == [] and again.methods_asked == 0  # RFINAL L4: once an endpoint
    assert status(ledger, 4) == S.DELIVERED

    _config, chain = _checkpointed(tmp_path)
    _clear(r.store)
    r.store.publish(proposal(1, 2))
    strict = _Hub()
    strict.final = strict.build("block 5", {1: DELIVERED, 2: DELIVERED})  # a block not read yet
    for _ in range(2):
        trio.run(r.delivery._deliver_substrate_once, chain, cast(Any, strict), r.store)
        assert _warnings(caplog) == [
            "deliver to hub: the final head not read, nothing recorded delivered this round: "
            "chain 'hub': a grandpa checkpoint is configured but ws://stand-in:9944 does not "
            "offer state_getReadProof: its storage at the proven final head cannot be proven, "
            "so nothing is read from it"
        ]
    assert [status(ledger, n) for n in (1, 2)] == [S.ATTESTED] * 2
    assert [raw(1), raw(2)] in [list(p.messages) for _, p in r.store.pending(ASSETHUB)]
    assert strict.final_heads == 0 and not strict.proof_reads  # refused before the head
    assert strict.methods_asked == 2  # a refusal is not cached: proofs offered later are used


def test_the_sweep_and_the_origin_scan_follow_the_same_rule_and_fail_as_adapter_errors(
    tmp_path: Path,
) -> None:
    """R3 M1 and L1. ``proves_storage`` is the one rule: never asked under devnet-instant;
    under a checkpoint a node listing only ``grandpa_proveFinality`` is refused (it was
    silently unproven). ``final_delivered`` (the unpaid sweep, ``ledger rebuild``) refuses the
    same node, a node of another chain (genesis, T8) and a checkpointed node without GRANDPA
    justifications, each as ONE AdapterError line (the sweep catches AdapterError only; the
    last two were ConfigError); the origin's scan refuses a checkpointed node that cannot prove
    its events before reading any."""
    from relayer.families.substrate import SubstrateFamily  # noqa: PLC0415
    from relayer.families.substrate import user as user_module  # noqa: PLC0415

    config, chain = _checkpointed(tmp_path)

    class Node:
        url = "ws://grandpa-only:9944"
        asked = 0

        async def rpc(self, method: str, params: Any = ()) -> Any:
            assert method == "rpc_methods"
            self.asked += 1
            return {"methods": ["grandpa_proveFinality"]}

    node = Node()
    with pytest.raises(AdapterError, match="does not offer state_getReadProof"):
        trio.run(proves_storage, cast(Any, node), chain)
    assert trio.run(proves_storage, cast(Any, node), HUB_FINAL) is False and node.asked == 1

    nodes: list[_Hub] = []

    @asynccontextmanager
    async def stand_in(_chain: Any) -> AsyncIterator[Any]:
        yield nodes[-1]

    def ask(hub: _Hub) -> AdapterError:
        hub.final = hub.build("block 1", {1: DELIVERED})
        nodes.append(hub)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(user_module, "_substrate", stand_in)
            with pytest.raises(AdapterError) as refused:
                trio.run(SubstrateFamily().final_delivered, config, chain, [raw(1)], {})
        assert type(refused.value) is AdapterError and "\n" not in str(refused.value)
        return refused.value

    assert "does not offer state_getReadProof" in str(ask(_Hub()))
    elsewhere = _Hub()
    elsewhere.genesis_hash = lambda: _async(b"\x99" * 32)  # type: ignore[method-assign]
    assert "endpoint reports genesis 0x9999" in str(ask(elsewhere))
    no_grandpa = _Hub()
    no_grandpa.proving = True  # read proofs, but no GRANDPA justifications
    refused = ask(no_grandpa)
    assert str(refused) == (
        "hub: final head: chain 'hub': a grandpa checkpoint is configured but "
        "ws://stand-in:9944 does not offer grandpa_proveFinality"
    )

    scanned = config.chain("assethub")  # checkpointed, policy finalized
    hub = _Hub()
    hub.build("block 1", {})
    with pytest.raises(AdapterError, match="does not offer state_getReadProof") as no_scan:
        routes = escrow_routes(config, scanned)
        trio.run(scan_remarks, cast(Any, hub), scanned, routes, range(1, 2), 0)
    assert "\n" not in str(no_scan.value)  # and no remark read: the stand-in has no remarks()


async def _async(value: Any) -> Any:
    return value


def test_shared_follower_is_one_per_config_and_chain_and_dies_with_the_config(
    tmp_path: Path,
) -> None:
    """R3 L1 (its scratch test): the delivery, the unpaid sweep and a rebuild's pages share one
    GRANDPA follower per configuration and chain (each new one walks from the checkpoint);
    another configuration has its own; the entry goes with its configuration."""
    config = load(tmp_path, with_grandpa(grandpa_table()))
    chain = config.chain("assethub")
    one = shared_follower(config, chain)
    assert one is not None and shared_follower(config, chain) is one
    other = load(tmp_path, with_grandpa(grandpa_table()))
    assert shared_follower(other, other.chain("assethub")) is not one
    assert shared_follower(config, HUB_PROVEN) is None  # no checkpoint: no follower
    gc.collect()  # the entries of configurations earlier tests dropped go first
    before = len(calls_module._FOLLOWERS)
    del config, chain, one
    gc.collect()
    assert len(calls_module._FOLLOWERS) == before - 1


def test_a_read_proof_is_bounded_before_parsing_and_verified_off_the_trio_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R3 L2: a hostile node's proof of 60 MB took 1.5 s of the trio thread (the relayer's
    lease heartbeats and other deliveries waited). Over MAX_READ_PROOF_HEX characters in all,
    or MAX_READ_PROOF_NODES_PER_KEY nodes a key, it is refused unread (a node that is no hex
    at all would otherwise be named); an honest proof is verified in a worker thread."""
    hub = _Hub()
    hub.final = hub.build("block 1", {1: DELIVERED})
    header: Any = trio.run(hub.finalized_head)
    keys = [guard_key(1, 1), guard_key(1, 2)]
    verified_on: list[int] = []
    verify = finality_module.verify_read_proof

    def watched(*args: Any) -> Any:
        verified_on.append(threading.get_ident())
        return verify(*args)

    monkeypatch.setattr(finality_module, "verify_read_proof", watched)
    assert trio.run(read_proof, cast(Any, hub), keys, header) == {
        keys[0]: DELIVERED,
        keys[1]: None,
    }
    assert verified_on and threading.get_ident() not in verified_on

    big = "0x" + "00" * (MAX_READ_PROOF_HEX // 2)  # 2 characters over the bound by itself
    most = MAX_READ_PROOF_NODES_PER_KEY * len(keys)
    for proof, says in (
        ([big, "not hex"], f"over the bound of {MAX_READ_PROOF_HEX:,}: refused unread"),
        (["0x00"] * (most + 1), f"{most + 1} proof nodes for 2 key(s), over the bound of {most}"),
    ):
        hub.lie = lambda _m, p, proof=proof: {"at": p[1], "proof": proof}
        with pytest.raises(AdapterError, match=re.escape(says)) as refused:
            trio.run(read_proof, cast(Any, hub), keys, header)
        assert str(refused.value).startswith("state_getReadProof at #1 on ws://stand-in:9944: ")
    assert len(verified_on) == 1  # neither was parsed nor verified
    hub.lie = lambda _m, p: {"at": p[1], "proof": ["0x00"] * most}  # at the bound: read
    with pytest.raises((AdapterError, VerificationError)) as junk:
        trio.run(read_proof, cast(Any, hub), keys, header)
    assert "over the bound" not in str(junk.value) and len(verified_on) == 2


def test_a_message_is_not_given_up_while_the_final_head_shows_it_delivered(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R3 L6: a node whose best-block read hides a delivered item made its proposal time out
    again and again; the fifth time alone, the message was failed for good ("gave up") though
    the chain had it. Before that last word the final head (proven) is read: 1, delivered
    there, is recorded delivered; 2, absent there, is given up as before; 3, whose final head
    cannot be read, is not given up (retried after the longest backoff)."""
    caplog.set_level(logging.WARNING, logger="passerelle.relayer")
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    hub.proving = True
    r.delivery.relayer.confirm_timeout = 0.0
    for n in (1, 2, 3):  # four failed attempts alone: the next is the last
        for _ in range(MAX_DELIVERY_ATTEMPTS - 1):
            r.delivery._fail_undelivered([mid(n)])
            ledger.transition([mid(n)], S.ATTESTED)  # what the requeue does
    hub.final = hub.build("block 1", {1: DELIVERED})
    truth = hub.rpc

    async def hiding(method: str, params: Any = ()) -> Any:
        if method == "state_queryStorageAt":  # the best block "has" no item at all
            return [{"block": params[1], "changes": [[k, None] for k in params[0]]}]
        return await truth(method, params)

    hub.rpc = hiding  # type: ignore[method-assign]

    def last_attempt(n: int) -> MessageRecord:
        _clear(r.store)
        r.store.publish(proposal(n, created=time.time() - 1))
        trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
        record = ledger.get(mid(n))
        assert record is not None
        return record

    assert last_attempt(1).status == S.DELIVERED
    assert hub.proof_reads[-1] == [to_hex(guard_key(1, 1))]
    given_up = last_attempt(2)
    assert given_up.status == S.FAILED and given_up.next_attempt_at is None
    assert given_up.reason is not None and given_up.reason.endswith("5 times: gave up")

    async def unreadable() -> Any:
        raise AdapterError("chain_getFinalizedHead on ws://stand-in:9944: boom")

    hub.finalized_head = unreadable  # type: ignore[method-assign]
    kept = last_attempt(3)
    assert kept.status == S.FAILED and kept.next_attempt_at is not None
    assert kept.reason is not None and kept.reason.endswith(
        "5 times: not given up, the final head could not be read"
    )


# ------------------------------------------------------------------ final review (RFINAL, FF1)


@pytest.fixture(autouse=True)
def _fresh_proving_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """``proves_storage``'s answers are kept per endpoint for the process (RFINAL L4): every
    stand-in here is ``ws://stand-in:9944`` of chain ``hub``, offering proofs or not, so each
    test starts with none remembered."""
    monkeypatch.setattr(calls_module, "_PROVING", {})


class _Ticking:
    """A wall clock that moves on by ``step`` seconds each time it is read, as it does while a
    round reads the final head, writes the ledger and removes proposals in a burst."""

    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start, step

    def time(self) -> float:
        self.now += self.step
        return self.now - self.step


def test_a_timeout_crossed_during_the_check_never_gives_up_without_the_final_read(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFINAL M1: the check read the clock twice, once to choose which lone proposals of ours
    get their final head read before being failed (the "last chance"), once to time them out.
    A proposal crossing its timeout between the two was failed without that read and, at its
    fifth attempt, given up for good on the best block's word alone, though the final head
    (proven) shows it delivered. Read once, the clock cannot disagree with itself: 1 is never
    failed, and is recorded delivered from the final head within two rounds."""
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    hub.proving = True
    r.delivery.relayer.confirm_timeout = 60.0
    for _ in range(MAX_DELIVERY_ATTEMPTS - 1):  # four failed attempts alone: the next is the last
        r.delivery._fail_undelivered([mid(1)])
        ledger.transition([mid(1)], S.ATTESTED)
    hub.final = hub.build("block 1", {1: DELIVERED})  # the chain has it, final
    truth = hub.rpc

    async def hiding(method: str, params: Any = ()) -> Any:
        if method == "state_queryStorageAt":  # the best read hides it (a stale or lying node)
            return [{"block": params[1], "changes": [[k, None] for k in params[0]]}]
        return await truth(method, params)

    hub.rpc = hiding  # type: ignore[method-assign]
    clock = _Ticking(time.time(), 1.0)
    _clear(r.store)
    r.store.publish(proposal(1, created=clock.now - 59.5))  # 0.5 s before its timeout
    monkeypatch.setattr(delivery_module, "time", clock)
    seen = []
    for _ in range(2):
        trio.run(r.delivery._deliver_substrate_once, HUB_PROVEN, cast(Any, hub), r.store)
        record = ledger.get(mid(1))
        assert record is not None
        seen.append(record.status)
        assert record.status != S.FAILED, record.reason  # never failed, let alone given up
    assert seen[-1] == S.DELIVERED and hub.proof_reads[-1] == [to_hex(guard_key(1, 1))]


def test_a_message_held_by_the_best_block_alone_is_said_once_after_confirm_timeout(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFINAL L3: attested messages that the best block shows handled and the final head does
    not, in no proposal of ours (here a batch that is not ours; or ours removed from the store,
    or a lying best read), are neither proposed nor recorded, and nothing said so. Now, held
    longer than confirm_timeout, they are named in ONE warning line, once (the first five ids
    and a count: a best read claiming everything is one line, not thousands); held no longer
    (recorded from the final head, or shown no more), their clocks stop."""
    caplog.set_level(logging.WARNING, logger="passerelle.relayer")
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    r.delivery.relayer.confirm_timeout = 60.0
    clock = [time.time()]
    monkeypatch.setattr(delivery_module, "time", SimpleNamespace(time=lambda: clock[0]))
    hub.final = hub.build("block 1", {})
    hub.build("block 2", dict.fromkeys(range(1, 7), DELIVERED))  # best: all six handled

    def run(after: float) -> list[str]:
        clock[0] += after
        trio.run(r.delivery._deliver_substrate_once, HUB_FINAL, cast(Any, hub), r.store)
        return _warnings(caplog)

    assert run(0) == []  # held, not for long yet
    assert run(60) == []  # exactly confirm_timeout: not over it
    [line] = run(1)
    assert line == (
        "deliver to hub: 6 attested message(s) handled in the best block for over 60 s, in no "
        "proposal of ours, the final head (#1) does not show them yet: held (not proposed "
        "again) until the final head shows them or the best block no longer does: "
        + ", ".join(mid(n) for n in range(1, 6))
        + " and 1 more"
    )
    assert run(300) == []  # once per message
    assert [status(ledger, n) for n in range(1, 7)] == [S.ATTESTED] * 6
    assert r.store.pending(ASSETHUB) == []  # nothing proposed meanwhile

    hub.final = hub.build("block 2, final", dict.fromkeys(range(1, 6), DELIVERED))
    hub.head = hub.build("block 3", dict.fromkeys(range(1, 7), DELIVERED))  # 6: best only
    assert run(1) == []
    assert [status(ledger, n) for n in range(1, 7)] == [S.DELIVERED] * 5 + [S.ATTESTED]
    assert set(r.delivery._held_since) == {mid(6)}  # the recorded are forgotten
    hub.head = hub.build("block 4", dict.fromkeys(range(1, 6), DELIVERED))  # 6 shown no more
    run(1)
    assert r.delivery._held_since == {} and r.delivery._held_warned == set()
    assert [list(p.messages) for _, p in r.store.pending(ASSETHUB)] == [[raw(6)]]


def test_read_proofs_are_asked_once_an_endpoint_and_a_no_never_stands_under_a_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFINAL L4: the unpaid sweep and every ``ledger rebuild`` page open a new connection per
    call (``final_delivered``), and ``proves_storage`` kept its answer per connection: each page
    asked ``rpc_methods`` again and, on a node without read proofs, warned again. Kept per
    endpoint (chain, URL) for the process: three pages, three connections, one question and
    one warning; another URL is another endpoint. Hostile: a "no" remembered for an endpoint
    without a checkpoint never stands for a chain of that name and URL WITH one (it is asked,
    refused, and not remembered); a "yes" stands."""
    from relayer.families.substrate import SubstrateFamily  # noqa: PLC0415
    from relayer.families.substrate import user as user_module  # noqa: PLC0415

    caplog.set_level(logging.WARNING)
    connections: list[_Hub] = []

    @asynccontextmanager
    async def connect(_chain: Any) -> AsyncIterator[Any]:
        hub = _Hub()
        hub.final = hub.build("block 1", {1: DELIVERED})
        connections.append(hub)
        yield hub

    monkeypatch.setattr(user_module, "_substrate", connect)
    family = SubstrateFamily()
    for _ in range(3):
        assert trio.run(family.final_delivered, cast(Any, None), HUB_PROVEN, [raw(1)], {}) == [True]
    assert [c.methods_asked for c in connections] == [1, 0, 0]
    assert len([w for w in _warnings(caplog) if "does not offer state_getReadProof" in w]) == 1

    elsewhere = _Hub()
    elsewhere.url = "ws://another:9944"
    assert trio.run(proves_storage, cast(Any, elsewhere), HUB_PROVEN) is False
    assert elsewhere.methods_asked == 1 and len(_warnings(caplog)) == 1

    _config, checkpointed = _checkpointed(tmp_path)  # chain "hub" too, same URL
    strict = _Hub()
    for _ in range(2):
        with pytest.raises(AdapterError, match="does not offer state_getReadProof"):
            trio.run(proves_storage, cast(Any, strict), checkpointed)
    assert strict.methods_asked == 2  # asked each time, the "no" above not taken
    strict.proving = True  # the node offers proofs now: used, and remembered
    assert trio.run(proves_storage, cast(Any, strict), checkpointed) is True
    assert trio.run(proves_storage, cast(Any, _Hub()), checkpointed) is True
    assert strict.methods_asked == 3


def _counted_trail(ledger: Ledger, message_id: str, events: int) -> None:
    """``events`` // 2 timed-out proposals of ``message_id`` alone, each re-queued: months of a
    message retried while the final head could not be read, written by SQL."""
    reason = "not delivered by the committee within 60 s, 5 times: not given up, the final head"
    rows: list[dict[str, str | None]] = [
        {"m": message_id, "f": "attested", "t": "failed", "r": reason + " could not be read"},
        {"m": message_id, "f": "failed", "t": "attested", "r": None},
    ] * (events // 2)
    with ledger.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO status_events (message_id, from_status, to_status, reason, at) "
                "VALUES (:m, :f, :t, :r, 1.0)"
            ),
            rows,
        )


def test_a_timed_out_proposal_reads_a_bounded_trail_per_message(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFINAL L5: failing a timed-out proposal read each of its messages' WHOLE trail inside
    the write transaction (up to a batch's worth), and a message retried for ever while the
    final head cannot be read has a trail that only grows. Now one page of each (the count
    stops past what the give-up and the longest backoff need): 10,000 events each, at most 64
    loaded per message; the lone one is still given up (its count is right), the batch's
    still retried in halves; a short trail still counts exactly (test above: "5 times")."""
    r = Round(tmp_path, ledger, monkeypatch)
    for n in (1, 2, 3):
        _counted_trail(ledger, mid(n), 10_000)
    loaded: list[object] = []

    def listener(target: object, _context: object) -> None:
        loaded.append(target)

    sa.event.listen(StatusEvent, "load", listener)
    try:
        r.delivery._fail_undelivered([mid(1)])
        alone = len(loaded)
        r.delivery._fail_undelivered([mid(2), mid(3)])
    finally:
        sa.event.remove(StatusEvent, "load", listener)
    assert 0 < alone <= 64 and len(loaded) <= 3 * 64, (alone, len(loaded))
    given_up = ledger.get(mid(1))
    assert given_up is not None and given_up.next_attempt_at is None
    assert given_up.reason is not None and given_up.reason.endswith("over 5 times: gave up")
    batched = ledger.get(mid(2))
    assert batched is not None and batched.next_attempt_at is not None
    assert batched.reason is not None and batched.reason.startswith("its batch of 2 was")


HOSTILE = "boom\n2026-12-07 WARNING forged line\x1b[31m\x00"


def test_node_words_in_the_delivery_lines_are_one_printable_line(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFINAL L6: the lines that quote a node's (or store's) words, "... not read, nothing
    recorded delivered this round", the two of a round whose proposing and check both failed,
    and ``final_delivered``'s AdapterError, kept control characters (ESC, NUL: a terminal
    escape in the log) and had no bound. Now each is adapters.text.one_line of it."""
    from relayer.families.substrate import SubstrateFamily  # noqa: PLC0415
    from relayer.families.substrate import user as user_module  # noqa: PLC0415

    caplog.set_level(logging.WARNING, logger="passerelle.relayer")
    r, hub = _real_round(tmp_path, ledger, monkeypatch)
    hub.final = hub.build("block 1", {})
    hub.build("block 2", {1: DELIVERED})

    async def broken() -> Any:
        raise AdapterError(HOSTILE + "x" * 5_000)

    hub.finalized_head = broken  # type: ignore[method-assign]
    trio.run(r.delivery._deliver_substrate_once, HUB_FINAL, cast(Any, hub), r.store)
    assert r.delivery._logged(HUB, AdapterError(HOSTILE), "proposing: ")  # a failed round
    # Proposing writes outside the lease's domain (raised: it ends the task), the check fails
    # in a way no rule names: that one is _both_failed's own line.
    both = _both_fail(
        Round(tmp_path, ledger, monkeypatch), monkeypatch, WriteOutsideDomain("not ours")
    )

    def refuse(_key: Any) -> None:
        raise RuntimeError(HOSTILE)

    monkeypatch.setattr(both.store, "remove", refuse)
    with pytest.raises(WriteOutsideDomain):
        trio.run(both.delivery._deliver_substrate_once, HUB, cast(Any, None), both.store)
    lines = _warnings(caplog)
    assert len(lines) == 3, lines
    assert lines[2].startswith("deliver to hub: checking live proposals: RuntimeError: boom?")
    for line in lines:
        assert line.isprintable() and "boom?2026-12-07 WARNING forged line?[31m?" in line
        assert len(line) < 1_000

    @asynccontextmanager
    async def stand_in(_chain: Any) -> AsyncIterator[Any]:
        yield hub

    monkeypatch.setattr(user_module, "_substrate", stand_in)
    config, chain = _checkpointed(tmp_path)
    hub.proving = True

    async def unverifiable(*_args: Any) -> Any:
        raise VerificationError(HOSTILE)  # a justification's check quoting what the node sent

    monkeypatch.setattr(user_module, "final_header", unverifiable)
    with pytest.raises(AdapterError) as refused:
        trio.run(SubstrateFamily().final_delivered, config, chain, [raw(1)], {})
    assert str(refused.value).isprintable() and "forged line?[31m?" in str(refused.value)
