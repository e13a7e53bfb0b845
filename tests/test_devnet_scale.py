"""Issue #12 on the devnet: ``devnet up --evm-chains N``, ``--postgres``, several relayer keys.

The cheap tests (no chain) hold the rules: the chains' names, domains and chain ids never
collide with Asset Hub's or gamma's whatever N is; a bad N is one line and starts nothing; the
config's ``[relayer] keys`` and ``relay --index I``. One chain test runs the whole thing once,
the way an operator does, through the command line: three anvils and PostgreSQL, every pair of
chains linked both ways, a message over each new route delivered by ``relay --index 1``, the
config's ledger URL migrated and answering, and ``down`` leaving no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import psutil
import pytest
import sqlalchemy as sa
from e2e_support import (
    DELIVERED_TOPIC,
    PASSERELLE,
    Procs,
    cli,
    inbox_logs,
    missing_chain_tool,
    send,
    wait_delivered,
    wait_until,
)
from web3 import Web3

from adapters.evm.contracts import load_artifact
from adapters.substrate import multisig_account
from devnet import manager, pids, postgres, records
from devnet.anvil import AnvilError, anvil_binary, free_port
from devnet.config_file import render_config
from devnet.errors import DevnetError
from devnet.postgres import PostgresProcess, PostgresUnavailable, postgres_bin_dir
from devnet.topology import (
    ASSETHUB,
    CHAINS,
    MAX_EVM_CHAINS,
    MIN_EVM_CHAINS,
    POS_CHAIN,
    RELAYER_KEY,
    RELAYER_KEYS,
    evm_chains,
)
from light_clients.committee import address_of
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from relayer.cli import _with_relayer_key
from relayer.cli import cli as passerelle_cli
from relayer.config import ConfigError, load_config
from relayer.ledger import ledger_schema

KEYS = [keccak256(f"scale test key {i}".encode()) for i in range(6)]
VALIDATORS = sorted(address_of(k) for k in KEYS[:3])


# --------------------------------------------------------------------------- names and numbers


@pytest.mark.parametrize("count", range(MIN_EVM_CHAINS, MAX_EVM_CHAINS + 1))
def test_no_name_domain_or_chain_id_is_ever_shared(count: int) -> None:
    specs = evm_chains(count)
    everything = [*specs, POS_CHAIN]
    names = [s.name for s in everything] + [ASSETHUB.name]
    domains = [s.domain for s in everything] + [ASSETHUB.domain]
    assert len(specs) == count
    assert len(set(names)) == len(names) and len(set(domains)) == len(domains)
    assert len({s.chain_id for s in everything}) == len(everything)
    # One rule for every EVM chain, gamma included: chain id = 31336 + domain.
    assert all(s.chain_id == 31336 + s.domain for s in everything)
    # alpha alone holds the test token; a larger devnet only adds chains at its end.
    assert [s.home_token for s in specs] == [True] + [False] * (count - 1)
    if count > MIN_EVM_CHAINS:
        assert specs[:-1] == evm_chains(count - 1)


def test_two_chains_are_todays_alpha_and_beta() -> None:
    assert [(s.name, s.domain, s.chain_id) for s in CHAINS] == [
        ("alpha", 1, 31337),
        ("beta", 2, 31338),
    ]
    assert [s.name for s in evm_chains(4)] == ["alpha", "beta", "delta", "epsilon"]
    assert [s.domain for s in evm_chains(4)] == [1, 2, 5, 6]
    assert RELAYER_KEYS[0] == RELAYER_KEY  # today's single relayer key is index 0


@pytest.mark.parametrize("count", [1, 0, -2, MAX_EVM_CHAINS + 1, 60, True, 3.0, "3"])
def test_a_count_out_of_range_is_one_line(count: Any) -> None:
    with pytest.raises(ValueError, match=r"^the devnet runs 2 to 8 EVM chains, not ") as error:
        evm_chains(count)
    assert "\n" not in str(error.value)


def test_up_refuses_a_bad_count_before_touching_anything(tmp_path: Path) -> None:
    state = tmp_path / "devnet"
    with pytest.raises(DevnetError, match=r"^the devnet runs 2 to 8 EVM chains, not 9$"):
        manager.up(state, evm_chains=9)
    assert not state.exists()  # not even the state directory or its lock


def test_the_command_line_refuses_bad_counts_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "devnet"
    for value in ("9", "three"):  # out of range, not a number (evm_chains: the other cases)
        result = subprocess.run(
            [PASSERELLE, "devnet", "up", "--dir", str(state), "--evm-chains", value],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (value, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--evm-chains" in lines[0], (value, result.stderr)
        assert not state.exists()


def test_the_command_line_range_is_the_topology_range() -> None:
    devnet_group = passerelle_cli.commands["devnet"]
    assert isinstance(devnet_group, click.Group)
    option = next(p for p in devnet_group.commands["up"].params if p.name == "evm_chains")
    assert isinstance(option.type, click.IntRange)
    assert (option.type.min, option.type.max) == (MIN_EVM_CHAINS, MAX_EVM_CHAINS)


# --------------------------------------------------------------------------- the config


def _fake_contracts(seed: int, *, home: bool) -> dict[str, bytes]:
    names = ["outbox", "inbox", "ping", "token_bridge", "token" if home else "wrapped_token"]
    return {name: bytes([seed, i + 1]) * 10 for i, name in enumerate(names)}


def _hub_setup(origins: list[int]) -> dict[str, object]:
    signatories = [bytes([i]) * 32 for i in range(1, 4)]
    return {
        "genesis_hash": "0x" + "ab" * 32,
        "multisig": to_hex(multisig_account(signatories, 2)),
        "multisig_threshold": 2,
        "signatories": [to_hex(s) for s in signatories],
        "collections": {str(origin): n for n, origin in enumerate(origins, start=1)},
        "asset_id": 1,
    }


def test_a_four_chain_config_on_postgres_loads(tmp_path: Path) -> None:
    """What `up --evm-chains 4 --postgres` writes, without chains: Asset Hub's replay guards
    and wrapped asset follow the chains given (its home is alpha's token), both stores are the
    URLs given, and the four relayer keys are `[relayer] keys`, the first the default."""
    specs = evm_chains(4)
    chains = [
        (spec, f"http://127.0.0.1:{9000 + i}", _fake_contracts(i + 1, home=spec.home_token))
        for i, spec in enumerate(specs)
    ]
    ledger = "postgresql+psycopg://passerelle@127.0.0.1:5999/passerelle"
    store = "postgresql+psycopg://passerelle@127.0.0.1:5999/checkpoints"
    text = render_config(
        chains,
        VALIDATORS,
        sorted(KEYS[:3], key=address_of),
        [bytes([i]) * 32 for i in range(1, 4)],
        ("ws://127.0.0.1:9100", _hub_setup([s.domain for s in specs])),
        ledger=ledger,
        checkpoint_store=store,
    )
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    config = load_config(path)
    assert [(c.name, c.domain) for c in config.chains] == [
        ("alpha", 1),
        ("beta", 2),
        ("delta", 5),
        ("epsilon", 6),
        ("assethub", 3),
    ]
    assert config.ledger == ledger and config.checkpoint_url == store
    hub = config.chain("assethub").settings()
    assert hub.collections == {1: 1, 2: 2, 5: 3, 6: 4}
    assert hub.asset_home_domain == 1
    assert hub.asset_home_token == _fake_contracts(1, home=True)["token"]
    assert [k.load() for k in config.relayer_keys] == list(RELAYER_KEYS)
    assert config.relayer_key is not None and config.relayer_key.load() == RELAYER_KEY


def _config(tmp_path: Path, relayer: str, *, devnet: bool = True) -> Path:
    members = ", ".join(f'"0x{v.hex()}"' for v in VALIDATORS)
    path = tmp_path / "passerelle.toml"
    path.write_text(
        f"""devnet = {str(devnet).lower()}
[ledger]
location = "ledger.db"
[committee]
validators = [{members}]
threshold = 2
[[chains]]
name = "alpha"
domain = 1
kind = "evm"
rpc = ["http://127.0.0.1:8545"]
chain_id = 31337
finality = "confirmations:3"
outbox = "0x{"11" * 20}"
inbox = "0x{"22" * 20}"
[relayer]
{relayer}
"""
    )
    return path


def _inline(*keys: bytes) -> str:
    return "keys = [" + ", ".join(f'{{ key = "0x{k.hex()}" }}' for k in keys) + "]"


def test_relay_index_picks_one_of_the_keys(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, _inline(KEYS[3], KEYS[4], KEYS[5])))
    for index in range(3):
        chosen = _with_relayer_key(config, index).relayer_key
        assert chosen is not None and chosen.load() == KEYS[3 + index]
    default = _with_relayer_key(config, None).relayer_key
    assert default is not None and default.load() == KEYS[3]
    for index in (3, -1):
        with pytest.raises(ConfigError, match=rf"no relayer key at --index {index} \(\[relayer\] "):
            _with_relayer_key(config, index)


def test_a_single_key_config_works_with_and_without_index(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f'key = "0x{KEYS[3].hex()}"'))
    assert [k.load() for k in config.relayer_keys] == [KEYS[3]]
    for index in (None, 0):
        chosen = _with_relayer_key(config, index).relayer_key
        assert chosen is not None and chosen.load() == KEYS[3]
    with pytest.raises(ConfigError, match=r"--index 1 \(\[relayer\] keys: 0\.\.0\)"):
        _with_relayer_key(config, 1)


@pytest.mark.parametrize(
    ("relayer", "reason"),
    [
        # Two relayers on one account would take each other's nonces.
        (
            _inline(KEYS[3], KEYS[4], KEYS[3]),
            r"relayer\.keys\[2\] is the same key as relayer\.keys\[0\]",
        ),
        ('keys = [{ key_env = "R" }, { key_env = "R" }]', r"relayer\.keys\[1\] is the same key as"),
        (f'key = "0x{KEYS[3].hex()}"\n' + _inline(KEYS[4]), "relayer: keys and key conflict"),
        ("keys = []", r"relayer\.keys must list at least one key"),
        ('keys = [{ key_env = "R", key_file = "k" }]', r"relayer\.keys\[0\]: key_env and key_file"),
        ('keys = [{ kee = "0x00" }]', r"relayer\.keys\[0\]: unknown key 'kee'.*did you mean 'key'"),
        ('keys = [{ policy = "x" }]', r"relayer\.keys\[0\]: unknown key 'policy'"),
        ('keys = "0x00"', r"relayer\.keys"),
        ("keys = [{}]", r"relayer\.keys\[0\]: one of key_env, key_file, key_keystore"),
    ],
)
def test_bad_relayer_keys_are_one_line(tmp_path: Path, relayer: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as error:
        load_config(_config(tmp_path, relayer))
    assert "\n" not in str(error.value)


def test_one_key_file_under_several_names_is_one_key(tmp_path: Path) -> None:
    """Another spelling, a symlink or a hard link of one key file, or one keystore with two
    password sources, is the same account: refused like a repeated entry, whatever the names."""
    (tmp_path / "sub").mkdir()
    key = tmp_path / "relayer.key"
    key.write_text("0x" + KEYS[3].hex())
    key.chmod(0o600)
    os.link(key, tmp_path / "hard.key")
    (tmp_path / "soft.key").symlink_to(key)
    (tmp_path / "ks.json").write_text("{}")
    for alias in ("sub/../relayer.key", "hard.key", "soft.key", str(key)):
        relayer = f'keys = [{{ key_file = "relayer.key" }}, {{ key_file = "{alias}" }}]'
        with pytest.raises(ConfigError, match=r"relayer\.keys\[1\] is the same key as .*\[0\]"):
            load_config(_config(tmp_path, relayer, devnet=False))
    keystores = (
        'keys = [{ key_keystore = "ks.json", key_password_env = "A" },'
        ' { key_keystore = "sub/../ks.json", key_password_env = "B" }]'
    )
    with pytest.raises(ConfigError, match=r"relayer\.keys\[1\] is the same key as"):
        load_config(_config(tmp_path, keystores, devnet=False))
    (tmp_path / "other.key").write_text("0x" + KEYS[4].hex())
    two = 'keys = [{ key_file = "relayer.key" }, { key_file = "other.key" }]'
    assert len(load_config(_config(tmp_path, two, devnet=False)).relayer_keys) == 2


def test_inline_relayer_keys_are_devnet_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"relayer\.keys\[0\]"):
        load_config(_config(tmp_path, _inline(KEYS[3]), devnet=False))


def test_relay_with_an_index_the_config_lacks_is_one_line(tmp_path: Path) -> None:
    path = _config(tmp_path, _inline(KEYS[3], KEYS[4]))
    result = cli(path, "relay", "--index", "2", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"passerelle: config {path}: no relayer key at --index 2 ([relayer] keys: 0..1)"
    ]
    assert not (tmp_path / "ledger.db").exists()  # refused before the ledger was opened


def test_a_fresh_up_moves_the_old_postgres_data_aside(tmp_path: Path) -> None:
    (tmp_path / records.POSTGRES_DIR / "data").mkdir(parents=True)
    (tmp_path / records.POSTGRES_DIR / "data" / "PG_VERSION").write_text("16\n")
    target = records.archive_previous_run(tmp_path)
    assert target is not None and not (tmp_path / records.POSTGRES_DIR).exists()
    assert (target / records.POSTGRES_DIR / "data" / "PG_VERSION").read_text() == "16\n"


def test_a_forged_postgres_record_runs_and_signals_nothing(tmp_path: Path) -> None:
    """devnet.json is a file: one edited to name a process of the editor's choosing (its
    command line, port argument and start time all matching) and a folder of tools must get
    neither a probe run from that folder nor a signal."""
    marker = tmp_path / "ran"
    (tmp_path / "pg_isready").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    (tmp_path / "postgres").write_text("import time\ntime.sleep(60)\n")
    argv = [sys.executable, str(tmp_path / "postgres"), "-c", "port=5999"]
    bystander = subprocess.Popen(argv, start_new_session=True)
    try:
        entry = {
            "chain": "postgres",
            "pid": bystander.pid,
            "port": 5999,
            "port_flag": "-c",
            "port_arg": "port=5999",
            "binary": str(tmp_path / "postgres"),
            "bin_dir": str(tmp_path),  # what a record once held: never used
            "start_time": pids.start_time(bystander.pid),
        }
        wait_until(
            lambda: pids.inspect(bystander.pid) is not None, "the bystander", timeout=10, poll=0.05
        )
        assert postgres.answers(entry, tmp_path / "postgres") is False
        assert postgres.stop_recorded(entry, tmp_path / "postgres") == (
            f"postgres: pid {bystander.pid} is not ours (not the server of "
            f"{tmp_path / 'postgres' / 'data'}; nothing signalled)"
        )
        assert bystander.poll() is None and not marker.exists()
    finally:
        bystander.kill()
        bystander.wait()


@pytest.fixture
def bystander(postgres: PostgresProcess) -> PostgresProcess:
    """The test suite's own server (conftest's, shared): somebody else's, for a devnet."""
    return postgres


def _forged(server: PostgresProcess, **changes: Any) -> dict[str, Any]:
    """A ``"postgres"`` entry naming ``server``: everything in it is world-readable /proc data."""
    seen = psutil.Process(server.pid)
    entry = {
        "chain": "postgres",
        "kind": "postgres",
        "program": "postgres",
        "pid": server.pid,
        "port": server.port,
        "port_flag": "-c",
        "port_arg": f"port={server.port}",
        "binary": seen.cmdline()[0],
        "start_time": seen.create_time(),
        "data_dir": str(server.data_dir),
        "url": "x",
    }
    return entry | changes


def test_a_record_naming_another_server_signals_nothing(
    bystander: PostgresProcess, state_dir: Path
) -> None:
    """devnet.json can name the test suite's own server (same binaries, its real pid, port
    argument, start time and data directory), even with a postmaster.pid copied into this
    folder's data directory, or a recorded port whose ``-c`` value is any other setting:
    ``status`` does not call it ours, ``down`` signals nothing and says "not ours"."""
    data = state_dir / records.POSTGRES_DIR / "data"
    data.mkdir(parents=True)
    (data / postgres.PID_FILE).write_text((bystander.data_dir / postgres.PID_FILE).read_text())
    not_ours = (
        f"postgres: pid {bystander.pid} is not ours (not the server of {data}; nothing signalled)"
    )
    for entry in (
        _forged(bystander),
        _forged(bystander, port=1, port_arg="listen_addresses=127.0.0.1"),
    ):
        (state_dir / records.STATE_FILE).write_text(
            json.dumps(
                {"version": records.STATE_VERSION, "complete": True, "processes": []}
                | {"postgres": entry}
            )
        )
        assert manager.status(state_dir)["postgres"]["alive"] is False
        assert manager.down(state_dir) == [not_ours]
        assert bystander.running and pids.inspect(bystander.pid) is not None
    assert postgres.running_server(state_dir / records.POSTGRES_DIR) is None
    assert postgres.running_server(bystander.data_dir.parent) == bystander.pid


def _devnet_server(state_dir: Path) -> PostgresProcess:
    """A server in ``state_dir/postgres`` as ``up --postgres`` starts one (no chains)."""
    (state_dir / records.POSTGRES_DIR).mkdir(parents=True)
    (state_dir / records.POSTGRES_DIR).chmod(0o711)  # as root the server runs as "nobody"
    return postgres.start_postgres(state_dir / records.POSTGRES_DIR)


def test_down_stops_our_server_whatever_its_record_says(state_dir: Path) -> None:
    """A record whose start time, binary and pid no longer match (a clock step, new binaries,
    an edit) still leads ``down`` to the server running in this folder's data directory."""
    server = _devnet_server(state_dir)
    try:
        entry = _forged(server) | {"binary": "/bin/false", "pid": os.getpid()}
        entry["start_time"] += 10
        (state_dir / records.STATE_FILE).write_text(
            json.dumps({"version": 1, "complete": True, "processes": [], "postgres": entry})
        )
        assert manager.down(state_dir) == [
            f"postgres: stopped postgres pid {server.pid} on 127.0.0.1:{server.port}"
        ]
        assert not server.running
    finally:
        server.stop()


def test_up_stops_an_unrecorded_server_before_moving_its_folder(state_dir: Path) -> None:
    """No record (lost), a server still running in ``postgres/data``: a fresh ``up`` stops it
    before anything is moved, and an archive that fails (``previous`` is a file) is one line,
    with nothing started and the old folder left where it was."""
    server = _devnet_server(state_dir)
    try:
        (state_dir / records.ARCHIVE_DIR).write_text("not a folder\n")
        with pytest.raises(DevnetError) as raised:
            manager.up(state_dir, assethub=False)
        assert str(raised.value).startswith("devnet setup failed: ")
        assert "\n" not in str(raised.value)
        assert not server.running
        assert (state_dir / records.POSTGRES_DIR / "data" / "PG_VERSION").is_file()
        assert not (state_dir / records.STATE_FILE).exists()
    finally:
        server.stop()


# --------------------------------------------------------------------------- on chains


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory PostgreSQL's user can reach (as root the server runs as "nobody": a
    0700 pytest directory would not do), removed afterwards with whatever the devnet left."""
    try:
        anvil_binary()
        postgres_bin_dir()
    except (AnvilError, PostgresUnavailable) as error:
        missing_chain_tool(str(error))
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="passerelle-scale-", dir=base))
    directory.chmod(0o711)
    try:
        yield directory / "devnet"
    finally:
        manager.down(directory / "devnet")  # a no-op when the test's own `down` ran
        shutil.rmtree(directory, ignore_errors=True)


def _contract(w3: Web3, name: str, address: bytes) -> Any:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def _gone(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return bool(status == psutil.STATUS_ZOMBIE)


@pytest.mark.chain
@pytest.mark.slow
def test_three_chains_on_postgres_relayed_with_the_second_key(state_dir: Path) -> None:
    """``devnet up --evm-chains 3 --postgres`` end to end, as an operator runs it (~25 s)."""
    up = [PASSERELLE, "devnet", "up", "--dir", str(state_dir), "--no-assethub"]
    up += ["--evm-chains", "3", "--postgres"]
    started = subprocess.run(up, capture_output=True, text=True, timeout=180, check=False)
    assert started.returncode == 0, started.stderr
    config_path = Path(started.stdout.strip())
    config = load_config(config_path)
    record = json.loads((state_dir / records.STATE_FILE).read_text())
    pids = {p["chain"]: p["pid"] for p in record["processes"]} | {
        "postgres": record["postgres"]["pid"]
    }
    assert set(pids) == {"alpha", "beta", "delta", "postgres"}
    chains = {c.name: c for c in config.chains}
    assert [(c.name, c.domain, c.chain_id) for c in config.chains] == [
        ("alpha", 1, 31337),
        ("beta", 2, 31338),
        ("delta", 5, 31341),
    ]

    # Every pair linked both ways: six inbox origins, six bridge remotes, and the new chain's
    # wrapped token paired with alpha's token.
    w3 = {name: Web3(Web3.HTTPProvider(c.rpc[0])) for name, c in chains.items()}
    for here in chains.values():
        inbox = _contract(w3[here.name], "Inbox", here.contract("inbox"))
        bridge = _contract(w3[here.name], "TokenBridge", here.contract("token_bridge"))
        for there in chains.values():
            if there is not here:
                outbox = bytes(12) + there.contract("outbox")
                assert inbox.functions.outboxOf(there.domain).call() == outbox
                remote = bytes(12) + there.contract("token_bridge")
                assert bridge.functions.remoteBridge(there.domain).call() == remote
    delta_bridge = _contract(w3["delta"], "TokenBridge", chains["delta"].contract("token_bridge"))
    paired = delta_bridge.functions.wrappedTokenOf(1, bytes(12) + chains["alpha"].contract("token"))
    assert paired.call() == Web3.to_checksum_address(chains["delta"].contract("wrapped_token"))

    # The config's ledger is on the recorded server, migrated; the checkpoint store beside it.
    port = record["postgres"]["port"]
    assert config.ledger == f"postgresql+psycopg://passerelle@127.0.0.1:{port}/passerelle"
    assert config.checkpoint_url == f"postgresql+psycopg://passerelle@127.0.0.1:{port}/checkpoints"
    assert ledger_schema(config.ledger).state == "current"

    # The relayer keys are distinct and funded on every chain.
    addresses = [Web3.to_checksum_address(address_of(k.load())) for k in config.relayer_keys]
    assert len(set(addresses)) == len(addresses) == len(RELAYER_KEYS)
    assert all(w3[n].eth.get_balance(a) > 10**20 for n in chains for a in addresses)

    # A second `up` with the same options finds it all healthy: nothing restarted.
    again = manager.up(state_dir, assethub=False, evm_chains=3, postgres=True)
    assert again == config_path
    assert json.loads((state_dir / records.STATE_FILE).read_text()) == record

    # A message over each new route, carried by the relayer of the second key, whose health
    # endpoints then say it is alive and ready.
    procs = Procs(config_path, state_dir / "logs")
    metrics_port = free_port()
    try:
        for index in range(2):  # threshold 2 of 3
            procs.start_attester(index)
        procs.start_relayer("--index", "1", "--metrics-port", str(metrics_port))
        sent = send(config_path, "alpha", "delta", "--body", "0x01")
        sent += send(config_path, "delta", "beta", "--body", "0x02")
        wait_delivered(config_path, [m["id"] for m in sent], procs, timeout=60)
        health = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
        routes = {(r["origin"], r["destination"]): r for r in ready.json()["routes"]}
        assert set(routes) == {(a, b) for a in chains for b in chains if a != b}
        assert all(r["last_scan_seconds_ago"] < 10 and r["pending"] == 0 for r in routes.values())
    finally:
        procs.stop_all()
    # Every signature went through the checkpoint table on the server, none to a directory:
    # both attesters that ran signed both origins that sent (alpha and delta).
    signatures = sa.create_engine(config.checkpoint_url, poolclass=sa.NullPool)
    try:
        with signatures.connect() as connection:
            signers, rows = connection.exec_driver_sql(
                "SELECT count(DISTINCT signer), count(*) FROM checkpoint_store "
                "WHERE slot != 'latest'"
            ).one()
    finally:
        signatures.dispose()
    assert signers == 2 and rows >= 2 * 2, (signers, rows)
    directory = config.checkpoint_store
    assert not directory.exists() or not any(directory.rglob("*.json"))
    for message, chain in zip(sent, ("delta", "beta"), strict=True):
        (event,) = [
            e for e in inbox_logs(config, chain, DELIVERED_TOPIC) if e["topics"][1] == message["id"]
        ]
        assert w3[chain].eth.get_transaction(event["transactionHash"])["from"] == addresses[1]

    # `down` (another process, from the record alone) stops every anvil and the server.
    stopped = subprocess.run(
        [PASSERELLE, "devnet", "down", "--dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stderr
    lines = stopped.stdout.splitlines()
    assert len(lines) == 4 and all(": stopped " in line for line in lines), lines
    assert [name for name, pid in pids.items() if not _gone(pid)] == []
    assert not (state_dir / records.STATE_FILE).exists()
