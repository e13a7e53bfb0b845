"""`passerelle devnet up|down|status` (devnet/manager.py) on real anvil and chopsticks chains.

Each test uses its own state directory and tears its devnet down in a ``finally``; the
``state_dir`` fixture additionally kills (by recorded PID, after checking it is still the
recorded anvil or chopsticks) anything a failed test left behind, so no chain outlives the
suite. Starting chopsticks costs ~5-15 s, so only the tests about Asset Hub start it
(``assethub=True``, the default; the others ask for the anvil-only devnet).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from e2e_support import missing_chain_tool
from substrateinterface import Keypair, KeypairType
from web3 import Web3

import devnet.anvil
import devnet.chopsticks
import devnet.manager as manager
from adapters.evm.contracts import load_artifact
from adapters.substrate import SubstrateClient, multisig_account
from adapters.substrate.client import account_bytes
from devnet.anvil import DEV_ADDRESSES, AnvilError, AnvilProcess, anvil_binary, free_port
from devnet.chopsticks import ALICE, ChopsticksError, ChopsticksProcess, chopsticks_entry
from devnet.evm import DEMO_BALANCE, DeployError
from devnet.manager import CONFIG_FILE, STATE_FILE, DevnetError, down, status, up
from light_clients.committee import address_of
from relayer.config import load_config

pytestmark = pytest.mark.chain


@pytest.fixture(autouse=True)
def _needs_anvil() -> None:
    try:
        anvil_binary()
    except AnvilError as error:
        missing_chain_tool(str(error))


@pytest.fixture
def needs_chopsticks() -> None:
    try:
        chopsticks_entry()
    except ChopsticksError as error:
        missing_chain_tool(str(error))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state directory whose devnet is always stopped afterwards, whatever the test did."""
    directory = tmp_path / "devnet"
    binary = str(anvil_binary())  # now: a test may hide node_modules until teardown
    chopsticks = str(devnet.anvil.NODE_MODULES / "@acala-network/chopsticks/chopsticks.cjs")
    seen: set[int] = set()
    original = manager._write_state

    def spy(state_dir: Path, state: dict[str, Any]) -> None:
        seen.update(p["pid"] for p in state["processes"])
        original(state_dir, state)

    monkeypatch.setattr(manager, "_write_state", spy)
    try:
        yield directory
    finally:
        down(directory)
        for pid in seen:  # belt and braces: anything recorded at any time must be gone
            if _alive(pid) and (
                _cmdline_names_anvil(pid, binary) or _cmdline_names_anvil(pid, chopsticks)
            ):
                os.killpg(pid, signal.SIGKILL)
        manager._CHILDREN.clear()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def _cmdline_names_anvil(pid: int, binary: str) -> bool:
    try:
        return binary in psutil.Process(pid).cmdline()[:2]
    except psutil.NoSuchProcess:
        return False


def _pids(state_dir: Path) -> dict[str, int]:
    record = json.loads((state_dir / STATE_FILE).read_text())
    return {p["chain"]: p["pid"] for p in record["processes"]}


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _contract(w3: Web3, name: str, address: bytes) -> Any:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def _pad(address: bytes) -> bytes:
    return bytes(12) + address


# --------------------------------------------------------------------------- up


def _asset_hub_storage(url: str, multisig: bytes) -> dict[str, Any]:
    """What assethub's storage says about the multisig's collections, asset and balance."""

    async def read() -> dict[str, Any]:
        async with SubstrateClient(url) as client:
            return {
                "class": {c: await client.query("Uniques", "Class", [c]) for c in (1, 2, 3)},
                "asset": await client.query("Assets", "Asset", [1]),
                "account": await client.query("System", "Account", ["0x" + multisig.hex()]),
                "alice": await client.query("System", "Account", [ALICE]),
                "genesis": await client.genesis_hash(),
            }

    return trio.run(read)


def _roles(entry: Any) -> set[bytes]:
    return {account_bytes(entry[role]) for role in ("owner", "issuer", "admin", "freezer")}


def test_up_starts_three_chains_is_idempotent_and_down_stops_them(
    state_dir: Path, anvil: AnvilProcess, needs_chopsticks: None
) -> None:
    # `anvil` (conftest) is another anvil from the same binary: down must leave it alone.
    # How long `up` takes is not asserted: speed belongs in benchmarks/, and a loaded CI
    # machine would fail a correct devnet.
    config_path = up(state_dir, assethub=True)
    assert config_path == state_dir.resolve() / CONFIG_FILE

    config = load_config(config_path)
    assert config.devnet
    assert config.ledger == str(state_dir.resolve() / "ledger.db")
    assert config.checkpoint_store == state_dir.resolve() / "checkpoints"
    assert [c.name for c in config.chains] == ["alpha", "beta", "assethub"]
    assert [c.domain for c in config.chains] == [1, 2, 3]
    assert [c.kind for c in config.chains] == ["evm", "evm", "substrate"]
    assert [c.chain_id for c in config.chains] == [31337, 31338, None]
    assert [str(c.finality) for c in config.chains] == [
        "confirmations:3",
        "confirmations:3",
        "devnet-instant",
    ]

    # assethub: the committee's 2-of-3 multisig of the attesters' fresh sr25519 keys owns one
    # replay-guard collection per EVM origin and the wrapped asset, wholly.
    hub = config.chain("assethub")
    assert hub.rpc[0].startswith("ws://127.0.0.1:")
    assert hub.contracts == {}
    seeds = [bytes.fromhex(a["substrate_key"][2:]) for a in config.raw["attesters"]]
    assert len(seeds) == 3 and len(set(seeds)) == 3 and all(len(k) == 32 for k in seeds)
    assert not set(seeds) & {k.load() for k in config.attester_keys}  # not the EVM keys
    publics = [
        bytes(Keypair.create_from_seed(k.hex(), crypto_type=KeypairType.SR25519).public_key)
        for k in seeds
    ]
    multisig = multisig_account(publics, 2)
    settings = hub.settings()
    assert settings.multisig == multisig
    assert settings.multisig_threshold == 2
    assert settings.signatories == tuple(sorted(publics))
    assert settings.asset_id == 1
    assert settings.asset_home_domain == 1
    assert settings.asset_home_token == config.chain("alpha").contract("token")
    assert settings.collections == {1: 1, 2: 2}
    assert config.client_substrate_uri == "//Alice"
    seen = _asset_hub_storage(hub.rpc[0], multisig)
    assert seen["genesis"] == settings.genesis_hash
    for origin, collection in settings.collections.items():
        assert _roles(seen["class"][collection]) == {multisig}, origin
    assert seen["class"][3] is None  # one collection per EVM origin, no more
    assert _roles(seen["asset"]) == {multisig}
    assert seen["asset"]["min_balance"] == 1 and seen["asset"]["supply"] == 0
    # Funded through import-storage: the multisig holds the deposits of what it created.
    assert seen["account"]["data"]["reserved"] == 3 * 10**12
    assert seen["account"]["data"]["free"] > 0 and seen["alice"]["data"]["free"] > 0

    # Keys: three fresh attesters whose addresses are the committee, threshold 2, dev accounts
    # 1 and 2 as relayer and client.
    members = config.committee.members
    assert list(members) == sorted(members) and len(set(members)) == 3
    assert config.committee.threshold == 2
    assert [address_of(k.load()) for k in config.attester_keys] == list(members)
    assert config.relayer_key is not None and config.client_key is not None
    relayer = Web3.to_checksum_address(address_of(config.relayer_key.load()))
    client = Web3.to_checksum_address(address_of(config.client_key.load()))
    assert (relayer, client) == (DEV_ADDRESSES[1], DEV_ADDRESSES[2])

    alpha, beta, _ = config.chains
    w3 = {c.name: Web3(Web3.HTTPProvider(c.rpc[0])) for c in (alpha, beta)}
    for chain in (alpha, beta):
        assert w3[chain.name].eth.chain_id == chain.chain_id
        for key, address in chain.contracts.items():
            assert w3[chain.name].eth.get_code(Web3.to_checksum_address(address)), (chain, key)

    for here, there in ((alpha, beta), (beta, alpha)):
        inbox = _contract(w3[here.name], "Inbox", here.contract("inbox"))
        assert inbox.functions.localDomain().call() == here.domain
        assert inbox.functions.outboxOf(there.domain).call() == _pad(there.contract("outbox"))
        assert inbox.functions.threshold().call() == 2
        assert [bytes.fromhex(v[2:]) for v in inbox.functions.validators().call()] == list(members)
        assert inbox.functions.owner().call() == DEV_ADDRESSES[0]
        bridge = _contract(w3[here.name], "TokenBridge", here.contract("token_bridge"))
        assert bridge.functions.remoteBridge(there.domain).call() == _pad(
            there.contract("token_bridge")
        )
        ping = _contract(w3[here.name], "Ping", here.contract("ping"))
        assert ping.functions.inbox().call() == Web3.to_checksum_address(here.contract("inbox"))

    # The TestToken on alpha is routed to beta and maps to beta's WrappedToken.
    token = alpha.contract("token")
    assert "wrapped_token" not in alpha.contracts and "token" not in beta.contracts
    alpha_bridge = _contract(w3["alpha"], "TokenBridge", alpha.contract("token_bridge"))
    assert alpha_bridge.functions.homeTokenRoute(Web3.to_checksum_address(token), 2).call()
    beta_bridge = _contract(w3["beta"], "TokenBridge", beta.contract("token_bridge"))
    wrapped = beta_bridge.functions.wrappedTokenOf(1, _pad(token)).call()
    assert wrapped == Web3.to_checksum_address(beta.contract("wrapped_token"))
    wrapped_token = _contract(w3["beta"], "WrappedToken", beta.contract("wrapped_token"))
    assert wrapped_token.functions.bridge().call() == Web3.to_checksum_address(
        beta.contract("token_bridge")
    )
    test_token = _contract(w3["alpha"], "TestToken", token)
    assert test_token.functions.balanceOf(client).call() == DEMO_BALANCE

    # The chains are detached: their own session, not our process group.
    pids = _pids(state_dir)
    assert set(pids) == {"alpha", "beta", "assethub"}
    for pid in pids.values():
        assert os.getsid(pid) == pid != os.getsid(0)

    # A second `up` finds them healthy: same file, same processes, nothing restarted.
    text = config_path.read_text()
    assert up(state_dir, assethub=True) == config_path
    assert _pids(state_dir) == pids
    assert config_path.read_text() == text

    # status: both alive, blocks advancing with 1-second blocks, JSON-serializable.
    first = status(state_dir)
    json.dumps(first)
    assert first["running"] is True
    assert first["config"] == str(config_path)
    assert [(c["name"], c["pid"], c["alive"]) for c in first["chains"]] == [
        ("alpha", pids["alpha"], True),
        ("beta", pids["beta"], True),
        ("assethub", pids["assethub"], True),
    ]
    assert [c["finality"] for c in first["chains"]] == [
        "confirmations:3",
        "confirmations:3",
        "devnet-instant",
    ]
    assert [c["rpc"] for c in first["chains"]] == [alpha.rpc[0], beta.rpc[0], hub.rpc[0]]
    time.sleep(2.2)
    second = status(state_dir)
    for before, after in zip(first["chains"][:2], second["chains"][:2], strict=True):
        assert isinstance(before["block"], int)
        assert after["block"] > before["block"]
    # chopsticks builds a block only per extrinsic: 1 at start, then the two multisig calls.
    assert second["chains"][2]["block"] == first["chains"][2]["block"] == 3

    # The unknown-block-hash trap (docs/substrate-devnet.md): asked about a hash it does not
    # know (say, one a relayer kept from a previous run), chopsticks changes its genesis hash
    # and refuses every signature from then on. `up` notices and starts everything afresh,
    # moving the old ledger aside.
    http = "http://" + hub.rpc[0].removeprefix("ws://")
    manager._rpc(http, "chain_getHeader", ["0x" + "ab" * 32])
    assert manager._rpc(http, "chain_getBlockHash", [0]) != _hex(hub.settings().genesis_hash)
    (state_dir / "ledger.db").write_bytes(b"old ledger")
    assert up(state_dir, assethub=True) == config_path
    fresh = _pids(state_dir)
    assert set(fresh) == set(pids) and set(fresh.values()).isdisjoint(pids.values())
    assert all(_wait_dead(pid) for pid in pids.values())
    assert not (state_dir / "ledger.db").exists()
    hub = load_config(config_path).chain("assethub")
    http = "http://" + hub.rpc[0].removeprefix("ws://")
    assert manager._rpc(http, "chain_getBlockHash", [0]) == _hex(hub.settings().genesis_hash)
    pids = fresh

    # down: exactly the three recorded processes, by PID; logs and config stay.
    log_paths = sorted(state_dir.glob("*.log"))
    assert [p.name for p in log_paths] == [
        "anvil-alpha.log",
        "anvil-beta.log",
        "chopsticks-assethub.log",
    ]
    lines = down(state_dir)
    assert len(lines) == 3
    for (name, pid), line in zip(pids.items(), lines, strict=True):
        program = "chopsticks" if name == "assethub" else "anvil"
        assert line.startswith(f"{name}: stopped {program} pid {pid}")
        assert _wait_dead(pid)
    assert not (state_dir / STATE_FILE).exists()
    assert sorted(state_dir.glob("*.log")) == log_paths
    assert (state_dir / CONFIG_FILE).exists()
    assert anvil.running

    assert down(state_dir) == []  # nothing recorded: harmless
    after = status(state_dir)
    assert after["running"] is False
    assert len(after["chains"]) == 3
    assert all(not c["alive"] and c["block"] is None for c in after["chains"])


# --------------------------------------------------------------------------- down


# A bystander that blocks every signal it can: one sent to it stays pending, for all to see in
# /proc/PID/status, instead of killing it at some later moment a test would have to wait for.
# It echoes each line of stdin, so a reply after a call proves it was not SIGKILLed during it.
BYSTANDER = """
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
print("ready", flush=True)
for line in sys.stdin:
    print(line.strip(), flush=True)
"""


def _pending_signals(pid: int) -> int:
    """The signals sent to ``pid`` and not yet handled: its thread's and its process's."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)


def _answers(process: subprocess.Popen[str], word: str) -> bool:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(word + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip() == word


@contextlib.contextmanager
def _bystander(*args: str) -> Iterator[subprocess.Popen[str]]:
    """A running BYSTANDER (extra ``args`` on its command line), killed afterwards."""
    bystander = subprocess.Popen(
        [sys.executable, "-c", BYSTANDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a killpg of the recorded pid would reach it too
    )
    try:
        assert bystander.stdout is not None and bystander.stdout.readline() == "ready\n"
        yield bystander
    finally:
        bystander.kill()
        bystander.wait()


def test_down_never_signals_a_recycled_pid(state_dir: Path) -> None:
    """A record whose pid now belongs to another program: nothing is signalled."""
    with _bystander() as bystander:
        state_dir.mkdir(parents=True)
        record = {
            "version": 1,
            "complete": True,
            "config": str(state_dir / CONFIG_FILE),
            "processes": [
                {
                    "chain": "alpha",
                    "domain": 1,
                    "chain_id": 31337,
                    "pid": bystander.pid,
                    "port": free_port(),
                    "rpc": "http://127.0.0.1:1",
                    "binary": str(anvil_binary()),
                    "log": str(state_dir / "anvil-alpha.log"),
                    "start_time": None,
                }
            ],
        }
        (state_dir / STATE_FILE).write_text(json.dumps(record))
        assert status(state_dir)["chains"][0]["alive"] is False
        lines = down(state_dir)
        assert lines == [f"alpha: pid {bystander.pid} was not running (nothing signalled)"]
        assert _pending_signals(bystander.pid) == 0  # no catchable signal was sent …
        assert _answers(bystander, "still here")  # … nor SIGKILL or SIGSTOP
        assert not (state_dir / STATE_FILE).exists()


def test_a_recycled_pid_with_the_recorded_command_line_is_told_apart_by_its_start_time(
    state_dir: Path,
) -> None:
    """Same pid, binary and ``--port`` as recorded, but started at another time: not ours.

    The command line alone cannot tell a recycled pid from the chain `up` started when the new
    process happens to run the same binary with the same port; the start time (psutil's
    ``create_time``) can. The record's start time is also read as hostile input.
    """
    port = str(free_port())
    with _bystander("--port", port) as bystander:
        started = psutil.Process(bystander.pid).create_time()
        entry = {
            "chain": "alpha",
            "pid": bystander.pid,
            "port": int(port),
            "binary": sys.executable,
            "start_time": started,
        }
        # The control: with its true start time this process passes every check, so each
        # refusal below is the start time's doing.
        assert manager._is_ours(entry) is True
        for recorded in (started - 60, started + 60, "yesterday", [started]):
            assert manager._is_ours({**entry, "start_time": recorded}) is False

        state_dir.mkdir(parents=True)
        record = {
            "version": 1,
            "complete": True,
            "config": str(state_dir / CONFIG_FILE),
            "processes": [{**entry, "rpc": "http://127.0.0.1:1", "start_time": started - 60}],
        }
        (state_dir / STATE_FILE).write_text(json.dumps(record))
        lines = down(state_dir)
        assert lines == [f"alpha: pid {bystander.pid} was not running (nothing signalled)"]
        assert _pending_signals(bystander.pid) == 0
        assert _answers(bystander, "still here")


def test_up_replaces_a_stale_record(state_dir: Path) -> None:
    """One recorded chain died: `up` stops the survivor and starts a fresh, complete devnet."""
    up(state_dir, assethub=False)
    old = _pids(state_dir)
    (state_dir / "ledger.db").write_bytes(b"old ledger")  # as a relayer would have left it
    os.killpg(old["alpha"], signal.SIGKILL)
    assert _wait_dead(old["alpha"])
    assert status(state_dir)["running"] is False

    config_path = up(state_dir, assethub=False)
    new = _pids(state_dir)
    assert set(new.values()).isdisjoint(old.values())
    assert _wait_dead(old["beta"])  # the survivor of the stale devnet was stopped
    assert status(state_dir)["running"] is True
    load_config(config_path)
    # The old ledger belongs to chains that no longer exist: moved aside, not reused.
    assert not (state_dir / "ledger.db").exists()
    archived = list((state_dir / "previous").glob("*/ledger.db"))
    assert [p.read_bytes() for p in archived] == [b"old ledger"]


# --------------------------------------------------------------------------- failures


def test_busy_port_is_one_line_and_starts_nothing(state_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free = free_port()
        with pytest.raises(DevnetError) as caught:
            up(state_dir, ports=(free, port), assethub=True)
    message = str(caught.value)
    assert "\n" not in message
    assert f"port {port}" in message and "busy" in message
    assert not (state_dir / STATE_FILE).exists()
    # alpha, started on the free port before beta failed, was stopped again.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free), timeout=2).close()


def test_deploy_failure_stops_what_was_started(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, needs_chopsticks: None
) -> None:
    started: list[AnvilProcess] = []
    hubs: list[ChopsticksProcess] = []
    real_start = devnet.anvil.start_anvil
    real_chopsticks = devnet.chopsticks.start_chopsticks

    def spy(**kwargs: Any) -> AnvilProcess:
        chain = real_start(**kwargs)
        started.append(chain)
        return chain

    def spy_chopsticks(**kwargs: Any) -> ChopsticksProcess:
        chain = real_chopsticks(**kwargs)
        hubs.append(chain)
        return chain

    def broken_deploy(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        raise DeployError("domain 1: deploying Inbox reverted (tx 0x00, NotOwner(0x00))")

    monkeypatch.setattr(manager, "start_anvil", spy)
    monkeypatch.setattr(manager, "deploy_evm_chain", broken_deploy)
    monkeypatch.setattr(manager, "start_chopsticks", spy_chopsticks)
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=True)
    assert "\n" not in str(caught.value)
    assert "deploying Inbox reverted" in str(caught.value)
    assert len(started) == 2 and len(hubs) == 1  # chopsticks was starting next to the deploys
    assert all(not chain.running for chain in [*started, *hubs])
    assert not (state_dir / STATE_FILE).exists()


def test_missing_anvil_is_one_line(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devnet.anvil, "NODE_MODULES", devnet.anvil.REPO_ROOT / "no_node_modules")
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=True)
    assert "\n" not in str(caught.value)
    assert "not installed" in str(caught.value)
    assert not (state_dir / STATE_FILE).exists()


def test_missing_chopsticks_is_one_line(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        devnet.chopsticks, "NODE_MODULES", devnet.anvil.REPO_ROOT / "no_node_modules"
    )
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=True)
    assert "\n" not in str(caught.value)
    assert "chopsticks is not installed" in str(caught.value)
    assert not (state_dir / STATE_FILE).exists()
    assert not list(state_dir.glob("*.log"))  # not even the anvils were started


def _hex(data: bytes) -> str:
    return "0x" + data.hex()
