"""An attester facing hostile RPC endpoints and a hostile checkpoint store (issue #8: 3, 5, 8).

On real anvil chains, through small HTTP proxies that lie the way a compromised node would:

- a genuine ``eth_getProof`` of *another* contract (its slots 0..32 set to a chosen frontier)
  served for the outbox: nothing false is signed;
- endpoints that disagree on the final block under ``rpc_quorum``: nothing is signed; ones that
  agree (or a quorum of them, with a liar among them): the real root is;
- an endpoint serving another chain id: refused with one line, at start or at first use;
- a signature file replayed into the next index: the attester signs on, the relayer ignores it;
- a reorg deeper than the finality policy after a signature: the attester halts, saying why.

Plus redaction: an RPC URL's key never reaches an error text or the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from e2e_support import mined
from eth_abi.abi import encode as abi_encode
from fakes import RpcProxy, honest

from adapters.errors import AdapterError
from adapters.evm.chain import OUTBOX_COUNT_SLOT, EvmChain, selector
from adapters.evm.contracts import load_artifact
from adapters.jsonrpc import call_sync
from adapters.rpc import JsonRpcClient, RpcError
from devnet.anvil import DEV_ADDRESSES, AnvilProcess, free_port, start_anvil
from light_clients.committee import Checkpoint, Committee, address_of, sign_checkpoint
from light_clients.hexstr import to_hex
from light_clients.merkle import root_from_branch
from relayer.attester import AttesterState, _resume, attest_once, attest_origin
from relayer.checkpoints import CheckpointStore, CheckpointStoreError, SignedCheckpoint
from relayer.config import ChainConfig, Config, ConfigError, FinalityPolicy
from relayer.families.evm.connection import open_evm
from relayer.families.evm.origin import EvmOrigin
from relayer.metrics import render
from relayer.relay import Relayer, RelayerMetrics
from relayer.signer import LocalSigner

pytestmark = pytest.mark.chain

CHAIN_ID = 31337  # the conftest anvils
DOMAIN = 7001
KEY = bytes.fromhex("a1" * 32)
SIGNER = LocalSigner(KEY)
OTHER_KEYS = (bytes.fromhex("b2" * 32), bytes.fromhex("c3" * 32))
DEPLOYER = DEV_ADDRESSES[0]


# --------------------------------------------------------------------------- chain helpers


def rpc(url: str, method: str, params: list[Any]) -> Any:
    return call_sync(url, method, params)


def transact(url: str, to: str | None, data: bytes) -> dict[str, Any]:
    """Send from anvil's unlocked dev account; the mined receipt (automine)."""
    tx: dict[str, Any] = {"from": DEPLOYER, "data": to_hex(data), "gas": hex(3_000_000)}
    if to is not None:
        tx["to"] = to
    receipt = mined(url, tx)
    assert receipt["status"] == "0x1", receipt
    return receipt


def deploy_outbox(url: str, domain: int = DOMAIN) -> bytes:
    """A fresh Outbox on the chain at ``url``; its 20-byte address."""
    data = load_artifact("Outbox").bytecode + abi_encode(["uint32"], [domain])
    return bytes.fromhex(transact(url, None, data)["contractAddress"][2:])


def dispatch(url: str, outbox: bytes, body: bytes) -> None:
    data = selector("dispatch(uint32,bytes32,bytes)") + abi_encode(
        ["uint32", "bytes32", "bytes"], [9, b"\x01" * 32, body]
    )
    transact(url, to_hex(outbox), data)


def onchain_root(url: str, outbox: bytes) -> bytes:
    """What ``root()`` says (only to check the test's expectations: the attester never asks)."""
    call = {"to": to_hex(outbox), "data": to_hex(selector("root()"))}
    return bytes.fromhex(rpc(url, "eth_call", [call, "latest"])[2:])


def origin(
    rpc_urls: list[str],
    outbox: bytes,
    *,
    quorum: int = 1,
    chain_id: int = CHAIN_ID,
    finality: FinalityPolicy | None = None,
) -> ChainConfig:
    return ChainConfig(
        name="alpha",
        domain=DOMAIN,
        kind="evm",
        rpc=tuple(rpc_urls),
        rpc_quorum=quorum,
        finality=finality or FinalityPolicy("devnet-instant"),
        chain_id=chain_id,
        contracts={"outbox": outbox},
    )


def signed_roots(store: CheckpointStore, chain: ChainConfig) -> dict[int, bytes]:
    """index → root of every checkpoint ``KEY`` published for ``chain`` (checked signatures)."""
    found: dict[int, bytes] = {}
    lane = store.root / str(chain.domain) / to_hex(chain.outbox_id)
    for folder in sorted(lane.glob("[0-9]*")):
        for signed in store.signatures(chain.domain, chain.outbox_id, int(folder.name)):
            if signed.signer == address_of(KEY):
                assert store.signed_by(signed.checkpoint, address_of(KEY))
                found[signed.checkpoint.index] = signed.checkpoint.root
    return found


def poll_once(chain: ChainConfig, store: CheckpointStore) -> AttesterState:
    """One attester poll of ``chain`` (a fresh attester resuming from ``store``)."""
    state = AttesterState()

    async def run() -> None:
        progress = _resume(store, chain, address_of(KEY))
        async with open_evm(chain) as evm:
            await attest_once(EvmOrigin(chain, evm), chain, SIGNER, store, state, progress=progress)

    trio.run(run)
    return state


async def briefly(work: Awaitable[None], seconds: float = 30) -> None:
    """Await ``work`` (an attester that should stop on its own); TooSlowError if it does not."""
    with trio.fail_after(seconds):
        await work


# --------------------------------------------------------------------------- a lying node


@pytest.fixture
def second_anvil() -> Iterator[AnvilProcess]:
    """Another chain with the same chain id as ``anvil``: a fork, as far as ids can tell."""
    chain = start_anvil(chain_id=CHAIN_ID, block_time=None)
    try:
        yield chain
    finally:
        chain.stop()


# --------------------------------------------------------------------------- point 3: the proof


def decoy_with_frontier(url: str, leaf: bytes) -> tuple[bytes, bytes]:
    """A contract whose slots 0..32 hold the frontier of a one-leaf tree of ``leaf``; its
    address and the root that frontier gives."""
    decoy = deploy_outbox(url, domain=DOMAIN + 1)
    rpc(url, "anvil_setStorageAt", [to_hex(decoy), hex(0), to_hex(leaf)])
    one = to_hex((1).to_bytes(32))
    rpc(url, "anvil_setStorageAt", [to_hex(decoy), hex(OUTBOX_COUNT_SLOT), one])
    rpc(url, "evm_mine", [])
    return decoy, root_from_branch([leaf] + [bytes(32)] * 31, 1)


def proof_of(decoy: bytes, outbox: bytes) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Answer ``eth_getProof`` for ``outbox`` with the (genuine) proof of ``decoy``."""

    def rewrite(request: dict[str, Any]) -> dict[str, Any]:
        params = request.get("params", [])
        if request["method"] == "eth_getProof" and params[0].lower() == to_hex(outbox):
            request = {**request, "params": [to_hex(decoy), *params[1:]]}
        return request

    return rewrite


def test_a_proof_of_another_account_is_refused(anvil: AnvilProcess) -> None:
    outbox = deploy_outbox(anvil.rpc_url)
    dispatch(anvil.rpc_url, outbox, b"real")
    decoy, forged = decoy_with_frontier(anvil.rpc_url, b"\x66" * 32)
    assert forged != onchain_root(anvil.rpc_url, outbox)

    async def read() -> None:
        async with JsonRpcClient([lying.url]) as client:
            evm = EvmChain(client, domain=DOMAIN, finality="devnet-instant")
            header = await evm.final_header()
            with pytest.raises(AdapterError, match="is of account"):
                await evm.outbox_state(outbox, header)

    with RpcProxy(anvil.rpc_url, proof_of(decoy, outbox)) as lying:
        trio.run(read)
        assert "eth_getProof" in lying.methods  # the lie was served, and caught


def test_the_attester_signs_no_root_of_another_account(
    anvil: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = deploy_outbox(anvil.rpc_url)
    dispatch(anvil.rpc_url, outbox, b"real")
    decoy, _ = decoy_with_frontier(anvil.rpc_url, b"\x66" * 32)
    store = CheckpointStore(tmp_path)
    with RpcProxy(anvil.rpc_url, proof_of(decoy, outbox)) as lying:
        chain = origin([lying.url], outbox)
        state = poll_once(chain, store)
        assert "eth_getProof" in lying.methods
    assert signed_roots(store, chain) == {}
    assert state.errors == 1 and "is of account" in caplog.text
    # The same attester, through an honest endpoint, signs the real root: the refusal above was
    # the lie's doing.
    poll_once(origin([anvil.rpc_url], outbox), store)
    assert signed_roots(store, chain) == {0: onchain_root(anvil.rpc_url, outbox)}


# --------------------------------------------------------------------------- point 3: quorum


def test_endpoints_that_disagree_on_the_final_block_sign_nothing(
    anvil: AnvilProcess,
    second_anvil: AnvilProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two chain-id-31337 nodes on different chains, quorum 2: no block is final on both.

    (They share the genesis block — anvil's is deterministic — so the second one's history is
    made to differ from block 1 on, and to be as long as the first one's.)"""
    outbox = deploy_outbox(anvil.rpc_url)
    dispatch(anvil.rpc_url, outbox, b"real")
    transact(second_anvil.rpc_url, to_hex(b"\xde\xad" * 10), b"another history")
    height = int(rpc(anvil.rpc_url, "eth_blockNumber", []), 16)
    rpc(second_anvil.rpc_url, "anvil_mine", [hex(height)])
    store = CheckpointStore(tmp_path)
    chain = origin([anvil.rpc_url, second_anvil.rpc_url], outbox, quorum=2)
    state = poll_once(chain, store)
    assert signed_roots(store, chain) == {}
    assert state.errors == 1 and "rpc_quorum 2 of 2 endpoints not reached" in caplog.text
    # Quorum 1 takes the first endpoint's word (what every chain did before rpc_quorum).
    poll_once(origin([anvil.rpc_url, second_anvil.rpc_url], outbox, quorum=1), store)
    assert signed_roots(store, chain) == {0: onchain_root(anvil.rpc_url, outbox)}


def test_a_quorum_outvotes_a_lying_endpoint(
    anvil: AnvilProcess, second_anvil: AnvilProcess, tmp_path: Path
) -> None:
    """Quorum 2 of 3, the first endpoint on another chain: the two honest ones carry it."""
    outbox = deploy_outbox(anvil.rpc_url)
    dispatch(anvil.rpc_url, outbox, b"real")
    store = CheckpointStore(tmp_path)
    with RpcProxy(anvil.rpc_url, honest) as mirror:
        urls = [second_anvil.rpc_url, anvil.rpc_url, mirror.url]
        chain = origin(urls, outbox, quorum=2)
        state = poll_once(chain, store)
        assert "eth_getBlockByNumber" in mirror.methods  # it voted
    assert state.errors == 0
    assert signed_roots(store, chain) == {0: onchain_root(anvil.rpc_url, outbox)}


def test_a_lagging_quorum_member_agrees_on_an_older_block(anvil: AnvilProcess) -> None:
    """An endpoint one block behind still vouches for the newest block both call final."""
    rpc(anvil.rpc_url, "anvil_mine", [hex(3)])

    async def agreed() -> int:
        async with JsonRpcClient([anvil.rpc_url, slow.url]) as client:
            evm = EvmChain(client, domain=DOMAIN, finality="confirmations", depth=1, rpc_quorum=2)
            return (await evm.final_header()).number

    with RpcProxy(anvil.rpc_url, honest) as slow:
        latest = int(rpc(anvil.rpc_url, "eth_blockNumber", []), 16)
        slow.answer = lambda r: hex(latest - 1) if r["method"] == "eth_blockNumber" else None
        assert trio.run(agreed) == latest - 2  # not latest - 1: only one endpoint calls it final


# --------------------------------------------------------------------------- point 3: chain id


def test_an_endpoint_of_another_chain_id_is_refused_at_start(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    other = start_anvil(chain_id=CHAIN_ID + 1, block_time=None)
    try:
        outbox = deploy_outbox(anvil.rpc_url)
        chain = origin([anvil.rpc_url, other.rpc_url], outbox)
        with pytest.raises(ConfigError) as refused:
            # An EVM origin needs nothing of the config but the chain itself.
            no_config = cast(Config, SimpleNamespace(chains=(chain,)))
            trio.run(
                briefly,
                attest_origin(no_config, chain, SIGNER, CheckpointStore(tmp_path), AttesterState()),
            )
    finally:
        other.stop()
    text = str(refused.value)
    assert "\n" not in text
    assert f"chain id {CHAIN_ID + 1}" in text and f"chain_id {CHAIN_ID}" in text
    assert other.rpc_url in text


def test_an_endpoint_down_at_start_is_checked_before_first_use(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there yet
    outbox = deploy_outbox(anvil.rpc_url)

    async def scenario() -> None:
        async with open_evm(origin([primary.url, f"http://127.0.0.1:{port}"], outbox)) as evm:
            assert await evm.chain_id() == CHAIN_ID
            primary.down = True  # now only the other endpoint is left…
            wrong = start_anvil(port=port, chain_id=CHAIN_ID + 1, block_time=None)
            try:
                with pytest.raises(RpcError, match=f"serves chain id {CHAIN_ID + 1}"):
                    await evm.latest_number()  # …and it is never used
            finally:
                wrong.stop()
            assert evm.rpc.endpoints[1].refused
            primary.down = False
            assert await evm.chain_id() == CHAIN_ID

    with RpcProxy(anvil.rpc_url, honest) as primary:
        trio.run(scenario)
    # Refused for good, so said once: failover is one endpoint short from now on.
    refusals = [r for r in caplog.records if f"serves chain id {CHAIN_ID + 1}" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["WARNING"]


def test_an_endpoint_that_errors_on_the_identity_check_rests_like_a_failing_one(
    anvil: AnvilProcess,
) -> None:
    """An endpoint that answers ``eth_chainId`` with an error is not identified, so not used;
    it must be quarantined like any failing endpoint, not asked again before every call."""

    def no_chain_id(request: dict[str, Any]) -> dict[str, Any]:
        if request["method"] == "eth_chainId":
            return {**request, "method": "passerelle_noSuchMethod"}  # the node answers an error
        return request

    async def three_calls() -> None:
        identity = ("eth_chainId", lambda result: None)
        async with JsonRpcClient(
            [broken.url, anvil.rpc_url], identity=identity, base_backoff=60
        ) as c:
            for _ in range(3):
                await c.call("eth_blockNumber")
            assert c.endpoints[0].consecutive_failures == 1

    with RpcProxy(anvil.rpc_url, no_chain_id) as broken:
        trio.run(three_calls)
    assert broken.methods == ["eth_chainId"]  # asked once, then left to rest


# --------------------------------------------------------------------------- point 5: replays


def _signed(key: bytes, checkpoint: Checkpoint) -> SignedCheckpoint:
    return SignedCheckpoint(
        checkpoint=checkpoint,
        signer=address_of(key),
        signature=sign_checkpoint(key, checkpoint),
        block_number=1,
        block_hash=b"\x0c" * 32,
    )


def _copy(store: CheckpointStore, signed: SignedCheckpoint, index: int) -> None:
    """Put a genuine file where it does not belong: the folder of ``index``."""
    cp = signed.checkpoint
    folder = store.root / str(cp.origin) / to_hex(cp.outbox) / f"{index:010d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"0x{signed.signer.hex()}.json").write_text(signed.to_json())


def test_an_own_file_replayed_into_the_next_index_does_not_stop_the_attester(
    anvil: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = deploy_outbox(anvil.rpc_url)
    chain = origin([anvil.rpc_url], outbox)
    store = CheckpointStore(tmp_path)
    dispatch(anvil.rpc_url, outbox, b"first")
    poll_once(chain, store)
    (first,) = store.signatures(chain.domain, chain.outbox_id, 0)
    _copy(store, first, 1)
    _copy(store, first, 2)
    dispatch(anvil.rpc_url, outbox, b"second")
    state = poll_once(chain, store)  # a restarted attester: it resumes, then signs index 1
    assert state.errors == 0
    assert signed_roots(store, chain)[1] == onchain_root(anvil.rpc_url, outbox)
    assert "ignoring" in caplog.text and "index 0" in caplog.text


def test_publish_overwrites_a_replayed_own_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    old = Checkpoint(origin=1, outbox=b"\x0a" * 32, root=b"\x0b" * 32, index=4)
    new = Checkpoint(origin=1, outbox=b"\x0a" * 32, root=b"\x0d" * 32, index=5)
    _copy(store, _signed(KEY, old), 5)
    store.publish(_signed(KEY, new))  # not "a second root at index 5"
    assert store.signed_by(new, address_of(KEY))
    # A real second root at the same index is still refused.
    with pytest.raises(CheckpointStoreError, match="second root at index 5"):
        store.publish(
            _signed(KEY, Checkpoint(origin=1, outbox=new.outbox, root=b"\x0e" * 32, index=5))
        )


def test_replayed_member_files_are_no_dissent_for_the_relayer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Copies of a threshold of members' index-4 files into index 5 (and into another lane):
    the relayer neither halts nor counts them."""
    keys = (KEY, *OTHER_KEYS)
    committee = Committee(members=tuple(sorted(address_of(k) for k in keys)), threshold=2)
    store = CheckpointStore(tmp_path)
    outbox = b"\x0a" * 32
    four = Checkpoint(origin=1, outbox=outbox, root=b"\x0b" * 32, index=4)
    five = Checkpoint(origin=1, outbox=outbox, root=b"\x0d" * 32, index=5)
    for key in keys:
        _copy(store, _signed(key, four), 5)
    elsewhere = Checkpoint(origin=2, outbox=outbox, root=b"\x0b" * 32, index=5)
    _copy(store, _signed(OTHER_KEYS[0], elsewhere), 5)  # lane 2's file…
    lane2 = (
        tmp_path / "2" / to_hex(outbox) / f"{5:010d}" / f"0x{address_of(OTHER_KEYS[0]).hex()}.json"
    )
    lane1 = tmp_path / "1" / to_hex(outbox) / f"{5:010d}" / "0x00.json"
    lane1.write_text(lane2.read_text())  # …in lane 1, under another file name
    store.publish(_signed(OTHER_KEYS[1], five))  # one genuine signature at 5
    published = store.signatures(1, outbox, 5)
    assert [s.checkpoint for s in published] == [five]
    relayer = cast(Relayer, SimpleNamespace(config=SimpleNamespace(committee=committee)))
    assert Relayer._quorum(relayer, five, published) is None  # below threshold, no halt
    assert caplog.text.count("ignoring") == len(keys) + 1


# --------------------------------------------------------------------------- point 8: reorgs


def test_a_reorg_below_finality_after_a_signature_halts_the_attester(
    fresh_anvil: AnvilProcess, tmp_path: Path
) -> None:
    """Finality ``confirmations:2``; a reorg of 4 blocks replaces the block the attester signed
    from. Its next poll stops it, with a reason naming the block — and so does a restart."""
    url = fresh_anvil.rpc_url
    outbox = deploy_outbox(url)
    chain = origin([url], outbox, finality=FinalityPolicy("confirmations", 2))
    store = CheckpointStore(tmp_path)
    state = AttesterState()

    async def attester() -> None:
        progress = _resume(store, chain, address_of(KEY))
        async with open_evm(chain) as evm:
            dispatch(url, outbox, b"doomed")
            rpc(url, "anvil_mine", [hex(2)])
            await attest_once(EvmOrigin(chain, evm), chain, SIGNER, store, state, progress=progress)
            assert state.signed == {DOMAIN: 0}
            signed = store.signatures(chain.domain, chain.outbox_id, 0)[0]
            rpc(url, "anvil_reorg", [4, []])
            now = rpc(url, "eth_getBlockByNumber", [hex(signed.block_number), False])["hash"]
            assert now != to_hex(signed.block_hash)
            await attest_once(EvmOrigin(chain, evm), chain, SIGNER, store, state, progress=progress)

    with pytest.raises(CheckpointStoreError) as halted:
        trio.run(attester)
    (signed,) = store.signatures(chain.domain, chain.outbox_id, 0)
    with pytest.raises(CheckpointStoreError) as restarted:
        poll_once(chain, store)
    for text in (str(halted.value), str(restarted.value)):
        assert f"block {signed.block_number}" in text and "reorg" in text and "\n" not in text


def test_an_edited_block_in_the_store_does_not_halt_the_attester(
    fresh_anvil: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The block fields are not covered by the checkpoint signature: an edited one is not the
    attester's own (its block signature fails), so it is not used to cry reorg."""
    url = fresh_anvil.rpc_url
    outbox = deploy_outbox(url)
    chain = origin([url], outbox)
    store = CheckpointStore(tmp_path)
    dispatch(url, outbox, b"first")
    poll_once(chain, store)
    latest = (
        tmp_path
        / str(DOMAIN)
        / to_hex(chain.outbox_id)
        / "latest"
        / f"0x{address_of(KEY).hex()}.json"
    )
    obj = json.loads(latest.read_text())
    obj["block_hash"] = to_hex(b"\x99" * 32)
    latest.write_text(json.dumps(obj))
    dispatch(url, outbox, b"second")
    state = poll_once(chain, store)
    assert state.errors == 0 and 1 in signed_roots(store, chain)
    assert "no block signature of ours" in caplog.text


# --------------------------------------------------------------------------- redaction

SECRET_URL = "https://user:pa55word@127.0.0.1:{port}/v3/0123456789abcdefKEY?apikey=s3cretQ"
SECRETS = ("pa55word", "0123456789abcdefKEY", "s3cretQ")


def test_rpc_urls_with_keys_never_show(caplog: pytest.LogCaptureFixture) -> None:
    url = SECRET_URL.format(port=free_port())  # nothing listens: a transport error

    async def fail() -> tuple[str, str]:
        async with JsonRpcClient([url]) as client:
            with pytest.raises(RpcError) as error:
                await client.call("eth_chainId")
            return str(error.value), render(RelayerMetrics(), {}, {"alpha/scan": client.endpoints})

    text, metrics = trio.run(fail)
    assert "127.0.0.1" in text and "127.0.0.1" in metrics
    for secret in SECRETS:
        assert secret not in text and secret not in metrics and secret not in caplog.text
    assert "pa55word" not in repr(JsonRpcClient([url]).endpoints)


def test_an_http_error_does_not_quote_the_url(anvil: AnvilProcess) -> None:
    """httpx's status errors quote the request URL: only the status may be shown."""
    with RpcProxy(anvil.rpc_url, honest) as proxy:
        proxy.down = True
        port = proxy.server.server_address[1]

        async def fail() -> str:
            async with JsonRpcClient([SECRET_URL.format(port=port).replace("https", "http")]) as c:
                with pytest.raises(RpcError) as error:
                    await c.call("eth_chainId")
                return str(error.value)

        text = trio.run(fail)
    assert "HTTP 503" in text
    for secret in SECRETS:
        assert secret not in text


def test_a_node_echoing_the_key_in_its_error_does_not_leak_it(anvil: AnvilProcess) -> None:
    """A node sees the request path and query, and may quote them (``invalid project id …``)
    without the rest of the URL: the pieces must be scrubbed, not just the whole URL."""
    with RpcProxy(anvil.rpc_url, honest) as node:
        node.fail = lambda request, path: f"invalid project id in {path}"
        # No TLS and no userinfo on the test server; the path and query carry the key.
        url = SECRET_URL.format(port=node.server.server_address[1])
        url = url.replace("https://user:pa55word@", "http://")

        async def ask() -> str:
            async with JsonRpcClient([url]) as client:
                with pytest.raises(RpcError) as error:
                    await client.call("eth_chainId")
                return str(error.value)

        text = trio.run(ask)
    assert "invalid project id" in text  # the node's answer is still shown…
    for secret in SECRETS[1:]:
        assert secret not in text  # …but not the key it quoted
