"""Three ``passerelle relay`` processes share one PostgreSQL ledger (relayer/leases.py), end to
end on the devnet's two anvil chains: the routes' six tasks spread over the three, one relayer
is SIGKILLed while 120 messages flow both ways, its leases are taken over within a
lease period, and every message is delivered exactly once on chain (the Inboxes' ``Delivered``
events are the judge) with the redundant work bounded by what the dead one had in flight.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from e2e_support import (
    Procs,
    assert_delivered_once,
    block_number,
    running,
    send,
    wait_delivered,
    wait_until,
)
from test_devnet_scale import state_dir as state_dir  # noqa: PLC0414 - a fixture

from devnet import manager
from devnet.process import free_ports
from relayer.config import Config, load_config
from relayer.ledger import MessageStatus, open_ledger

pytestmark = pytest.mark.chain

LEASE = 2.0  # seconds: a takeover then waits at most ~2.5 s (a lease and a round)
RELAYERS = 3
MESSAGES = 60  # per route, both ways: 120 in all
BATCH, INFLIGHT = 10, 2  # per relayer and destination: what one kill can leave in flight


@pytest.fixture
def shared_config(state_dir: Path) -> Path:
    """The devnet's two anvil chains with its PostgreSQL ledger (``devnet up --postgres``, in
    test_devnet_scale's ``state_dir``: one PostgreSQL's user can reach, downed afterwards), and
    short leases so that a takeover fits in a test."""
    path = manager.up(state_dir, assethub=False, postgres=True)
    text = path.read_text()
    assert text.count("[relayer]\n") == 1
    path.write_text(text.replace("[relayer]\n", f"[relayer]\nlease_seconds = {LEASE}\n"))
    return path


def leases(config: Config) -> dict[str, tuple[str | None, int, float]]:
    """Lease name → (holder, token, claimed_at), read with plain SQL (not the code under
    test)."""
    engine = sa.create_engine(config.ledger, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT name, holder, token, claimed_at FROM leases")
            ).all()
    finally:
        engine.dispose()
    return {name: (holder, token, claimed) for name, holder, token, claimed in rows}


def pid_of(holder: str | None) -> int | None:
    """A holder is ``host/pid/random`` (relayer.leases.new_holder_name)."""
    return None if holder is None else int(holder.split("/")[1])


@pytest.mark.slow
def test_three_relayers_share_the_routes_and_one_is_killed(
    shared_config: Path, tmp_path: Path
) -> None:
    config = load_config(shared_config)
    assert config.ledger.startswith("postgresql"), config.ledger
    ports = dict(zip(range(RELAYERS), free_ports(RELAYERS), strict=True))
    with running(shared_config, tmp_path, relayer=False) as procs:
        for index in range(RELAYERS):
            procs.start_relayer(
                *("--batch-size", str(BATCH), "--max-inflight", str(INFLIGHT)),
                *("--index", str(index), "--metrics-port", str(ports[index])),
                name=f"relayer{index}",
            )
        pids = {proc.pid: name for name, proc in procs.running.items()}

        def spread() -> bool:
            held = [pid_of(holder) for holder, _, _ in leases(config).values()]
            counts = [held.count(pid) for pid in pids if pids[pid].startswith("relayer")]
            return len(held) == 6 and sorted(counts) == [2, 2, 2]

        # Balance: six tasks (scan, collect, deliver for alpha and beta), two each.
        wait_until(spread, "the six leases spread two by two", timeout=30)

        since = {name: block_number(config, name) for name in ("alpha", "beta")}
        sent: dict[tuple[str, str], list[str]] = {}
        failed: list[BaseException] = []

        def burst(origin: str, destination: str) -> None:
            try:
                body = ("--body", f"shared {origin}->{destination}", "--count", str(MESSAGES))
                sent[origin, destination] = [
                    m["id"] for m in send(shared_config, origin, destination, *body)
                ]
            except BaseException as error:  # re-raised below, in the test's thread
                failed.append(error)

        senders = [
            threading.Thread(target=burst, args=route)
            for route in (("alpha", "beta"), ("beta", "alpha"))
        ]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)
        if failed:
            raise failed[0]
        assert set(sent) == {("alpha", "beta"), ("beta", "alpha")}

        # Kill the relayer delivering to beta, in the middle of its deliveries.
        beta = config.chain("beta").domain
        wait_until(
            lambda: carried_count(config, beta) > 0, "the first deliveries to beta", 60, 0.05
        )
        held = leases(config)
        victim = pids[pid_of(held[f"deliver:{beta}"][0]) or 0]
        its_leases = {
            name
            for name, (holder, _, _) in held.items()
            if pid_of(holder) == procs.running[victim].pid
        }
        assert len(its_leases) == 2, held
        killed_at = time.time()
        assert procs.stop(victim, signal.SIGKILL) == -signal.SIGKILL
        assert carried_count(config, beta) < MESSAGES, "killed too late: nothing in flight"

        # Its leases go to the two others within a lease period and a round of its last renewal.
        def taken_over() -> bool:
            now = leases(config)
            return all(pid_of(now[name][0]) in procs_pids(procs) for name in its_leases)

        wait_until(taken_over, "the killed relayer's leases taken over", timeout=4 * LEASE)
        after = leases(config)
        for name in its_leases:
            _, token, claimed_at = after[name]
            assert token == held[name][1] + 1, (name, held[name], after[name])
            assert claimed_at - killed_at <= LEASE + LEASE / 4 + 1.0, (name, claimed_at - killed_at)

        # Counted where an operator looks: the survivors' metrics.
        survivors = [name for name in procs.running if name.startswith("relayer")]
        numbers = [metrics(ports[int(name[-1])]) for name in survivors]
        assert sum(n["passerelle_lease_takeovers_total"] for n in numbers) >= len(its_leases)
        assert sum(n.get("passerelle_leases_held", 0) for n in numbers) == 6

        ids = [i for route in sent.values() for i in route]
        wait_delivered(shared_config, ids, procs, timeout=120)
        # One fault per destination at most: the kill (its other lease may have been alpha's
        # delivery too); the balance settled before any message was sent.
        for (_, destination), route_ids in sent.items():
            assert_delivered_once(
                config,
                destination,
                route_ids,
                since=since[destination],
                faults=1,
                batch_size=BATCH,
                max_inflight=INFLIGHT,
            )
        with open_ledger(config.ledger, check_integrity=False) as ledger:
            assert ledger.counts_by_status()[MessageStatus.DELIVERED] == len(ids)
            assert ledger.verify_audit() == []
        assert len(survivors) == 2
        assert any(
            "took" in procs.log(name) and "over from" in procs.log(name) for name in survivors
        )
        for name in sorted(procs.running):
            assert "Traceback" not in procs.log(name), procs.log(name)[-3000:]
        for name in sorted(procs.running):
            assert procs.stop(name, signal.SIGTERM) == 0, procs.log(name)[-2000:]
        # A clean stop gives the leases back at once.
        assert all(holder is None for holder, _, _ in leases(config).values())


def metrics(port: int) -> dict[str, float]:
    """A relayer's /metrics, each family summed over its labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            family = name.split("{", 1)[0]
            sums[family] = sums.get(family, 0.0) + float(value)
    return sums


def procs_pids(procs: Procs) -> set[int | None]:
    return {proc.pid for proc in procs.running.values()}


def carried_count(config: Config, destination: int) -> int:
    """Messages to ``destination`` in a delivery transaction or delivered (plain SQL)."""
    engine = sa.create_engine(config.ledger, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text(
                        "SELECT count(*) FROM messages WHERE destination = :d "
                        "AND status IN ('submitted', 'delivered')"
                    ),
                    {"d": destination},
                ).scalar_one()
            )
    finally:
        engine.dispose()
