"""A process that hammers a ledger with legal-looking transitions, for tests/test_ledger.py.

Usage: ``python ledger_crash_worker.py LOCATION SEED MODE [SECONDS]``, where LOCATION is a SQLite
file or a database URL (``postgresql+psycopg://…``): the test runs both.

- ``crash``: loop forever (the test SIGKILLs it at a random moment);
- ``race``: run for SECONDS, then print one JSON line of statistics. Two of these run on the
  same messages at once; each picks a move that is legal for the status it *read*, which the
  other process may have changed since, so the ledger must re-check under its write lock.

Prints ``loaded`` once imported, waits for a ``go`` line on stdin (so the parent can hide the
import time and start two workers together), then opens the ledger and prints ``ready``. The
parent set up the messages and a checkpoint; see ``prepare_shared_ledger`` in the test.
"""

from __future__ import annotations

import json
import random
import sys
import time

from relayer.ledger import (
    TRANSITIONS,
    IllegalTransition,
    InvalidReference,
    Ledger,
    MessageRecord,
    MessageStatus,
    NewTransaction,
    TxStatus,
    open_ledger,
)

ORIGIN = 1
DESTINATION = 2
S = MessageStatus


def choose_target(rng: random.Random, status: MessageStatus, rare: int) -> MessageStatus | None:
    """A legal next status, the terminal one ``rare`` times less often, to keep things moving."""
    options = sorted(TRANSITIONS[status])
    if not options:
        return None
    weights = [1 if target is S.DELIVERED else rare for target in options]
    return rng.choices(options, weights)[0]


def step(ledger: Ledger, rng: random.Random, checkpoint_id: int, serial: int, *, race: bool) -> str:
    counts = ledger.counts_by_status()
    live = [s for s, n in counts.items() if n and s is not S.DELIVERED]
    if not live:
        return "idle"
    status = rng.choice(live)
    candidates: list[MessageRecord] = ledger.by_status(status, limit=50)
    if not candidates:
        return "idle"
    rows = rng.sample(candidates, rng.randint(1, min(4, len(candidates))))
    ids = [row.id for row in rows]
    target = choose_target(rng, status, rare=200 if race else 6)
    if target is None:
        return "idle"
    if race:
        time.sleep(rng.uniform(0, 0.004))  # widen the read-then-write window for the other
    try:
        if target is S.ATTESTED:
            if status is S.SUBMITTED:  # the carrying transaction was dropped
                with ledger.atomic() as batch:
                    for tx_hash in {r.delivery_tx_hash for r in rows if r.delivery_tx_hash}:
                        tx = batch.get_transaction(DESTINATION, tx_hash)
                        if tx is not None and tx.status is TxStatus.PENDING:
                            batch.update_transaction(
                                DESTINATION, tx_hash, TxStatus.FAILED, error="dropped"
                            )
                    batch.transition(ids, target)
            else:
                ledger.transition(ids, target, checkpoint_id=checkpoint_id)
        elif target is S.SUBMITTED:
            tx = NewTransaction(
                chain=DESTINATION,
                hash=rng.randbytes(32),
                sender=b"\x11" * 20,
                nonce=serial,
                gas_limit=200_000,
                max_fee_per_gas=rng.randrange(2**70),
            )
            ledger.record_transaction(tx, ids)
        elif target is S.DELIVERED and status is S.SUBMITTED:
            with ledger.atomic() as batch:
                for tx_hash in {r.delivery_tx_hash for r in rows if r.delivery_tx_hash}:
                    batch.update_transaction(
                        DESTINATION, tx_hash, TxStatus.CONFIRMED, gas_used=60_000, fee_paid=2**65
                    )
                batch.transition(ids, target, tx_hash=rows[0].delivery_tx_hash)
        elif target is S.FAILED:
            ledger.transition(
                ids, target, reason=f"attempt {serial} reverted", retry_at=time.time() + 1
            )
        elif target in (S.SKIPPED, S.DISCOVERED, S.UNPAID):
            ledger.transition(ids, target, reason=f"operator {serial}")
        else:
            ledger.transition(ids, target)
    except (IllegalTransition, InvalidReference):
        return "refused"  # the status changed under us (race mode): nothing was written
    return "moved"


def main() -> None:
    location, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    print("loaded", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    rng = random.Random(seed)
    ledger = open_ledger(location)
    checkpoint = ledger.latest_checkpoint(ORIGIN)
    assert checkpoint is not None and checkpoint.id is not None
    print("ready", flush=True)
    # Race mode starts its clock only when every worker has opened the ledger (the slow part
    # on a loaded machine): otherwise one could finish before the other began, and the race
    # the test is about would not happen.
    if mode == "race" and sys.stdin.readline().strip() != "start":
        return
    stats = {"moved": 0, "refused": 0, "idle": 0, "start": time.time(), "end": 0.0}
    deadline = time.monotonic() + seconds if mode == "race" else float("inf")
    serial = seed * 1_000_000
    while time.monotonic() < deadline:
        serial += 1
        stats[step(ledger, rng, checkpoint.id, serial, race=mode == "race")] += 1
    stats["end"] = time.time()
    ledger.close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
