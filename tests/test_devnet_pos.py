"""The proof-of-stake devnet chain's own parts (devnet/pos.py and what `up --pos` adds to the
devnet): genesis, environment, Engine API secret, the beacon API reader facing a hostile node,
the fork schedule, the config section, tool lookup, process recognition and stopping.

None of these starts Lodestar: the suite runs ONE proof-of-stake chain, in the lead's
end-to-end module (`devnet up --pos` costs ~70 s on a shared 2-core machine). A beacon node that
lies is played by :class:`tests.fakes.BeaconProxy` serving recorded answers; the EVM side by
the session anvil.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

import devnet.tools
from adapters.substrate import multisig_account
from devnet import manager, pids, records
from devnet.config_file import PosSection, render_config
from devnet.errors import DevnetError
from devnet.kinds import kind_of
from devnet.pos import (
    POLYFILL,
    BeaconInfo,
    PosChainError,
    beacon_get,
    beacon_info,
    child_environment,
    execution_genesis,
    forks_from_spec,
    wait_for_checkpoint,
    write_jwt_secret,
)
from devnet.topology import CHAINS, POS_CHAIN, THRESHOLD
from light_clients.committee import address_of
from relayer.config import load_config
from tests.fakes import BeaconProxy

ROOT = Path(__file__).resolve().parents[1]
GVR = "0x" + "3e" * 32
CHECKPOINT = "0x" + "0e" * 32
SPEC = {
    "PRESET_BASE": "minimal",
    "SECONDS_PER_SLOT": "1",
    "ALTAIR_FORK_VERSION": "0x01000001",
    "ALTAIR_FORK_EPOCH": "0",
    "BELLATRIX_FORK_VERSION": "0x02000001",
    "BELLATRIX_FORK_EPOCH": "0",
    "CAPELLA_FORK_VERSION": "0x03000001",
    "CAPELLA_FORK_EPOCH": "0",
    "EIP4844_FORK_VERSION": "0x04000001",  # Lodestar 1.5.1's name for deneb: not a fork we list
    "EIP4844_FORK_EPOCH": str(2**64 - 1),
    "DENEB_FORK_VERSION": "0x04000001",
    "DENEB_FORK_EPOCH": str(2**64 - 1),  # not scheduled
}


def _beacon_static(finalized_epoch: int = 4, *, bootstrap: bool = True) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "/eth/v1/beacon/genesis": {
            "data": {
                "genesis_validators_root": GVR,
                "genesis_time": "1796584732",
                "genesis_fork_version": "0x03000001",
            }
        },
        "/eth/v1/config/spec": {"data": SPEC},
        "/eth/v1/beacon/states/head/finality_checkpoints": {
            "data": {"finalized": {"epoch": str(finalized_epoch), "root": CHECKPOINT}}
        },
    }
    if bootstrap:
        answers[f"/eth/v1/beacon/light_client/bootstrap/{CHECKPOINT}"] = {"data": {"header": {}}}
    return answers


# --------------------------------------------------------------------------- execution genesis


def test_the_execution_genesis_is_proof_of_stake_shanghai_from_block_zero() -> None:
    funded = {"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266": 10**22}
    genesis = execution_genesis(31340, funded)
    config = genesis["config"]
    assert config["chainId"] == 31340
    assert config["shanghaiTime"] == 0
    assert config["terminalTotalDifficulty"] == 0 and config["terminalTotalDifficultyPassed"]
    assert genesis["difficulty"] == "0x0"  # the merge block is block 0
    assert config["londonBlock"] == 0 and config["mergeNetsplitBlock"] == 0
    # Nothing past Shanghai: Lodestar 1.5.1 stops at Capella, a Cancun time would stall it.
    assert not any(key.startswith(("cancun", "prague")) for key in config)
    assert genesis["alloc"] == {
        "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266": {"balance": hex(10**22)}
    }


@pytest.mark.parametrize(
    ("chain_id", "funded", "why"),
    [
        (0, {}, "chain id"),
        (True, {}, "chain id"),
        (2**63, {}, "chain id"),
        (31340, {"0x1234": 1}, "expected 20"),
        (31340, {"not an address": 1}, "funded address"),
        (31340, {"0x" + "11" * 20: -1}, "uint256"),
        (31340, {"0x" + "11" * 20: 2**256}, "uint256"),
    ],
)
def test_a_bad_genesis_input_is_one_line(chain_id: Any, funded: Any, why: str) -> None:
    with pytest.raises(PosChainError) as caught:
        execution_genesis(chain_id, funded)
    assert why in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------- process setup


def test_the_child_environment_drops_lodestar_variables_and_preloads_the_polyfill(
    tmp_path: Path,
) -> None:
    # Lodestar reads LODESTAR_* as command-line arguments: one left in the user's shell (a
    # preset, a network, a data dir) would make `up --pos` start some other chain.
    polyfill = tmp_path / "with space" / "polyfill.cjs"
    base = {
        "PATH": "/usr/bin",
        "LODESTAR_PRESET": "mainnet",
        "lodestar_network": "mainnet",
        "NODE_OPTIONS": "--inspect=0.0.0.0:9229",
    }
    env = child_environment(base, polyfill)
    assert "LODESTAR_PRESET" not in env and "lodestar_network" not in env
    assert env["PATH"] == "/usr/bin"
    # The user's NODE_OPTIONS (a debugger open to the network here) is replaced, and the path
    # with a space is quoted as node parses NODE_OPTIONS.
    assert env["NODE_OPTIONS"] == f'--require "{polyfill}"'
    assert base["LODESTAR_PRESET"] == "mainnet"  # the caller's mapping is left alone
    # `make pos-tools` skips bcrypto's native build: Lodestar starts only on its JS backend.
    assert env["NODE_BACKEND"] == "js"
    assert child_environment({"NODE_BACKEND": "native"}, polyfill)["NODE_BACKEND"] == "js"


def test_the_polyfill_gives_node_20_promise_with_resolvers(tmp_path: Path) -> None:
    node = devnet.tools.node_executable()
    polyfill = tmp_path / "polyfill.cjs"
    polyfill.write_text(POLYFILL)
    script = (
        "const {promise, resolve} = Promise.withResolvers();"
        "promise.then(v => console.log('resolved', v)); resolve(42);"
    )
    done = subprocess.run(
        [node, "-e", script],
        env=child_environment(os.environ, polyfill),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resolved 42"


def test_the_jwt_secret_is_fresh_private_and_never_written_through_a_planted_link(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gamma" / "jwt.hex"
    write_jwt_secret(path)
    first = path.read_text().strip()
    assert first.startswith("0x") and len(bytes.fromhex(first[2:])) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # whoever reads it drives fork choice
    # Someone who can write the state dir plants a link to a file of the user's: a new secret
    # replaces the link, the file it pointed to is untouched.
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path.unlink()
    path.symlink_to(victim)
    write_jwt_secret(path)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and path.read_text().strip() != first


# --------------------------------------------------------------------------- the beacon API


def test_the_fork_schedule_lists_only_scheduled_forks() -> None:
    assert forks_from_spec(SPEC) == {
        "altair": ("0x01000001", 0),
        "bellatrix": ("0x02000001", 0),
        "capella": ("0x03000001", 0),
    }


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("CAPELLA_FORK_VERSION", "0x0300000100", "expected 4"),
        ("CAPELLA_FORK_VERSION", None, "fork version"),
        ("CAPELLA_FORK_EPOCH", "-1", "not a u64"),
        ("CAPELLA_FORK_EPOCH", 0, "not a u64"),
    ],
)
def test_a_malformed_fork_schedule_is_refused(key: str, value: Any, why: str) -> None:
    # Every attester trusts the fork versions written into the config: a node that answers a
    # wrong-length version must stop `up`, not end up in the file.
    with pytest.raises(PosChainError, match=why):
        forks_from_spec({**SPEC, key: value})


def test_beacon_info_reads_genesis_slot_time_and_forks() -> None:
    with BeaconProxy(static=_beacon_static()) as node:
        info = beacon_info(node.url)
    assert info == BeaconInfo(
        genesis_validators_root=GVR,
        genesis_time=1796584732,
        seconds_per_slot=1,
        preset="minimal",
        forks={
            "altair": ("0x01000001", 0),
            "bellatrix": ("0x02000001", 0),
            "capella": ("0x03000001", 0),
        },
    )


@pytest.mark.parametrize(
    ("path", "tampered", "why"),
    [
        ("/eth/v1/beacon/genesis", {"genesis_validators_root": "0x12"}, "expected 32"),
        ("/eth/v1/beacon/genesis", {"genesis_validators_root": GVR, "genesis_time": "-5"}, "u64"),
        ("/eth/v1/config/spec", {**SPEC, "SECONDS_PER_SLOT": "0"}, "SECONDS_PER_SLOT"),
        ("/eth/v1/config/spec", {**SPEC, "PRESET_BASE": "gnosis"}, "PRESET_BASE"),
    ],
)
def test_beacon_info_refuses_what_a_lying_node_answers(
    path: str, tampered: dict[str, Any], why: str
) -> None:
    static = _beacon_static()
    static[path] = {"data": tampered}
    with BeaconProxy(static=static) as node, pytest.raises(PosChainError, match=why):
        beacon_info(node.url)


def test_beacon_get_reads_not_ready_as_none_and_garbage_as_an_error() -> None:
    with BeaconProxy(static=_beacon_static()) as node:
        node.status = 500  # Lodestar's "not ready yet"
        assert beacon_get(node.url, "/eth/v1/beacon/genesis") is None
        node.status = None
        node.tamper = lambda path, body: ["no", "data"]
        with pytest.raises(PosChainError, match="no data member"):
            beacon_get(node.url, "/eth/v1/beacon/genesis")
    assert beacon_get(node.url, "/eth/v1/beacon/genesis") is None  # nothing listens any more


def test_the_checkpoint_is_a_finalized_root_whose_bootstrap_is_served() -> None:
    with BeaconProxy(static=_beacon_static()) as node:
        assert wait_for_checkpoint(node.url, timeout=5) == CHECKPOINT
        assert f"/eth/v1/beacon/light_client/bootstrap/{CHECKPOINT}" in node.paths


@pytest.mark.parametrize(
    ("static", "seen"),
    [
        (_beacon_static(finalized_epoch=0), "epoch 0"),  # genesis is no checkpoint
        (_beacon_static(bootstrap=False), "epoch 4"),  # finalized, but no bootstrap to start from
    ],
)
def test_no_checkpoint_is_taken_before_one_can_be_bootstrapped(
    static: dict[str, Any], seen: str
) -> None:
    with BeaconProxy(static=static) as node:
        with pytest.raises(PosChainError) as caught:
            wait_for_checkpoint(node.url, timeout=1.0)
        message = str(caught.value)
        assert "finalized nothing" in message and seen in message and "\n" not in message
        assert len(node.paths) > 1  # it kept asking until the deadline


def test_a_malformed_finalized_root_stops_the_wait() -> None:
    static = _beacon_static()
    static["/eth/v1/beacon/states/head/finality_checkpoints"] = {
        "data": {"finalized": {"epoch": "4", "root": "0x00/../../x"}}
    }
    with BeaconProxy(static=static) as node, pytest.raises(PosChainError, match="finalized root"):
        wait_for_checkpoint(node.url, timeout=5)
    # It never put the unchecked text into a URL.
    assert not any("bootstrap" in path for path in node.paths)


# --------------------------------------------------------------------------- config and records


def _pos_section(tmp_path: Path) -> PosSection:
    return PosSection(
        spec=POS_CHAIN,
        rpc="http://127.0.0.1:60579",
        contracts={
            name: bytes([n]) * 20
            for n, name in enumerate(
                ["outbox", "inbox", "ping", "token_bridge", "wrapped_token"], 1
            )
        },
        beacon_api="http://127.0.0.1:39793",
        checkpoint=CHECKPOINT,
        beacon=BeaconInfo(GVR, 1796584732, 1, "minimal", forks_from_spec(SPEC)),
        store=str(tmp_path / "beacon"),
    )


def test_the_config_names_gamma_with_its_beacon_table(tmp_path: Path) -> None:
    keys = sorted((bytes([k]) * 32 for k in (7, 8, 9)), key=address_of)
    contracts = {
        name: bytes([n]) * 20
        for n, name in enumerate(["outbox", "inbox", "ping", "token_bridge", "token"], 1)
    }
    text = render_config(
        [(spec, f"http://127.0.0.1:{8545 + i}", contracts) for i, spec in enumerate(CHAINS)],
        [address_of(k) for k in keys],
        keys,
        pos=_pos_section(tmp_path),
    )
    parsed = tomllib.loads(text)
    gamma = next(chain for chain in parsed["chains"] if chain["name"] == "gamma")
    assert gamma["domain"] == 4 and gamma["kind"] == "evm" and gamma["chain_id"] == 31340
    assert gamma["finality"] == "beacon" and gamma["rpc"] == ["http://127.0.0.1:60579"]
    assert gamma["wrapped_token"] == "0x0505050505050505050505050505050505050505"
    assert gamma["beacon"] == {
        "api": ["http://127.0.0.1:39793"],
        "checkpoint": CHECKPOINT,
        "preset": "minimal",
        "genesis_validators_root": GVR,
        "genesis_time": 1796584732,
        "seconds_per_slot": 1,
        "forks": {
            "altair": ["0x01000001", 0],
            "bellatrix": ["0x02000001", 0],
            "capella": ["0x03000001", 0],
        },
        "store": str(tmp_path / "beacon"),
    }
    assert parsed["committee"]["threshold"] == THRESHOLD


def test_the_config_with_gamma_and_assethub_is_one_the_relayer_loads(tmp_path: Path) -> None:
    # `up --pos` checks the file with load_config before handing it out; assethub then needs a
    # replay-guard collection for gamma's domain too (`up` makes one per EVM origin).
    keys = sorted((bytes([k]) * 32 for k in (7, 8, 9)), key=address_of)
    seeds = [bytes([s]) * 32 for s in (1, 2, 3)]
    signatories = sorted(bytes([0xA0 + s]) * 32 for s in (1, 2, 3))
    contracts = {
        name: bytes([n]) * 20
        for n, name in enumerate(["outbox", "inbox", "ping", "token_bridge", "token"], 1)
    }
    setup: dict[str, object] = {
        "genesis_hash": "0x" + "9e" * 32,
        "multisig": "0x" + multisig_account(tuple(signatories), THRESHOLD).hex(),
        "multisig_threshold": THRESHOLD,
        "signatories": ["0x" + s.hex() for s in signatories],
        "collections": {"1": 1, "2": 2, str(POS_CHAIN.domain): 3},
        "asset_id": 1,
    }
    path = tmp_path / "passerelle.toml"
    path.write_text(
        render_config(
            [(spec, f"http://127.0.0.1:{8545 + i}", contracts) for i, spec in enumerate(CHAINS)],
            [address_of(k) for k in keys],
            keys,
            seeds,
            ("ws://127.0.0.1:9944", setup),
            pos=_pos_section(tmp_path),
        )
    )
    config = load_config(path)
    gamma = next(chain for chain in config.chains if chain.name == "gamma")
    assert (gamma.domain, gamma.chain_id, str(gamma.finality)) == (4, 31340, "beacon")


def test_a_fresh_up_moves_the_old_light_client_store_aside(tmp_path: Path) -> None:
    # A new `up --pos` is a new beacon genesis: an old store would follow a committee that
    # no longer exists.
    (tmp_path / records.BEACON_STORE_DIR).mkdir()
    (tmp_path / records.BEACON_STORE_DIR / "store.json").write_text("{}")
    archived = records.archive_previous_run(tmp_path)
    assert archived is not None
    assert (archived / records.BEACON_STORE_DIR / "store.json").is_file()
    assert not (tmp_path / records.BEACON_STORE_DIR).exists()


# --------------------------------------------------------------------------- tools


def test_the_pos_tools_pinned_are_the_pos_project_s() -> None:
    manifest = json.loads((ROOT / "devnet" / "npm-pos" / "package.json").read_text())
    assert {
        name: version
        for name, version in manifest["dependencies"].items()
        if name in devnet.tools.POS_PINNED
    } == devnet.tools.POS_PINNED
    lock = json.loads((ROOT / "devnet" / "npm-pos" / "package-lock.json").read_text())
    for name, version in devnet.tools.POS_PINNED.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    # The overrides the issue measured as necessary are all there (npm fails silently
    # without them: newer @lodestar/* packages are missing from the registry).
    overrides = manifest["overrides"]
    assert overrides["@lodestar/beacon-node"] == "1.5.1"
    assert overrides["@libp2p/tcp"] == "6.1.2"


def _fake_package(root: Path, package: str, version: str, script: str) -> Path:
    folder = root / "node_modules" / package
    (folder / script).parent.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps({"name": package, "version": version}))
    (folder / script).write_text("// fake\n")
    return folder / script


def test_without_the_pos_tools_up_pos_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(devnet.tools.ToolError) as caught:
        devnet.tools.lodestar_script()
    message = str(caught.value)
    assert "make pos-tools" in message and "@chainsafe/lodestar@1.5.1" in message
    assert "\n" not in message
    # Outside a checkout there is no `make`: the line says what to install instead.
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", None)
    with pytest.raises(devnet.tools.ToolError, match="is on PATH"):
        devnet.tools.ethereumjs_script()


def test_a_lodestar_on_path_counts_only_at_the_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devnet.tools, "CHECKOUT_NODE_MODULES", tmp_path / "nowhere")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    # Another version (a global `npm i -g @chainsafe/lodestar` of today) speaks other flags.
    script = _fake_package(tmp_path / "new", "@chainsafe/lodestar", "1.20.0", "lib/index.js")
    script.chmod(0o755)
    (bin_dir / "lodestar").symlink_to(script)
    with pytest.raises(devnet.tools.ToolError):
        devnet.tools.lodestar_script()
    (bin_dir / "lodestar").unlink()
    script = _fake_package(tmp_path / "old", "@chainsafe/lodestar", "1.5.1", "lib/index.js")
    script.chmod(0o755)
    (bin_dir / "lodestar").symlink_to(script)
    assert devnet.tools.lodestar_script() == script.resolve()


# --------------------------------------------------------------------------- processes


_IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as Lodestar 1.5.1 does in effect
print("ready", flush=True)
time.sleep(120)
"""


def _start_stubborn(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    script = tmp_path / "stubborn.py"
    script.write_text(_IGNORES_SIGTERM)
    process = subprocess.Popen(
        [sys.executable, str(script), "--rest.port", "39793"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process, script, process.pid


def test_a_beacon_node_is_recognised_by_its_rest_port_and_killed_after_its_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process, script, pid = _start_stubborn(tmp_path)
    # The stub stands in for the program devnet resolves for each kind (pids.KIND_TOOLS).
    for kind, flag in (("beacon", "--rest.port"), ("evm", "--port")):
        monkeypatch.setitem(pids.KIND_TOOLS, kind, (lambda: script, flag))
    try:
        entry = {
            "chain": "gamma",
            "kind": "beacon",
            "program": "lodestar",
            "pid": pid,
            "port": 39793,
            "port_flag": "--rest.port",
            "binary": str(script),
            "start_time": pids.start_time(pid),
            "stop_grace": 0.5,
        }
        assert pids.is_ours(entry)
        # The same process as an entry of a kind whose flag is --port is not the recorded one
        # (--port is absent), and a recorded port_flag is not read.
        assert not pids.is_ours({**entry, "kind": "evm"})
        assert pids.is_ours({**entry, "port_flag": "--port"})
        assert not pids.is_ours({**entry, "port": 39794})
        started = time.monotonic()
        line = pids.stop(entry)
        elapsed = time.monotonic() - started
        assert "killed (SIGKILL after SIGTERM timed out) lodestar" in line
        # pids.stop reaped it (it is our child): the pid names no process any more.
        assert pids.inspect(pid) is None
        assert elapsed < pids.STOP_TIMEOUT  # its own grace, not the default 5 s
    finally:
        if process.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            process.wait()


@pytest.mark.chain
def test_a_pos_chain_answers_only_with_its_recorded_beacon_genesis(anvil: Any) -> None:
    # Another PoS chain restarted on the same ports answers the same chain id: only the
    # beacon genesis tells it apart, and the config's checkpoint belongs to the recorded one.
    with BeaconProxy(static=_beacon_static()) as node:
        entry = {
            "kind": "pos",
            "rpc": anvil.rpc_url,
            "chain_id": anvil.chain_id,
            "beacon_api": node.url,
            "genesis_validators_root": GVR,
        }
        kind = kind_of(entry)
        assert kind is not None and kind.answers(entry)
        assert not kind.answers({**entry, "genesis_validators_root": "0x" + "3f" * 32})
        assert not kind.answers({**entry, "chain_id": anvil.chain_id + 1})
        beacon = {"kind": "beacon", "rpc": node.url, "genesis_validators_root": GVR}
        beacon_kind = kind_of(beacon)
        assert beacon_kind is not None and beacon_kind.answers(beacon)
        assert not beacon_kind.answers({**beacon, "genesis_validators_root": None})
        node.status = 500
        assert not kind.answers(entry)  # a beacon node that does not answer is not healthy


def test_up_pos_without_the_tools_is_one_line_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tools are looked up before any chain starts: no anvil may be left behind.
    def missing() -> Path:
        raise devnet.tools.ToolError("lodestar (@chainsafe/lodestar@1.5.1) is not installed")

    started: list[Any] = []
    monkeypatch.setattr(manager, "lodestar_script", missing)
    monkeypatch.setattr(manager, "start_anvil", lambda **kwargs: started.append(kwargs))
    with pytest.raises(DevnetError) as caught:
        manager.up(tmp_path / "devnet", assethub=False, pos=True)
    assert str(caught.value) == "lodestar (@chainsafe/lodestar@1.5.1) is not installed"
    assert started == []
    assert not (tmp_path / "devnet" / records.STATE_FILE).exists()
