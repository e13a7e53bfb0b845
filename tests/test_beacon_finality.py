"""The beacon follower and beacon finality of EVM chains, without a proof-of-stake devnet.

The follower (:class:`adapters.evm.beacon_finality.BeaconFollower`) is driven through a beacon
REST endpoint serving *real* mainnet light-client data (tests/vectors/eth_consensus_lc: a
bootstrap at the trusted checkpoint, the updates of periods 862 to 867, a finality update), a
lying variant of it, and its persisted state; :class:`adapters.evm.chain.EvmChain`'s beacon
finality runs against a real anvil with a follower that names one of its blocks final (what
the light client decides is tested here above and in test_beacon_light_client.py). The whole
path on a real proof-of-stake chain is tests/test_pos_chain.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from adapters.beacon import MAX_ANSWER_BYTES, BeaconApi, NotServed
from adapters.errors import AdapterError
from adapters.evm.beacon_finality import (
    BeaconFollower,
    BeaconSettings,
    BeaconStateError,
    BootstrapUnavailable,
    FinalizedExecution,
)
from adapters.evm.chain import EvmChain
from adapters.jsonrpc import MalformedAnswer
from adapters.rpc import JsonRpcClient, RpcError
from devnet.anvil import AnvilProcess
from light_clients.beacon import MAINNET
from light_clients.hexstr import parse_data
from tests.fakes import BeaconProxy, RpcProxy, honest

VECTORS = Path(__file__).parent / "vectors" / "eth_consensus_lc"
LC = "/eth/v1/beacon/light_client"
MAINNET_GENESIS_TIME = 1606824023
SLOTS_PER_PERIOD = 8192


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


EXPECTED = _load("expected.json")
CHECKPOINT = parse_data(EXPECTED["trusted_checkpoint_block_root"], "checkpoint", 32)
BOOTSTRAP = _load("bootstrap.json")
UPDATES = _load("updates.json")
FINALITY = _load("finality.json")
FINAL_EXECUTION = FINALITY["data"]["finalized_header"]["execution"]


def _period(update: Any) -> int:
    return int(update["data"]["attested_header"]["beacon"]["slot"]) // SLOTS_PER_PERIOD


def mainnet_answers() -> dict[str, Any]:
    """What a mainnet beacon node answered, by request path."""
    answers: dict[str, Any] = {
        f"{LC}/bootstrap/0x{CHECKPOINT.hex()}": BOOTSTRAP,
        f"{LC}/finality_update": FINALITY,
    }
    for update in UPDATES:
        answers[f"{LC}/updates?start_period={_period(update)}&count=1"] = [update]
    return answers


def at_slot(slot: int) -> Callable[[], float]:
    """A mainnet wall clock standing in ``slot``."""
    return lambda: MAINNET_GENESIS_TIME + 12 * slot + 1


NOW = at_slot(int(FINALITY["data"]["signature_slot"]) + 1)


def settings(api: list[str], store: Path | None, checkpoint: bytes = CHECKPOINT) -> BeaconSettings:
    return BeaconSettings(
        api=tuple(api),
        checkpoint=checkpoint,
        config=MAINNET,
        genesis_time=MAINNET_GENESIS_TIME,
        seconds_per_slot=12,
        store=store,
    )


@pytest.fixture
def node() -> Iterator[BeaconProxy]:
    with BeaconProxy(static=mainnet_answers()) as proxy:
        yield proxy


def follow(
    urls: list[str], store: Path | None, *, role: str | None = "attester-test", **kw: Any
) -> tuple[FinalizedExecution, BeaconFollower]:
    async def main() -> tuple[FinalizedExecution, BeaconFollower]:
        async with BeaconApi(urls, base_backoff=60) as api:
            follower = BeaconFollower(
                settings(urls, store, **kw), api, chain="mainnet", role=role, clock=NOW
            )
            return await follower.finalized(), follower

    return trio.run(main)


def test_follows_mainnet_from_the_checkpoint_to_the_finalized_execution_block(
    node: BeaconProxy, tmp_path: Path
) -> None:
    final, follower = follow([node.url], tmp_path)
    assert final.number == int(FINAL_EXECUTION["block_number"])
    assert final.hash == parse_data(FINAL_EXECUTION["block_hash"], "hash", 32)
    assert final.state_root == parse_data(FINAL_EXECUTION["state_root"], "root", 32)
    assert follower.refused == 0
    # The committee was followed period by period, from the bootstrap's to the clock's.
    asked = [p for p in node.paths if "updates" in p]
    assert [int(p.split("start_period=")[1].split("&")[0]) for p in asked][:6] == list(
        range(862, 868)
    )
    state = tmp_path / "mainnet.attester-test.json"
    assert state.stat().st_mode & 0o777 == 0o600


def test_a_restart_resumes_from_its_own_state_without_the_checkpoint(
    node: BeaconProxy, tmp_path: Path
) -> None:
    first, _ = follow([node.url], tmp_path)
    del node.static[f"{LC}/bootstrap/0x{CHECKPOINT.hex()}"]  # the node pruned it
    node.paths.clear()
    again, _ = follow([node.url], tmp_path)
    assert again == first
    assert not any("bootstrap" in p for p in node.paths)


def test_each_role_keeps_its_own_state(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path, role="attester-0xab")
    follow([node.url], tmp_path, role="relayer-scan")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mainnet.attester-0xab.json",
        "mainnet.relayer-scan.json",
    ]


def test_without_a_role_nothing_is_written(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path, role=None)
    assert list(tmp_path.iterdir()) == []


def _tamper_finality(path: str, body: Any) -> Any:
    if path.endswith("finality_update"):
        execution = body["data"]["finalized_header"]["execution"]
        execution["state_root"] = "0x" + "11" * 32  # a state the chain never had
    return body


def test_a_lying_beacon_node_is_refused_and_an_honest_one_used(
    node: BeaconProxy, tmp_path: Path
) -> None:
    with BeaconProxy(static=mainnet_answers()) as liar:
        liar.tamper = _tamper_finality
        final, follower = follow([liar.url, node.url], tmp_path)
        # This poll kept what the updates proved: the lie is refused, not signed...
        assert final.state_root != parse_data("0x" + "11" * 32, "root", 32)
        assert follower.refused == 1
        assert follower.api.endpoints[0].consecutive_failures == 1  # ...and the liar rests

        async def next_poll() -> FinalizedExecution:
            async with BeaconApi([liar.url, node.url], base_backoff=60) as api:
                api.endpoints[0].quarantined_until = trio.current_time() + 60
                again = BeaconFollower(
                    settings([liar.url, node.url], tmp_path),
                    api,
                    chain="mainnet",
                    role="attester-test",
                    clock=NOW,
                )
                return await again.finalized()

        assert trio.run(next_poll).number == int(FINAL_EXECUTION["block_number"])


def _as_finality_update(update: Any) -> Any:
    """A ``LightClientUpdate`` served as a finality update (its committee fields dropped)."""
    older = json.loads(json.dumps(update))
    for key in ("next_sync_committee", "next_sync_committee_branch"):
        del older["data"][key]
    return older


def test_a_stale_finality_update_moves_nothing_back(node: BeaconProxy, tmp_path: Path) -> None:
    final, _ = follow([node.url], tmp_path)
    # Older than what the store finalized, in the same period: valid, signed, and stale.
    node.static[f"{LC}/finality_update"] = _as_finality_update(UPDATES[-1])
    again, follower = follow([node.url], tmp_path)
    assert again == final
    assert follower.refused == 0  # not a lie: just nothing new
    # From a past period: no committee the store still holds can check it. Refused (a node
    # serving it is broken or replaying), and still nothing moves.
    node.static[f"{LC}/finality_update"] = _as_finality_update(UPDATES[-2])
    again, follower = follow([node.url], tmp_path)
    assert again == final
    assert follower.refused == 1


def test_a_bootstrap_for_another_root_is_refused_without_a_crash(node: BeaconProxy) -> None:
    """Refused, counted, and an AdapterError (the caller waits and retries, it does not die)."""
    other = bytes(31) + b"\x01"
    node.static[f"{LC}/bootstrap/0x{other.hex()}"] = BOOTSTRAP
    with pytest.raises(BootstrapUnavailable, match="refused: bootstrap header root"):
        follow([node.url], None, checkpoint=other)


def test_a_bad_bootstrap_first_does_not_keep_the_honest_one_from_being_used(
    node: BeaconProxy,
) -> None:
    with BeaconProxy(static=mainnet_answers()) as liar:
        path = f"{LC}/bootstrap/0x{CHECKPOINT.hex()}"
        forged = json.loads(json.dumps(BOOTSTRAP))
        forged["data"]["current_sync_committee_branch"][0] = "0x" + "00" * 32
        liar.static[path] = forged
        final, follower = follow([liar.url, node.url], None)
    assert final.number == int(FINAL_EXECUTION["block_number"])
    assert follower.refused == 1


def test_no_finality_yet_is_not_an_error(node: BeaconProxy) -> None:
    del node.static[f"{LC}/finality_update"]  # a young chain: 404 (Lodestar says 500)
    final, follower = follow([node.url], None)
    # What the committee updates finalized, nothing else.
    last = UPDATES[-1]["data"]["finalized_header"]["execution"]
    assert final.number == int(last["block_number"])
    assert follower.refused == 0


def test_state_writable_by_others_is_refused(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path)
    state = tmp_path / "mainnet.attester-test.json"
    os.chmod(state, 0o666)
    with pytest.raises(BeaconStateError, match="writable by it alone"):
        follow([node.url], tmp_path)


def test_state_owned_by_another_user_is_refused(node: BeaconProxy, tmp_path: Path) -> None:
    """Mode 0644 but another owner: that user can rewrite the committee we would trust."""
    follow([node.url], tmp_path)
    state = tmp_path / "mainnet.attester-test.json"
    os.chown(state, 65534, 65534)
    with pytest.raises(BeaconStateError, match="owner uid 65534"):
        follow([node.url], tmp_path)


def test_a_state_directory_others_can_write_is_refused(node: BeaconProxy, tmp_path: Path) -> None:
    """Whoever can write the directory can rename their own state file in."""
    store = tmp_path / "store"
    follow([node.url], store)
    os.chmod(store, 0o777)
    with pytest.raises(BeaconStateError, match="directory must belong to this user"):
        follow([node.url], store)


def test_a_state_symlink_is_refused(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path / "real")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "mainnet.attester-test.json").symlink_to(
        tmp_path / "real" / "mainnet.attester-test.json"
    )
    with pytest.raises(BeaconStateError, match="cannot open"):
        follow([node.url], tmp_path / "link")


def test_a_garbled_state_is_one_clear_error(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path)
    state = tmp_path / "mainnet.attester-test.json"
    saved = json.loads(state.read_text())
    saved["store"]["finalized_header"]["beacon"]["slot"] = "x"
    state.write_text(json.dumps(saved))
    with pytest.raises(BeaconStateError, match="unusable light-client state"):
        follow([node.url], tmp_path)


def test_a_state_of_another_checkpoint_is_not_resumed(node: BeaconProxy, tmp_path: Path) -> None:
    follow([node.url], tmp_path)
    state = tmp_path / "mainnet.attester-test.json"
    saved = json.loads(state.read_text())
    saved["checkpoint"] = "0x" + "22" * 32  # bootstrapped from elsewhere
    state.write_text(json.dumps(saved))
    node.paths.clear()
    follow([node.url], tmp_path)
    assert any("bootstrap" in p for p in node.paths)  # started again from the configured one


def test_a_stalling_endpoint_listed_first_does_not_hold_the_follower_back(
    node: BeaconProxy, tmp_path: Path
) -> None:
    """An endpoint that answers, validly, with nothing new (no updates, an old finality update)
    is passed over for the next one, not taken as the last word."""
    with BeaconProxy(static=mainnet_answers()) as staller:
        for path in list(staller.static):
            if "updates" in path:
                staller.static[path] = []
        staller.static[f"{LC}/finality_update"] = _as_finality_update(UPDATES[0])
        final, _ = follow([staller.url, node.url], tmp_path)
    assert final.number == int(FINAL_EXECUTION["block_number"])
    assert any("finality_update" in path for path in node.paths)


# --------------------------------------------------------------------------- the REST client


def _get(urls: list[str], call: Callable[[BeaconApi, Any], Any], **kw: Any) -> Any:
    """``call(api, endpoint)`` on each endpoint in the follower's order until one answers."""

    async def main() -> Any:
        async with BeaconApi(urls, **kw) as api:
            errors: list[RpcError] = []
            for endpoint in api.ordered():
                try:
                    return await call(api, endpoint)
                except RpcError as exc:
                    errors.append(exc)
            raise errors[-1]

    return trio.run(main)


def _finality_on(api: BeaconApi, endpoint: Any) -> Any:
    return api.finality_update_on(endpoint)


def test_not_ready_is_not_served_and_an_outage_fails_over(node: BeaconProxy) -> None:
    with BeaconProxy() as down:
        down.status = 500  # Lodestar's "not ready yet"
        with pytest.raises(NotServed):
            _get([down.url], _finality_on)
        assert _get([down.url, node.url], _finality_on) == FINALITY


def test_an_oversized_answer_is_not_read_to_its_end(node: BeaconProxy) -> None:
    node.static[f"{LC}/finality_update"] = {"data": "x" * (MAX_ANSWER_BYTES + 1)}
    # Refused from its Content-Length (the shared reader, adapters.rpc.read_capped), or
    # while reading a body that declares none.
    with pytest.raises(RpcError, match=r"answer (over|of \d+ bytes, over)"):
        _get([node.url], _finality_on)


def test_nested_json_is_a_garbled_answer_not_a_crash(node: BeaconProxy) -> None:
    with BeaconProxy() as deep:
        deep.raw = b"[" * 100_000
        with pytest.raises(MalformedAnswer, match="not JSON"):
            _get([deep.url], _finality_on)
        assert _get([deep.url, node.url], _finality_on) == FINALITY


def test_a_trickling_endpoint_is_given_up_within_the_deadline(node: BeaconProxy) -> None:
    """httpx's timeout bounds each read; a byte every 0.3 s would pass it for ever."""
    with BeaconProxy(static=mainnet_answers()) as slow:
        slow.trickle = 0.3
        started = time.monotonic()
        with pytest.raises(RpcError, match=r"no whole answer within 1\.5 s"):
            _get([slow.url], _finality_on, deadline=1.5)
        assert time.monotonic() - started < 5
        assert _get([slow.url, node.url], _finality_on, deadline=1.5) == FINALITY


def test_an_answer_without_data_is_malformed(node: BeaconProxy) -> None:
    node.static[f"{LC}/finality_update"] = {"version": "capella"}
    with pytest.raises(RpcError, match="no data member"):
        _get([node.url], _finality_on)


def test_too_many_updates_is_malformed(node: BeaconProxy) -> None:
    node.static[f"{LC}/updates?start_period=862&count=1"] = UPDATES[:2]
    with pytest.raises(MalformedAnswer, match="not a list of at most 1"):
        _get([node.url], lambda api, endpoint: api.updates_on(endpoint, 862, 1))


def test_a_version_label_is_checked_against_the_slot(node: BeaconProxy, tmp_path: Path) -> None:
    """The answer's ``version`` reaches the parsers: a Capella update labelled Deneb is a
    confused or lying server, refused."""
    node.tamper = lambda path, body: (
        {**body, "version": "deneb"} if path.endswith("finality_update") else body
    )
    _, follower = follow([node.url], tmp_path)
    assert follower.refused == 1


# --------------------------------------------------------------------------- EvmChain


class NamedFinal:
    """A stand-in for the follower: names block ``number`` of a real chain final (the light
    client's decision is what the tests above exercise)."""

    def __init__(self, execution: FinalizedExecution) -> None:
        self.execution = execution

    async def finalized(self) -> FinalizedExecution:
        return self.execution


def _evm(url: str, final: NamedFinal) -> EvmChain:
    return EvmChain(JsonRpcClient([url]), domain=1, finality="beacon", beacon=final)  # type: ignore[arg-type]


def _block(anvil: AnvilProcess, number: int) -> FinalizedExecution:
    async def main() -> FinalizedExecution:
        async with JsonRpcClient([anvil.rpc_url]) as rpc:
            header = await EvmChain(rpc, domain=1, finality="devnet-instant").header(number)
        return FinalizedExecution(number, header.hash, header.state_root, beacon_slot=number)

    return trio.run(main)


def _mine(anvil: AnvilProcess, blocks: int) -> None:
    async def main() -> None:
        async with JsonRpcClient([anvil.rpc_url]) as rpc:
            await rpc.call("anvil_mine", [hex(blocks)])

    trio.run(main)


def test_the_final_header_is_the_light_clients_block_not_the_nodes(
    fresh_anvil: AnvilProcess,
) -> None:
    _mine(fresh_anvil, 12)
    final = NamedFinal(_block(fresh_anvil, 7))

    async def main() -> None:
        chain = _evm(fresh_anvil.rpc_url, final)
        header = await chain.final_header()
        assert (header.number, header.hash) == (7, final.execution.hash)
        # Older blocks: proven by parent hashes; newer ones are not final.
        assert await chain.agreed_block_hash(3) == (await chain.header(3)).hash
        assert await chain.agreed_block_hash(8) is None
        assert (await chain.agreed_header(5)).number == 5
        await chain.rpc.aclose()

    trio.run(main)


def test_a_node_lying_about_a_header_or_an_ancestor_is_caught(fresh_anvil: AnvilProcess) -> None:
    _mine(fresh_anvil, 12)
    final = NamedFinal(_block(fresh_anvil, 9))

    def forge(request: dict[str, Any]) -> Any:
        if request["method"] == "eth_getBlockByNumber" and request["params"][0] in ("0x9", "0x5"):
            # A self-consistent forgery of its own: another block's header, its hash right.
            return _block_json(fresh_anvil, 4)
        return None

    with RpcProxy(fresh_anvil.rpc_url, honest) as liar:
        liar.answer = forge

        async def main() -> None:
            chain = _evm(liar.url, final)
            with pytest.raises(AdapterError, match="no endpoint serves block 9 as proven"):
                await chain.final_header()
            liar.answer = lambda request: (
                _block_json(fresh_anvil, 4)
                if request["method"] == "eth_getBlockByNumber" and request["params"][0] == "0x5"
                else None
            )
            await chain.final_header()
            with pytest.raises(AdapterError, match="no endpoint serves block 5 as proven"):
                await chain.agreed_block_hash(3)  # the walk down passes block 5
            await chain.rpc.aclose()

        trio.run(main)


def _block_json(anvil: AnvilProcess, number: int) -> Any:
    async def main() -> Any:
        async with JsonRpcClient([anvil.rpc_url]) as rpc:
            return await rpc.call("eth_getBlockByNumber", [hex(number), False])

    return trio.run(main)


def test_a_conflicting_finalized_history_shows_as_a_changed_hash(
    fresh_anvil: AnvilProcess,
) -> None:
    """The proven run of hashes is dropped when the light client's chain no longer passes
    through it: the caller (an attester's reorg check) sees the new hash and halts."""
    _mine(fresh_anvil, 12)

    async def main() -> None:
        final = NamedFinal(await _async_block(fresh_anvil, 10))
        chain = _evm(fresh_anvil.rpc_url, final)
        old = await chain.agreed_block_hash(6)
        async with JsonRpcClient([fresh_anvil.rpc_url]) as rpc:
            await rpc.call("anvil_reorg", [8, []])  # blocks 5.. replaced
            await rpc.call("anvil_mine", ["0x4"])
        final.execution = await _async_block(fresh_anvil, 12)
        await chain.final_header()
        new = await chain.agreed_block_hash(6)
        assert new is not None and new != old
        await chain.rpc.aclose()

    trio.run(main)


async def _async_block(anvil: AnvilProcess, number: int) -> FinalizedExecution:
    async with JsonRpcClient([anvil.rpc_url]) as rpc:
        header = await EvmChain(rpc, domain=1, finality="devnet-instant").header(number)
    return FinalizedExecution(number, header.hash, header.state_root, beacon_slot=number)


def test_beacon_finality_needs_a_follower() -> None:
    with pytest.raises(ValueError, match="go together"):
        EvmChain(JsonRpcClient(["http://127.0.0.1:1"]), domain=1, finality="beacon")
