"""The relayer's EVM delivery against hostile recipients, backends and senders (issue #8).

Real anvil chains (the devnet), real attesters (processes), the relayer in this process so a
test can watch its ledger and its exceptions. The hostile recipients are test-only contracts
(``tests/contracts/HostileRecipients.sol``), compiled here with the project's pinned solcjs:

- ``EventForger``: its ``handle`` emits the Inbox's own events about ids of its choosing;
- ``GasPriceBomb``: behaves in a dry run at gas price 0, burns its stipend in a real delivery.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from e2e_support import Procs, devnet, rpc
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from fakes import RpcProxy, honest
from test_attester_hardening import deploy_outbox
from test_attester_hardening import dispatch as send
from test_attester_hardening import origin as quorum_origin
from test_ledger import ORIGIN, checkpoint_for, disc, drive, msg_id, tx_for
from test_substrate_hardening import attested_in_ledger
from test_substrate_route import ALPHA, ASSETHUB, config_toml, load
from web3 import Web3

from adapters.errors import AdapterError
from adapters.evm import compile as solc
from adapters.evm.chain import DISPATCH_TOPIC, EvmChain
from adapters.evm.tx import MinedTx, TxEngine, TxReverted
from adapters.rpc import JsonRpcClient, MalformedAnswer
from adapters.substrate.client import SubstrateClient
from adapters.substrate.multisig import ExtrinsicLimits
from devnet.anvil import AnvilProcess
from light_clients.committee import Checkpoint
from light_clients.ethereum.header import header_rlp_from_json
from light_clients.ethereum.receipt import Log
from light_clients.hashing import keccak256
from light_clients.merkle import EMPTY_ROOT
from light_clients.message import HEADER_SIZE, MAX_BODY_BYTES, Message
from relayer import relay
from relayer.accounts import bytes32
from relayer.checkpoints import CheckpointStore
from relayer.config import SUBSTRATE_BATCH_SIZE, ChainConfig, Config, RelayPolicy, load_config
from relayer.families.evm import delivery as evm_delivery
from relayer.families.evm.connection import open_evm
from relayer.families.evm.delivery import EvmDelivery
from relayer.families.evm.origin import EvmOrigin
from relayer.families.substrate.batching import budget_for, proposal_bytes
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.families.substrate.proposals import (
    MAX_PROPOSAL_BYTES,
    DirectoryProposalStore,
    new_proposal,
)
from relayer.ledger import Ledger, MessageRecord, MessageStatus, TxStatus, open_ledger
from relayer.relay import Relayer
from relayer.signer import LocalSigner

pytestmark = pytest.mark.chain

CONTRACTS = Path(__file__).parent / "contracts"
DISPATCH_GAS_SLACK = 100_000
"""Gas added to a test dispatch's estimate (see :func:`dispatch`): more than 32 levels of cold
reads and a fresh slot cost; unused gas is not paid."""
DISPATCH = keccak256(b"dispatch(uint32,bytes32,bytes)")[:4]
COUNT = keccak256(b"count()")[:4]
INBOX_EVENTS = (
    b"Delivered(bytes32,uint32,uint32)",
    b"AlreadyDelivered(bytes32)",
    b"HandleFailed(bytes32,bytes)",
)


# --------------------------------------------------------------------------- fixtures


BLOCK_TIME = 0.25
"""The module's anvil blocks, in seconds (the devnet's default is 1). Every relaying test here
waits for finality (``confirmations:3``) twice, the dispatches' and the delivery's, while
three attester processes and the relayer poll: at 1 s blocks those waits were most of the
module's time. Block timestamps then run ahead of the wall clock (anvil gives each block at
least one second more than its parent); nothing here reads them (only Governed's delays do,
and no test here changes the committee)."""


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from devnet(tmp_path_factory, block_time=BLOCK_TIME)


@pytest.fixture(scope="module")
def attesters(devnet_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    """The devnet's three attesters, signing checkpoints of both chains for the whole module."""
    procs = Procs(devnet_config, tmp_path_factory.mktemp("logs"))
    try:
        for index in range(3):
            procs.start_attester(index)
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def config(devnet_config: Path, attesters: Procs) -> Config:
    return load_config(devnet_config)


@pytest.fixture(scope="module")
def hostile() -> dict[str, dict[str, Any]]:
    """ABI and bytecode of each test-only contract of HostileRecipients.sol, compiled alone
    (the project's settings, the same bytecode as with tests/contracts/ whole: solcjs then
    also compiled ReproofRecipients.sol, which no test here deploys)."""
    source = CONTRACTS / "HostileRecipients.sol"
    compiler_input = {
        "language": "Solidity",
        "sources": {source.name: {"content": source.read_text(encoding="utf-8")}},
        "settings": solc.settings(),
    }
    _, output = solc.compile_sources(compiler_input)
    return {
        name: {"abi": c["abi"], "bytecode": "0x" + c["evm"]["bytecode"]["object"]}
        for name, c in output["contracts"][source.name].items()
    }


# --------------------------------------------------------------------------- helpers


def web3(chain: ChainConfig) -> Web3:
    return Web3(Web3.HTTPProvider(chain.rpc[0]))


def deploy(chain: ChainConfig, hostile: dict[str, dict[str, Any]], name: str) -> Any:
    """Deploy a hostile recipient from anvil's first (unlocked) account, as anyone could."""
    w3 = web3(chain)
    factory = w3.eth.contract(abi=hostile[name]["abi"], bytecode=hostile[name]["bytecode"])
    sender = w3.eth.accounts[0]
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": sender}))
    assert receipt["status"] == 1
    return w3.eth.contract(address=receipt["contractAddress"], abi=hostile[name]["abi"])


def dispatch(
    config: Config,
    origin: str,
    destination: str,
    recipients: list[bytes],
    body: Callable[[int], bytes] = lambda n: f"hardening {n}".encode(),
) -> list[str]:
    """One message per recipient from ``origin``'s outbox (sent by the devnet client), the
    ``n``-th with ``body(n)``; their ids."""
    source, target = config.chain(origin), config.chain(destination)
    assert config.client_key is not None
    key = config.client_key.load()

    async def run() -> list[str]:
        async with open_evm(source) as evm:
            engine = TxEngine(evm.rpc, LocalSigner(key), await evm.chain_id())
            # All broadcast first (consecutive account nonces, so mined in this order: the
            # n-th message gets the n-th outbox nonce), then waited for: one block or two, not
            # one each. Each is estimated against the outbox before the others are mined, and
            # a later insertion may hash and write more tree levels than the one estimated
            # (cold slots, a first write at a new level): DISPATCH_GAS_SLACK covers that.
            sent = []
            for n, recipient in enumerate(recipients):
                data = DISPATCH + abi_encode(
                    ["uint32", "bytes32", "bytes"],
                    [target.domain, bytes32(recipient), body(n)],
                )
                outbox = source.contract("outbox")
                gas = await engine.estimate_gas(outbox, data) + DISPATCH_GAS_SLACK
                sent.append(await engine.send(outbox, data, gas=gas))
            return [_dispatch_id(await engine.wait(tx, timeout=30)) for tx in sent]

    return trio.run(run)


def wait_signed(config: Config, origin: str, timeout: float = 60) -> None:
    """Until a quorum of attesters signed ``origin``'s outbox up to its newest message, so the
    relayer starts with all of them attested under one checkpoint (one batch, in nonce order)."""
    chain = config.chain(origin)
    outbox = chain.contract("outbox")
    call = {"to": "0x" + outbox[-20:].hex(), "data": "0x" + COUNT.hex()}
    index = int(rpc(chain.rpc[0], "eth_call", [call, "latest"]), 16) - 1
    store = CheckpointStore(config.checkpoint_store)
    deadline = time.monotonic() + timeout
    while len(store.signatures(chain.domain, chain.outbox_id, index)) < config.committee.threshold:
        assert time.monotonic() < deadline, f"checkpoint {index} of {origin} not signed"
        time.sleep(0.3)


def _dispatch_id(mined: MinedTx) -> str:
    (entry,) = [e for e in mined.logs if e.topics[0] == DISPATCH_TOPIC]
    return "0x" + entry.topics[1].hex()


def delivered_on_chain(chain: ChainConfig, ledger: Ledger, message_id: str) -> bool:
    """The inbox's replay bit for the ledger's message ``message_id`` (its origin, nonce)."""
    record = ledger.get(message_id)
    assert record is not None
    call = {
        "to": "0x" + chain.contract("inbox")[-20:].hex(),
        "data": "0x" + evm_delivery.is_delivered_call(record.message).hex(),
    }
    return int(rpc(chain.rpc[0], "eth_call", [call, "latest"]), 16) != 0


def run_relayer(
    relayer: Relayer,
    done: Callable[[], bool],
    timeout: float,
    explain: Callable[[], str] = lambda: "",
) -> float:
    """Run ``relayer`` until ``done()`` (checked in a thread) holds; the seconds it took.

    Fails the test on timeout; an exception of the relayer propagates (it must not die)."""
    started = time.monotonic()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayer.run)
            with trio.move_on_after(timeout):
                while not await trio.to_thread.run_sync(done):
                    await trio.sleep(0.3)
            nursery.cancel_scope.cancel()

    trio.run(main)
    elapsed = time.monotonic() - started
    assert done(), f"not done within {timeout:g} s: {explain()}"
    return elapsed


def status(ledger: Ledger, message_id: str) -> MessageStatus | None:
    record = ledger.get(message_id)
    return None if record is None else record.status


def describe(ledger: Ledger, ids: list[str]) -> str:
    """Each message's status and reason, for a failure message."""
    records = [ledger.get(i) for i in ids]
    return "; ".join(f"{r.nonce} {r.status}: {r.reason}" for r in records if r is not None)


class OneWayRelayer(Relayer):
    """Delivers to beta only: a message to alpha stays waiting (attested) in the ledger."""

    async def _deliver_loop(self, chain: ChainConfig) -> None:
        if chain.name != "beta":
            await trio.sleep_forever()
        await super()._deliver_loop(chain)


# --------------------------------------------------------------------------- point 1


def test_forged_inbox_events_in_a_receipt_decide_nothing(
    config: Config, hostile: dict[str, dict[str, Any]]
) -> None:
    """A recipient emits Delivered/AlreadyDelivered/HandleFailed about a message waiting on
    the other lane and about an id nobody knows. The relayer keeps running, the victim is not
    marked delivered, and the forger's own message is recorded from the final state."""
    alpha, beta = config.chain("alpha"), config.chain("beta")
    forger = deploy(beta, hostile, "EventForger")
    (victim,) = dispatch(config, "beta", "alpha", [alpha.contract("ping")])
    unknown = "0x" + keccak256(b"no such message").hex()
    tx = forger.functions.setTargets([bytes.fromhex(victim[2:]), bytes.fromhex(unknown[2:])])
    web3(beta).eth.wait_for_transaction_receipt(tx.transact({"from": web3(beta).eth.accounts[0]}))
    (bait,) = dispatch(config, "alpha", "beta", [bytes.fromhex(forger.address[2:])])

    with open_ledger(config.ledger) as ledger:
        relayer = OneWayRelayer(config, ledger, poll=0.3)
        run_relayer(relayer, lambda: status(ledger, bait) == MessageStatus.DELIVERED, 90)
        assert forger.functions.handled().call() == 1  # the forgery really was in the receipt
        assert not delivered_on_chain(alpha, ledger, victim)
        assert status(ledger, victim) != MessageStatus.DELIVERED
        assert ledger.get(unknown) is None
        assert relayer.metrics.handle_failed == 0  # forged HandleFailed events are not counted
        record = ledger.get(bait)
        assert record is not None and record.reason is not None
        assert "final block" in record.reason


def test_receipt_outcome_counts_only_the_inbox_about_its_batch() -> None:
    """Pure: a log counts only if the inbox emitted it and it names an id of the batch."""
    inbox, other = bytes(range(20)), bytes(20)
    ours, foreign = "0x" + "11" * 32, "0x" + "22" * 32

    def log(address: bytes, event: bytes, message_id: str) -> Log:
        return Log(address, (keccak256(event), bytes.fromhex(message_id[2:])), b"")

    logs = [log(a, e, i) for a in (inbox, other) for e in INBOX_EVENTS for i in (ours, foreign)]
    mined = MinedTx(b"\1" * 32, 0, 1, 21_000, 1, logs)
    outcome = evm_delivery._receipt_outcome(mined, inbox, [ours])
    assert outcome.delivered == [ours]
    assert outcome.already == [ours]
    assert list(outcome.handle_failed) == [ours]


# --------------------------------------------------------------------------- point 2


def test_recipient_that_burns_gas_only_for_real_does_not_wedge_the_lane(
    config: Config, hostile: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run is at the real gas price and a batch gets ONE stipend on top of its
    estimate (issue #11; a lone message none): the bomb's batch is mined, honest messages are
    handled, the bomb's own handle fails. Every delivery's recorded gas limit is an estimate
    of the engine (margin included) plus exactly that: one stipend per message would be the
    ~20-message cap of issue #8 again, and nothing else would notice."""
    estimates: set[int] = set()
    estimate = TxEngine.estimate_gas

    async def recorded(self: TxEngine, *args: Any, **kwargs: Any) -> int:
        value = await estimate(self, *args, **kwargs)
        estimates.add(value)
        return value

    monkeypatch.setattr(TxEngine, "estimate_gas", recorded)
    beta = config.chain("beta")
    bomb = deploy(beta, hostile, "GasPriceBomb")
    ping = beta.contract("ping")
    # The bomb first: its batch carries honest messages after it.
    recipients = [bytes.fromhex(bomb.address[2:])] + [ping] * 6
    ids = dispatch(config, "alpha", "beta", recipients)
    wait_signed(config, "alpha")
    with open_ledger(config.ledger) as ledger:
        before = {t.hash for t in ledger.transactions(chain=beta.domain, limit=10**6)}
        relayer = Relayer(config, ledger, poll=0.3)
        run_relayer(
            relayer, lambda: all(status(ledger, i) == MessageStatus.DELIVERED for i in ids), 60
        )
        assert all(delivered_on_chain(beta, ledger, i) for i in ids)
        bombed = ledger.get(ids[0])
        assert bombed is not None and bombed.reason is not None
        assert "handle failed" in bombed.reason
        reverted = ledger.transactions(chain=beta.domain, status=TxStatus.FAILED)
        assert not [t for t in reverted if t.error and "reverted" in t.error]
        sent = ledger.transactions(chain=beta.domain, limit=10**6)
        carried = {
            t.hash: len(ledger.transaction_messages(beta.domain, t.hash))
            for t in sent
            if t.hash not in before
        }
        assert max(carried.values()) > 1, carried  # a batch, not only lone messages
        for t in sent:
            if t.hash in carried:
                # One MESSAGE_GAS_NEEDED per batch, never one per message; a lone message
                # goes without only when that would not fit the block.
                extra = {evm_delivery.MESSAGE_GAS_NEEDED}
                if carried[t.hash] == 1:
                    extra.add(0)
                assert t.gas_limit is not None and any(
                    t.gas_limit - e in estimates for e in extra
                ), (carried[t.hash], t.gas_limit)


def test_a_burner_cuts_its_batch_instead_of_reverting_it(
    config: Config, hostile: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the first two defences switched off (no stipend margin, a dry run at gas price 0,
    as a node that ignores fee fields would give), the bomb burns in the real delivery what it
    did not in the dry run. Before the cut (issue #11) that reverted the whole batch and the
    relayer bisected it (one reverted transaction per level); now the inbox stops the batch
    after the bomb (``BatchCut``): the messages before it are delivered, the bomb's handle
    failed (its own doing), the rest go straight back to ``attested`` and the next batch
    delivers them, with no reverted transaction at all. (The bisection itself, for a batch
    that reverts on chain for another reason, is the next test's.)"""
    monkeypatch.setattr(evm_delivery, "MESSAGE_GAS_NEEDED", 0)
    estimate = TxEngine.estimate_gas

    async def at_gas_price_zero(
        self: TxEngine, to: bytes, data: bytes, value: int = 0, **_: Any
    ) -> int:
        try:
            return await estimate(self, to, data, value, fees=(0, 0))
        except TypeError:  # the engine before issue #8 took no fees (and sent none)
            return await estimate(self, to, data, value)

    monkeypatch.setattr(TxEngine, "estimate_gas", at_gas_price_zero)
    beta = config.chain("beta")
    bomb = deploy(beta, hostile, "GasPriceBomb")
    ping = beta.contract("ping")
    recipients = [ping] * 2 + [bytes.fromhex(bomb.address[2:])] + [ping] * 5
    ids = dispatch(config, "alpha", "beta", recipients)
    wait_signed(config, "alpha")
    culprit, honest = ids[2], ids[:2] + ids[3:]
    with open_ledger(config.ledger) as ledger:
        since = len(ledger.transactions(chain=beta.domain, status=TxStatus.FAILED, limit=10**6))
        relayer = Relayer(config, ledger, poll=0.3)

        def settled() -> bool:
            bombed = status(ledger, culprit)
            return all(status(ledger, i) == MessageStatus.DELIVERED for i in honest) and (
                bombed in (MessageStatus.DELIVERED, MessageStatus.FAILED)
            )

        elapsed = run_relayer(relayer, settled, 90, lambda: describe(ledger, ids))
        assert all(delivered_on_chain(beta, ledger, i) for i in honest)
        failed = ledger.transactions(chain=beta.domain, status=TxStatus.FAILED, limit=10**6)
        assert len(failed) == since, "a delivery reverted instead of being cut"
        cut = [i for i in honest if any("BatchCut" in (e.reason or "") for e in ledger.history(i))]
        assert cut and set(cut) <= set(ids[3:]), cut  # only messages after the bomb
        assert relayer.metrics.cut_messages >= len(cut)
        print(f"honest messages through in {elapsed:.1f} s, {len(cut)} of them after a cut")


def test_culprit_alone_fails_with_a_backoff_that_grows_per_message(
    config: Config, tmp_path: Path
) -> None:
    """The bisection's bookkeeping on a ledger: a reverted batch of 4 is retried at once in
    halves; a message that reverts alone fails with its reason, retried later each time, and
    given up after MAX_DELIVERY_ATTEMPTS lone reverts (also across restarts)."""
    with open_ledger(tmp_path / "ledger.db") as ledger:
        found = [disc(ORIGIN, n) for n in range(4)]
        ledger.record_discovered(found)
        ids = [msg_id(d.message) for d in found]
        drive(ledger, ids, MessageStatus.SUBMITTED, checkpoint_for(ledger))
        carrier = ledger.get(ids[0])
        assert carrier is not None and carrier.delivery_tx_hash is not None
        delivery = EvmDelivery(config.chain(carrier.destination), Relayer(config, ledger))
        tx_hash = bytes.fromhex(carrier.delivery_tx_hash[2:])
        delivery._reverted(carrier.destination, TxReverted(tx_hash, 7, 90_000), ids)
        assert {status(ledger, i) for i in ids} == {MessageStatus.FAILED}
        assert {delivery._batch_limit[i] for i in ids} == {2}
        assert len(ledger.due_for_retry(limit=10)) == 4  # the halves go again at once

        waits = []
        for attempt in range(3):
            sent = ledger.record_transaction(tx_for(seed=900 + attempt), [ids[0]])
            before = time.time()
            reverted = TxReverted(bytes.fromhex(sent.hash[2:]), 8, 90_000)
            delivery._reverted(carrier.destination, reverted, [ids[0]])
            alone = ledger.get(ids[0])
            assert alone is not None and alone.status == MessageStatus.FAILED
            assert alone.reason is not None and "alone" in alone.reason
            assert alone.next_attempt_at is not None
            waits.append(alone.next_attempt_at - before)
        assert delivery._batch_limit[ids[0]] == 1
        assert waits == sorted(waits) and waits[0] < waits[-1], waits

        # Each try is a reverted transaction the relayer pays for: after MAX_DELIVERY_ATTEMPTS
        # (counted in the audit trail, not in memory) it stays failed, no retry scheduled.
        for attempt in range(3, relay.MAX_DELIVERY_ATTEMPTS):
            sent = ledger.record_transaction(tx_for(seed=900 + attempt), [ids[0]])
            reverted = TxReverted(bytes.fromhex(sent.hash[2:]), 8, 90_000)
            restarted = EvmDelivery(config.chain(carrier.destination), Relayer(config, ledger))
            restarted._reverted(carrier.destination, reverted, [ids[0]])
        alone = ledger.get(ids[0])
        assert alone is not None and alone.status == MessageStatus.FAILED
        assert alone.reason is not None and alone.reason.endswith("5 times: gave up")
        assert alone.next_attempt_at is None
        assert ids[0] not in {r.id for r in ledger.due_for_retry(limit=10)}


# --------------------------------------------------------------------------- point 6


def _drop_last(events: list[Any]) -> list[Any]:
    return events[:-1]


def _alter_last(events: list[Any]) -> list[Any]:
    """The last message with another body: a self-consistent log (id = keccak of the bytes it
    carries), same nonce, same count — only the outbox's proven root tells it apart."""
    last = events[-1]
    forged = dataclasses.replace(last.message, body=last.message.body + b" (forged)")
    return [*events[:-1], dataclasses.replace(last, message=forged, raw=forged.encode())]


@pytest.mark.parametrize("lie", [_drop_last, _alter_last], ids=["drops-tail", "alters-last"])
def test_scan_that_loses_tail_logs_rescans_instead_of_moving_on(
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lie: Callable[[list[Any]], list[Any]],
) -> None:
    """A backend drops the last Dispatch log of the range, or alters it (same nonce, a body of
    its choice): the outbox's count and root proven at the range's end disagree, the cursor
    stays, and the next (honest) scan records exactly the dispatched messages. (Believed, the
    altered one would have made the relayer's root differ from the committee's: a halt.)"""
    alpha = config.chain("alpha")
    dispatch(config, "alpha", "beta", [config.chain("beta").contract("ping")] * 2)
    outbox_count = int(
        rpc(
            alpha.rpc[0],
            "eth_call",
            [
                {"to": "0x" + alpha.contract("outbox")[-20:].hex(), "data": "0x" + COUNT.hex()},
                "latest",
            ],
        ),
        16,
    )

    async def scan() -> None:
        with open_ledger(tmp_path / "ledger.db") as ledger:
            relayer = Relayer(config, ledger)
            relayer._load_lanes()
            lane = relayer.lanes[alpha.domain]
            async with open_evm(alpha) as evm:
                honest = evm.dispatches

                async def drops_tail(outbox: bytes, start: int, end: int, **options: Any) -> Any:
                    return lie(await honest(outbox, start, end, **options))

                dispatched = await evm.latest_number()
                while (await evm.final_header()).number < dispatched:
                    await trio.sleep(0.3)  # both dispatches final
                monkeypatch.setattr(evm, "dispatches", drops_tail)
                lied = False
                try:
                    while not await relayer._scan_once(lane, EvmOrigin(alpha, evm)):
                        pass
                except AdapterError as exc:
                    lied = "rescanning" in str(exc)
                # The endpoint that gave the refuted logs is struck (third review, H1): with
                # several, the rescan asks another first.
                (endpoint,) = evm.rpc.endpoints
                assert endpoint.strikes == 1 and "rescanning" in endpoint.last_error
                monkeypatch.setattr(evm, "dispatches", honest)
                while not await relayer._scan_once(lane, EvmOrigin(alpha, evm)):
                    pass
            assert lied, "the lying scan was believed"
            assert lane.tree.count == outbox_count
            recorded = ledger.messages(origin=alpha.domain, limit=10**6)
            assert len(recorded) == outbox_count
            assert not any(r.message.endswith(b" (forged)") for r in recorded)

    trio.run(scan)


# --------------------------------------------------------------------------- relay policy


def test_relay_policy_refusals_are_set_aside_with_the_reason(config: Config) -> None:
    """A recipient the operator denies is not delivered (``skipped``, the policy's reason);
    the rest of the batch is."""
    beta = config.chain("beta")
    denied, allowed = beta.contract("token_bridge"), beta.contract("ping")
    ids = dispatch(config, "alpha", "beta", [denied, allowed])
    policy = RelayPolicy(deny_recipients=frozenset({bytes32(denied)}))
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(dataclasses.replace(config, relay_policy=policy), ledger, poll=0.3)
        run_relayer(
            relayer,
            lambda: (
                status(ledger, ids[1]) == MessageStatus.DELIVERED
                and status(ledger, ids[0]) == MessageStatus.SKIPPED
            ),
            60,
        )
        refused = ledger.get(ids[0])
        assert refused is not None and refused.reason is not None
        assert refused.reason.startswith("relay policy: ") and "recipient" in refused.reason
        assert not delivered_on_chain(beta, ledger, ids[0])


# --------------------------------------------------------------------------- review: one policy


def test_the_substrate_delivery_path_applies_the_relay_policy_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message the operator's policy refuses is ``skipped`` with the policy's reason on the
    Substrate route as on the EVM one, and costs nothing there: never proposed (the committee
    would pay to execute it), and no chain read for it (the client refuses every use)."""
    config = load(tmp_path, config_toml())
    hub = config.chain("assethub")
    refused = Message(1, 4, ALPHA, b"\x5e" * 32, ASSETHUB, b"\x8e" * 32, b"unwanted")
    policy = RelayPolicy(deny_senders=frozenset({refused.sender}))
    raw = refused.encode()
    ids = ["0x" + keccak256(raw).hex()]
    proposed: list[Any] = []

    async def propose(_chain: Any, _lane: Any, group: Any) -> None:
        proposed.append(group)

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the chain was read ({name}) for a refused message")

    with open_ledger(tmp_path / "ledger.db") as ledger:
        attested_in_ledger(ledger, raw, checkpoint_index=4)
        relayer = Relayer(dataclasses.replace(config, relay_policy=policy), ledger)
        relayer.lanes = cast(Any, {ALPHA: None})
        delivery = SubstrateDelivery(hub, relayer)
        monkeypatch.setattr(delivery, "_propose", propose)
        proposals = DirectoryProposalStore(tmp_path / "store")
        client = cast(SubstrateClient, Untouchable())
        trio.run(delivery._deliver_substrate_once, hub, client, proposals)
        record = ledger.get(ids[0])
        assert record is not None and record.status == MessageStatus.SKIPPED
        assert record.reason is not None and record.reason.startswith("relay policy: ")
        assert "sender" in record.reason
        assert proposed == [] and proposals.pending(ASSETHUB) == []


# --------------------------------------------------------------------------- review: quorum


def test_one_lying_endpoint_cannot_fake_a_reorg_under_the_rpc_quorum(
    anvil: AnvilProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rpc_quorum 2 of 3, the first endpoint (the one plain failover asks) lying about two
    blocks: the hash of the block the cursor rests on (the resume check), and a whole
    self-consistent header at the end of a scan chunk (which would become the cursor's hash).
    Either lie, believed, reads as a reorg below finality and halts the relayer for good; the
    quorum's word leaves it scanning, its cursor on the real chain."""
    outbox = deploy_outbox(anvil.rpc_url)
    rested = int(rpc(anvil.rpc_url, "eth_blockNumber", []), 16)
    rpc(anvil.rpc_url, "anvil_mine", [hex(3)])

    def block(number: int) -> dict[str, Any]:
        found = rpc(anvil.rpc_url, "eth_getBlockByNumber", [hex(number), False])
        assert isinstance(found, dict)
        return found

    forged = {**block(rested + 1), "extraData": "0x" + b"forged".hex()}
    forged["hash"] = "0x" + keccak256(header_rlp_from_json(forged)).hex()
    lies = {hex(rested): {**block(rested), "hash": "0x" + "ee" * 32}, hex(rested + 1): forged}
    config = load(tmp_path, config_toml())
    with (
        RpcProxy(anvil.rpc_url, honest) as liar,
        RpcProxy(anvil.rpc_url, honest) as mirror,
        open_ledger(tmp_path / "ledger.db") as ledger,
    ):
        liar.answer = lambda r: (
            lies.get(r["params"][0]) if r["method"] == "eth_getBlockByNumber" else None
        )
        chain = quorum_origin([liar.url, anvil.rpc_url, mirror.url], outbox, quorum=2)
        relayer = Relayer(dataclasses.replace(config, chains=(chain,)), ledger)
        relayer._load_lanes()
        ledger.set_cursor(chain.domain, rested + 1, block(rested)["hash"])

        async def scan() -> None:
            async with open_evm(chain) as evm:
                for _ in range(10):
                    if await relayer._scan_once(
                        # Chunks of one block, so block rested + 1 ends a chunk.
                        relayer.lanes[chain.domain],
                        EvmOrigin(chain, evm, scan_chunk=1),
                    ):
                        return
            raise AssertionError("the scan did not catch up")

        trio.run(scan)
        assert "eth_getBlockByNumber" in liar.methods  # it was asked, and outvoted
        cursor = ledger.get_cursor(chain.domain)
        assert cursor is not None and cursor.next_block == rested + 4
        assert cursor.last_block_hash == block(rested + 3)["hash"]


def test_the_outbox_state_is_proven_and_empty_before_the_outbox_exists(
    anvil: AnvilProcess,
) -> None:
    """``outbox_state(may_be_absent=True)`` (what the scan reconciles with): the empty outbox
    at a block before the outbox was deployed (a scan may start there: it must not fail for
    ever), the real count after."""
    rpc(anvil.rpc_url, "anvil_mine", [hex(1)])  # not block 0: anvil's genesis proofs fail
    before = int(rpc(anvil.rpc_url, "eth_blockNumber", []), 16)
    outbox = deploy_outbox(anvil.rpc_url)
    chain = quorum_origin([anvil.rpc_url], outbox)

    async def counts() -> tuple[int, int]:
        async with open_evm(chain) as evm:
            earlier = await evm.outbox_state(outbox, await evm.header(before), may_be_absent=True)
            later = await evm.outbox_state(outbox, await evm.header("latest"), may_be_absent=True)
            assert earlier.root == EMPTY_ROOT
            return earlier.count, later.count

    assert trio.run(counts) == (0, 0)
    send(anvil.rpc_url, outbox, b"one")
    assert trio.run(counts) == (0, 1)


# --------------------------------------------------------------------------- review: the store


def test_a_fifo_or_dev_zero_in_the_proposal_store_is_skipped_not_read(tmp_path: Path) -> None:
    """Anyone may write the store: a FIFO there blocked ``pending`` (relayer and attesters)
    for ever, a symlink to /dev/zero would fill the memory. Both are passed over now, while a
    largest proposal the relayer can write still fits the size limit."""
    folder = tmp_path / "proposals" / str(ASSETHUB)
    folder.mkdir(parents=True)
    fifo, zero = folder / "a.json", folder / "b.json"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    store = DirectoryProposalStore(tmp_path)
    listed: list[Any] = []
    reader = threading.Thread(target=lambda: listed.append(store.pending(ASSETHUB)), daemon=True)
    reader.start()
    reader.join(timeout=5)
    try:
        assert not reader.is_alive(), "pending() hangs on a FIFO in the proposal store"
        assert listed == [[]]
    finally:
        if reader.is_alive():  # release the old code's reader, without /dev/zero to go on to
            zero.unlink()
            with open(fifo, "w"):
                pass
            reader.join(timeout=5)

    branch = [b"\xff" * 32] * 32
    # As many of the largest messages as the relayer's planner puts in one proposal.
    budget = budget_for(ExtrinsicLimits(weight=10**18, length=10**12))
    fitting = budget.proposal_bytes // proposal_bytes(MAX_BODY_BYTES + HEADER_SIZE)
    largest = [
        Message(1, n, ALPHA, b"\x5e" * 32, ASSETHUB, b"\x8e" * 32, b"\xff" * MAX_BODY_BYTES)
        for n in range(min(SUBSTRATE_BATCH_SIZE, fitting))
    ]
    checkpoint = Checkpoint(origin=ALPHA, outbox=b"\x11" * 32, root=b"\x33" * 32, index=99)
    big = new_proposal(ASSETHUB, checkpoint, [m.encode() for m in largest], [branch] * len(largest))
    assert len(big.to_json()) <= MAX_PROPOSAL_BYTES


# --------------------------------------------------------------------------- review: the stipend


def test_the_relayer_stipend_is_the_inbox_handle_gas_needed() -> None:
    """``evm_delivery.STIPEND_GAS`` copies ``Inbox.HANDLE_GAS_NEEDED`` (internal, so not callable):
    evaluated here from the Solidity source, so the two cannot drift apart. Too small a
    stipend would let a recipient make batches revert again (issue #8, point 2)."""
    source = (Path(solc.__file__).parent / "contracts" / "Inbox.sol").read_text()
    constants = dict(re.findall(r"constant\s+(\w+)\s*=\s*([^;]+);", source))

    def value(node: ast.expr) -> int:
        """A Solidity integer expression of literals, constants and + - * / (floor)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return value(ast.parse(constants[node.id], mode="eval").body)
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            operations: dict[type[ast.operator], Callable[[int, int], int]] = {
                ast.Add: lambda a, b: a + b,
                ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b,
                ast.Div: lambda a, b: a // b,
            }
            return operations[type(node.op)](left, right)
        raise AssertionError(f"unexpected Solidity expression {ast.dump(node)}")

    needed = value(ast.parse("HANDLE_GAS_NEEDED", mode="eval").body)
    assert needed > 500_000
    assert needed == evm_delivery.STIPEND_GAS
    per_message = value(ast.parse("MESSAGE_GAS_NEEDED", mode="eval").body)
    assert per_message == evm_delivery.MESSAGE_GAS_NEEDED


# --------------------------------------------------------------------------- review: proven state


def test_an_endpoint_lying_about_delivered_cannot_decide_a_delivery(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination's endpoint answers every guard word of the inbox the delivery reads as
    its "already delivered?" hint (``eth_getStorageAt`` at latest) with every bit set: every
    message "delivered". ``delivered`` is terminal: believed, the message would be recorded
    delivered and never be. The relayer proves the inbox's storage under the final header's
    state root instead, delivers the message, and records that.

    Then, honest again: the hint (:func:`~relayer.families.evm.delivery.latest_accepted`)
    agrees with the real Inbox's ``isDelivered`` for the delivered nonce, its undelivered
    neighbour, and a nonce 256 higher (another guard word): the hint reads the inbox's own
    slots, not only slots it wrote itself."""
    beta = config.chain("beta")
    (waiting,) = dispatch(config, "alpha", "beta", [beta.contract("ping")])
    wait_signed(config, "alpha")
    honest_batch = JsonRpcClient.call_batch
    inbox = "0x" + beta.contract("inbox")[-20:].hex()
    lies: list[str] = []

    async def lying_words(self: JsonRpcClient, calls: Any) -> Any:
        # The delivery's hint reads the inbox's guard words: every bit "set", at latest.
        answers = await honest_batch(self, calls)
        for at, (method, params) in enumerate(calls):
            if method == "eth_getStorageAt" and str(params[0]).lower() == inbox:
                answers[at] = "0x" + "ff" * 32
                lies.append(method)
        return answers

    monkeypatch.setattr(JsonRpcClient, "call_batch", lying_words)
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.3)
        run_relayer(relayer, lambda: status(ledger, waiting) == MessageStatus.DELIVERED, 60)
        assert lies  # the lie was served, and did not decide anything
        assert delivered_on_chain(beta, ledger, waiting)
        record = ledger.get(waiting)
        assert record is not None and record.reason is not None
        assert "final block" in record.reason
        origin, nonce = record.origin, record.nonce
    monkeypatch.setattr(JsonRpcClient, "call_batch", honest_batch)  # honest again
    # The delivered nonce, its undelivered neighbour, and one in the next guard word.
    records = [
        MessageRecord(id=f"0x{n:064x}", origin=origin, nonce=n, message=b"")
        for n in (nonce, nonce + 1, nonce + 256)
    ]

    async def hint_and_truth() -> tuple[list[int], list[int]]:
        async with JsonRpcClient(beta.rpc) as client:
            evm = EvmChain(client, domain=beta.domain, finality="devnet-instant")
            outbox = config.chain("alpha").contract("outbox")
            seen = await evm_delivery.latest_accepted(evm, beta.contract("inbox"), outbox, records)
            calls = [evm_delivery._is_delivered_call(r.origin, r.nonce) for r in records]
            flags = await evm.call_many(beta.contract("inbox"), calls)
            truth = [r.nonce for r, f in zip(records, flags, strict=True) if int.from_bytes(f)]
            return [r.nonce for r in seen], truth

    hint, truth = trio.run(hint_and_truth)
    assert hint == truth == [nonce]


# --------------------------------------------------------------------------- review: fee bumps


def _attested(ledger: Ledger, count: int) -> list[str]:
    """``count`` messages of ``ORIGIN`` recorded and driven to ``attested``; their ids."""
    found = [disc(ORIGIN, n) for n in range(count)]
    ledger.record_discovered(found)
    ids = [msg_id(d.message) for d in found]
    drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger))
    return ids


def test_the_superseded_hash_mined_after_a_fee_bump_carries_its_batch(
    config: Config, tmp_path: Path
) -> None:
    """A fee bump records a second hash for the nonce and marks the first ``replaced``; the
    first is often the one mined after all. Its receipt is recorded (confirmed, fee paid) and
    it becomes the messages' carrier, so they are settled from the final block like any other
    — not left ``submitted`` on a hash that can never be mined until a timeout re-sends them."""
    beta = config.chain("beta")
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, 2)
        first = ledger.record_transaction(tx_for(beta.domain, seed=41), ids)
        bump = dataclasses.replace(tx_for(beta.domain, seed=42, replaces=first.hash), nonce=41)
        second = ledger.record_transaction(bump, ids)
        delivery = EvmDelivery(beta, Relayer(config, ledger))
        mined = MinedTx(bytes.fromhex(first.hash[2:]), 41, 7, 90_000, 10**9, [])
        delivery._apply_receipt(beta, mined, ids)
        carrier = ledger.get_transaction(beta.domain, first.hash)
        assert carrier is not None and carrier.status == TxStatus.CONFIRMED
        assert carrier.block_number == 7 and carrier.fee_paid == 90_000 * 10**9
        superseded = ledger.get_transaction(beta.domain, second.hash)
        assert superseded is not None and superseded.status == TxStatus.REPLACED
        for i in ids:
            record = ledger.get(i)
            assert record is not None and record.status == MessageStatus.SUBMITTED
            assert record.delivery_tx_hash == first.hash


class _GarbledReceipts:
    """The two calls ``_settle_pending`` makes of a transaction engine, for a node that garbles
    one receipt (the parsing itself is tested against a real anvil in test_error_tree)."""

    def __init__(self, garbled: bytes, mined: MinedTx) -> None:
        self.garbled, self.mined = garbled, mined

    async def receipt(self, tx_hash: bytes) -> MinedTx | None:
        if tx_hash == self.garbled:
            raise MalformedAnswer("eth_getTransactionReceipt answered a receipt without status")
        return self.mined if tx_hash == self.mined.hash else None

    async def sync_nonce(self) -> None:
        return None


def test_a_garbled_receipt_at_start_up_settles_the_others_and_stops_nothing(
    config: Config, tmp_path: Path
) -> None:
    """At start-up the relayer settles its predecessor's pending transactions from their
    receipts. One garbled receipt (a hostile node) used to end the whole pass, and the start:
    now that transaction stays pending (asked again later) and the others are settled."""
    beta = config.chain("beta")
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ids = _attested(ledger, 2)
        garbled = ledger.record_transaction(tx_for(beta.domain, seed=51), [ids[0]])
        good = ledger.record_transaction(tx_for(beta.domain, seed=52), [ids[1]])
        mined = MinedTx(bytes.fromhex(good.hash[2:]), 52, 7, 90_000, 10**9, [])
        engine = _GarbledReceipts(bytes.fromhex(garbled.hash[2:]), mined)
        delivery = EvmDelivery(beta, Relayer(config, ledger))
        trio.run(delivery._settle_pending, beta, cast(TxEngine, engine))
        still = ledger.get_transaction(beta.domain, garbled.hash)
        settled = ledger.get_transaction(beta.domain, good.hash)
        assert still is not None and still.status == TxStatus.PENDING
        assert settled is not None and settled.status == TxStatus.CONFIRMED
        assert delivery._settled


# --------------------------------------------------------------------------- review: block gas


def test_an_endpoint_inflating_the_block_gas_limit_cannot_wedge_the_lane(
    config: Config, tmp_path: Path
) -> None:
    """beta's blocks hold 2 M gas; its endpoint says 60 M for ``latest``. Believed, a batch of
    four 20 KB messages (~2.6 M asked: 1.3 M of calldata alone) fits its "half a block" and
    is refused by the chain at every broadcast, the same batch each round. The ceiling comes
    from the final header instead: the batch is split until each part fits."""
    beta = config.chain("beta")
    url = beta.rpc[0]
    real = int(rpc(url, "eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)
    rpc(url, "anvil_setBlockGasLimit", [hex(2_000_000)])
    try:
        rpc(url, "anvil_mine", [hex(5)])  # the final block has the small limit too
        # Non-zero bytes (16 gas each): one stipend on top of pings would no longer exceed
        # the block, and the test would pass with the endpoint believed.
        ids = dispatch(
            config, "alpha", "beta", [beta.contract("ping")] * 4, lambda n: bytes([n + 1]) * 20_000
        )
        wait_signed(config, "alpha")

        def inflated(request: dict[str, Any]) -> Any:
            if request["method"] != "eth_getBlockByNumber" or request["params"][0] != "latest":
                return None
            return {
                **rpc(url, "eth_getBlockByNumber", ["latest", False]),
                "gasLimit": hex(60 * 10**6),
            }

        with RpcProxy(url, honest) as liar, open_ledger(config.ledger) as ledger:
            liar.answer = inflated
            lied = tuple(
                dataclasses.replace(c, rpc=(liar.url,)) if c is beta else c for c in config.chains
            )
            relayer = Relayer(dataclasses.replace(config, chains=lied), ledger, poll=0.3)
            run_relayer(
                relayer,
                lambda: all(status(ledger, i) == MessageStatus.DELIVERED for i in ids),
                60,
                lambda: describe(ledger, ids),
            )
        assert all(delivered_on_chain(beta, ledger, i) for i in ids)
    finally:
        rpc(url, "anvil_setBlockGasLimit", [hex(real)])
        rpc(url, "anvil_mine", [hex(5)])


# --------------------------------------------------------------------------- stored checkpoints


def test_a_stored_checkpoint_of_another_committee_halts_with_one_line(tmp_path: Path) -> None:
    """The ledger holds a quorum of signatures that the configured committee does not
    recognise (the committee was changed under it): the relayer halts with one line naming
    the checkpoint — never a traceback, never a delivery under it."""
    config = load(tmp_path, config_toml())
    alpha = config.chain("alpha")
    lane = relay.Lane(chain=alpha, outbox=alpha.outbox_id)
    checkpoint = Checkpoint(origin=alpha.domain, outbox=lane.outbox, root=keccak256(b"r"), index=7)
    strangers = sorted(
        (Account.from_key(keccak256(b"stranger %d" % i)) for i in range(2)),
        key=lambda a: bytes.fromhex(a.address[2:]),
    )
    with open_ledger(tmp_path / "ledger.db") as ledger:
        stored = ledger.save_checkpoint(
            checkpoint.origin,
            checkpoint.outbox,
            checkpoint.root,
            checkpoint.index,
            block_number=1,
            block_hash=keccak256(b"block"),
        )
        for account in strangers:
            signed = account.unsafe_sign_hash(checkpoint.digest())
            ledger.add_signature(stored, bytes.fromhex(account.address[2:]), signed.signature)
        relayer = Relayer(config, ledger)
        with pytest.raises(relay.RouteHalted, match=r"^the stored checkpoint 7 of origin alpha"):
            relayer.checkpoint_for(lane)
