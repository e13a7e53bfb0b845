"""`passerelle devnet up|down|status` (devnet/manager.py) on real anvil and chopsticks chains.

Each test uses its own state directory and tears its devnet down in a ``finally``; the
``state_dir`` fixture additionally kills (by recorded PID, after checking it is still the
recorded anvil or chopsticks) anything a failed test left behind, so no chain outlives the
suite. Starting chopsticks costs ~5-15 s, so only the tests about Asset Hub start it
(``assethub=True``, the default; the others ask for the anvil-only devnet).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
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
from fakes import FAKE_NPM
from substrateinterface import Keypair, KeypairType
from web3 import Web3

import devnet.anvil
import devnet.chopsticks
import devnet.manager as manager
import devnet.records
import devnet.tools
from adapters.evm.contracts import load_artifact
from adapters.jsonrpc import RpcError, call_sync
from adapters.substrate import SubstrateClient, multisig_account
from adapters.substrate.client import account_bytes
from devnet import pids
from devnet.anvil import DEV_ADDRESSES, AnvilError, AnvilProcess, anvil_binary, free_port
from devnet.chopsticks import ALICE, ChopsticksError, ChopsticksProcess, chopsticks_entry
from devnet.evm import DEMO_BALANCE, DeployError
from devnet.manager import CONFIG_FILE, STATE_FILE, DevnetError, down, status, up
from light_clients.committee import address_of
from light_clients.hexstr import to_hex
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
    seen: dict[int, str] = {}  # every pid ever recorded, with the binary recorded for it
    original = devnet.records.write_state

    def spy(state_dir: Path, state: dict[str, Any]) -> None:
        seen.update((p["pid"], p["binary"]) for p in state["processes"])
        original(state_dir, state)

    monkeypatch.setattr(devnet.records, "write_state", spy)
    try:
        yield directory
    finally:
        down(directory)
        for pid, binary in seen.items():  # belt and braces: anything recorded must be gone
            if _alive(pid) and _cmdline_names_anvil(pid, binary):
                os.killpg(pid, signal.SIGKILL)
        pids.CHILDREN.clear()


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
    with contextlib.suppress(RpcError):  # what it answers does not matter, asking does
        call_sync(http, "chain_getHeader", ["0x" + "ab" * 32])
    assert call_sync(http, "chain_getBlockHash", [0]) != to_hex(hub.settings().genesis_hash)
    (state_dir / "ledger.db").write_bytes(b"old ledger")
    assert up(state_dir, assethub=True) == config_path
    fresh = _pids(state_dir)
    assert set(fresh) == set(pids) and set(fresh.values()).isdisjoint(pids.values())
    assert all(_wait_dead(pid) for pid in pids.values())
    assert not (state_dir / "ledger.db").exists()
    hub = load_config(config_path).chain("assethub")
    http = "http://" + hub.rpc[0].removeprefix("ws://")
    assert call_sync(http, "chain_getBlockHash", [0]) == to_hex(hub.settings().genesis_hash)
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
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same pid, binary and ``--port`` as recorded, but started at another time: not ours.

    The command line alone cannot tell a recycled pid from the chain `up` started when the new
    process happens to run the same binary with the same port; the start time (psutil's
    ``create_time``) can. The record's start time is also read as hostile input.
    """
    port = str(free_port())
    # The bystander stands in for anvil: the program devnet resolves for an "evm" entry.
    monkeypatch.setitem(pids.KIND_TOOLS, "evm", (lambda: Path(sys.executable), "--port"))
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
        assert pids.is_ours(entry) is True
        for recorded in (started - 60, started + 60, "yesterday", [started]):
            assert pids.is_ours({**entry, "start_time": recorded}) is False

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


def test_a_chain_that_node_runs_behind_a_preload_is_still_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The devnet's Asset Hub runs as ``node --require devnet/collator.cjs <chopsticks> …``
    (its Collator block mode): the program is then argv[3], not argv[1]. Unrecognised, `down`
    said "was not running" and left the chain running (a benchmark run showed it)."""
    try:
        node = devnet.tools.node_executable()
    except devnet.tools.ToolError as error:
        missing_chain_tool(str(error))
    script = tmp_path / "chain.cjs"
    script.write_text("console.log('ready'); setInterval(() => {}, 1000)\n")
    preload = tmp_path / "preload.cjs"
    preload.write_text("\n")
    monkeypatch.setitem(pids.KIND_TOOLS, "substrate", (lambda: script, "--port"))
    process = subprocess.Popen(
        [node, "--require", str(preload), str(script), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        entry = {
            "chain": "assethub",
            "kind": "substrate",
            "pid": process.pid,
            "port": 9944,
            "start_time": psutil.Process(process.pid).create_time(),
        }
        assert pids.is_ours(entry) is True
        # The preload's place is not a way in for another program: still the kind's own.
        monkeypatch.setitem(pids.KIND_TOOLS, "substrate", (lambda: preload, "--port"))
        assert pids.is_ours(entry) is False
    finally:
        process.kill()
        process.wait()


def test_a_planted_chain_entry_cannot_name_another_program(state_dir: Path) -> None:
    """Every field of a chain entry can be copied from /proc for any process: its program,
    a flag and value pair from its command line, its start time. Whatever kind the entry
    claims, the program must be the one devnet resolves for that kind and the flag that
    kind's own: a record naming any other process gets no signal."""
    with _bystander() as bystander:
        seen = psutil.Process(bystander.pid)
        argv = seen.cmdline()
        forged = {
            "chain": "alpha",
            "pid": bystander.pid,
            "port": 8545,
            "binary": argv[0],
            "port_flag": argv[1],  # "-c" followed by the script: any adjacent pair matched
            "port_arg": argv[2],
            "start_time": seen.create_time(),
        }
        entries = [{**forged, "kind": kind} for kind in ("evm", "substrate", "pos", "beacon")]
        for entry in entries:
            assert pids.is_ours(entry) is False, entry["kind"]
        state_dir.mkdir(parents=True)
        record = {"version": 1, "complete": True, "processes": entries}
        (state_dir / STATE_FILE).write_text(json.dumps(record))
        assert down(state_dir) == [
            f"alpha: pid {bystander.pid} was not running (nothing signalled)"
        ] * len(entries)
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


@pytest.mark.parametrize("taken", [1, 3])
def test_a_port_taken_after_it_was_found_free_is_retried_on_another(
    taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests on parallel workers start chains all the time: a port the OS called free can be
    bound by another process before anvil binds it ("Address already in use": a CI run lost a
    test to it). start_anvil then tries another free port, up to three in all, and says why
    when all were taken. A port the caller chose is never swapped (it meant that one)."""
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(taken):
            thief = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            thief.bind(("127.0.0.1", 0))
            thief.listen()
            held.append(thief.getsockname()[1])
        handed = iter(held)
        monkeypatch.setattr(devnet.anvil, "free_port", lambda: next(handed, None) or free_port())
        if taken == 3:
            with pytest.raises(AnvilError, match="Address already in use") as caught:
                devnet.anvil.start_anvil(chain_id=31_337, block_time=None)
            assert str(held[-1]) in str(caught.value)
            return
        with devnet.anvil.start_anvil(chain_id=31_337, block_time=None) as chain:
            assert chain.port not in held
            assert call_sync(chain.rpc_url, "eth_chainId") == "0x7a69"


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


# --------------------------------------------------------------------------- node tools
#
# Where anvil, chopsticks and the chain-spec package come from (devnet/tools.py): the checkout's
# node_modules, else PATH, else a per-user cache `npm ci` fills on first use from the lock in
# devnet/npm/. These tests hide the checkout by pointing CHECKOUT_NODE_MODULES elsewhere, and
# give PATH and XDG_CACHE_HOME folders of their own; the only npm they ever run is a stand-in
# script (nothing is downloaded).

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = devnet.tools.CHECKOUT_NODE_MODULES
CACHE_LOCK = REPO_ROOT / "devnet" / "npm" / "package-lock.json"
SPEC_PACKAGE = devnet.chopsticks.CHAIN_SPEC_PACKAGE
NODE = shutil.which("node")  # before a test's PATH hides it


@pytest.fixture
def real_node_modules() -> Path:
    """The checkout's filled node_modules (the tools the stand-ins below point at)."""
    if CHECKOUT is None or not all(
        (CHECKOUT / path).is_file()
        for path in ("@acala-network/chopsticks/chopsticks.cjs", f"{SPEC_PACKAGE}/package.json")
    ):
        missing_chain_tool("the checkout's node_modules are not installed: run `make`")
    return CHECKOUT


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No checkout node_modules, an empty PATH folder (returned) and an empty tool cache."""
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", tmp_path / "nowhere")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return bin_dir


def _script(path: Path, body: str) -> Path:
    """An executable Python script at ``path`` (a stand-in command on PATH)."""
    path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    path.chmod(0o755)
    return path


def _installs(cache: Path) -> list[Path]:
    root = cache / "passerelle" / "node"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _node_modules_with(root: Path, real: Path, *scopes: str) -> Path:
    """A node_modules at ``root`` holding only the given scope folders of the real one."""
    root.mkdir(parents=True)
    for scope in scopes:
        (root / scope).symlink_to(real / scope)
    return root


def _spec_is_in(node_modules: Path) -> Path:
    return node_modules / SPEC_PACKAGE


def test_the_pinned_node_tools_are_package_json_s() -> None:
    """The cache installs the versions a checkout's `npm ci` gets, solc aside."""
    manifest = json.loads((REPO_ROOT / "package.json").read_text())
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    cache_manifest = json.loads((REPO_ROOT / "devnet/npm/package.json").read_text())
    assert cache_manifest["dependencies"] == devnet.tools.PINNED
    assert {**devnet.tools.PINNED, "solc": manifest["devDependencies"]["solc"]} == (
        manifest["devDependencies"]
    )
    for name, version in devnet.tools.PINNED.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name


def test_the_cache_lock_is_the_checkout_s() -> None:
    """devnet/npm/package-lock.json locks the three packages at the root lock's versions, and
    every package it installs is the very one (version, URL, integrity) a checkout's `npm ci`
    installs: it is the root lock with solc's part pruned (devnet/npm/README.md)."""
    root = json.loads((REPO_ROOT / "package-lock.json").read_text())["packages"]
    cache = json.loads(CACHE_LOCK.read_text())["packages"]
    assert cache[""]["dependencies"] == devnet.tools.PINNED
    for name in devnet.tools.PINNED:
        key = f"node_modules/{name}"
        assert cache[key]["version"] == root[key]["version"], name
    fields = ("version", "resolved", "integrity")
    installed = {key: entry for key, entry in cache.items() if key}
    assert len(installed) > 100  # the whole tree, not just the top-level packages
    for key, entry in installed.items():
        assert key in root, key
        assert [entry.get(f) for f in fields] == [root[key].get(f) for f in fields], key
        assert entry.get("integrity", "").startswith("sha512-"), key
    assert "node_modules/solc" not in cache


def test_the_checkout_comes_first(
    real_node_modules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "bin"
    decoy.mkdir()
    _script(decoy / "anvil", "raise SystemExit(1)\n")
    monkeypatch.setenv("PATH", f"{decoy}:{os.environ['PATH']}")
    assert anvil_binary().is_relative_to(real_node_modules)
    assert chopsticks_entry() == real_node_modules / "@acala-network/chopsticks/chopsticks.cjs"
    assert devnet.chopsticks.chain_spec_source() == _spec_is_in(real_node_modules)


def test_path_comes_next(
    real_node_modules: Path, bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An npm .bin folder on PATH: its links are followed to the native anvil binary (whose pid
    # is anvil's own) and to chopsticks.cjs (which the devnet runs with node); the chain-spec
    # package is taken from beside that chopsticks.
    monkeypatch.setenv("PATH", f"{bare}:{real_node_modules / '.bin'}")
    native = anvil_binary()
    assert native.is_relative_to(real_node_modules / "@foundry-rs") and native.name == "anvil"
    assert chopsticks_entry() == real_node_modules / "@acala-network/chopsticks/chopsticks.cjs"
    assert devnet.chopsticks.chain_spec_source() == _spec_is_in(real_node_modules)
    # A plain anvil on PATH (foundryup's, say) is run as it is, and wins over a later folder.
    own = _script(bare / "anvil", "raise SystemExit(1)\n")
    assert anvil_binary() == own


def test_a_path_only_setup_takes_the_chain_spec_from_the_cache(
    real_node_modules: Path, bare: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chopsticks on PATH without the chain-spec package beside it (a global install), or with
    another version of it: the package comes from the cache, and without npm that is one line."""
    # Real folders (a link into the checkout would resolve to the checkout's node_modules);
    # the script is never run here.
    global_modules = tmp_path / "global"
    script = global_modules / "@acala-network/chopsticks/chopsticks.cjs"
    script.parent.mkdir(parents=True)
    script.write_text("// a stand-in\n")
    script.chmod(0o755)
    (global_modules / ".bin").mkdir()
    (global_modules / ".bin/chopsticks").symlink_to(script)
    monkeypatch.setenv("PATH", f"{bare}:{global_modules / '.bin'}")
    assert chopsticks_entry().is_relative_to(global_modules)
    with pytest.raises(ChopsticksError) as caught:
        devnet.chopsticks.chain_spec_source()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"the Asset Hub chain spec ({SPEC_PACKAGE}@1.10.3) is not installed")
    assert "beside the chopsticks on PATH" in message and "npm is not on PATH" in message

    other = global_modules / SPEC_PACKAGE
    other.mkdir(parents=True)
    (other / "package.json").write_text(json.dumps({"name": SPEC_PACKAGE, "version": "1.9.0"}))
    with pytest.raises(ChopsticksError, match="npm is not on PATH"):
        devnet.chopsticks.chain_spec_source()  # another version is not taken

    target = tmp_path / "cache" / "passerelle" / "node" / devnet.tools._install_key()
    target.mkdir(parents=True)
    (target / "node_modules").symlink_to(real_node_modules)
    (target / ".passerelle-complete").write_text("{}")
    assert devnet.chopsticks.chain_spec_source() == _spec_is_in(target / "node_modules")
    assert chopsticks_entry().is_relative_to(global_modules)  # chopsticks still from PATH


def test_the_cache_serves_only_a_finished_install(
    real_node_modules: Path, bare: Path, tmp_path: Path
) -> None:
    target = tmp_path / "cache" / "passerelle" / "node" / devnet.tools._install_key()
    target.mkdir(parents=True)
    (target / "node_modules").symlink_to(real_node_modules)
    # Unfinished (no completion mark, as after an interrupted npm): not used, and without npm
    # nothing can be installed.
    with pytest.raises(AnvilError, match="npm is not on PATH"):
        anvil_binary()
    (target / ".passerelle-complete").write_text("{}")
    assert anvil_binary().is_relative_to(target / "node_modules")
    assert chopsticks_entry().is_relative_to(target / "node_modules")
    assert devnet.chopsticks.chain_spec_source() == _spec_is_in(target / "node_modules")


def test_the_cache_folder_names_the_lock() -> None:
    """Another lock (a changed dependency, same top-level versions) installs afresh."""
    key = devnet.tools._install_key()
    assert key.startswith("anvil-1.7.1+chopsticks-1.5.1+connect-known-chains-1.10.3+lock-")
    assert devnet.tools._install_key(CACHE_LOCK.read_bytes()) == key
    assert devnet.tools._install_key(CACHE_LOCK.read_bytes() + b"\n") != key


def test_a_relative_xdg_cache_home_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert devnet.tools.cache_dir() == tmp_path / ".cache" / "passerelle" / "node"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert devnet.tools.cache_dir() == tmp_path / "xdg" / "passerelle" / "node"


def test_first_use_installs_the_locked_tree_with_npm_ci_once(
    real_node_modules: Path,
    bare: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls = tmp_path / "npm-calls"
    monkeypatch.setenv("FAKE_NPM_LOG", str(calls))
    monkeypatch.setenv("FAKE_NPM_SOURCE", str(real_node_modules))
    _script(bare / "npm", FAKE_NPM)

    anvil = anvil_binary()
    [install] = _installs(tmp_path / "cache")
    assert anvil.is_relative_to(install / "node_modules")
    assert chopsticks_entry().is_relative_to(install / "node_modules")
    assert devnet.chopsticks.chain_spec_source() == _spec_is_in(install / "node_modules")
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]  # npm ran once
    assert call["args"][0] == "ci" and "--ignore-scripts" in call["args"]
    assert bytes.fromhex(call["lock"]) == CACHE_LOCK.read_bytes()
    assert (install / "package-lock.json").read_bytes() == CACHE_LOCK.read_bytes()
    announced = capsys.readouterr().err.strip().splitlines()
    assert len(announced) == 1
    assert all(f"{name}@{version}" in announced[0] for name, version in devnet.tools.PINNED.items())
    assert [p.name for p in (tmp_path / "cache/passerelle/node").iterdir()] == [
        ".lock",
        install.name,
    ]  # no half-written install left beside it


def test_a_failing_npm_is_one_line_and_leaves_nothing(
    bare: Path, tmp_path: Path, state_dir: Path
) -> None:
    _script(
        bare / "npm",
        "import sys\n"
        "sys.stderr.write('npm ERR! code E404\\nnpm ERR! 404 Not Found - GET "
        "https://registry.npmjs.org/@foundry-rs%2fanvil\\n')\n"
        "raise SystemExit(1)\n",
    )
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "npm ci of @foundry-rs/anvil@1.7.1" in message and "404 Not Found" in message
    assert _installs(tmp_path / "cache") == []
    assert not (state_dir / STATE_FILE).exists()


def test_without_npm_up_is_one_line_and_starts_nothing(bare: Path, state_dir: Path) -> None:
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "anvil is not installed" in message and "npm is not on PATH" in message
    assert not (state_dir / STATE_FILE).exists()
    assert not list(state_dir.glob("*.log"))


@pytest.mark.parametrize("missing", ["chopsticks", "the chain spec", "the right chain spec"])
def test_missing_chopsticks_or_chain_spec_is_one_line_and_starts_no_anvil(
    missing: str,
    real_node_modules: Path,
    bare: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
) -> None:
    """The tools and the chain spec are found, and the spec's digest checked, before any chain
    starts: no anvil is left behind a missing chopsticks or a missing or wrong chain spec."""
    scopes = ["@foundry-rs"] if missing == "chopsticks" else ["@foundry-rs", "@acala-network"]
    partial = _node_modules_with(tmp_path / "partial", real_node_modules, *scopes)
    if missing == "the right chain spec":
        _fake_spec_package(partial, "tampered")
        if NODE is None:
            missing_chain_tool("node is not on PATH")
        (bare / "node").symlink_to(NODE)
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", partial)
    assert anvil_binary().is_relative_to(partial)
    with pytest.raises(DevnetError) as caught:
        up(state_dir, assethub=True)
    message = str(caught.value)
    assert "\n" not in message
    assert {
        "chopsticks": "chopsticks is not installed",
        "the chain spec": "the Asset Hub chain spec (@substrate/connect-known-chains@1.10.3) is "
        "not installed",
        "the right chain spec": "(sha256 differs)",
    }[missing] in message
    assert not (state_dir / STATE_FILE).exists()
    assert not list(state_dir.glob("*.log"))  # not even the anvils were started


# --------------------------------------------------------------------------- the chain spec
#
# Not part of Passerelle (the npm package is GPL-3.0-only): read at run time from the installed
# @substrate/connect-known-chains and checked by sha256.


def test_no_chain_spec_is_in_the_repository() -> None:
    for folder, subfolders, files in os.walk(REPO_ROOT / "devnet"):
        # devnet/npm-pos/node_modules is what `make pos-tools` installed, not the repository.
        subfolders[:] = [name for name in subfolders if name != "node_modules"]
        for name in [*subfolders, *files]:
            path = Path(folder) / name
            assert "rococo" not in name, path
            # An npm lock is big and holds no spec (devnet/npm-pos/'s: Lodestar's ~1100 packages).
            big_ok = name == "package-lock.json"
            assert not path.is_file() or big_ok or path.stat().st_size < 200_000, path


def test_the_chain_spec_is_the_pinned_npm_export(real_node_modules: Path, tmp_path: Path) -> None:
    """write_chain_spec copies the checkout's @substrate/connect-known-chains export (the
    version package.json pins), whose digest is CHAIN_SPEC_SHA256."""
    package = _spec_is_in(real_node_modules)
    assert json.loads((package / "package.json").read_text())["version"] == "1.10.3"
    written = devnet.chopsticks.write_chain_spec(tmp_path / "spec.json").read_bytes()
    assert hashlib.sha256(written).hexdigest() == devnet.chopsticks.CHAIN_SPEC_SHA256
    assert len(written) == 1_219_284
    assert json.loads(written)["id"] == devnet.chopsticks.CHAIN_NAME


def _fake_spec_package(node_modules: Path, export: str) -> Path:
    """A connect-known-chains at the pinned version whose export is ``export``."""
    package = node_modules / SPEC_PACKAGE
    package.mkdir(parents=True)
    manifest = {"name": SPEC_PACKAGE, "version": "1.10.3", "main": "./index.js"}
    (package / "package.json").write_text(json.dumps(manifest))
    name = devnet.chopsticks.CHAIN_SPEC_EXPORT
    (package / "index.js").write_text(f"exports.{name} = {json.dumps(export)};\n")
    return package


@pytest.mark.parametrize("export", ["tampered", "{}", ""])
def test_a_chain_spec_that_is_not_the_pinned_one_is_refused(
    export: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if NODE is None:
        missing_chain_tool("node is not on PATH")
    node_modules = tmp_path / "node_modules"
    package = _fake_spec_package(node_modules, export)
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", node_modules)
    with pytest.raises(ChopsticksError) as caught:
        devnet.chopsticks.write_chain_spec(tmp_path / "spec.json")
    message = str(caught.value)
    assert "\n" not in message
    assert str(package) in message and "is not the one of" in message
    assert "@substrate/connect-known-chains@1.10.3 (sha256 differs)" in message
    assert not (tmp_path / "spec.json").exists()


def test_an_unreadable_chain_spec_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if NODE is None:
        missing_chain_tool("node is not on PATH")
    node_modules = tmp_path / "node_modules"
    package = _fake_spec_package(node_modules, "")
    (package / "index.js").write_text("throw new Error('broken package')\n")
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", node_modules)
    with pytest.raises(ChopsticksError) as caught:
        devnet.chopsticks.write_chain_spec(tmp_path / "spec.json")
    assert "\n" not in str(caught.value)
    assert "cannot read the chain spec from" in str(caught.value)
    assert "broken package" in str(caught.value)
    assert not (tmp_path / "spec.json").exists()
