"""End to end between Asset Hub (chopsticks) and an EVM chain (anvil), as an operator runs it.

One devnet for the module (``devnet up --assethub``: alpha, beta, assethub), one set of
processes (three ``passerelle attest``, one ``passerelle relay``; restarted once, early, on a
ledger ``passerelle ledger rebuild`` recovered from the chains), ``passerelle send`` and
``passerelle status --json`` for what a user does. The chains are the judges:

- on alpha, the Inbox's ``Delivered`` events (once per message id);
- on Asset Hub, the replay-guard item ``Uniques.Asset(collection of the origin, nonce)`` and the
  delivery itself, a ``System.Remarked`` by the committee's multisig whose hash is
  blake2-256 of the message (or, for a token transfer, the wrapped asset minted).

The test process keeps one connected :class:`SubstrateClient` to Asset Hub for its own checks
(each check a ``trio.run``); it signs only as //Alice (bad remarks) and, in the replay test,
with two attesters' Substrate keys while the attesters have nothing to approve.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from e2e_support import (
    KILL_BATCH,
    KILL_INFLIGHT,
    SMALL_BATCHES,
    Procs,
    assert_delivered_once,
    block_number,
    cli,
    collapsed,
    devnet,
    running,
    send,
    statuses,
    wait_until,
)
from eth_abi.abi import encode as abi_encode
from web3 import Web3

from adapters.evm.contracts import load_artifact
from adapters.substrate.client import (
    Included,
    RemarkSeen,
    SubstrateClient,
    SubstrateEvent,
    account_bytes,
    keypair_from_seed,
)
from adapters.substrate.multisig import approve, execute, executed_ok, open_operation
from light_clients.committee import address_of
from light_clients.hashing import blake2_256, keccak256
from light_clients.message import Message, decode_message
from light_clients.substrate.header import (
    SubstrateHeader,
    decode_header,
    encode_header,
    header_hash,
)
from light_clients.substrate.remark import (
    ACTION_UNLOCK,
    REMARK_PREFIX,
    RemarkRejected,
    check_escrow,
    check_recipient,
)
from light_clients.substrate.scale import encode_compact
from relayer.accounts import bytes32
from relayer.checkpoints import open_checkpoint_store
from relayer.config import Config, load_config
from relayer.families.substrate.calls import delivery_calls, token_bridges
from relayer.families.substrate.scan import escrow_routes
from relayer.families.substrate.user import client_keypair
from relayer.keys import encrypt_sr25519_keystore, write_secret
from relayer.ledger import MessageRecord, MessageStatus, open_ledger
from relayer.signer import as_keypair, substrate_signer
from relayer.user import status_rows, token_balance

pytestmark = pytest.mark.chain

T = TypeVar("T")

HUB, ALPHA = "assethub", "alpha"
DELIVERY_TIMEOUT = 240.0  # seconds; a multisig delivery is two extrinsics, on a shared machine
REASONS = ("wrong-sender", "wrong-origin", "malformed-payload", "unbacked-token-transfer")


# --------------------------------------------------------------------------- helpers


def in_parallel(*jobs: Callable[[], T]) -> list[T]:
    """Run ``jobs`` in threads (e.g. two ``passerelle send``), results in order."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]


def ledger_rows(config: Config) -> list[MessageRecord]:
    """Every message of the ledger, by origin and nonce (read beside the running relayer)."""
    with open_ledger(config.ledger, check_integrity=False) as ledger:
        return status_rows(ledger)


def scanned_up_to(config: Config, domain: int) -> int:
    """The last block of ``domain`` the relayer has scanned (-1: none)."""
    with open_ledger(config.ledger, check_integrity=False) as ledger:
        cursor = ledger.get_cursor(domain)
    return -1 if cursor is None else cursor.next_block - 1


def origin_rows(config: Config, origin: int) -> list[MessageRecord]:
    return [r for r in ledger_rows(config) if r.origin == origin]


def by_id(config: Config, ids: Sequence[str]) -> list[MessageRecord]:
    rows = {r.id: r for r in ledger_rows(config)}
    return [rows[i] for i in ids]


def logs_of(procs: Procs) -> str:
    return "\n".join(
        f"--- {name}\n{collapsed(procs.log(name), 2500)}"
        for name in ("relayer", "attester0", "attester1", "attester2")
    )


def wait_ledger_delivered(
    config: Config, ids: Sequence[str], procs: Procs, timeout: float = DELIVERY_TIMEOUT
) -> None:
    """Every id ``delivered`` in the ledger within ``timeout`` (read directly: no process)."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {r.id: str(r.status) for r in ledger_rows(config) if r.id in wanted}
        if len(status) == len(wanted) and set(status.values()) == {"delivered"}:
            return
        assert not procs.exited(), {n: procs.log(n)[-3000:] for n in procs.exited()}
        time.sleep(0.5)
    missing = {i: status.get(i) for i in ids if status.get(i) != "delivered"}
    pytest.fail(f"not delivered: {missing}\n{logs_of(procs)}")


def assert_status_delivered(config_path: Path, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``passerelle status --json``: each id delivered, and delivered on its destination."""
    rows = statuses(config_path)
    for i in ids:
        assert rows[i]["status"] == "delivered", rows[i]
        assert rows[i]["delivered_on_chain"] is True, rows[i]
    return rows


class Hub:
    """The test's own connection to Asset Hub: storage, events (cached per block), submission."""

    def __init__(self, config: Config) -> None:
        chain = config.chain(HUB)
        self.settings = chain.settings()
        self.client = SubstrateClient(chain.rpc[0])
        self._events: dict[int, tuple[bytes, list[SubstrateEvent]]] = {}
        trio.run(self.client.connect)

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        return trio.run(work)

    def close(self) -> None:
        trio.run(self.client.aclose)

    def item_owner(self, origin: int, nonce: int) -> bytes | None:
        """Owner of the replay-guard item of (origin, nonce); None if it was never minted."""
        collection = self.settings.collections[origin]

        async def work() -> Any:
            return await self.client.query("Uniques", "Asset", [collection, nonce])

        item = self.run(work)
        return None if item is None else account_bytes(item["owner"])

    def asset_balance(self, who: bytes) -> int:
        asset = self.settings.asset_id

        async def work() -> Any:
            return await self.client.query("Assets", "Account", [asset, "0x" + who.hex()])

        entry = self.run(work)
        return int(entry["balance"]) if isinstance(entry, dict) else 0

    def all_events(self) -> list[tuple[int, bytes, SubstrateEvent]]:
        """(block number, block hash, event) of every block from 1 to the best one; blocks
        already read are not read again (chopsticks: every block is final at once)."""

        async def work() -> None:
            best = await self.client.best_number()
            for number in range(1, best + 1):
                if number in self._events:
                    continue
                block_hash = await self.client.block_hash(number)
                assert block_hash is not None
                self._events[number] = (block_hash, await self.client.events(block_hash))

        self.run(work)
        return [
            (number, block_hash, event)
            for number, (block_hash, events) in sorted(self._events.items())
            for event in events
        ]

    def multisig_remarks(self) -> Counter[bytes]:
        """How many times the multisig remarked each hash (its deliveries of messages)."""
        counts: Counter[bytes] = Counter()
        for _, _, event in self.all_events():
            if (event.pallet, event.name) == ("System", "Remarked"):
                attrs = event.attributes
                if account_bytes(attrs["sender"]) == self.settings.multisig:
                    counts[bytes.fromhex(attrs["hash"][2:])] += 1
        return counts

    def executed_batches(self) -> dict[bytes, bool]:
        """Call hash → succeeded, of every call the multisig executed."""
        done: dict[bytes, bool] = {}
        for _, _, event in self.all_events():
            if (event.pallet, event.name) == ("Multisig", "MultisigExecuted"):
                attrs = event.attributes
                if account_bytes(attrs["multisig"]) == self.settings.multisig:
                    call_hash = attrs["call_hash"]
                    key = (
                        call_hash if isinstance(call_hash, bytes) else bytes.fromhex(call_hash[2:])
                    )
                    done[key] = event.error is None
        return done


def psrl(message: Message) -> bytes:
    return REMARK_PREFIX + message.encode()


def assert_hub_delivered(config: Config, hub: Hub, records: Sequence[MessageRecord]) -> None:
    """Each message's replay-guard item is the multisig's (so nobody can burn it and re-open
    the message), and the multisig remarked it once
    (token transfers mint the wrapped asset instead of a remark: not checked here)."""
    remarks = hub.multisig_remarks()
    for record in records:
        message = decode_message(record.message)
        assert record.destination == config.chain(HUB).domain
        owner = hub.item_owner(record.origin, record.nonce)
        assert owner == hub.settings.multisig, (record.nonce, owner, message.recipient)
        assert remarks[blake2_256(record.message)] == 1, (record.id, record.nonce)


# ``passerelle ledger rebuild``: a lost ledger and the one rebuilt from the chains, compared.
# Here because this module's devnet is where Asset Hub's case runs (one chopsticks devnet for
# both); tests/test_ledger_rebuild.py, which imports this module, compares with them too.

RECOVERABLE = (
    "id",
    "origin",
    "nonce",
    "destination",
    "sender",
    "recipient",
    "message",
    "source_block_number",
    "source_block_hash",
    "source_tx_hash",
    "log_index",
    "status",
)
"""What "equal message for message" compares (docs/decisions.md, "ledger rebuild"): all a
chain records. Not reasons, attempts, timestamps, checkpoint row ids or delivery transaction
hashes, which only the lost ledger knew."""


def ledger_snapshot(location: str) -> dict[str, dict[str, Any]]:
    """Every message of the ledger at ``location``, as the :data:`RECOVERABLE` fields."""
    with open_ledger(location) as ledger:
        records: list[MessageRecord] = ledger.messages(limit=100_000)
    return {r.id: {name: getattr(r, name) for name in RECOVERABLE} for r in records}


def delete_ledger(location: str) -> None:
    """The SQLite ledger at ``location`` lost, with its write-ahead log."""
    for suffix in ("", "-wal", "-shm"):
        Path(location + suffix).unlink(missing_ok=True)


def assert_rebuilt(location: str, lost: dict[str, dict[str, Any]]) -> None:
    """The ledger at ``location`` equals ``lost`` in every :data:`RECOVERABLE` field."""
    rebuilt = ledger_snapshot(location)
    assert rebuilt.keys() == lost.keys()
    different = {i: (lost[i], rebuilt[i]) for i in lost if lost[i] != rebuilt[i]}
    assert not different, different


# --------------------------------------------------------------------------- fixtures


def keystore_attesters(config_path: Path) -> None:
    """Move every attester's sr25519 key from the devnet's inline seed into a Polkadot JS
    keystore (its password in a file; both mode 600): each delivery to Asset Hub below is
    then approved by keys opened from keystores, through the signer interface."""
    text = config_path.read_text()
    for index, source in enumerate(load_config(config_path).attester_substrate_keys):
        assert source is not None
        seed = source.load()
        inline = f'substrate_key = "0x{seed.hex()}"'
        assert text.count(inline) == 1, inline
        keystore, password = f"attester{index}-sr25519.json", f"attester{index}-sr25519.pw"
        secret = f"password of attester {index}"
        write_secret(config_path.parent / password, secret)
        write_secret(
            config_path.parent / keystore,
            encrypt_sr25519_keystore(keypair_from_seed(seed), secret),
        )
        text = text.replace(
            inline,
            f'substrate_key_keystore = "{keystore}"\nsubstrate_key_password_file = "{password}"',
        )
    config_path.write_text(text)


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for config_path in devnet(tmp_path_factory, assethub=True):
        keystore_attesters(config_path)
        yield config_path


@pytest.fixture(scope="module")
def config(devnet_config: Path) -> Config:
    return load_config(devnet_config)


@pytest.fixture(scope="module")
def procs(devnet_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    """One set of processes for the module: every test's logs are in the same files."""
    with running(devnet_config, tmp_path_factory.mktemp("logs")) as started:
        yield started


@pytest.fixture(scope="module")
def hub(config: Config) -> Iterator[Hub]:
    connected = Hub(config)
    try:
        yield connected
    finally:
        connected.close()


@pytest.fixture(scope="module")
def alice(config: Config) -> bytes:
    """The client's account on Asset Hub (``[client] substrate_uri = "//Alice"``)."""
    return bytes(client_keypair(config).public_key)


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_messages_both_ways(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub, alice: bytes
) -> None:
    since = block_number(config, ALPHA) + 1
    out, back = in_parallel(
        lambda: send(devnet_config, HUB, ALPHA, "--body", "hello from asset hub", "--count", "3"),
        lambda: send(devnet_config, ALPHA, HUB, "--body", "hello from alpha", "--count", "3"),
    )
    assert len(out) == 3 and len(back) == 3
    for sent in (out, back):  # consecutive nonces, in the order sent
        first = sent[0]["nonce"]
        assert [m["nonce"] for m in sent] == [first, first + 1, first + 2]
    assert {m["origin"] for m in out} == {3} and {m["destination"] for m in out} == {1}
    ids = [m["id"] for m in out + back]
    wait_ledger_delivered(config, ids, procs)
    assert_status_delivered(devnet_config, ids)

    # alpha: the Inbox delivered each message from Asset Hub once.
    assert_delivered_once(config, ALPHA, [m["id"] for m in out], since=since)
    for record in by_id(config, [m["id"] for m in out]):
        message = decode_message(record.message)
        assert (message.origin, message.sender, message.body) == (3, alice, b"hello from asset hub")
        assert "0x" + keccak256(record.message).hex() == record.id

    # Asset Hub: the multisig minted (collection 1, nonce) to the recipient and remarked the
    # message, once each.
    records = by_id(config, [m["id"] for m in back])
    for record in records:
        message = decode_message(record.message)
        assert (message.origin, message.recipient, message.body) == (1, alice, b"hello from alpha")
    assert_hub_delivered(config, hub, records)
    # Every attester's sr25519 key came from its keystore (keystore_attesters).
    assert all(s is not None and s.keystore for s in config.attester_substrate_keys)


def both_ways(config_path: Path, body: str) -> list[dict[str, Any]]:
    """One message Asset Hub → alpha and one alpha → Asset Hub, sent at once; both, in order."""
    out, back = in_parallel(
        lambda: send(config_path, HUB, ALPHA, "--body", body),
        lambda: send(config_path, ALPHA, HUB, "--body", body),
    )
    return out + back


@pytest.mark.slow
def test_a_lost_ledger_is_rebuilt_from_asset_hub_and_alpha(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub
) -> None:
    """``passerelle ledger rebuild`` on the Substrate legs, on this module's devnet (the EVM
    story is tests/test_ledger_rebuild.py's). The ledger of what test_messages_both_ways
    delivered, and of one message each way left waiting (the attesters stopped first: no
    checkpoint covers them), is deleted with the relayer stopped. Rebuilt — Asset Hub's PSRL
    remarks through the relayer's own scan, deliveries to it read from its replay-guard items
    — it equals the lost one message for message. The processes restarted on it deliver what
    was waiting, once, and nothing that was delivered before; the rest of the module then
    runs on the rebuilt ledger.

    Early in the module on purpose: a rebuild, and the restarted attesters, scan every chain
    from its first block, which costs little here and much after the long tests below."""
    hub_domain, alpha_domain = config.chain(HUB).domain, config.chain(ALPHA).domain
    legs = {(r.origin, r.destination) for r in ledger_rows(config) if r.status == "delivered"}
    if not {(hub_domain, alpha_domain), (alpha_domain, hub_domain)} <= legs:  # run alone
        before = both_ways(devnet_config, "delivered before the ledger is lost")
        wait_ledger_delivered(config, [m["id"] for m in before], procs)

    for index in range(3):
        assert procs.stop(f"attester{index}") == 0, procs.log(f"attester{index}")[-2000:]
    waiting = both_ways(devnet_config, "waiting when the ledger is lost")
    ids = [m["id"] for m in waiting]
    wait_until(
        lambda: {r.id for r in ledger_rows(config)} >= set(ids),
        "the relayer to record the waiting messages",
    )
    assert procs.stop("relayer") == 0, procs.log("relayer")[-2000:]
    lost = ledger_snapshot(config.ledger)
    assert {lost[i]["status"] for i in ids} == {MessageStatus.FINAL}
    assert {row["status"] for i, row in lost.items() if i not in ids} == {MessageStatus.DELIVERED}
    delete_ledger(config.ledger)

    result = cli(devnet_config, "ledger", "rebuild", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] is True and summary["error"] is None
    assert "assethub" in summary["cursors"] and "assethub" in summary["delivered_evidence"]
    pending = {(r["origin"], r["destination"]): r["pending"] for r in summary["routes"]}
    assert pending[HUB, ALPHA] == pending[ALPHA, HUB] == 1, summary["routes"]
    assert_rebuilt(config.ledger, lost)

    since, hub_since = block_number(config, ALPHA) + 1, hub.run(hub.client.best_number) + 1
    procs.start_all()
    wait_ledger_delivered(config, ids, procs)
    to_alpha = [m["id"] for m in waiting if m["destination"] == alpha_domain]
    work = assert_delivered_once(config, ALPHA, to_alpha, since=since)
    assert set(work.delivered) == set(to_alpha), f"alpha: delivered again: {work}"
    to_hub = [m["id"] for m in waiting if m["destination"] == hub_domain]
    assert_hub_delivered(config, hub, by_id(config, to_hub))
    # A message delivered before, sent again, would fail on its guard item: none was.
    assert failed_executions(hub, hub_since) == []


@pytest.mark.slow
def test_token_round_trip(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub, alice: bytes
) -> None:
    multisig = hub.settings.multisig
    since = block_number(config, ALPHA) + 1

    def alpha_balance() -> int:
        return trio.run(token_balance, config, ALPHA)

    home, wrapped, escrow = alpha_balance(), hub.asset_balance(alice), hub.asset_balance(multisig)
    there = send(devnet_config, ALPHA, HUB, "--token", "1000")
    wait_ledger_delivered(config, [m["id"] for m in there], procs)
    assert alpha_balance() == home - 1000
    assert hub.asset_balance(alice) == wrapped + 1000
    [record] = by_id(config, [m["id"] for m in there])
    # The TokenBridge's message is addressed to the bridge account: the item is its.
    assert decode_message(record.message).recipient == multisig
    assert hub.item_owner(record.origin, record.nonce) == multisig
    # A token transfer is delivered as the mint, not as a remark.
    assert hub.multisig_remarks()[blake2_256(record.message)] == 0

    back = send(devnet_config, HUB, ALPHA, "--token", "400")
    assert [m["destination"] for m in back] == [1]
    wait_ledger_delivered(config, [m["id"] for m in back], procs)
    assert_status_delivered(devnet_config, [m["id"] for m in there + back])
    assert alpha_balance() == home - 600
    assert hub.asset_balance(alice) == wrapped + 600
    assert hub.asset_balance(multisig) == escrow + 400  # held by the bridge account
    assert trio.run(token_balance, config, HUB) == wrapped + 600  # what `passerelle` reports
    assert_delivered_once(config, ALPHA, [m["id"] for m in back], since=since)


@pytest.mark.slow
def test_a_transfer_to_an_account_that_cannot_hold_the_asset_is_refunded_once(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub
) -> None:
    """Issue #8, point 4: a mint of the non-sufficient wrapped asset to an account with no
    native balance can never succeed (``Token.CannotCreate``). The attesters see it on chain
    and the committee answers with a refund — the guard item minted and frozen, and a REFUND
    remark of the multisig, which Asset Hub carries back to alpha as a message of its own —
    so the message ends ``failed`` with its reason after one attempt, and the sender gets the
    tokens back on alpha, exactly once."""
    empty = blake2_256(b"passerelle e2e: an account with no native balance")
    bridge = config.chain(ALPHA).contract("token_bridge")
    w3 = Web3(Web3.HTTPProvider(config.chain(ALPHA).rpc[0]))
    tokens = w3.eth.contract(
        address=Web3.to_checksum_address(bridge), abi=load_artifact("TokenBridge").abi
    )
    since = w3.eth.block_number
    before = trio.run(token_balance, config, ALPHA)
    [sent] = send(devnet_config, ALPHA, HUB, "--token", "777", "--recipient", "0x" + empty.hex())
    assert trio.run(token_balance, config, ALPHA) == before - 777
    original = bytes.fromhex(sent["id"][2:])

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    rows: dict[str, MessageRecord] = {}
    refunds: list[MessageRecord] = []
    while time.monotonic() < deadline:
        rows = {r.id: r for r in ledger_rows(config)}
        refunds = [
            r
            for r in rows.values()
            if r.origin == 3 and decode_message(r.message).body[32:64] == original
        ]
        row = rows.get(sent["id"])
        if (
            row is not None
            and row.status == "failed"
            and [r.status for r in refunds] == ["delivered"]
        ):
            break
        assert not procs.exited(), {n: procs.log(n)[-3000:] for n in procs.exited()}
        time.sleep(0.5)
    else:
        pytest.fail(f"not refunded: {rows.get(sent['id'])}, refunds {refunds}\n{logs_of(procs)}")

    row = rows[sent["id"]]
    assert row.reason is not None and "refunded" in row.reason, row.reason
    assert row.next_attempt_at is None  # failed for good: no retry is scheduled
    # Asset Hub: nothing minted; the guard item exists (the transfer can never be delivered
    # later) and is frozen (what the relayer reads as "refunded").
    assert hub.asset_balance(empty) == 0
    collection = hub.settings.collections[row.origin]
    item = hub.run(lambda: hub.client.query("Uniques", "Asset", [collection, row.nonce]))
    assert isinstance(item, dict) and item["is_frozen"] is True
    assert account_bytes(item["owner"]) == hub.settings.multisig
    # The refund: from the multisig to alpha's TokenBridge, REFUND(original id, 777, reason 2).
    [refund] = refunds
    message = decode_message(refund.message)
    assert (message.sender, message.destination, message.recipient) == (
        hub.settings.multisig,
        1,
        bytes32(bridge),
    )
    assert message.body == abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"], [3, original, 777, (2).to_bytes(32, "big")]
    )
    # alpha: the sender has the tokens back, paid once; nothing is left to refund.
    assert trio.run(token_balance, config, ALPHA) == before
    assert_delivered_once(config, ALPHA, [refund.id], since=since)
    paid = [
        log
        for log in tokens.events.Refunded().get_logs(from_block=since)
        if log["args"]["id"] == original
    ]
    assert len(paid) == 1 and paid[0]["args"]["amount"] == 777
    assert tokens.functions.refunds(original).call()[2] == 0


def _executed_batch(
    config: Config, hub: Hub, records: Sequence[MessageRecord]
) -> tuple[list[MessageRecord], bytes]:
    """The messages of one batch the committee executed, found by recomputing the hash of
    ``Utility.batch_all`` over every run of consecutive delivered messages."""
    bridges = token_bridges(config)

    async def compose_all() -> tuple[bytes, dict[int, bytes]]:
        inner: dict[int, bytes] = {}
        for record in records:
            calls = delivery_calls(decode_message(record.message), hub.settings, bridges)
            composed = [await hub.client.compose(c.module, c.function, c.params) for c in calls]
            inner[record.nonce] = b"".join(c.data for c in composed)
        one = await hub.client.compose("Utility", "batch_all", {"calls": []})
        return one.data[:2], inner  # the call index of Utility.batch_all

    prefix, inner = hub.run(compose_all)
    executed = hub.executed_batches()
    for start in range(len(records)):
        for end in range(start + 1, len(records) + 1):
            run = records[start:end]
            data = prefix + encode_compact(2 * len(run)) + b"".join(inner[r.nonce] for r in run)
            if executed.get(blake2_256(data)):
                return list(run), blake2_256(data)
    pytest.fail(f"no executed batch is a run of nonces {[r.nonce for r in records]}")


@pytest.mark.slow
def test_a_replayed_delivery_fails_on_chain(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub, alice: bytes
) -> None:
    """The committee's own batch, approved and executed again by two attesters' keys: the
    runtime refuses the second mint of the replay-guard item, so nothing of the batch runs.

    Those two attesters are stopped meanwhile (review RINTA L2): a running attester's client
    trusts its nonce count against the on-chain nonce only, so our extrinsic still in the
    pool at that nonce and the attester's own would collide (chopsticks drops one silently).
    An attester's key signs nothing else while it runs (docs/substrate.md), here too."""
    records = [
        r
        for r in origin_rows(config, config.chain(ALPHA).domain)
        if r.destination == config.chain(HUB).domain and str(r.status) == "delivered"
    ]
    if not records:  # run alone: deliver something first
        sent = send(devnet_config, ALPHA, HUB, "--body", "to be replayed")
        wait_ledger_delivered(config, [m["id"] for m in sent], procs)
        records = by_id(config, [m["id"] for m in sent])
    batch_records, executed_hash = _executed_batch(config, hub, records)
    remarks_before = hub.multisig_remarks()
    owners_before = [hub.item_owner(r.origin, r.nonce) for r in batch_records]
    assert None not in owners_before

    settings = hub.settings
    sources = config.attester_substrate_keys
    first_source, last_source = sources[0], sources[1]
    assert first_source is not None and last_source is not None
    first, last = (as_keypair(substrate_signer(s)) for s in (first_source, last_source))
    bridges = token_bridges(config)

    async def replay() -> tuple[bytes, Included, Any]:
        calls = []
        for record in batch_records:
            for call in delivery_calls(decode_message(record.message), settings, bridges):
                calls.append(await hub.client.compose(call.module, call.function, call.params))
        batch = await hub.client.compose("Utility", "batch_all", {"calls": calls})
        threshold = settings.multisig_threshold

        def others(me: bytes) -> list[bytes]:
            return [s for s in settings.signatories if s != me]

        opened = await approve(hub.client, first, others(bytes(first.public_key)), threshold, batch)
        done = await execute(
            hub.client, last, others(bytes(last.public_key)), threshold, batch, timepoint=opened
        )
        still_open = await open_operation(hub.client, settings.multisig, batch.hash)
        return batch.hash, done, still_open

    stopped: list[int] = []
    try:
        # Inside the try (review RFINA L3): if stopping the second fails, the first is still
        # started again below, rather than left down to fail every later test of the module.
        for index in (0, 1):
            code = procs.stop(f"attester{index}")
            stopped.append(index)
            assert code == 0, procs.log(f"attester{index}")[-2000:]
        batch_hash, done, still_open = hub.run(replay)
    finally:
        for index in stopped:  # they resume from the checkpoint store: the next tests need them
            procs.start_attester(index)
    assert batch_hash == executed_hash  # exactly the batch the committee executed
    assert done.success  # the as_multi extrinsic itself goes through …
    ok, reason = executed_ok(done)
    assert not ok and reason == "Uniques.AlreadyExists"  # … the batch does not
    assert still_open is None  # the operation is closed either way
    # batch_all is atomic: nothing of it happened.
    happened = {(e.pallet, e.name) for e in done.events}
    assert not happened & {("System", "Remarked"), ("Uniques", "Issued"), ("Assets", "Issued")}
    assert hub.multisig_remarks() == remarks_before
    assert [hub.item_owner(r.origin, r.nonce) for r in batch_records] == owners_before


@pytest.mark.slow
def test_bad_remarks_are_skipped_and_never_attested(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub, alice: bytes
) -> None:
    alpha, chain = config.chain(ALPHA), config.chain(HUB)
    bob = bytes(32 * [0x42])
    client_evm = address_of(config.client_key.load()) if config.client_key else bytes(20)
    ping = bytes32(alpha.contract("ping"))

    def message(**change: Any) -> Message:
        fields: dict[str, Any] = {
            "version": 1,
            "nonce": 0,
            "origin": chain.domain,
            "sender": alice,
            "destination": alpha.domain,
            "recipient": ping,
            "body": b"bad remark",
        }
        fields.update(change)
        return Message(**fields)

    unlock = abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"],
        [ACTION_UNLOCK, bytes32(alpha.contract("token")), 777, bytes32(client_evm)],
    )
    bad = [
        psrl(message(sender=bob)),  # names another sender than the signer
        psrl(message(origin=config.chain("beta").domain)),  # names another origin domain
        psrl(message())[:40],  # truncated inside the header
        # An unlock of 777 home tokens on alpha, no wrapped asset paid to the escrow for it.
        psrl(message(recipient=bytes32(alpha.contract("token_bridge")), body=unlock)),
    ]
    home = trio.run(token_balance, config, ALPHA)
    keypair = client_keypair(config)

    async def submit_bad() -> Included:
        calls = [
            await hub.client.compose("System", "remark_with_event", {"remark": r}) for r in bad
        ]
        batch = await hub.client.compose("Utility", "batch_all", {"calls": calls})
        return await hub.client.submit_call(keypair, batch)

    included = hub.run(submit_bad)
    assert included.success, included.error
    assert len(included.named("System", "Remarked")) == len(bad)  # all on chain, all by Alice

    # Every process that scans Asset Hub (the relayer and each attester) says why it skipped
    # each one, and goes past the block.
    for name in ("relayer", "attester0", "attester1", "attester2"):
        wait_until(
            lambda n=name: all(reason in procs.log(n) for reason in REASONS),
            f"{name} to log the reasons {REASONS}",
            timeout=120,
        )
        log = procs.log(name)
        skipped = [line for line in log.splitlines() if "remark skipped" in line]
        where = f"block {included.block_number} extrinsic {included.extrinsic_index}: remark"
        for reason in REASONS:
            assert any(where in line and f"({reason}: " in line for line in skipped), (
                name,
                reason,
                skipped[-8:],
            )
    wait_until(
        lambda: scanned_up_to(config, chain.domain) >= included.block_number,
        "the relayer to scan past the bad remarks",
    )
    valid_before = origin_rows(config, chain.domain)
    assert [r.nonce for r in valid_before] == list(range(len(valid_before)))

    # Then a valid remark: it takes the next nonce (the rejected ones consumed none).
    since = block_number(config, ALPHA) + 1
    [sent] = send(devnet_config, HUB, ALPHA, "--body", "valid after the bad ones")
    assert sent["nonce"] == len(valid_before)
    wait_ledger_delivered(config, [sent["id"]], procs)
    assert_delivered_once(config, ALPHA, [sent["id"]], since=since)

    rows = origin_rows(config, chain.domain)
    assert [r.nonce for r in rows] == list(range(len(valid_before) + 1))
    assert rows[-1].id == sent["id"]
    bad_bodies = {b"bad remark", unlock}
    assert not [r for r in rows if decode_message(r.message).body in bad_bodies]
    assert trio.run(token_balance, config, ALPHA) == home  # nothing was unlocked

    # Each attester signed exactly the valid messages: its newest index is the count - 1,
    # and nobody ever signed an index beyond it.
    store = open_checkpoint_store(config.checkpoint_store)
    last = len(rows) - 1
    for index, key in enumerate(config.attester_keys):
        signer = address_of(key.load())

        def signed(s: bytes = signer) -> int:
            own = store.latest_own(chain.domain, chain.outbox_id, s)
            return -1 if own is None else own.checkpoint.index

        wait_until(lambda f=signed: f() >= last, f"attester {index} to sign index {last}")
        assert signed() == last
    assert store.latest_indices(chain.domain, chain.outbox_id) == [last]
    assert store.signatures(chain.domain, chain.outbox_id, last + 1) == []


def _check_header(hub: Hub, number: int, block_hash: bytes) -> None:
    """The adapter's header of a block: canonical at ``number``, its SCALE bytes hash
    (blake2-256) to the block hash, the light client's codec round-trips them, and the node's
    JSON header, encoded here independently, is the same bytes."""

    async def read() -> tuple[bytes | None, SubstrateHeader, Any]:
        canonical = await hub.client.block_hash(number)
        header = await hub.client.header(block_hash)
        as_json = await hub.client.rpc("chain_getHeader", ["0x" + block_hash.hex()])
        return canonical, header, as_json

    canonical, header, as_json = hub.run(read)
    assert canonical == block_hash
    assert header.hash == header_hash(header.raw) == blake2_256(header.raw) == block_hash
    assert header.number == number
    assert decode_header(header.raw) == header
    fields = (header.parent_hash, header.number, header.state_root, header.extrinsics_root)
    assert encode_header(*fields, header.digest) == header.raw
    logs = as_json["digest"]["logs"]
    from_json = (
        bytes.fromhex(as_json["parentHash"][2:])
        + encode_compact(int(as_json["number"], 16))
        + bytes.fromhex(as_json["stateRoot"][2:])
        + bytes.fromhex(as_json["extrinsicsRoot"][2:])
        + encode_compact(len(logs))
        + b"".join(bytes.fromhex(item[2:]) for item in logs)
    )
    assert from_json == header.raw


@pytest.mark.slow
def test_adapter_decoding_agrees_with_the_light_clients(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub
) -> None:
    """For the blocks the relayer read (those it took Asset Hub's messages from, and the last
    one it scanned): the adapter's headers are checked as :func:`_check_header` says; every
    remark it returns hashes to a ``Remarked`` event of its extrinsic and signer; and the
    outbox rules applied to them give back exactly the ledger's messages, ids and nonces."""
    chain = config.chain(HUB)
    if not origin_rows(config, chain.domain):  # run alone: give the relayer something to read
        sent = send(devnet_config, HUB, ALPHA, "--body", "for the decoding check")
        wait_ledger_delivered(config, [m["id"] for m in sent], procs)
    rows = origin_rows(config, chain.domain)
    routes = escrow_routes(config, chain)
    blocks = sorted({(r.source_block_number, bytes.fromhex(r.source_block_hash[2:])) for r in rows})
    with open_ledger(config.ledger, check_integrity=False) as ledger:
        cursor = ledger.get_cursor(chain.domain)
    assert cursor is not None and cursor.last_block_hash is not None
    _check_header(hub, cursor.next_block - 1, bytes.fromhex(cursor.last_block_hash[2:]))

    remarks_checked = 0
    next_nonce = 0  # Asset Hub's outbox numbers from 0: the first message ever is nonce 0
    for number, block_hash in blocks:
        _check_header(hub, number, block_hash)

        async def read(at: bytes = block_hash) -> tuple[list[RemarkSeen], list[SubstrateEvent]]:
            return await hub.client.remarks(at), await hub.client.events(at)

        remarks, events = hub.run(read)
        remarked = {
            (e.extrinsic_index, account_bytes(e.attributes["sender"]), e.attributes["hash"])
            for e in events
            if (e.pallet, e.name) == ("System", "Remarked")
        }
        accepted = []
        used: dict[int, set[int]] = {}
        for seen in remarks:
            assert blake2_256(seen.remark) == seen.event_hash
            # By its signer, or by the committee's multisig (a refund inside an as_multi).
            sender = (seen.extrinsic_index, seen.event_sender, "0x" + seen.event_hash.hex())
            assert sender in remarked
            assert seen.event_sender in (seen.signer, hub.settings.multisig)
            remarks_checked += 1
            try:
                found = seen.validate(chain.domain, committee=hub.settings.multisig)
                check_recipient(found, routes.allowed)
                check_escrow(
                    found, seen.transfers, routes, used.setdefault(seen.extrinsic_index, set())
                )
            except RemarkRejected:
                continue
            accepted.append((number, seen.extrinsic_index, found))
        # The outbox rules, written out here rather than taken from the relayer's own
        # assign_nonces: the accepted remarks in chain order (extrinsic index, then event
        # order) take consecutive nonces after those of every earlier block. Against them, the
        # ledger's messages of this block, in nonce order.
        in_block = [r for r in rows if r.source_block_number == number]
        canonical = []
        for _, _, found in sorted(accepted, key=lambda entry: entry[1]):  # stable: event order
            canonical.append(dataclasses.replace(found, nonce=next_nonce))
            next_nonce += 1
        assert [m.encode() for m in canonical] == [r.message for r in in_block]
        assert ["0x" + keccak256(m.encode()).hex() for m in canonical] == [r.id for r in in_block]
    assert remarks_checked >= len(rows)


def failed_executions(hub: Hub, since: int) -> list[tuple[int, str]]:
    """(block, error) of every batch the multisig executed in vain from block ``since`` on:
    on Asset Hub a second delivery of a message fails (its replay-guard item exists)."""
    return [
        (number, str(event.error))
        for number, _, event in hub.all_events()
        if number >= since
        and (event.pallet, event.name) == ("Multisig", "MultisigExecuted")
        and account_bytes(event.attributes["multisig"]) == hub.settings.multisig
        and event.error is not None
    ]


@pytest.mark.slow
def test_relayer_sigkill_mid_stream_on_each_leg_delivers_each_exactly_once(
    devnet_config: Path, config: Config, procs: Procs, hub: Hub, alice: bytes
) -> None:
    """SIGKILL the relayer once while each leg is under way: every message delivered once, and
    the redundant work each kill cost bounded by what was in flight (docs/relayer.md)."""
    # The module's relayer makes way for one with small batches (and a clean SIGTERM first).
    wait_until(lambda: "relaying: origins" in procs.log("relayer"), "the relayer to run")
    assert procs.stop("relayer") == 0
    procs.start_relayer(*SMALL_BATCHES)
    since = block_number(config, ALPHA) + 1
    hub_since = hub.run(hub.client.best_number) + 1
    hub_domain, alpha_domain = config.chain(HUB).domain, config.chain(ALPHA).domain
    proposals = config.checkpoint_store / "proposals" / str(hub_domain)
    from_hub_before = len(origin_rows(config, hub_domain))
    to_hub_before = {r.id for r in origin_rows(config, alpha_domain)}
    kills: list[str] = []

    def hub_leg() -> tuple[bool, bool]:
        """(in flight, done) of the Asset Hub -> alpha leg. In flight: a delivery transaction
        to alpha carries one of its messages (SUBMITTED), the state a kill must interrupt."""
        rows = origin_rows(config, hub_domain)[from_hub_before:]
        in_flight = any(r.status == MessageStatus.SUBMITTED for r in rows)
        return in_flight, len(rows) >= 30 and all(r.status == "delivered" for r in rows)

    def alpha_leg(existing: frozenset[str]) -> Callable[[], tuple[bool, bool]]:
        def probe() -> tuple[bool, bool]:
            """(in flight, done) of the alpha -> Asset Hub leg. In flight: a proposal file of
            this leg (new since it started) is live, so the kill leaves a multisig proposal
            the restarted relayer no longer owns (review RFINA M1)."""
            in_flight = any(p.name not in existing for p in proposals.glob("*.json"))
            rows = [
                r
                for r in origin_rows(config, alpha_domain)
                if r.destination == hub_domain and r.id not in to_hub_before
            ]
            return in_flight, len(rows) >= 30 and all(r.status == "delivered" for r in rows)

        return probe

    def kill_in_flight(leg: str, probe: Callable[[], tuple[bool, bool]]) -> None:
        """SIGKILL the relayer as soon as ``probe`` sees the leg in flight, and start it again.
        A leg done before it was caught fails at once: the test missed it (a poll too slow
        for the window), not a delivery fault; it is not left to spin to the deadline."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            in_flight, done = probe()
            if in_flight:
                break
            if done:
                pytest.fail(
                    f"the {leg} leg was delivered in full before a kill caught it in flight "
                    f"(killed during {kills}): the test missed it, not a delivery fault\n"
                    + logs_of(procs)
                )
            assert time.monotonic() < deadline, f"{leg}: never in flight\n" + logs_of(procs)
            time.sleep(0.05)
        assert procs.stop("relayer", signal.SIGKILL) == -signal.SIGKILL
        kills.append(leg)
        started = procs.log("relayer").count("relaying: origins")
        procs.start_relayer(*SMALL_BATCHES)
        wait_until(
            lambda n=started: procs.log("relayer").count("relaying: origins") > n,
            "the restarted relayer to run",
        )

    # One leg at a time, each sent while the relayer is alive (review RFINA M1): the second
    # `send` starts only once the first leg's kill and restart are done, so each kill hits its
    # own leg's window rather than whatever the previous restart left behind.
    with ThreadPoolExecutor(1) as pool:
        out_sent = pool.submit(
            send, devnet_config, HUB, ALPHA, "--body", "kill stream out", "--count", "30"
        )
        kill_in_flight("asset hub -> alpha", hub_leg)
        out = out_sent.result()
        before = frozenset(p.name for p in proposals.glob("*.json"))  # not this leg's
        back_sent = pool.submit(
            send, devnet_config, ALPHA, HUB, "--body", "kill stream back", "--count", "30"
        )
        kill_in_flight("alpha -> asset hub", alpha_leg(before))
        back = back_sent.result()
    assert kills == ["asset hub -> alpha", "alpha -> asset hub"]
    assert len(out) == len(back) == 30
    assert [m["nonce"] for m in out] == list(range(from_hub_before, from_hub_before + 30))
    ids = [m["id"] for m in out + back]
    assert len(set(ids)) == 60
    wait_ledger_delivered(config, ids, procs)
    assert_status_delivered(devnet_config, ids)

    # alpha: one Delivered event per message from Asset Hub, and no more re-sent than was in
    # flight at the kills.
    assert_delivered_once(
        config,
        ALPHA,
        [m["id"] for m in out],
        since=since,
        faults=len(kills),
        batch_size=KILL_BATCH,
        max_inflight=KILL_INFLIGHT,
    )
    # Asset Hub: every replay-guard item exists, and the multisig remarked each message once;
    # a batch executed again would fail on its items: at most the proposals then outstanding.
    assert_hub_delivered(config, hub, by_id(config, [m["id"] for m in back]))
    failed = failed_executions(hub, hub_since)
    assert len(failed) <= len(kills) * KILL_INFLIGHT, failed


@pytest.mark.slow
def test_processes_survived_and_stop_cleanly(procs: Procs) -> None:
    assert not procs.exited(), {n: procs.log(n)[-3000:] for n in procs.exited()}
    for name in sorted(procs.running):
        assert "Traceback" not in procs.log(name), procs.log(name)[-4000:]
    for name in sorted(procs.running):
        assert procs.stop(name, signal.SIGTERM) == 0, procs.log(name)[-2000:]
