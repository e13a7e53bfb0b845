"""A real proof-of-stake chain (Lodestar + EthereumJS, `devnet up --pos`) as an origin and a
destination, its attesters trusting no RPC: what the beacon light client buys, end to end.

ONE proof-of-stake chain serves the whole test run (this module, on one worker: it starts in
about a minute; its two node processes use ~0.15 of a core idle, Lodestar ~0.11 of it, and
EthereumJS more while messages move). The attesters and the relayer run for the whole module
too, so by its last test the chain has crossed a sync-committee period: that crossing (slot 80,
the first finality in period 1, ~165 s after genesis) and the delivery after the restart are
what the module's ~225 s of wall wait for; the other tests run inside that wait.

- messages both ways between gamma (beacon finality) and alpha (anvil), exactly once;
- an execution endpoint that lies (a storage proof or a header rewritten) and a beacon endpoint
  that lies (a tampered update) or replays (a stale finality update): an attester reading
  through them signs nothing, and one reading through honest copies of the same proxies does
  (so the tests can fail);
- an attester crosses a period change and resumes from its own light-client state after a
  restart.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_support import (
    Procs,
    assert_delivered_once,
    block_number,
    cli,
    missing_chain_tool,
    send,
    wait_delivered,
    wait_for_pos_tools,
)

from adapters.evm.beacon_finality import BeaconSettings
from adapters.rpc import tls_context
from benchmarks import harness
from devnet import manager
from devnet.errors import DevnetError
from devnet.pos import VALIDATORS
from light_clients.committee import address_of
from light_clients.ethereum.header import header_rlp_from_json
from light_clients.hashing import keccak256
from relayer.attester import AttesterState, OriginProgress, attest_once
from relayer.checkpoints import open_checkpoint_store
from relayer.config import ChainConfig, Config, load_config
from relayer.family import family_of
from relayer.signer import LocalSigner
from tests.fakes import BeaconProxy, RpcProxy, honest

pytestmark = pytest.mark.chain

POS = "gamma"
LC = "/eth/v1/beacon/light_client"
FIRST_FINALITY: list[Any] = []


@pytest.fixture(scope="module")
def pos_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # `make test` builds the PoS tools while the other modules already run (Makefile).
    wait_for_pos_tools()
    state = tmp_path_factory.mktemp("posnet")
    try:
        config = manager.up(state, assethub=False, pos=True)
    except DevnetError as exc:
        manager.down(state)
        if "not installed" in str(exc) or "not found" in str(exc):
            missing_chain_tool(str(exc))
        raise
    # The first finality update the chain serves, kept for the stale-update test (by then the
    # chain has finalized further, with no waiting).
    settings = load_config(config).chain(POS).family_settings
    assert isinstance(settings, BeaconSettings)
    early = _get(settings.api[0] + f"{LC}/finality_update")
    if early.status_code == 200:  # Lodestar serves one only once finality is in the period
        FIRST_FINALITY.append(early.json())
    try:
        yield config
    finally:
        manager.down(state)


# gamma finalizes every epoch (16 s): polling it every half second, as the anvil tests do, only
# burns CPU the other test workers need (the suite is CPU-bound on two cores). The relayer's
# poll costs ~40 ms of CPU (measured: 7.3 CPU s over the module at 1 s): at 2 s it adds at most
# a second to a delivery that waits 30-50 s for finality anyway, and saves ~3 CPU s.
ATTESTER_POLL = 2.0
RELAYER_POLL = 2.0


@pytest.fixture(scope="module")
def procs(pos_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with harness.running(
        pos_config,
        tmp_path_factory.mktemp("poslogs"),
        attester_poll=ATTESTER_POLL,
        relayer_poll=RELAYER_POLL,
    ) as started:
        yield started


@pytest.fixture(scope="module")
def config(pos_config: Path) -> Config:
    return load_config(pos_config)


def _chain(config: Config, name: str) -> ChainConfig:
    return next(c for c in config.chains if c.name == name)


def test_status_says_gamma_runs_beacon_finality(pos_config: Path) -> None:
    result = cli(pos_config, "status")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{POS} "))
    assert "beacon (sync-committee light client, minimal preset" in line
    assert "no RPC trusted" in line


def test_messages_both_ways_exactly_once(pos_config: Path, config: Config, procs: Procs) -> None:
    since = {name: block_number(config, name) for name in (POS, "alpha")}
    out = send(pos_config, POS, "alpha", "--body", "from a proof-of-stake chain", "--count", "3")
    back = send(pos_config, "alpha", POS, "--body", "to a proof-of-stake chain", "--count", "2")
    # gamma finalizes two to three epochs (16-24 two-second slots) after a block.
    ids = [m["id"] for m in out + back]
    wait_delivered(pos_config, ids, procs, 240, since=since, poll=ATTESTER_POLL)
    assert_delivered_once(config, "alpha", [m["id"] for m in out], since=since["alpha"])
    assert_delivered_once(config, POS, [m["id"] for m in back], since=since[POS])
    signed = [
        line for line in procs.log("attester0").splitlines() if f"origin {POS}: signed" in line
    ]
    assert signed, procs.tail("attester0")


# --------------------------------------------------------------------------- lying endpoints


def _attest(config: Config, chain: ChainConfig, store: Path) -> tuple[AttesterState, Any]:
    """One poll of a throwaway attester on ``chain`` (as configured, endpoints and all), signing
    into ``store``; its state, and the origin's beacon follower."""
    key = bytes(31) + b"\x07"

    async def main() -> tuple[AttesterState, Any]:
        state = AttesterState()
        async with family_of(chain).open_origin(config, chain) as origin:
            await attest_once(
                origin,
                chain,
                LocalSigner(key),
                open_checkpoint_store(store),
                state,
                progress=OriginProgress(last_index=-1, last_block=None),
            )
            return state, origin.evm.beacon  # type: ignore[attr-defined]

    state, follower = trio.run(main)
    assert address_of(key)  # a key no committee knows: these signatures go nowhere
    return state, follower


def _through(
    chain: ChainConfig,
    *,
    rpc: str | None = None,
    api: str | None = None,
    store: Path | None = None,
) -> ChainConfig:
    """``chain`` read through other endpoints; its light-client state in ``store`` (None:
    none, every poll starts from the checkpoint as a new attester does)."""
    settings = chain.family_settings
    assert isinstance(settings, BeaconSettings)
    beacon = dataclasses.replace(settings, api=(api,) if api else settings.api, store=store)
    return dataclasses.replace(chain, rpc=(rpc,) if rpc else chain.rpc, family_settings=beacon)


def _lying_proofs(request: dict[str, Any], upstream: str) -> Any:
    if request["method"] != "eth_getProof":
        return None
    answer = harness.rpc(upstream, request["method"], request["params"])
    for entry in answer["storageProof"]:
        entry["value"] = hex(int(entry["value"], 16) + 1)  # one more message than there is
    return answer


def _lying_headers(request: dict[str, Any], upstream: str) -> Any:
    if request["method"] != "eth_getBlockByNumber":
        return None
    block = harness.rpc(upstream, request["method"], request["params"])
    if block is None:
        return None
    # A self-consistent forgery: another state root, the hash recomputed to match.
    block["stateRoot"] = "0x" + "ab" * 32
    block["hash"] = "0x" + keccak256(header_rlp_from_json(block)).hex()
    return block


@pytest.mark.parametrize("lie", [_lying_proofs, _lying_headers], ids=["proofs", "headers"])
def test_a_lying_execution_endpoint_gets_nothing_signed(
    config: Config, procs: Procs, tmp_path: Path, lie: Callable[[dict[str, Any], str], Any]
) -> None:
    gamma = _chain(config, POS)
    with RpcProxy(gamma.rpc[0], honest) as proxy:
        # The control: through the same proxy, honest, the attester signs gamma's outbox.
        state, _ = _attest(config, _through(gamma, rpc=proxy.url), tmp_path / "honest")
        assert state.signatures == 1, "nothing to sign: did gamma send anything?"
        proxy.answer = lambda request: lie(request, gamma.rpc[0])
        state, _ = _attest(config, _through(gamma, rpc=proxy.url), tmp_path / "lied")
    assert (state.signatures, state.errors) == (0, 1)
    assert not list((tmp_path / "lied").rglob("*.json"))


def _tampered_updates(path: str, body: Any) -> Any:
    items = body if isinstance(body, list) else [body]
    for item in items:
        data = item.get("data", {})
        if "finalized_header" in data:
            data["finalized_header"]["execution"]["state_root"] = "0x" + "cd" * 32
    return body


def test_a_lying_beacon_endpoint_gets_nothing_signed(
    config: Config, procs: Procs, tmp_path: Path
) -> None:
    gamma = _chain(config, POS)
    assert isinstance(gamma.family_settings, BeaconSettings)
    with BeaconProxy(target=gamma.family_settings.api[0]) as proxy:
        state, follower = _attest(config, _through(gamma, api=proxy.url), tmp_path / "honest")
        assert state.signatures == 1 and follower.refused == 0
        proxy.tamper = _tampered_updates
        state, follower = _attest(config, _through(gamma, api=proxy.url), tmp_path / "lied")
    assert state.signatures == 0
    assert follower.refused >= 1
    assert not list((tmp_path / "lied").rglob("*.json"))


def test_a_stale_finality_update_moves_nothing_back(
    config: Config, procs: Procs, tmp_path: Path
) -> None:
    """A beacon endpoint replaying an old finality update to an attester that has seen a newer
    one: its light client keeps the newer finalized block (no rollback, nothing re-signed)."""
    gamma = _chain(config, POS)
    settings = gamma.family_settings
    assert isinstance(settings, BeaconSettings)
    api = settings.api[0]
    if not FIRST_FINALITY:  # run alone, early: the chain may not serve one yet
        harness.wait_for(
            lambda: _get(api + f"{LC}/finality_update").status_code == 200,
            "a first finality update",
            120,
        )
    old = FIRST_FINALITY[0] if FIRST_FINALITY else _finality_update(api)
    old_slot = _finalized_slot(old)
    harness.wait_for(
        lambda: _finalized_slot(_finality_update(api)) > old_slot, "finality to advance", 120
    )
    with BeaconProxy(target=api) as proxy:
        keeping = _through(gamma, api=proxy.url, store=tmp_path / "state")
        first = _finalized(config, keeping, role="attester-stale")
        proxy.tamper = lambda path, body: old if path.endswith("finality_update") else body
        again = _finalized(config, keeping, role="attester-stale")
        assert any(path.endswith("finality_update") for path in proxy.paths)
    assert again >= first > old_slot


def _get(url: str) -> httpx.Response:
    """A GET of the beacon API (polled: one TLS context for all, adapters/rpc.py)."""
    return httpx.get(url, timeout=5, verify=tls_context())


def _finality_update(api: str) -> Any:
    answer = _get(api + f"{LC}/finality_update")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _finalized_slot(update: Any) -> int:
    return int(update["data"]["finalized_header"]["beacon"]["slot"])


def _finalized(config: Config, chain: ChainConfig, *, role: str) -> int:
    """The beacon slot an origin of ``chain`` holds final after one poll."""

    async def main() -> int:
        async with family_of(chain).open_origin(config, chain, role=role) as origin:
            await origin.final_head()
            follower = origin.evm.beacon  # type: ignore[attr-defined]
            return int(follower.store.finalized_header.beacon.slot)

    return trio.run(main)


# --------------------------------------------------------------------------- periods, restarts


def test_an_attester_crosses_a_period_and_resumes_after_a_restart(
    pos_config: Path, config: Config, procs: Procs
) -> None:
    gamma = _chain(config, POS)
    settings = gamma.family_settings
    assert isinstance(settings, BeaconSettings) and settings.store is not None
    harness.wait_for(
        lambda: "sync committee rotated" in procs.log("attester1"),
        "attester1's light client to cross a sync-committee period",
        300,
    )
    # The committee it rotated to: 32 seats held by gamma's few validators, each key counted
    # once per seat (devnet.pos.VALIDATORS): the light client aggregates repeated keys right.
    seats = _get(settings.api[0] + "/eth/v1/beacon/states/head/sync_committees")
    assert seats.status_code == 200, seats.text
    holders = seats.json()["data"]["validators"]
    assert len(holders) == 32, holders
    assert len(set(holders)) <= VALIDATORS < len(holders), holders  # keys repeat
    state_files = sorted(p.name for p in settings.store.glob(f"{POS}.attester-0x*.json"))
    assert len(state_files) == 3, state_files  # one per attester, none shared
    procs.stop("attester1", signal.SIGTERM)
    procs.start_attester(1, poll=ATTESTER_POLL)
    since = block_number(config, "alpha")
    out = send(pos_config, POS, "alpha", "--body", "after a restart", "--count", "1")
    ids = [m["id"] for m in out]
    wait_delivered(pos_config, ids, procs, 200, since={"alpha": since}, poll=ATTESTER_POLL)
    assert_delivered_once(config, "alpha", [m["id"] for m in out], since=since)
    log = procs.log("attester1")
    assert log.count("light client resumed at slot") >= 1, procs.tail("attester1")
    # After the restart it signed again (the new message's index among them).
    index = out[0]["nonce"]
    harness.wait_for(
        lambda: f"origin {POS}: signed index {index} " in procs.log("attester1"),
        "the restarted attester to sign the new message",
        120,
    )
