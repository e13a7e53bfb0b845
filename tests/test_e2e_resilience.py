"""Resilience end to end on two real anvil chains: attesters restarted, an RPC endpoint lost.

Messages keep flowing while parts of the system go away and come back; in the end every
message is delivered, and exactly once: the destination Inbox's ``Delivered`` events are the
judge (a second delivery would emit a second event; the replay guard makes the inbox emit
``AlreadyDelivered`` instead).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e_support import (
    Procs,
    Stream,
    TcpProxy,
    assert_delivered_once,
    block_number,
    config_with_rpc,
    delivered_events,
    devnet,
    pending_to,
    rpc,
    running,
    send,
    wait_delivered,
    wait_until,
)

from light_clients.committee import address_of
from relayer.accounts import bytes32
from relayer.checkpoints import CheckpointStore
from relayer.config import Config, load_config
from relayer.ledger import open_ledger

pytestmark = pytest.mark.chain

OUTAGE = 5.0  # seconds the beta RPC endpoint is gone


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from devnet(tmp_path_factory)


@pytest.fixture
def procs(devnet_config: Path, tmp_path: Path) -> Iterator[Procs]:
    with running(devnet_config, tmp_path) as started:
        yield started


def _signed_index(config: Config, attester: int, origin: str) -> int:
    """The newest index attester ``attester`` published for ``origin`` (-1: none yet)."""
    chain = config.chain(origin)
    signer = address_of(config.attester_keys[attester].load())
    store = CheckpointStore(config.checkpoint_store)
    own = store.latest_own(chain.domain, bytes32(chain.contract("outbox")), signer)
    return -1 if own is None else own.checkpoint.index


def _signers(config: Config, origin: str, indices: range) -> set[bytes]:
    """Everyone who published a signature for one of ``indices`` of ``origin``'s outbox."""
    chain = config.chain(origin)
    store = CheckpointStore(config.checkpoint_store)
    outbox = bytes32(chain.contract("outbox"))
    return {s.signer for i in indices for s in store.signatures(chain.domain, outbox, i)}


def _ledger_status(config: Config, ids: list[str]) -> set[str]:
    """The relayer's statuses of ``ids`` ("missing" for one it has not recorded)."""
    with open_ledger(config.ledger, check_integrity=False) as ledger:
        rows = [ledger.get(i) for i in ids]
    return {"missing" if row is None else str(row.status) for row in rows}


def _assert_never_sent(config: Config, ids: list[str]) -> None:
    """No attempt to deliver any of ``ids`` to beta exists: none attested in the ledger, no
    delivery transaction of the ledger carries one, none is in a transaction in beta's pool,
    and beta's Inbox delivered none."""
    beta = config.chain("beta")
    with open_ledger(config.ledger, check_integrity=False) as ledger:
        rows = [ledger.get(i) for i in ids]
        carried = {
            i
            for tx in ledger.transactions(chain=beta.domain, limit=100_000)
            for i in ledger.transaction_messages(beta.domain, tx.hash)
        }
    statuses = {str(row.status) for row in rows if row is not None}
    assert statuses == {"final"}, f"the lone batch is {statuses} in the ledger"
    assert not carried & set(ids), "the ledger has a delivery transaction for the lone batch"
    messages = [row.message.hex() for row in rows if row is not None]
    pool = rpc(beta.rpc[0], "txpool_content", [])
    inputs = [
        str(tx.get("input", ""))
        for state in ("pending", "queued")
        for txs in pool[state].values()
        for tx in txs.values()
    ]
    assert not [m for m in messages for data in inputs if m in data], "lone batch in the pool"
    assert not set(ids) & set(delivered_events(config, "beta"))


def _assert_healthy(procs: Procs) -> None:
    """Every process still runs, none printed a traceback, and each stops cleanly on SIGTERM."""
    assert not procs.exited(), {
        name: (code, procs.log(name)[-2000:]) for name, code in procs.exited().items()
    }
    for name in sorted(procs.running):
        assert "Traceback" not in procs.log(name), procs.log(name)[-4000:]
    for name in sorted(procs.running):
        assert procs.stop(name, signal.SIGTERM) == 0, procs.log(name)[-2000:]


@pytest.mark.slow
def test_attester_restarted_mid_stream(devnet_config: Path, procs: Procs) -> None:
    """SIGKILL one attester, SIGTERM another, restart both: all delivered, once each.

    In between, only attester 2 runs: it signs, but one signature is below the threshold of
    2, so the batch sent then must wait (and does) until a second attester is back.
    """
    config = load_config(devnet_config)
    since = block_number(config, "beta") + 1
    batches: list[list[str]] = []
    nonces: list[int] = []

    def batch() -> list[str]:
        body = f"stream batch {len(batches)}"
        sent = send(devnet_config, "alpha", "beta", "--body", body, "--count", "10")
        assert len(sent) == 10
        batches.append([m["id"] for m in sent])
        nonces.extend(m["nonce"] for m in sent)
        return batches[-1]

    batch()
    time.sleep(0.5)
    assert procs.stop("attester0", signal.SIGKILL) == -signal.SIGKILL
    batch()
    time.sleep(0.5)
    assert procs.stop("attester1", signal.SIGTERM) == 0, procs.log("attester1")[-2000:]

    # Attester 2 alone: it signs the lone batch, but one signature is no quorum.
    lone = batch()
    lone_nonces = range(min(nonces[-10:]), max(nonces) + 1)
    wait_until(
        lambda: _signed_index(config, 2, "alpha") >= lone_nonces[-1],
        "attester 2 to sign the batch sent while it was alone",
    )
    alone = address_of(config.attester_keys[2].load())
    assert _signers(config, "alpha", lone_nonces) == {alone}
    # A lone signature must not be enough: the relayer has the batch, and nothing anywhere
    # shows an attempt to deliver it.
    wait_until(
        lambda: not _ledger_status(config, lone) & {"missing", "discovered"},
        "the relayer to record the lone batch (from final blocks: discovered, then final)",
    )
    _assert_never_sent(config, lone)

    procs.start_attester(0)
    batch()
    time.sleep(0.5)
    procs.start_attester(1)
    batch()

    ids = [i for ids in batches for i in ids]
    assert len(set(ids)) == 50
    wait_delivered(devnet_config, ids, procs, since={"beta": since})
    # The relayer itself never stopped: attesters coming and going cost it no redundant work.
    assert_delivered_once(config, "beta", ids, since=since, faults=0)
    for attester in range(3):  # the restarted attesters caught up and sign again
        wait_until(
            lambda a=attester: _signed_index(config, a, "alpha") >= max(nonces),
            f"attester {attester} to sign the newest checkpoint",
            timeout=20,
        )
    _assert_healthy(procs)


def _cut_during_delivery(proxy: TcpProxy, direct_url: str, inbox: bytes) -> None:
    """Stop ``proxy`` while a transaction to ``inbox`` is pending; retried if it got mined."""
    for _ in range(5):
        wait_until(
            lambda: pending_to(direct_url, inbox),
            "the relayer to broadcast a delivery",
            poll=0.02,
        )
        proxy.stop()
        if pending_to(direct_url, inbox):
            return  # mined only after the cut: the relayer must read its receipt through us
        proxy.start()
    pytest.fail("every delivery was mined before the proxy could be stopped")


@pytest.mark.slow
def test_rpc_outage_during_relaying(devnet_config: Path, tmp_path: Path) -> None:
    """beta's RPC endpoint goes away for a few seconds while messages flow both ways.

    The attesters and the relayer reach beta through a TCP proxy (a copy of the config points
    them at it); ``passerelle send`` and the checks talk to anvil directly. The chain keeps
    running, exactly as when an operator's RPC provider has an outage.
    """
    config = load_config(devnet_config)
    beta = config.chain("beta")
    since = {name: block_number(config, name) + 1 for name in ("alpha", "beta")}
    beta_port = urlsplit(beta.rpc[0]).port
    assert beta_port is not None
    with TcpProxy(beta_port) as proxy:
        proxied = config_with_rpc(devnet_config, "beta", proxy.url, "passerelle-proxied.toml")
        with running(proxied, tmp_path) as procs:
            stream = Stream(devnet_config, [("alpha", "beta"), ("beta", "alpha")], count=5, gap=0.5)
            stream.start()
            try:
                # Cut the endpoint while a delivery to beta is in flight: broadcast, in the
                # pool, its receipt not yet readable by anyone.
                _cut_during_delivery(proxy, beta.rpc[0], beta.contract("inbox"))
                down_at = time.monotonic()
                time.sleep(OUTAGE)
                proxy.start()
                up_at = time.monotonic()
                time.sleep(2)  # and keep sending a little after it came back
            finally:
                sent = stream.finish()
            during = [r for r in stream.rounds if r[0] < up_at and r[1] > down_at]
            assert during, f"no round was sent during the outage: {stream.rounds}"
            assert proxy.resets > 0, "the outage cut no open connection"
            # Every process had to get through it (each follows beta or delivers to it).
            assert set(procs.logs_with(proxy.url)) >= set(procs.running), [
                procs.log(name)[-1500:] for name in sorted(procs.running)
            ]

            there, back = sent["alpha", "beta"], sent["beta", "alpha"]
            # Seconds suffice once the endpoint is back: these bounds are generous.
            wait_delivered(devnet_config, there + back, procs, timeout=40, settle=10, since=since)
            # One fault, on the leg to beta: the delivery cut in flight (and any other then in
            # flight) may be sent again, no more. Deliveries to alpha never lost their endpoint.
            assert_delivered_once(config, "beta", there, since=since["beta"], faults=1)
            assert_delivered_once(config, "alpha", back, since=since["alpha"], faults=0)
            _assert_healthy(procs)
