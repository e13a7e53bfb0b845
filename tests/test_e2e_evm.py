"""End to end on two real anvil chains: attesters and the relayer as separate processes.

Everything goes through the command line, as an operator would run it: `passerelle devnet up`,
three `passerelle attest`, one `passerelle relay`, `passerelle send`, `passerelle status --json`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from e2e_support import (
    KILL_BATCH,
    KILL_INFLIGHT,
    SMALL_BATCHES,
    Procs,
    assert_delivered_once,
    block_number,
    delivered_events,
    devnet,
    ensure_running,
    pending_to,
    rpc,
    running,
    send,
    start_relayer,
    statuses,
    wait_delivered,
    wait_until,
)
from eth_abi.abi import encode as abi_encode

from adapters.evm.chain import DISPATCH_TOPIC, dispatch_message
from adapters.evm.tx import TxEngine
from relayer.accounts import bytes32
from relayer.config import Config, load_config
from relayer.families.evm.connection import open_evm
from relayer.families.evm.user import DISPATCH
from relayer.signer import evm_signer
from relayer.user import token_balance

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from devnet(tmp_path_factory)


@pytest.fixture(scope="module")
def procs(devnet_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    """One committee of attesters for the module, as an operator runs them; the relayer is
    started by :func:`running_before_each_test`.

    Module-scoped: a fresh set per test was 12 attester and 9 relayer starts of ~1.2 CPU s
    each, for processes that then do the same work. Logs accumulate, so the SIGTERM test's
    "no traceback" covers every relayer the module ran."""
    with running(devnet_config, tmp_path_factory.mktemp("logs"), relayer=False) as started:
        yield started


@pytest.fixture(autouse=True)
def running_before_each_test(procs: Procs) -> Iterator[None]:
    """Each test starts with the attesters and a relayer running, the relayer past its own
    start-up (tests/e2e_support.py: :func:`ensure_running`), whatever the tests before it
    stopped or killed: the SIGKILL test's relayer has small batches and the SIGTERM test ends
    with none. So a test that fails half-way (a kill that found no delivery in flight) is one
    failure, not also a relayer-less 90 s wait in each test after it. A process that died
    during a test fails that test, here, with the end of its log."""
    ensure_running(procs)
    yield
    procs.check_running()


def test_messages_both_ways_and_a_token_round_trip(devnet_config: Path, procs: Procs) -> None:
    """Messages both ways, in nonce order, and a token locked on alpha, minted on beta, part of
    it burnt back and unlocked on alpha: the balances move by exactly what was sent.

    One test, so one set of attesters and relayer, and the outbound token travels with the
    messages: one delivery wait fewer than running them apart (the return leg needs the
    wrapped tokens minted first, so it still waits on its own)."""
    config = load_config(devnet_config)

    def balance(chain: str) -> int:
        return trio.run(token_balance, config, chain)

    home, wrapped = balance("alpha"), balance("beta")
    there = send(devnet_config, "alpha", "beta", "--body", "ping from alpha", "--count", "3")
    back = send(devnet_config, "beta", "alpha", "--body", "ping from beta", "--count", "2")
    assert len(there) == 3 and len(back) == 2
    assert [m["nonce"] for m in there] == sorted(m["nonce"] for m in there)
    out = send(devnet_config, "alpha", "beta", "--token", "1000")
    # A `since` that leaves out a message's destination would never see its event: an error
    # at once, not a 90 s wait before the ledger's answer.
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="leaves out these messages' destinations"):
        wait_delivered(devnet_config, [there[0]["id"], back[0]["id"]], procs, since={"beta": 0})
    assert time.monotonic() - started < 5
    wait_delivered(devnet_config, [m["id"] for m in there + back + out], procs)
    assert balance("alpha") == home - 1000
    assert balance("beta") == wrapped + 1000
    returned = send(devnet_config, "beta", "alpha", "--token", "400")
    wait_delivered(devnet_config, [m["id"] for m in returned], procs)
    assert balance("alpha") == home - 600
    assert balance("beta") == wrapped + 600


KILL_MESSAGES, KILLS = 60, 3


@pytest.mark.slow
def test_relayer_sigkill_mid_stream_delivers_each_exactly_once(
    devnet_config: Path, procs: Procs
) -> None:
    """SIGKILL the relayer three times while a delivery is in beta's pool, a third of the
    stream further each time: every message is delivered exactly once, and the chain shows the
    relayer re-sent no more than the batches in flight at each kill."""
    config = load_config(devnet_config)
    beta = config.chain("beta")
    since = block_number(config, "beta") + 1
    # The fixture's relayer makes way for one with small batches.
    assert procs.stop("relayer") == 0
    start_relayer(procs, *SMALL_BATCHES)
    sent = send(devnet_config, "alpha", "beta", "--body", "bulk", "--count", str(KILL_MESSAGES))
    ids = [m["id"] for m in sent]
    assert len(set(ids)) == KILL_MESSAGES

    def delivered() -> set[str]:
        return set(ids) & set(delivered_events(config, "beta"))

    for kill in range(KILLS):
        at_least = kill * KILL_MESSAGES // KILLS
        wait_until(
            lambda n=at_least: (
                pending_to(beta.rpc[0], beta.contract("inbox")) and len(delivered()) >= n
            ),
            f"kill {kill + 1}: a delivery in flight, {at_least} or more delivered",
            poll=0.02,
        )
        assert procs.stop("relayer", signal.SIGKILL) == -signal.SIGKILL
        assert len(delivered()) < KILL_MESSAGES, f"kill {kill + 1} came after the stream"
        start_relayer(procs, *SMALL_BATCHES)
    # The restarted relayer settles what its predecessor had in flight from the receipts at
    # once: its ledger agrees with the chain within seconds, not after a confirmation timeout.
    wait_delivered(devnet_config, ids, procs, timeout=120, settle=30, since={"beta": since})
    assert_delivered_once(
        config,
        "beta",
        ids,
        since=since,
        faults=KILLS,
        batch_size=KILL_BATCH,
        max_inflight=KILL_INFLIGHT,
    )


def test_relayer_sigterm_is_clean(devnet_config: Path, procs: Procs) -> None:
    """SIGTERM stops the relayer with status 0 and no traceback: trio's handler, not Python's
    default death. The fixture waited for this very process's own "relaying" line, so the
    signal comes after its start-up whichever tests ran before (the next test's fixture starts
    a relayer again)."""
    assert procs.stop("relayer", signal.SIGTERM) == 0
    assert "Traceback" not in procs.log("relayer")


async def _broadcast_dispatch(config: Config, body: bytes) -> bytes:
    """Broadcast a dispatch alpha → beta without waiting for it to be mined; its hash."""
    source, target = config.chain("alpha"), config.chain("beta")
    assert config.client_key is not None
    async with open_evm(source) as evm:
        engine = TxEngine(evm.rpc, evm_signer(config.client_key), await evm.chain_id())
        data = DISPATCH + abi_encode(
            ["uint32", "bytes32", "bytes"], [target.domain, bytes32(target.contract("ping")), body]
        )
        sent = await engine.send(source.contract("outbox"), data, gas=300_000)
    return sent.hashes[-1]


def test_reorg_shallower_than_finality_is_never_relayed(devnet_config: Path, procs: Procs) -> None:
    """A message orphaned before the finality depth is never attested nor delivered.

    Block production is paused so the reorg is deterministic: the dispatch is mined into the
    head block (0 confirmations of the 3 the policy needs), that block is replaced by an empty
    one, and the orphaned transaction is dropped from the pool so it is never mined again.
    """
    config = load_config(devnet_config)
    url = config.chain("alpha").rpc[0]
    rpc(url, "evm_setIntervalMining", [0])
    try:
        tx_hash = trio.run(_broadcast_dispatch, config, b"doomed")
        rpc(url, "evm_mine", [])
        receipt = rpc(url, "eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        dispatch = next(
            entry for entry in receipt["logs"] if entry["topics"][0] == "0x" + DISPATCH_TOPIC.hex()
        )
        message = dispatch_message(bytes.fromhex(dispatch["data"][2:]))
        orphan_id, orphan_nonce = dispatch["topics"][1], int.from_bytes(message[1:5], "big")
        rpc(url, "anvil_reorg", [1, []])
        rpc(url, "anvil_dropAllTransactions", [])
        assert rpc(url, "eth_getTransactionReceipt", ["0x" + tx_hash.hex()]) is None
    finally:
        rpc(url, "evm_setIntervalMining", [1])
    survivor = send(devnet_config, "alpha", "beta", "--body", "after the reorg")[0]
    wait_delivered(devnet_config, [survivor["id"]], procs)
    rows = statuses(devnet_config)
    assert orphan_id not in rows  # never even recorded: the relayer reads final blocks only
    assert orphan_id not in delivered_events(config, "beta")
    assert survivor["nonce"] == orphan_nonce  # the orphaned nonce went to the survivor
