"""Three ``passerelle relay`` processes share one PostgreSQL ledger (relayer/leases.py), end to
end on three anvil chains (``devnet up --evm-chains 3 --postgres``): the routes' nine tasks
spread over the three, 300 messages flow over all six routes, the relayer delivering to beta is
SIGKILLed in the middle of its deliveries, its leases are taken over within a lease period, a
survivor is then frozen (SIGSTOP) and its share taken over too, and woken (SIGCONT) it finds its
leases lost and goes on. Every message is delivered exactly once on chain (the Inboxes'
``Delivered`` events are the judge) and NONE is sent twice: a takeover follows the ledger
before it judges its predecessor's deliveries, and does not call its predecessor's
transactions in flight dropped (no ``AlreadyDelivered`` event at all).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from e2e_support import (
    Procs,
    assert_delivered_once,
    block_number,
    delivery_work,
    send,
    wait_delivered,
    wait_until,
)
from test_devnet_scale import state_dir as state_dir  # noqa: PLC0414 - a fixture

from benchmarks.harness import rpc
from devnet import manager
from devnet.process import free_ports
from light_clients.committee import address_of
from light_clients.hexstr import to_hex
from relayer.config import Config, load_config
from relayer.ledger import MessageStatus, open_ledger

pytestmark = pytest.mark.chain

LEASE = 2.0  # seconds: a takeover then waits at most ~2.5 s (a lease and a round)
RELAYERS = 3
CHAINS = ("alpha", "beta", "delta")
ROUTES = [(a, b) for a in CHAINS for b in CHAINS if a != b]  # six routes
MESSAGES = 50  # per route: 300 in all
TASKS = 3 * len(CHAINS)  # scan, collect and deliver per chain
BATCH, INFLIGHT = 10, 2  # per relayer and destination: what one kill can leave in flight


@pytest.fixture
def shared_config(state_dir: Path) -> Path:
    """The devnet's three anvil chains with its PostgreSQL ledger (``devnet up --evm-chains 3
    --postgres``, in test_devnet_scale's ``state_dir``: one PostgreSQL's user can reach, downed
    afterwards), and short leases so that a takeover fits in a test."""
    path = manager.up(state_dir, assethub=False, postgres=True, evm_chains=len(CHAINS))
    text = path.read_text()
    assert text.count("[relayer]\n") == 1
    path.write_text(text.replace("[relayer]\n", f"[relayer]\nlease_seconds = {LEASE}\n"))
    return path


def leases(config: Config, *, keys: bool = False) -> dict[str, tuple[str | None, int, float]]:
    """Lease name → (holder, token, claimed_at), read with plain SQL (not the code under
    test): the tasks' leases, or with ``keys`` the relayers' key leases (``key:<address>``)."""
    engine = sa.create_engine(config.ledger, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT name, holder, token, claimed_at FROM leases")
            ).all()
    finally:
        engine.dispose()
    return {
        name: (holder, token, claimed)
        for name, holder, token, claimed in rows
        if name.startswith("key:") == keys
    }


@contextmanager
def signers(config: Path, logs: Path) -> Iterator[Procs]:
    """Two of the three attesters (the threshold): a third costs CPU the relayers need on a
    2-core machine, and signs nothing the test needs. Every process started in the block, by
    this or by the test, is stopped on exit."""
    procs = Procs(config, logs)
    try:
        for index in range(2):
            procs.start_attester(index)
        yield procs
    finally:
        procs.stop_all()


def pid_of(holder: str | None) -> int | None:
    """A holder is ``host/pid/random`` (relayer.leases.new_holder_name)."""
    return None if holder is None else int(holder.split("/")[1])


@pytest.mark.slow
def test_three_relayers_share_six_routes_one_killed_one_frozen(
    shared_config: Path, tmp_path: Path
) -> None:
    config = load_config(shared_config)
    assert config.ledger.startswith("postgresql"), config.ledger
    ports = dict(zip(range(RELAYERS), free_ports(RELAYERS), strict=True))
    with signers(shared_config, tmp_path) as procs:
        since = {name: block_number(config, name) for name in CHAINS}
        sent: dict[tuple[str, str], list[str]] = {}
        failed: list[BaseException] = []

        def burst(origin: str) -> None:
            # One thread per origin: its sends share the client key, and so its nonces.
            try:
                for route in [r for r in ROUTES if r[0] == origin]:
                    body = ("--body", f"shared {route[0]}->{route[1]}", "--count", str(MESSAGES))
                    sent[route] = [m["id"] for m in send(shared_config, *route, *body)]
            except BaseException as error:  # re-raised below, in the test's thread
                failed.append(error)

        # The messages go out while the relayers start and divide the leases: handoffs under
        # traffic are part of what must cost no second delivery.
        senders = [threading.Thread(target=burst, args=(origin,)) for origin in CHAINS]
        for thread in senders:
            thread.start()
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
            return len(held) == TASKS and sorted(counts) == [3, 3, 3]

        # Balance: nine tasks (scan, collect, deliver for each chain), three each; and each
        # relayer holds the lease of its own key for its whole life.
        wait_until(spread, "the nine leases spread three by three", timeout=30)
        keys = leases(config, keys=True)
        assert len(keys) == RELAYERS
        assert {pid_of(holder) for holder, _, _ in keys.values()} == {
            proc.pid for name, proc in procs.running.items() if name.startswith("relayer")
        }

        # Kill the relayer delivering to beta, in the middle of its deliveries.
        beta = config.chain("beta").domain
        wait_until(
            lambda: carried_count(config, beta) > 0, "the first deliveries to beta", 90, 0.05
        )
        held = leases(config)
        victim = pids[pid_of(held[f"deliver:{beta}"][0]) or 0]
        its_leases = {
            name
            for name, (holder, _, _) in held.items()
            if pid_of(holder) == procs.running[victim].pid
        }
        assert len(its_leases) == 3, held

        def taken_over(names: set[str]) -> bool:
            now = leases(config)
            return all(pid_of(now[name][0]) in procs_pids(procs) for name in names)

        # beta stops mining around the kill: the victim's last deliveries stay in the pool, on
        # their way, while its successor takes over and settles them for the first time. They
        # must be watched, not called dropped and sent again (AlreadyDelivered below).
        url = config.chain("beta").rpc[0]
        rpc(url, "evm_setIntervalMining", [0])
        try:
            wait_until(
                lambda: address(config, victim) in pool_senders(url),
                "a delivery of the victim waiting in beta's pool",
                30,
                0.05,
            )
            killed_at = time.time()
            assert procs.stop(victim, signal.SIGKILL) == -signal.SIGKILL
            assert carried_count(config, beta) < 2 * MESSAGES, "killed too late"
            # Its leases go to the two others within a lease period and a round of its last
            # renewal; the successor's own first delivery comes after its first settle.
            wait_until(lambda: taken_over(its_leases), "the killed one's leases", 4 * LEASE)
            successor = pids[pid_of(leases(config)[f"deliver:{beta}"][0]) or 0]
            wait_until(
                lambda: address(config, successor) in pool_senders(url),
                "the successor's first delivery to beta",
                30,
                0.05,
            )
        finally:
            rpc(url, "evm_setIntervalMining", [1])
        after = leases(config)
        for name in its_leases:
            _, token, claimed_at = after[name]
            assert token == held[name][1] + 1, (name, held[name], after[name])
            assert claimed_at - killed_at <= LEASE + LEASE / 4 + 1.0, (name, claimed_at - killed_at)

        # Freeze a survivor (SIGSTOP: a stalled VM) while the messages still flow: the last
        # one takes its share over; woken, it finds its leases lost and goes on, writing nothing
        # under them (fencing; the exactly-once checks below hold).
        survivors = sorted(name for name in procs.running if name.startswith("relayer"))
        frozen, awake = procs.running[survivors[0]], procs.running[survivors[1]]
        frozen.send_signal(signal.SIGSTOP)
        try:
            wait_until(
                lambda: all(pid_of(h) == awake.pid for h, _, _ in leases(config).values()),
                "every lease at the one relayer awake",
                timeout=4 * LEASE + 2,
            )
        finally:
            frozen.send_signal(signal.SIGCONT)
        wait_until(
            lambda: "leases: lost" in procs.log(survivors[0]), "the woken one's lost leases", 20
        )

        for thread in senders:
            thread.join(180)
        if failed:
            raise failed[0]
        assert set(sent) == set(ROUTES)
        ids = [i for route in sent.values() for i in route]
        assert len(ids) == len(set(ids)) == len(ROUTES) * MESSAGES
        wait_delivered(shared_config, ids, procs, timeout=120, since=since)

        # Counted where an operator looks: the survivors' metrics.
        numbers = [metrics(ports[int(name[-1])]) for name in survivors]
        assert sum(n["passerelle_lease_takeovers_total"] for n in numbers) >= 2 * len(its_leases)
        wait_until(
            lambda: (
                sum(metrics(ports[int(n[-1])]).get("passerelle_leases_held", 0) for n in survivors)
                == TASKS
            ),
            "every lease held",
            timeout=4 * LEASE,
        )

        # Exactly once on chain, and not one message sent twice: no AlreadyDelivered at all.
        for destination in CHAINS:
            route_ids = [i for (_, d), group in sent.items() if d == destination for i in group]
            assert_delivered_once(
                config,
                destination,
                route_ids,
                since=since[destination],
                faults=2,  # the kill and the freeze: bounds the wasted transactions only
                batch_size=BATCH,
                max_inflight=INFLIGHT,
            )
            work = delivery_work(config, destination, since[destination])
            assert not work.already, f"{destination}: messages sent twice: {work}"
        with open_ledger(config.ledger, check_integrity=False) as ledger:
            assert ledger.counts_by_status()[MessageStatus.DELIVERED] == len(ids)
            assert ledger.verify_audit() == []
        assert any(
            "took" in procs.log(name) and "over from" in procs.log(name) for name in survivors
        )
        for name in sorted(procs.running):
            assert "Traceback" not in procs.log(name), procs.log(name)[-3000:]
        for name in sorted(procs.running):
            assert procs.stop(name, signal.SIGTERM) == 0, procs.log(name)[-2000:]
        # A clean stop gives the leases back at once, the keys' too (the killed one's key
        # lease expires on its own).
        assert all(holder is None for holder, _, _ in leases(config).values())
        assert [pid_of(h) for h, _, _ in leases(config, keys=True).values() if h] == [
            next(pid for pid, name in pids.items() if name == victim)
        ]


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


def address(config: Config, relayer: str) -> str:
    """The address ``relayer<I>`` sends with: the config's I-th relayer key."""
    return to_hex(address_of(config.relayer_keys[int(relayer[-1])].load()))


def pool_senders(url: str) -> set[str]:
    """The senders with a transaction waiting in the node's pool (anvil's txpool_content)."""
    return {sender.lower() for sender in rpc(url, "txpool_content", [])["pending"]}


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
