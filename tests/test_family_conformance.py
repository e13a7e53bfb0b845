"""Every chain family passes the same checks, through the same Protocols, on real devnet chains.

The flow (relayer, attester, send/status) talks to chains only through
:class:`relayer.family.ChainFamily`, :class:`~relayer.family.Origin` and
:class:`~relayer.family.Delivery`; this module is what a family has to pass to be one. It runs
on one devnet holding a chain of each family: ``alpha`` (``evm``), ``beta`` rewritten as
``evm-legacy`` (type-0 transactions, ``eth_getLogs`` capped at :data:`LOG_RANGE` blocks) and
``assethub`` (``substrate``, chopsticks), with the attesters and a relayer running on that
config. Each family, as an origin:

- its final head's hash is the canonical hash of its number;
- a scan of its final blocks finds what ``send`` dispatched, with canonical nonces (0, 1, …
  in chain order; the id is the message's keccak) — the same from a fresh connection, and the
  same when resumed from a cursor in the middle (a restarted relayer);
- the outbox state it proves at a final head (what attesters sign) is exactly the tree of the
  scanned messages;

and, as a destination, delivers what the running relayer sends it and then shows it delivered
(never a message it was not sent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio

from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import Message, decode_message
from relayer.config import ChainConfig, Config, load_config
from relayer.family import Head, Origin, family_of
from relayer.ledger import DiscoveredMessage, MessageRecord, MessageStatus, open_ledger
from tests.e2e_support import Procs, devnet, rpc, running, send

pytestmark = [pytest.mark.chain, pytest.mark.slow]

LOG_RANGE = 2
"""``max_log_range`` of the ``evm-legacy`` chain: small, so every scan is split."""
ROUTES = {"alpha": "beta", "beta": "alpha", "assethub": "alpha"}
"""Each chain under test → where its test messages go (a route the devnet configures). The
messages to alpha and beta are each other's; assethub gets one from alpha (:data:`EXTRA`)."""
EXTRA = ("alpha", "assethub")
FAMILY_OF_CHAIN = {"alpha": "evm", "beta": "evm-legacy", "assethub": "substrate"}
CHAINS = list(FAMILY_OF_CHAIN)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The devnet's config with ``beta`` turned into an ``evm-legacy`` chain."""
    for path in devnet(tmp_path_factory, assethub=True):
        text = path.read_text()
        beta = text.index('name = "beta"')
        kind = text.index('kind = "evm"', beta)
        text = (
            text[:kind]
            + f'kind = "evm-legacy"\nmax_log_range = {LOG_RANGE}'
            + text[kind + len('kind = "evm"') :]
        )
        legacy = path.with_name("legacy.toml")
        legacy.write_text(text)
        yield legacy


@pytest.fixture(scope="module")
def config(config_path: Path) -> Config:
    loaded = load_config(config_path)
    assert {c.name: c.kind for c in loaded.chains} == FAMILY_OF_CHAIN
    return loaded


@pytest.fixture(scope="module")
def procs(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with running(config_path, tmp_path_factory.mktemp("logs")) as started:
        yield started


@pytest.fixture(scope="module")
def prior_heads(config: Config) -> dict[str, Head]:
    """Each chain's final head before the module sends anything (a restart's cursor)."""

    async def head(origin: Origin) -> Head:
        return await origin.final_head()

    return {name: origin_run(config, name, head) for name in CHAINS}


@pytest.fixture(scope="module")
def traffic(
    config_path: Path, prior_heads: dict[str, Head], procs: Procs
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The module's messages, sent at once (``passerelle send``) so that their deliveries
    overlap: two from each chain along :data:`ROUTES`, one along :data:`EXTRA`; by route.
    One thread per sending chain (a key's nonces are its own)."""

    def from_chain(name: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
        routes = [(name, ROUTES[name], 2)] + ([(*EXTRA, 1)] if EXTRA[0] == name else [])
        return {
            (origin, to): send(
                config_path, origin, to, "--body", f"conformance {origin}", "--count", str(n)
            )
            for origin, to, n in routes
        }

    with ThreadPoolExecutor(len(CHAINS)) as pool:
        results = list(pool.map(from_chain, CHAINS))
    return {route: messages for result in results for route, messages in result.items()}


@pytest.fixture(scope="module")
def sent(
    traffic: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """The messages each chain sent along :data:`ROUTES`, by chain."""
    return {name: traffic[(name, ROUTES[name])] for name in CHAINS}


OnePass = Callable[[str], tuple[list[DiscoveredMessage], Head]]


@pytest.fixture(scope="module")
def one_pass(config: Config, sent: dict[str, list[dict[str, Any]]]) -> OnePass:
    """Chain ``name`` scanned in one pass, from a fresh connection, from its start block to a
    final head at or past its last message: the messages found and that head. Each chain is
    scanned once for the module (on first use) and every origin test compares with that pass:
    a Substrate scan reads every block over the node's websocket, and chopsticks' grew with
    each test, so the five passes this took before were most of the module's time. Nothing
    reads the pass but the tests below (a list and a head: immutable to them)."""
    done: dict[str, tuple[list[DiscoveredMessage], Head]] = {}

    def scanned(name: str) -> tuple[list[DiscoveredMessage], Head]:
        if name not in done:
            chain = config.chain(name)
            last_block = max(m["block"] for m in sent[name])

            async def body(origin: Origin) -> tuple[list[DiscoveredMessage], Head]:
                head = await final_after(origin, last_block)
                found, _ = await scan_all(
                    origin, chain, IncrementalMerkleTree(), chain.start_block, head
                )
                return found, head

            done[name] = origin_run(config, name, body)
        return done[name]

    return scanned


def inbound(traffic: dict[tuple[str, str], list[dict[str, Any]]], name: str) -> list[str]:
    """The ids of the module's messages to chain ``name``."""
    return [m["id"] for (_, to), messages in traffic.items() if to == name for m in messages]


# --------------------------------------------------------------------------- helpers


def origin_run(config: Config, name: str, body: Any) -> Any:
    """Run ``body(origin)`` with a fresh :class:`Origin` of chain ``name``."""

    async def main() -> Any:
        chain = config.chain(name)
        async with family_of(chain).open_origin(config, chain) as origin:
            return await body(origin)

    return trio.run(main)


async def final_after(origin: Origin, block: int, timeout: float = 120) -> Head:
    """The origin's final head, once it is at or past ``block``."""
    with trio.fail_after(timeout):
        while (head := await origin.final_head()).number < block:
            await trio.sleep(0.5)
    return head


async def scan_all(
    origin: Origin, chain: ChainConfig, tree: IncrementalMerkleTree, first: int, head: Head
) -> tuple[list[DiscoveredMessage], int]:
    """Scan ``first..head`` chunk by chunk, growing ``tree``; the messages and the next block."""
    found: list[DiscoveredMessage] = []
    while first <= head.number:
        scanned = await origin.scan(tree, first, head)
        assert scanned.first == first and first <= scanned.end <= head.number
        assert [keccak256(m.message) for m in scanned.messages] == list(scanned.ids)
        for message_id in scanned.ids:
            tree.append(message_id)
        found += scanned.messages
        first = scanned.end + 1
    return found, first


def ledger_status(config: Config, ids: Sequence[str]) -> dict[str, str]:
    """Each id's status in the relayer's ledger (read directly: a CLI start per look is slow)."""
    with open_ledger(config.ledger) as ledger:
        return {i: r.status if (r := ledger.get(i)) is not None else "?" for i in ids}


# --------------------------------------------------------------------------- as an origin


@pytest.mark.parametrize("name", CHAINS)
def test_final_head_is_canonical(config: Config, name: str) -> None:
    async def body(origin: Origin) -> tuple[Head, bytes | None]:
        head = await origin.final_head()
        return head, await origin.block_hash(head.number)

    head, canonical = origin_run(config, name, body)
    assert head.number >= 0 and len(head.hash) == 32
    assert canonical == head.hash


@pytest.mark.parametrize("name", CHAINS)
def test_scan_finds_what_was_sent_with_canonical_nonces(
    config: Config, sent: dict[str, list[dict[str, Any]]], one_pass: OnePass, name: str
) -> None:
    chain = config.chain(name)
    ours = sent[name]
    found, _ = one_pass(name)
    messages = [decode_message(m.message) for m in found]
    assert [m.nonce for m in messages] == list(range(len(messages)))  # canonical: 0, 1, …
    assert all(m.origin == chain.domain for m in messages)
    by_id = {"0x" + keccak256(m.message).hex(): m for m in found}
    for dispatched in ours:
        assert dispatched["id"] in by_id, f"{dispatched['id']} not found on {name}"
        message: Message = decode_message(by_id[dispatched["id"]].message)
        assert message.nonce == dispatched["nonce"]
        assert message.body == f"conformance {name}".encode()
        assert by_id[dispatched["id"]].block_number == dispatched["block"]


@pytest.mark.parametrize("name", CHAINS)
def test_a_restarted_scan_resumes_into_the_same_messages(
    config: Config,
    prior_heads: dict[str, Head],
    sent: dict[str, list[dict[str, Any]]],
    one_pass: OnePass,
    name: str,
) -> None:
    """A scan that stopped at one final head and goes on later from a fresh connection (a
    relayer that restarted from its cursor) finds exactly what one pass (:func:`one_pass`, to
    the same final head) finds."""
    chain = config.chain(name)
    tree = IncrementalMerkleTree()
    passed, head = one_pass(name)

    async def before_restart(origin: Origin) -> tuple[list[bytes], int]:
        found, cursor = await scan_all(origin, chain, tree, chain.start_block, prior_heads[name])
        return [keccak256(m.message) for m in found], cursor

    before, cursor = origin_run(config, name, before_restart)

    async def after_restart(origin: Origin) -> list[bytes]:
        found, _ = await scan_all(origin, chain, tree, cursor, head)
        return [keccak256(m.message) for m in found]

    after = origin_run(config, name, after_restart)
    assert [keccak256(m.message) for m in passed] == before + after
    assert {bytes.fromhex(m["id"][2:]) for m in sent[name]} <= set(after)


@pytest.mark.parametrize("name", CHAINS)
def test_proven_outbox_state_is_the_tree_of_the_scanned_messages(
    config: Config, sent: dict[str, list[dict[str, Any]]], one_pass: OnePass, name: str
) -> None:
    chain = config.chain(name)
    found, head = one_pass(name)
    tree = IncrementalMerkleTree()
    for scanned in found:  # the ids the scan returned (scan_all: each the keccak of its bytes)
        tree.append(keccak256(scanned.message))

    async def body(origin: Origin) -> tuple[int, bytes, int | None]:
        state = await origin.outbox_state(head)  # what an attester signs, on its own
        return state.count, state.root, await origin.stamped_domain()

    count, root, stamped = origin_run(config, name, body)
    assert count == tree.count >= len(sent[name])
    assert root == tree.root()
    # The relayer's start-up check of the configured domain: a family either states the domain
    # its outbox stamps (and it is the configured one) or states none.
    assert stamped in (None, chain.domain)


# --------------------------------------------------------------------------- as a destination


def wait_ledger_delivered(config: Config, procs: Procs, ids: Sequence[str]) -> None:
    deadline = time.monotonic() + 180
    while set(ledger_status(config, ids).values()) != {MessageStatus.DELIVERED}:
        assert time.monotonic() < deadline, (
            f"not delivered: {ledger_status(config, ids)}\n{procs.log('relayer')[-3000:]}"
        )
        procs.check_running()
        time.sleep(0.5)


def records(config: Config, ids: Sequence[str]) -> list[MessageRecord]:
    with open_ledger(config.ledger) as ledger:
        found = [ledger.get(i) for i in ids]
    assert all(r is not None for r in found)
    return [r for r in found if r is not None]


@pytest.mark.parametrize("name", CHAINS)
def test_delivers_and_then_shows_delivered(
    config: Config,
    traffic: dict[tuple[str, str], list[dict[str, Any]]],
    procs: Procs,
    name: str,
) -> None:
    chain = config.chain(name)
    ids = inbound(traffic, name)
    assert ids
    never_sent = Message(
        version=1,
        nonce=10**9,
        origin=config.chain(ROUTES[name]).domain,
        sender=bytes(32),
        destination=chain.domain,
        recipient=bytes(32),
        body=b"never sent",
    )
    wait_ledger_delivered(config, procs, ids)
    raws = [r.message for r in records(config, ids)]
    shown = trio.run(family_of(chain).delivered, config, chain, [*raws, never_sent.encode()])
    assert shown == [True] * len(raws) + [False]


def test_legacy_family_pays_with_type_0_transactions(
    config: Config,
    traffic: dict[tuple[str, str], list[dict[str, Any]]],
    procs: Procs,
) -> None:
    """``evm-legacy`` pays the legacy way on every transaction Passerelle makes on its chain:
    the user's dispatch and the relayer's deliveries (type 0x0, one gasPrice; anvil's own
    default would be type 0x2)."""
    beta = config.chain("beta")
    for message in traffic[("beta", "alpha")]:
        dispatch = rpc(beta.rpc[0], "eth_getTransactionByHash", [message["tx"]])
        assert dispatch["type"] == "0x0"
    into = inbound(traffic, "beta")
    wait_ledger_delivered(config, procs, into)
    carriers = {r.delivery_tx_hash for r in records(config, into)}
    assert carriers and None not in carriers
    for tx_hash in carriers:
        delivery = rpc(beta.rpc[0], "eth_getTransactionByHash", [tx_hash])
        assert delivery["type"] == "0x0" and "maxFeePerGas" not in delivery


def test_legacy_family_caps_each_log_request(config: Config) -> None:
    """Every ``eth_getLogs`` an ``evm-legacy`` origin sends spans at most ``max_log_range``
    blocks (the real node would take more; the cap is the family's promise to capped RPCs)."""
    chain = config.chain("beta")
    spans: list[int] = []

    async def body(origin: Origin) -> None:
        rpc_client = origin.evm.rpc  # type: ignore[attr-defined]
        honest = rpc_client.call_from  # what EvmChain.logs asks through

        async def counting(method: str, params: Sequence[Any], **options: Any) -> Any:
            if method == "eth_getLogs":
                spans.append(int(params[0]["toBlock"], 16) - int(params[0]["fromBlock"], 16) + 1)
            return await honest(method, params, **options)

        rpc_client.call_from = counting
        head = await origin.final_head()
        await origin.scan(IncrementalMerkleTree(), chain.start_block, head)

    origin_run(config, "beta", body)
    assert spans and max(spans) <= LOG_RANGE
