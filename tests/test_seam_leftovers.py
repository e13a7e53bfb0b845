"""Review leftovers around the chain-family seam (session 7, SEAM).

1. ``retry --on-chain`` asks the destination's family (``ChainFamily.reprove``); no code outside
   ``relayer/families/`` branches on a concrete family class. A Substrate destination is one
   line naming the family and why, exit 2, nothing sent.
2. The operator's re-proof sorts stored signatures with the relayer's own rule
   (``relayer.relay.select_quorum``), so it sees what the relayer halts on: a quorum of the
   committee over ANOTHER root than the ledger's.
3. A delivery's write outside its lease's domain (``WriteOutsideDomain``) ends that lease for
   good, as a scan's does, instead of being logged and retried every round.
4. The destination's inbox states the domain it takes messages for (``Inbox.localDomain``):
   a relayer configured with another domain id for it refuses to deliver there, in one line.
5. A lone message whose dry run reverts waits longer each time (doubling, capped), counted in
   ``dry_run_backoffs``; it is never given up, and an operator's retry starts it over.

Chain cases run on the session ``anvil`` (one Inbox deployed for the module); no chain is
started here.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from cli_runner import run_cli
from e2e_support import mined
from eth_abi.abi import encode as abi_encode
from fakes import RpcProxy, honest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_config import VALIDATORS
from test_inbox_reproof import KEYS as REPROOF_KEYS
from test_inbox_reproof import OUTBOX, A, sign_into, unit_tree
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import disc, msg_id, tx_for
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_substrate_route import ASSETHUB, config_toml, message
from test_substrate_route import load as load_substrate_config

from adapters.errors import AdapterError
from adapters.evm.contracts import load_artifact
from adapters.evm.tx import TxEngine
from adapters.jsonrpc import RpcCallError, result_of
from adapters.rpc import JsonRpcClient
from adapters.text import NODE_TEXT_LIMIT
from devnet.anvil import DEV_ADDRESSES, DEV_PRIVATE_KEYS, AnvilProcess
from light_clients.committee import (
    Checkpoint,
    Committee,
    address_of,
    recover_signer,
    sign_checkpoint,
)
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from relayer import operator, relay
from relayer.checkpoints import DirectoryCheckpointStore, SignedCheckpoint
from relayer.config import ChainConfig, Config, load_config
from relayer.families.evm.connection import open_evm
from relayer.families.evm.delivery import (
    DRY_RUN_MAX_WAIT,
    PROCESS,
    UNSENT_COUNT_CAP,
    EvmDelivery,
    Submission,
)
from relayer.families.evm.origin import EvmOrigin
from relayer.families.evm.reproof import ReproofRefused, newest_attestation
from relayer.leases import LeaseBoard, LeaseKeeper
from relayer.ledger import DiscoveredMessage, Ledger, MessageStatus, StatusEvent, open_ledger
from relayer.relay import DomainCheck, Relayer, RouteHalted, check_outbox_domain

ROOT = Path(__file__).resolve().parent.parent
INBOX_DOMAIN = 7077
"""The domain the module's Inbox is deployed for."""
ORIGIN = 7011
RELAYER_KEY = DEV_PRIVATE_KEYS[9]  # funded (a dry run's fees are checked); never sends here


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def inbox(anvil: AnvilProcess) -> bytes:
    """An Inbox on the session anvil, deployed for :data:`INBOX_DOMAIN` (no committee, no
    origin trusted: every ``process`` reverts)."""
    code = load_artifact("Inbox").bytecode + abi_encode(
        ["uint32", "address"], [INBOX_DOMAIN, DEV_ADDRESSES[0]]
    )
    deploy = {"from": DEV_ADDRESSES[0], "data": "0x" + code.hex(), "gas": hex(15_000_000)}
    receipt = mined(anvil.rpc_url, deploy)
    assert receipt["status"] == "0x1", receipt
    return bytes.fromhex(receipt["contractAddress"][2:])


def evm_config(
    tmp_path: Path,
    anvil: AnvilProcess,
    inbox: bytes,
    *,
    domain: int,
    beta_rpc: Sequence[str] = (),
    quorum: int = 1,
) -> Config:
    """An origin ``alpha`` (no outbox contract there: never scanned here) and a destination
    ``beta`` on the session anvil whose inbox is :func:`inbox`, configured as ``domain``
    (reached through ``beta_rpc`` with ``rpc_quorum`` ``quorum`` if given)."""
    sections = "".join(
        f"""
[[chains]]
name = "{name}"
domain = {chain_domain}
kind = "evm"
rpc = [{", ".join(f'"{url}"' for url in urls)}]
rpc_quorum = {rpc_quorum}
chain_id = {anvil.chain_id}
finality = "devnet-instant"
{role} = "0x{address.hex()}"
"""
        for name, chain_domain, role, address, urls, rpc_quorum in (
            ("alpha", ORIGIN, "outbox", b"\x0a" * 20, [anvil.rpc_url], 1),
            ("beta", domain, "inbox", inbox, beta_rpc or [anvil.rpc_url], quorum),
        )
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "passerelle.toml"
    path.write_text(
        f"""devnet = true
[ledger]
location = "ledger.db"
[committee]
validators = [{", ".join(f'"{v}"' for v in VALIDATORS)}]
threshold = 2
{sections}
[relayer]
key = "{RELAYER_KEY}"
"""
    )
    return load_config(path)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as opened:
        yield opened


async def unwrapped(task: Awaitable[None]) -> None:
    """Await ``task``; the first exception inside a (nested) trio exception group raised
    alone: a halt from inside the delivery's worker nursery comes wrapped, and the CLI shows
    its first leaf (``relayer.cli``) just so."""
    try:
        await task
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        raise leaf from None


def attested(ledger: Ledger, origin: int, destination: int) -> str:
    """One message ``origin`` → ``destination`` moved to ``attested``; its id."""
    found = disc(origin, 0, dest=destination)
    ledger.record_discovered([found])
    ledger.transition([msg_id(found.message)], MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        origin, "0x" + "0b" * 32, "0x" + "77" * 32, 5, block_number=5, block_hash=bytes(32)
    )
    ledger.transition([msg_id(found.message)], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
    return msg_id(found.message)


def _trail(ledger: Ledger, message_id: str, reasons: Sequence[str | None]) -> None:
    """Append audit events to ``message_id``'s trail: each reason a move to ``failed`` (None:
    the re-queue back to ``attested``), written by SQL as years of rounds would have."""
    with ledger.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO status_events (message_id, from_status, to_status, reason, at) "
                "VALUES (:m, :f, :t, :r, 1.0)"
            ),
            [
                {"m": message_id, "r": reason}
                | ({"f": "attested", "t": "failed"} if reason else {"f": "failed", "t": "attested"})
                for reason in reasons
            ],
        )


# --------------------------------------------------------------------------- point 1


FAMILY_CLASS = re.compile(r"\b(EvmFamily|SubstrateFamily)\b|isinstance\([^)]*Family\b")


def test_no_code_outside_the_families_branches_on_a_concrete_family() -> None:
    """The seam's rule: ``relayer.family.family`` maps a kind to code, and families answer
    capabilities; nothing in ``relayer/`` (outside ``relayer/families/``) or ``adapters/``
    names a concrete family class or asks ``isinstance`` of one."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("relayer", "adapters")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "families" not in path.relative_to(ROOT).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FAMILY_CLASS.search(line)
    ]
    assert offenders == []


def test_retry_on_chain_to_a_substrate_destination_says_the_family_has_no_re_proof(
    tmp_path: Path,
) -> None:
    """A message parked nowhere (Substrate destinations park nothing): one line naming the
    family, the chain and why, exit 2, from the family's own answer; nothing is opened."""
    config = load_substrate_config(tmp_path, config_toml())
    raw = message(destination=ASSETHUB).encode()
    message_id = "0x" + keccak256(raw).hex()
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ledger.record_discovered([DiscoveredMessage(raw, 1, bytes(32), bytes(32), 0)])
        ledger.transition([message_id], MessageStatus.DELIVERED, reason="handled, recorded")
        with pytest.raises(operator.OperatorRefused) as refused:
            operator.retry_on_chain(config, ledger, message_id)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(message_id)
    assert "not supported on substrate (destination assethub)" in line
    assert "parks no message" in line

    result = run_cli("retry", message_id, "--on-chain", "--config", tmp_path / "passerelle.toml")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"passerelle: {line}"]


# --------------------------------------------------------------------------- point 2


def test_a_re_proof_says_when_the_committee_signed_another_root_than_the_ledger(
    tmp_path: Path,
) -> None:
    """The committee's quorum at the covering indices is over the chain's messages, the ledger
    holds others (a damaged ledger, a rescan of another fork): the refusal says that the
    ledger disagrees, and where, instead of "wait for the attesters" (which never helps). A
    quorum over the ledger's root below the disagreement still serves: the search goes on."""
    committee = Committee(tuple(address_of(k) for k in REPROOF_KEYS), 2)
    ledger_tree, chain_tree = unit_tree(4), IncrementalMerkleTree()
    chain_tree.extend([*(ledger_tree.leaf(n) for n in range(3)), keccak256(b"another fork")])
    store = DirectoryCheckpointStore(tmp_path / "store")
    sign_into(store, chain_tree, 3, REPROOF_KEYS)
    with pytest.raises(ReproofRefused) as refused:
        newest_attestation(store, ledger_tree, committee, origin=A, outbox=OUTBOX, nonce=2)
    line = str(refused.value)
    assert "\n" not in line and line.startswith("no checkpoint covering nonce 2")
    assert "the inbox's committee and the ledger disagree at index 3" in line
    assert "ledger rebuild" in line and "the committee signed a root the origin never had" in line

    sign_into(store, chain_tree, 2, REPROOF_KEYS)  # the two agree up to nonce 2
    found, signatures = newest_attestation(
        store, ledger_tree, committee, origin=A, outbox=OUTBOX, nonce=2
    )
    assert (found.index, found.root, len(signatures)) == (2, ledger_tree.root(3), 2)


# --------------------------------------------------------------------------- points 3 and 4


@pytest.mark.chain
def test_an_inbox_of_another_domain_halts_delivery_at_its_start_and_the_right_one_passes(
    anvil: AnvilProcess, inbox: bytes, tmp_path: Path, ledger: Ledger
) -> None:
    """The relayer's deliver task asks the destination's family which domain its inbox takes
    before anything else: a configuration naming the chain otherwise is one line
    (RouteHalted: the relayer stops with exit 3), nothing read from the ledger; the right one
    passes, an inbox that cannot be read is logged and left to the inbox's own refusals, and
    a Substrate destination states none (the configuration names it)."""
    wrong = evm_config(tmp_path / "wrong", anvil, inbox, domain=INBOX_DOMAIN + 1)
    relayer = Relayer(wrong, ledger)

    async def deliver() -> None:
        with trio.fail_after(20):  # without the check: the delivery runs for ever
            await unwrapped(relayer._deliver_loop(wrong.chain("beta")))

    with pytest.raises(RouteHalted) as halted:
        trio.run(deliver)
    line = str(halted.value)
    assert "\n" not in line
    assert f"its inbox was deployed for domain {INBOX_DOMAIN}" in line
    assert f"gives the chain domain {INBOX_DOMAIN + 1}" in line
    assert relayer.metrics.rpc_errors == 0  # read, and found wrong: no "unreadable"
    # L8 (review of FSEAM): through the command, the halt raised inside the delivery's worker
    # nursery (an exception group) is that one line and exit 3, no traceback.
    result = run_cli("relay", "--config", tmp_path / "wrong" / "passerelle.toml")
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.splitlines() == [f"passerelle: {line}"]

    async def check(config: Config) -> bool:
        async with open_evm(config.chain("beta")) as evm:
            delivery = EvmDelivery(config.chain("beta"), Relayer(config, ledger))
            await delivery._check_domain(config.chain("beta"), evm)
            return delivery._domain.read

    right = evm_config(tmp_path / "right", anvil, inbox, domain=INBOX_DOMAIN)
    assert trio.run(check, right) is True
    no_code = evm_config(tmp_path / "no_code", anvil, b"\x0d" * 20, domain=INBOX_DOMAIN)
    assert trio.run(check, no_code) is False


@pytest.mark.chain
def test_a_delivery_writing_outside_its_lease_domain_ends_that_lease_for_good(
    anvil: AnvilProcess,
    inbox: bytes,
    tmp_path: Path,
    ledger: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``deliver:7077``'s settle finds a pending transaction on its chain whose message row
    now names destination 2 (a ledger edited by hand or damaged: the ledger itself never links
    a transaction to another chain's message). Putting that message back is a write another
    lease's lock covers. Logged and retried each round before; now the lease keeper stops the
    lease for good (given back, never claimed again by this relayer), as it does a scan's,
    and nothing of the write is recorded."""
    config = evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN)
    foreign = attested(ledger, ORIGIN, INBOX_DOMAIN)
    sent = ledger.record_transaction(tx_for(INBOX_DOMAIN, seed=77), [foreign])
    with ledger.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE messages SET destination = 2 WHERE id = :id"), {"id": foreign}
        )
    relayer = Relayer(config, ledger)
    name = f"deliver:{INBOX_DOMAIN}"
    board = LeaseBoard(ledger, (name,), holder="seam", lease_seconds=4)
    stopped: list[float] = []

    async def main() -> None:
        keeper = LeaseKeeper(
            board, {name: partial(relayer._deliver_loop, config.chain("beta"))}, relayer.metrics
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            with trio.fail_after(30):
                while keeper._cooling.get(name) != math.inf:
                    await trio.sleep(0.05)
            stopped.append(keeper._cooling[name])
            assert name not in keeper.held
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="passerelle.relayer"):
        trio.run(main)
    assert stopped == [math.inf]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"stopped {name} for good" in e and "outside lease" in e for e in errors), errors
    # The line names the message to look at, not only the lease (review of SEAM, L7).
    assert any(f"stopped {name}" in e and foreign in e for e in errors), errors
    assert not any("cannot settle" in e for e in errors), errors  # not swallowed first
    record = ledger.get(foreign)
    assert record is not None and record.status == MessageStatus.SUBMITTED  # nothing written
    (pending,) = ledger.transactions(chain=INBOX_DOMAIN)
    assert pending.hash == sent.hash and pending.status == sent.status


# --------------------------------------------------------------------------- point 5


@pytest.mark.chain
def test_a_message_whose_dry_run_reverts_waits_longer_each_time_and_is_never_given_up(
    anvil: AnvilProcess, inbox: bytes, tmp_path: Path, ledger: Ledger
) -> None:
    """The inbox refuses the message (no committee): each lone dry run that reverts fails it
    with a wait that doubles (2, 4, 8, … s, counted from its audit trail, so a restart does
    not reset it) up to a cap, one ``dry_run_backoffs`` each; well past the attempts a
    submitted message gets, it still has a retry time (never given up: it may turn
    deliverable), and ``passerelle retry`` starts the waits over."""
    config = evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN)
    beta = config.chain("beta")
    message_id = attested(ledger, ORIGIN, INBOX_DOMAIN)
    relayer = Relayer(config, ledger)
    calldata = PROCESS + bytes(64)  # a call the inbox refuses: no committee, no origin

    async def dry_runs(count: int) -> list[tuple[float, float]]:
        # Each wait as the interval it must lie in: the failure (and with it the wait's start)
        # came between `before` and `after`, and a submission can take seconds on a loaded run.
        waits: list[tuple[float, float]] = []
        async with open_evm(beta) as evm:
            engine = TxEngine(evm.rpc, relayer.relayer_signer(), anvil.chain_id)
            for _ in range(count):
                record = ledger.get(message_id)
                assert record is not None
                if record.status == MessageStatus.FAILED:  # its wait over: as requeue_due does
                    ledger.transition([message_id], MessageStatus.ATTESTED)
                    record = ledger.get(message_id)
                    assert record is not None
                # A restart each time: the wait is read from the trail, not remembered.
                delivery = EvmDelivery(beta, relayer)
                before = time.time()
                again = await delivery._submit(
                    beta, evm, engine, Submission(inbox, calldata, [record])
                )
                assert again == []
                failed = ledger.get(message_id)
                assert failed is not None and failed.status == MessageStatus.FAILED
                assert failed.reason is not None and failed.reason.startswith("dry run reverted")
                assert failed.next_attempt_at is not None  # never given up
                after = time.time()
                waits.append((failed.next_attempt_at - after, failed.next_attempt_at - before))
        return waits

    def waited(expected: list[float], waits: list[tuple[float, float]]) -> bool:
        """Each expected wait within its interval (0.05 s for the clocks' rounding)."""
        pairs = zip(expected, waits, strict=True)
        return all(low - 0.05 <= wait <= high + 0.05 for wait, (low, high) in pairs)

    waits = trio.run(dry_runs, 4)
    assert waited([2, 4, 8, 16], waits), waits
    assert relayer.metrics.dry_run_backoffs == 4
    assert relayer.metrics.dry_run_failures == 4
    from relayer.families.evm.delivery import DRY_RUN_MAX_WAIT, dry_run_wait  # noqa: PLC0415

    assert dry_run_wait(7) < dry_run_wait(8) == DRY_RUN_MAX_WAIT == dry_run_wait(10_000)

    # Five more: past MAX_DELIVERY_ATTEMPTS, the wait reaches its cap and is still scheduled.
    waits = trio.run(dry_runs, 5)
    assert waited([32, 64, 128, 256, DRY_RUN_MAX_WAIT], waits), waits

    operator.retry(ledger, [message_id], routed={INBOX_DOMAIN})
    waits = trio.run(dry_runs, 1)
    assert waited([2], waits), waits  # the operator's retry starts the count over


# --------------------------------------------------------------------------- review of SEAM


LOCAL_DOMAIN = "0x8d3638f4"  # localDomain()


def _says_domain(domain: int) -> Callable[[dict[str, Any]], Any]:
    """A proxy's ``answer``: ``localDomain()`` is ``domain``; everything else from the node."""

    def answer(request: dict[str, Any]) -> Any:
        if request["method"] == "eth_call" and request["params"][0]["data"] == LOCAL_DOMAIN:
            return "0x" + abi_encode(["uint32"], [domain]).hex()
        return None

    return answer


@pytest.mark.chain
def test_a_domain_halt_needs_the_rpc_quorum_and_an_unread_one_is_asked_again(
    anvil: AnvilProcess,
    inbox: bytes,
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """M1: one endpoint of two (``rpc_quorum`` 2) lying about the inbox's domain halts
    nothing: a warning, one ``rpc_errors``, delivery goes on; two agreeing on a wrong domain
    halt. The outbox's check is the same rule (one reader). L1: a domain that could not be
    read when the delivery started is asked again (after a wait: shortened here), on its own
    connection, and a mismatch found then still stops the route."""
    monkeypatch.setattr(relay, "DOMAIN_RECHECK_FIRST", 0.05)
    with RpcProxy(anvil.rpc_url, honest) as liar, RpcProxy(anvil.rpc_url, honest) as other:
        liar.answer = _says_domain(INBOX_DOMAIN + 5)
        one_liar = evm_config(
            tmp_path / "one", anvil, inbox, domain=INBOX_DOMAIN,
            beta_rpc=[liar.url, anvil.rpc_url], quorum=2,
        )  # fmt: skip
        beta = one_liar.chain("beta")
        relayer = Relayer(one_liar, ledger)

        async def check(chain: ChainConfig) -> bool:
            async with open_evm(chain) as evm:
                delivery = EvmDelivery(chain, relayer)
                await delivery._check_domain(chain, evm)
                return delivery._domain.read

        assert trio.run(check, beta) is False
        assert relayer.metrics.rpc_errors == 1
        # The outbox's check reads through the same function: the same verdict.
        outbox_side = replace(beta, contracts={**beta.contracts, "outbox": inbox})

        async def outbox_domain() -> bool:
            async with open_evm(outbox_side) as evm:
                check = DomainCheck("outbox", outbox_side, relayer.metrics)
                return await check_outbox_domain(check, EvmOrigin(outbox_side, evm))

        assert trio.run(outbox_domain) is False

        other.answer = _says_domain(INBOX_DOMAIN + 5)
        two_liars = evm_config(
            tmp_path / "two", anvil, inbox, domain=INBOX_DOMAIN,
            beta_rpc=[liar.url, other.url], quorum=2,
        )  # fmt: skip
        with pytest.raises(RouteHalted) as halted:
            trio.run(check, two_liars.chain("beta"))
        assert f"its inbox was deployed for domain {INBOX_DOMAIN + 5}" in str(halted.value)

        # L1: unreadable at the start (the node refuses the call), then read: wrong domain.
        asked: list[int] = []

        def refuse_twice(request: dict[str, Any], path: str) -> str | None:
            if request["method"] == "eth_call" and request["params"][0]["data"] == LOCAL_DOMAIN:
                asked.append(1)
                return "busy" if len(asked) <= 2 else None
            return None

        other.answer = lambda request: None
        other.fail = refuse_twice
        wrong = evm_config(
            tmp_path / "late", anvil, inbox, domain=INBOX_DOMAIN + 1, beta_rpc=[other.url]
        )
        late = Relayer(wrong, ledger, poll=0.05)

        async def deliver() -> None:
            with trio.fail_after(20):  # without the re-check: the delivery runs for ever
                await unwrapped(late._deliver_loop(wrong.chain("beta")))

        with pytest.raises(RouteHalted) as halted:
            trio.run(deliver)
        assert len(asked) == 3 and late.metrics.rpc_errors >= 2
        assert f"gives the chain domain {INBOX_DOMAIN + 1}" in str(halted.value)


@pytest.mark.chain
def test_a_long_audit_trail_costs_a_bounded_read_and_node_words_stay_one_line(
    anvil: AnvilProcess, inbox: bytes, tmp_path: Path, ledger: Ledger
) -> None:
    """M2: a message failed by its dry run 10,000 times (a year stuck) loads one page (64
    events) of its trail per revert (it loaded all of them, inside the write
    transaction) and still waits the cap; a fresh one waits 2 s. L3/L4: a node REFUSING the
    dry run (not a revert) is no backoff, and its words, newline and escape included, are one
    bounded line in the reason."""
    config = evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN)
    beta = config.chain("beta")
    relayer = Relayer(config, ledger)
    stuck = attested(ledger, ORIGIN, INBOX_DOMAIN)
    _trail(ledger, stuck, ["dry run reverted: old; 1 time(s), next try in 2 s", None] * 10_000)
    loaded: list[object] = []
    listener = lambda target, context: loaded.append(target)  # noqa: E731
    sa.event.listen(StatusEvent, "load", listener)
    try:
        record = ledger.get(stuck)
        assert record is not None
        before = time.time()
        assert EvmDelivery(beta, relayer)._dry_run_reverted(record, "again")
    finally:
        sa.event.remove(StatusEvent, "load", listener)
    assert 0 < len(loaded) <= 64, len(loaded)  # one page of the trail (backoff_trail), not 20,000
    failed = ledger.get(stuck)
    assert failed is not None and failed.next_attempt_at is not None
    assert round(failed.next_attempt_at - before) == round(DRY_RUN_MAX_WAIT)
    assert failed.reason is not None and f"over {UNSENT_COUNT_CAP}" in failed.reason

    class Refusing:
        """A node answering the dry run with an error: a refusal or a revert, hostile words."""

        def __init__(self, code: int, message: str) -> None:
            self.error = RpcCallError("http://node", "eth_estimateGas", code, message)

        async def current_fees(self) -> None:
            return None

        async def estimate_gas(self, *args: object, **kwargs: object) -> int:
            raise self.error

    words = "limit\nWARNING forged line \x1b[31m" + "x" * 1_000
    fresh = attested(ledger, ORIGIN + 1, INBOX_DOMAIN)

    async def dry_run(engine: Refusing) -> None:
        record = ledger.get(fresh)
        assert record is not None
        if record.status == MessageStatus.FAILED:
            ledger.transition([fresh], MessageStatus.ATTESTED)
            record = ledger.get(fresh)
            assert record is not None
        submission = Submission(inbox, PROCESS, [record])
        assert await EvmDelivery(beta, relayer)._submit(beta, None, engine, submission) == []  # type: ignore[arg-type]

    backoffs, errors = relayer.metrics.dry_run_backoffs, relayer.metrics.rpc_errors
    trio.run(dry_run, Refusing(-32005, words))  # "rate limit": not a revert
    refused = ledger.get(fresh)
    assert refused is not None and refused.reason is not None
    assert refused.reason.startswith("dry run refused by the node: error -32005: limit?WARNING")
    assert refused.reason.isprintable() and len(refused.reason) < 300
    assert (relayer.metrics.dry_run_backoffs, relayer.metrics.rpc_errors) == (backoffs, errors + 1)
    trio.run(dry_run, Refusing(3, "execution reverted: " + words))
    reverted = ledger.get(fresh)
    assert reverted is not None and reverted.reason is not None
    assert reverted.reason.startswith("dry run reverted: execution reverted: limit?WARNING")
    assert reverted.reason.isprintable() and len(reverted.reason) < 300
    assert relayer.metrics.dry_run_backoffs == backoffs + 1
    assert reverted.next_attempt_at is not None


def _reference_quorum(
    committee: Committee, checkpoint: Checkpoint, published: Sequence[SignedCheckpoint]
) -> tuple[str, list[bytes]]:
    """The relayer's rule said plainly (cb9a402's ``_quorum``): a signature counts for a member
    only if it recovers, over the checkpoint its file states, to the member it names; members
    over ``checkpoint`` vote for it, members over another one dissent; a dissent at threshold
    halts, else a quorum is the voters ascending. ("halt" | "none" | "quorum", signers)."""
    votes: dict[bytes, bytes] = {}
    dissent: set[bytes] = set()
    for signed in published:
        try:
            signer = recover_signer(signed.checkpoint.digest(), signed.signature)
        except VerificationError:
            continue
        if signer != signed.signer or signer not in committee.members:
            continue
        if signed.checkpoint == checkpoint:
            votes[signer] = signed.signature
        else:
            dissent.add(signer)
    if len(dissent) >= committee.threshold:
        return "halt", sorted(dissent)
    if len(votes) < committee.threshold:
        return "none", []
    return "quorum", sorted(votes)


QUORUM_KEYS = [bytes([i + 1]) * 32 for i in range(5)]
QUORUM_ROOTS = [bytes([0x20 + i]) * 32 for i in range(3)]


@st.composite
def _stores(draw: st.DrawFn) -> tuple[Committee, list[SignedCheckpoint]]:
    """A committee and a hostile store at one index: members and strangers, planted roots (a
    stated root another than the signed one), forged signer names, broken signatures."""
    addresses = [address_of(k) for k in QUORUM_KEYS]
    size = draw(st.integers(1, 4))
    committee = Committee(tuple(addresses[:size]), draw(st.integers(1, size)))
    published = []
    for _ in range(draw(st.integers(0, 7))):
        key = draw(st.integers(0, len(QUORUM_KEYS) - 1))
        stated = Checkpoint(1, b"\x0b" * 32, draw(st.sampled_from(QUORUM_ROOTS)), 5)
        over = draw(st.sampled_from([stated] * 3 + [replace(stated, root=QUORUM_ROOTS[2])]))
        signature = sign_checkpoint(QUORUM_KEYS[key], over)
        if draw(st.integers(0, 19)) == 0:
            signature = signature[:64] + bytes([30])  # a bad v
        name = addresses[key] if draw(st.booleans()) else draw(st.sampled_from(addresses))
        published.append(SignedCheckpoint(stated, name, signature, 1, b"\x00" * 32))
    return committee, published


@settings(max_examples=300, deadline=None)
@given(_stores())
def test_the_relayers_quorum_is_the_plain_rule(
    store: tuple[Committee, list[SignedCheckpoint]],
) -> None:
    """L3: ``Relayer._quorum`` (now through the shared ``select_quorum``) halts, finds nothing
    or picks signers exactly as the plain rule above does, on any hostile store."""
    committee, published = store
    checkpoint = Checkpoint(1, b"\x0b" * 32, QUORUM_ROOTS[0], 5)
    expected = _reference_quorum(committee, checkpoint, published)
    host = SimpleNamespace(config=SimpleNamespace(committee=committee))
    try:
        found = Relayer._quorum(host, checkpoint, published)  # type: ignore[arg-type]
    except RouteHalted:
        assert expected[0] == "halt"
        return
    if found is None:
        assert expected == ("none", [])
    else:
        assert expected == ("quorum", [s.signer for s in found])


# --------------------------------------------------------------------------- review of FSEAM


@pytest.mark.chain
def test_an_unread_domain_is_asked_again_ever_later_warned_once_per_problem_naming_endpoints(
    anvil: AnvilProcess,
    inbox: bytes,
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """M1 (review of FSEAM): one endpoint of two (``rpc_quorum`` 2) lying about the inbox's
    domain made the delivery ask every endpoint, warn and count an ``rpc_errors`` at every
    round, for ever. Now the check is asked again after a growing wait (shortened here to
    0.1 s doubling to 0.4 s), warned once per problem (repeats at debug), counted once per
    attempt, and the warning names what each redacted endpoint said; a malformed answer
    names its endpoint too. L1: a wrong domain halts only with a quorum for it AND no
    endpoint for the configured one; with one endpoint saying the configured domain, the
    same quorum against it is "unread"."""
    monkeypatch.setattr(relay, "DOMAIN_RECHECK_FIRST", 0.1)
    monkeypatch.setattr(relay, "DOMAIN_RECHECK_MAX", 0.4)
    key = "Key0123456789abcdefXYZ"
    with RpcProxy(anvil.rpc_url, honest) as liar, RpcProxy(anvil.rpc_url, honest) as other:
        asked: list[float] = []

        def count(request: dict[str, Any], path: str) -> None:
            if request["method"] == "eth_call" and request["params"][0]["data"] == LOCAL_DOMAIN:
                asked.append(time.monotonic())

        liar.fail = count
        liar.answer = _says_domain(INBOX_DOMAIN + 5)
        keyed = f"{liar.url.rstrip('/')}/v3/{key}"
        config = evm_config(
            tmp_path / "flood", anvil, inbox, domain=INBOX_DOMAIN,
            beta_rpc=[anvil.rpc_url, keyed], quorum=2,
        )  # fmt: skip
        relayer = Relayer(config, ledger, poll=0.02)

        async def deliver() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer._deliver_loop, config.chain("beta"))
                await trio.sleep(1.0)
                liar.answer = lambda request: (
                    "0xzz" if request["method"] == "eth_call" else None
                )  # malformed from now on: another problem
                await trio.sleep(1.2)
                nursery.cancel_scope.cancel()

        with caplog.at_level(logging.DEBUG, logger="passerelle.relayer"):
            trio.run(deliver)
        gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
        # Asked at 0, 0.1, 0.3, 0.7, 1.1, 1.5, 1.9 s: not at every 0.02 s round (~100).
        assert 5 <= len(asked) <= 8, gaps
        assert gaps[0] >= 0.09 and min(gaps[2:]) >= 0.35, gaps  # 0.1, 0.2, then 0.4 each
        assert relayer.metrics.rpc_errors == len(asked)  # once per attempt, nothing else
        said = [r for r in caplog.records if "domain cannot be read now" in r.getMessage()]
        warned = [r.getMessage() for r in said if r.levelno == logging.WARNING]
        assert len(warned) == 2 and len(said) == len(asked), warned  # the rest at debug
        redacted = f"{liar.url.rstrip('/')}/v3/***"
        assert f"{INBOX_DOMAIN} from {anvil.rpc_url}" in warned[0]
        assert f"{INBOX_DOMAIN + 5} from {redacted}" in warned[0]
        assert f"the inbox on {redacted} answered localDomain() with no hex data" in warned[1]
        assert not any(key in r.getMessage() for r in caplog.records)
        assert all("\n" not in line for line in warned)

        # L1: the first value to reach the quorum no longer decides a halt.
        liar.answer = other.answer = _says_domain(INBOX_DOMAIN + 5)

        async def check(urls: list[str], quorum: int) -> bool:
            config = evm_config(
                tmp_path / f"q{len(urls)}{quorum}", anvil, inbox, domain=INBOX_DOMAIN,
                beta_rpc=urls, quorum=quorum,
            )  # fmt: skip
            beta = config.chain("beta")
            async with open_evm(beta) as evm:
                delivery = EvmDelivery(beta, relayer)
                await delivery._check_domain(beta, evm)
                return delivery._domain.read

        for urls in ([liar.url, other.url, anvil.rpc_url], [anvil.rpc_url, liar.url, other.url]):
            assert trio.run(check, urls, 2) is False  # a quorum against it, one for it: unread
        assert trio.run(check, [liar.url, anvil.rpc_url], 1) is True  # one says it: read
        with pytest.raises(RouteHalted):
            trio.run(check, [liar.url, other.url], 1)  # every answer against it


@pytest.mark.chain
def test_a_backoff_counts_its_newest_failures_whatever_else_lies_between(
    anvil: AnvilProcess, inbox: bytes, tmp_path: Path, backend: Any
) -> None:
    """L2/L3 (review of FSEAM), on SQLite and PostgreSQL: the newest 64 events of any kind
    missed the reverts behind a minute of a node refusing the dry run (30 refusals after 8
    reverts counted 2: an 8 s wait instead of the cap). Now ``Ledger.backoff_trail`` reads
    the trail newest first, page after page, until it has the failures that count or the
    operator's newest retry (F4SEAM; F2SEAM filtered them in SQL): more than 64 old
    reverts, an operator's retry and one revert wait 4 s; eight more reverts and 30 refusals
    after it wait the cap."""
    config = evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN)
    revert = ["dry run reverted: old; 1 time(s), next try in 2 s", None]
    refused = ["dry run refused by the node: error -32005: limit", None]
    with open_ledger(backend.fresh()) as ledger:
        relayer = Relayer(config, ledger)
        message_id = attested(ledger, ORIGIN, INBOX_DOMAIN)
        _trail(ledger, message_id, revert * 70)  # 140 events: more than 64
        ledger.transition([message_id], MessageStatus.FAILED, reason="held by hand")
        operator.retry(ledger, [message_id], routed={INBOX_DOMAIN})  # the count starts over
        _trail(ledger, message_id, revert)

        def dry_run_reverted() -> float:
            record = ledger.get(message_id)
            assert record is not None
            if record.status == MessageStatus.FAILED:
                ledger.transition([message_id], MessageStatus.ATTESTED)
                record = ledger.get(message_id)
                assert record is not None
            before = time.time()
            assert EvmDelivery(config.chain("beta"), relayer)._dry_run_reverted(record, "x")
            failed = ledger.get(message_id)
            assert failed is not None and failed.next_attempt_at is not None
            return failed.next_attempt_at - before

        assert round(dry_run_reverted()) == 4  # one revert since the retry, not 70
        _trail(ledger, message_id, revert * 8 + refused * 30)
        assert round(dry_run_reverted()) == round(DRY_RUN_MAX_WAIT)  # 10 before it, not 2
        trail = ledger.backoff_trail(
            message_id, "dry run reverted", reset=relay.OPERATOR_RETRY, newest=UNSENT_COUNT_CAP + 1
        )
        ids = [e.id or 0 for e in trail]
        # The 11 reverts since the retry and the retry itself, oldest first: nothing older
        # (F4SEAM: the walk stops at the newest retry, which the count stops at anyway).
        assert len(ids) == 12 and ids == sorted(ids), ids
        assert (trail[0].reason or "").startswith(relay.OPERATOR_RETRY)
        counted = [
            e.id
            for e in ledger.history(message_id)
            if (e.to_status == MessageStatus.FAILED and (e.reason or "").startswith("dry run rev"))
            or (e.reason or "").startswith(relay.OPERATOR_RETRY)
        ]
        assert ids == counted[-len(ids) :]  # the newest of them, from the retry on


@pytest.mark.chain
def test_a_refused_broadcast_is_stored_and_logged_as_one_bounded_line(
    anvil: AnvilProcess,
    inbox: bytes,
    tmp_path: Path,
    ledger: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """L5 (review of FSEAM): a node refusing ``eth_sendRawTransaction`` with a forged second
    line, a terminal escape and a kilobyte of text: the message's reason and the transaction's
    stored error are one printable bounded line, and so is the delivery's warning."""
    config = evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN)
    beta = config.chain("beta")
    relayer = Relayer(config, ledger)
    delivery = EvmDelivery(beta, relayer)
    message_id = attested(ledger, ORIGIN, INBOX_DOMAIN)
    sent = ledger.record_transaction(tx_for(INBOX_DOMAIN, seed=31), [message_id])
    words = "nonce too low\nWARNING forged line \x1b[31m" + "x" * 1_000
    delivery._broadcast_failed(INBOX_DOMAIN, [message_id], f"eth_sendRawTransaction: {words}")
    record = ledger.get(message_id)
    assert record is not None and record.status == MessageStatus.ATTESTED
    (failed,) = [t for t in ledger.transactions(chain=INBOX_DOMAIN) if t.hash == sent.hash]
    for text in (record.reason, failed.error):
        assert text is not None and text.isprintable() and len(text) < 900, text
        assert "nonce too low?WARNING forged line ?[31m" in text

    async def refused(*args: object) -> None:
        raise AdapterError(f"eth_sendRawTransaction: {words}")

    delivery._prepare = refused  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.WARNING, logger="passerelle.relayer"):
        trio.run(
            partial(
                delivery._deliver_batch,
                beta,
                None,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                [record],
                done=lambda: None,
            )
        )
    (line,) = [r.getMessage() for r in caplog.records if "nonce too low" in r.getMessage()]
    assert line.isprintable() and len(line) < 900, line


# --------------------------------------------------------------------------- review of F2SEAM


@pytest.mark.chain
def test_a_domain_halt_needs_every_endpoint_to_answer_and_a_lease_claim_asks_afresh(
    anvil: AnvilProcess,
    inbox: bytes,
    tmp_path: Path,
    ledger: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """L2 (review of F2SEAM): with the honest endpoint down (HTTP 503: an outage, a rate
    limit) when the check runs, one liar at ``rpc_quorum`` 1, or two at 2, halted the relayer
    (and the next one to claim the lease, while the outage lasted). Now a halt needs every
    distinct endpoint to answer: until then the domain is unread (a warning naming the votes),
    asked again later, and read or halted on once the honest endpoint is back. L4: the
    back-off is the delivery's own, so a new delivery (a lease claim, a restart) asks at once,
    one attempt, never more."""
    with (
        RpcProxy(anvil.rpc_url, honest) as liar,
        RpcProxy(anvil.rpc_url, honest) as other_liar,
        RpcProxy(anvil.rpc_url, honest) as down,
    ):
        liar.answer = other_liar.answer = _says_domain(INBOX_DOMAIN + 5)
        down.down = True
        asked: list[str] = []

        def count(request: dict[str, Any], path: str) -> None:
            if request["method"] == "eth_call" and request["params"][0]["data"] == LOCAL_DOMAIN:
                asked.append(path)

        liar.fail = count
        relayer = Relayer(evm_config(tmp_path, anvil, inbox, domain=INBOX_DOMAIN), ledger)

        def config(urls: list[str], quorum: int) -> ChainConfig:
            where = tmp_path / f"q{quorum}-{len(urls)}"
            chain = evm_config(
                where, anvil, inbox, domain=INBOX_DOMAIN, beta_rpc=urls, quorum=quorum
            )
            return chain.chain("beta")

        async def check(beta: ChainConfig, rounds: int = 1) -> list[bool]:
            async with open_evm(beta) as evm:
                delivery = EvmDelivery(beta, relayer)
                read = []
                for _ in range(rounds):
                    await delivery._check_domain(beta, evm)
                    read.append(delivery._domain.read)
                return read

        at_one, at_two = (
            config([liar.url, down.url], 1),
            config([liar.url, other_liar.url, down.url], 2),
        )
        with caplog.at_level(logging.WARNING, logger="passerelle.relayer"):
            assert trio.run(check, at_one) == [False]  # halted before: one liar, quorum 1
            assert trio.run(check, at_two) == [False]  # halted before: two liars, quorum 2
        warned = [r.getMessage() for r in caplog.records if "cannot be read now" in r.getMessage()]
        assert len(warned) == 2 and all(f"{INBOX_DOMAIN + 5} from {liar.url}" in w for w in warned)
        assert all("HTTP 503" in w for w in warned), warned  # the silent endpoint is named too
        # L4: a second round of the same delivery is not due (no ask); a new delivery, built at
        # each lease claim, asks at once: one attempt each, one rpc_errors each.
        asked.clear()
        errors = relayer.metrics.rpc_errors
        assert trio.run(check, at_one, 2) == [False, False] and len(asked) == 1
        assert trio.run(check, at_one, 2) == [False, False] and len(asked) == 2
        assert relayer.metrics.rpc_errors == errors + 2

        down.down = False  # the honest endpoint is back: read at quorum 1 ...
        assert trio.run(check, at_one) == [True]
        down.answer = _says_domain(INBOX_DOMAIN + 5)  # ... and every endpoint wrong: a halt
        with pytest.raises(RouteHalted):
            trio.run(check, at_two)


def test_the_backoff_reads_the_trail_newest_first_through_its_index_whatever_the_statistics(
    backend: Any,
) -> None:
    """L1 (review of F2SEAM), the statements ``Ledger.backoff_trail`` really sends, on the
    trail the relayer really writes: a message failed and re-queued 5,016 times (each failure
    followed by its re-queue), among 240,000 other events. With the reason filter in the SQL,
    PostgreSQL estimated few matches and bitmap-read and sorted the message's whole trail at
    every count. Now each statement is a backward walk of ``(message_id, id)`` that stops at
    its limit (no sort, no bitmap, nothing filtered out), with the statistics taken before the
    message had any event and with fresh ones; on SQLite, the index and no temporary B-tree.
    The newest 17 counted failures come back, oldest first."""
    postgres = backend.admin is not None
    scale = 1 if postgres else 20  # SQLite's plan does not depend on statistics (and is slower)
    stuck = "0x" + "cd" * 32

    def insert(connection: sa.Connection, rows: str, count: int) -> None:
        numbers = (
            f"generate_series(1, {count}) AS g(k)"
            if postgres
            else "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {count}) SELECT i AS k FROM n) AS g"
        )
        connection.execute(
            sa.text(
                "INSERT INTO status_events (message_id, from_status, to_status, reason, at) "
                f"SELECT {rows}, 1.0 FROM {numbers}"
            )
        )

    others = f"'0x{'0' * 57}' || CAST(1000000 + k % 40000 AS TEXT), 'attested', 'delivered', NULL"
    pairs = (  # k odd: a dry run's failure; k even: its re-queue
        f"'{stuck}', CASE WHEN k % 2 = 0 THEN 'failed' ELSE 'attested' END, "
        "CASE WHEN k % 2 = 0 THEN 'attested' ELSE 'failed' END, "
        "CASE WHEN k % 2 = 0 THEN NULL ELSE 'dry run reverted: x' END"
    )
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "status_events" in statement:
            sent.append((statement, parameters))

    plans: dict[str, list[str]] = {}
    with open_ledger(backend.fresh("backoff")) as ledger:
        with ledger.engine.begin() as connection:
            insert(connection, others, 200_000 // scale)
            connection.exec_driver_sql("ANALYZE")  # the stuck message has no event yet
        for statistics in ("stale", "fresh"):
            with ledger.engine.begin() as connection:
                insert(connection, pairs, 5_000 // scale)
                for _ in range(8):  # every few minutes, others' events between
                    insert(connection, others, 2_500 // scale)
                    insert(connection, pairs, 2)
                if statistics == "fresh":
                    connection.exec_driver_sql("ANALYZE")
            sent.clear()
            sa.event.listen(ledger.engine, "before_cursor_execute", capture)
            try:
                trail = ledger.backoff_trail(
                    stuck,
                    "dry run reverted",
                    reset=relay.OPERATOR_RETRY,
                    newest=UNSENT_COUNT_CAP + 1,
                )
            finally:
                sa.event.remove(ledger.engine, "before_cursor_execute", capture)
            failed = [e.id for e in ledger.history(stuck) if e.to_status == MessageStatus.FAILED]
            assert [e.id for e in trail] == failed[-(UNSENT_COUNT_CAP + 1) :]
            explain = "EXPLAIN (ANALYZE, COSTS OFF) " if postgres else "EXPLAIN QUERY PLAN "
            with ledger.engine.connect() as connection:
                plans[statistics] = [
                    " ".join(str(row) for row in connection.exec_driver_sql(explain + s, p))
                    for s, p in sent
                ]
    for statistics, explained in plans.items():
        assert len(explained) == 1, explained  # 17 failures in the newest page
        for plan in explained:
            assert "ix_status_events_message_id_id" in plan, (statistics, plan)
            if postgres:
                assert "Index Scan Backward" in plan, (statistics, plan)
                assert not re.search(r"Sort|Bitmap|Rows Removed", plan), (statistics, plan)
            else:
                assert "TEMP B-TREE" not in plan, (statistics, plan)


def test_a_backoff_walks_a_bounded_stretch_of_the_trail_and_stops_at_a_retry(
    ledger: Ledger,
) -> None:
    """L1 (review of F2SEAM), the walk's bounds: the trail is read a page at a time, only as
    far as it must (17 counted failures, or the newest operator retry, which it includes),
    and never past ``walk`` events: behind a day of a node refusing the dry run, the older
    reverts are not read (the count is a lower bound; the refusals already try that often)."""
    message_id = attested(ledger, ORIGIN, INBOX_DOMAIN)
    revert = ["dry run reverted: old", None]
    _trail(ledger, message_id, revert * 3)
    ledger.transition([message_id], MessageStatus.FAILED, reason="held by hand")
    operator.retry(ledger, [message_id], routed={INBOX_DOMAIN})
    _trail(ledger, message_id, revert * 2 + ["dry run refused by the node: busy", None] * 40)
    pages: list[str] = []
    count = lambda *args: pages.append(args[2]) if "FROM status_events" in args[2] else None  # noqa: E731
    sa.event.listen(ledger.engine, "before_cursor_execute", count)
    try:
        trail = ledger.backoff_trail(
            message_id, "dry run reverted", reset=relay.OPERATOR_RETRY, newest=17, page=16
        )
        assert (trail[0].reason or "").startswith(relay.OPERATOR_RETRY)  # the retry, oldest
        assert relay.recent_failures(trail, "dry run reverted", 16) == 2  # not 5: retried
        assert len(pages) == 6  # 80 refusal events, 4 of the reverts, the retry: 85 of 16 a page
        pages.clear()
        assert (
            ledger.backoff_trail(
                message_id, "dry run reverted", reset="x", newest=17, page=16, walk=40
            )
            == []
        )
        assert len(pages) == 3  # 16 + 16 + 8 events: the walk's end, not the trail's
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", count)


@pytest.mark.chain
def test_a_nodes_words_are_one_bounded_line_where_its_error_is_built(anvil: AnvilProcess) -> None:
    """L3 (review of F2SEAM): a node's JSON-RPC error message was kept whole in the error's
    text, which a scan, a payment read or a settle logs at every poll: a megabyte with a
    forged second log line each time. Now ``RpcCallError`` keeps one printable line of at
    most ``NODE_TEXT_LIMIT`` characters, through the relayer's client and ``call_sync``
    alike; a revert is still recognised (nodes say so first); and the provider's key, which a
    node may echo right where the bound falls, is scrubbed before the cut (a cut key would
    no longer be recognised)."""
    key = "Key0123456789abcdefXYZ"
    words = "execution reverted: boom\n2026-12-07 WARNING forged line \x1b[31m" + "x" * 1_000_000

    def refuse(request: dict[str, Any], path: str) -> str | None:
        if request["method"] == "eth_call":
            return words
        # The key starts 10 characters before the bound: cut first, its first 10 would leak.
        return "y" * (NODE_TEXT_LIMIT - 10 - len("/v3/")) + path

    with RpcProxy(anvil.rpc_url, honest) as node:
        node.fail = refuse

        async def errors() -> list[RpcCallError]:
            raised = []
            async with JsonRpcClient([f"{node.url.rstrip('/')}/v3/{key}"]) as rpc:
                for method in ("eth_call", "eth_chainId"):
                    with pytest.raises(RpcCallError) as refused:
                        await rpc.call(method, [])
                    raised.append(refused.value)
            return raised

        reverted, echoed = trio.run(errors)
    with pytest.raises(RpcCallError) as blocking:  # call_sync's reading of an answer
        result_of({"error": {"code": -32000, "message": words}}, anvil.rpc_url, "eth_call")
    for error in (reverted, echoed, blocking.value):
        assert str(error).isprintable() and len(error.message) <= NODE_TEXT_LIMIT + 1, error
    assert reverted.reverted and blocking.value.reverted
    assert reverted.message.startswith("execution reverted: boom?2026-12-07 WARNING forged")
    assert echoed.message.endswith("y/v3/***") and key[:4] not in str(echoed), echoed
