"""``passerelle devnet up|down|status``: two local anvil chains with Passerelle deployed, and
chopsticks running Rococo Asset Hub with the committee's multisig set up on it.

Usage::

    config_path = up(Path("devnet"))   # starts alpha (domain 1) and beta (domain 2), deploys,
                                       # links; starts assethub (domain 3, chopsticks) and has
                                       # the committee's multisig create its replay-guard
                                       # collections and wrapped asset (devnet/substrate.py);
                                       # writes devnet/passerelle.toml and devnet.json
    status(Path("devnet"))             # {"config": …, "running": True, "chains": [...]}
    down(Path("devnet"))               # stops exactly what `up` started

Everything lives in the state directory:

- ``passerelle.toml``: a ready config (relayer.config schema, ``devnet = true``).
- ``devnet.json``: the record of every process ``up`` started (pid, port, binary, log, the
  kernel's start time of the pid). ``down`` and ``status`` trust nothing else, and before
  signalling a pid they check it is still that anvil or chopsticks (its command line, read
  through psutil, names the recorded binary and port argument, chopsticks' also its config
  file, and its start time matches the recorded one), so a recycled pid is never killed.
- ``anvil-<chain>.log``, ``chopsticks-assethub.log``: each chain's output, appended across runs;
  kept by ``down``. ``chopsticks/`` holds chopsticks' chain spec, funding and YAML config.
- ``ledger.db`` and ``checkpoints/``: created by the relayer and attesters, kept by ``down``.
  A fresh ``up`` starts new chains, on which an old ledger's cursors and delivered ids mean
  nothing (the fresh chains even reuse the same contract addresses), so it moves them into
  ``previous/<UTC time>/`` rather than letting a relayer resume from them. chopsticks, too,
  starts from genesis every time (no database), so its block hashes are new on every ``up``:
  a block hash remembered from an earlier run must never be asked for (chopsticks would answer
  with its genesis header and from then on refuse every signature, see
  ``docs/substrate-devnet.md``); moving the old ledger aside is what prevents it.

The config's attesters each get a fresh sr25519 seed (``substrate_key``), their Substrate
identity next to their secp256k1 EVM key; the 2-of-3 multisig of those keys owns the
assethub's Uniques collections (one per EVM origin domain, the replay guard) and its wrapped
asset. chopsticks funds //Alice, the attesters and the multisig through ``import-storage``.

The chains are detached (own session, stdin closed, output to the log files), so they outlive
the ``passerelle devnet up`` process; ``down`` is how they stop. Every failure of ``up`` (busy
port, anvil not installed, a reverted deployment) raises :class:`DevnetError`, whose ``str()``
is one line, after stopping whatever this call had started.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from web3 import Web3

from adapters.substrate import multisig_account
from devnet.anvil import (
    DEV_PRIVATE_KEYS,
    HOST,
    AnvilError,
    AnvilProcess,
    anvil_binary,
    start_anvil,
)
from devnet.chopsticks import (
    ALICE,
    CHAIN_NAME,
    DEV_BALANCE,
    FINALITY_POLICY,
    ChopsticksError,
    ChopsticksProcess,
    chopsticks_entry,
    start_chopsticks,
)
from devnet.evm import (
    DeployError,
    EvmDeployment,
    deploy_evm_chain,
    link_evm_chains,
    link_substrate_remote,
)
from devnet.substrate import SubstrateSetupError, keypair_from_seed, setup_asset_hub
from light_clients.committee import SECP256K1_N, address_of
from relayer.config import ConfigError, load_config

__all__ = [
    "ASSETHUB",
    "CHAINS",
    "CONFIG_FILE",
    "STATE_FILE",
    "DevnetError",
    "down",
    "status",
    "up",
]

CONFIG_FILE = "passerelle.toml"
STATE_FILE = "devnet.json"
LOCK_FILE = ".devnet.lock"
LEDGER_FILE = "ledger.db"
CHECKPOINT_DIR = "checkpoints"
ARCHIVE_DIR = "previous"

FINALITY = "confirmations:3"
"""anvil has no finality gadget; three 1-second blocks keep the demo quick while still
exercising the confirmation-depth code path (and `anvil_reorg` tests shallower than it)."""

ATTESTERS = 3
THRESHOLD = 2
DEPLOYER_KEY = bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])  # owns every contract
RELAYER_KEY = bytes.fromhex(DEV_PRIVATE_KEYS[1][2:])
CLIENT_KEY = bytes.fromhex(DEV_PRIVATE_KEYS[2][2:])  # `passerelle send`; holds the TestToken
SUBSTRATE_CLIENT_URI = "//Alice"  # `passerelle send` on assethub

_STATE_VERSION = 1
_STOP_TIMEOUT = 5.0
_RPC_TIMEOUT = 2.0


@dataclass(frozen=True)
class ChainSpec:
    """One devnet chain: its name, Passerelle domain, EVM chain id and token role."""

    name: str
    domain: int
    chain_id: int
    home_token: bool


CHAINS: tuple[ChainSpec, ...] = (
    ChainSpec("alpha", 1, 31337, home_token=True),
    ChainSpec("beta", 2, 31338, home_token=False),
)
"""The anvil chains (``ports`` of :func:`up` gives one port per entry)."""


@dataclass(frozen=True)
class SubstrateChainSpec:
    """The devnet's Substrate chain: chopsticks running Rococo Asset Hub."""

    name: str
    domain: int


ASSETHUB = SubstrateChainSpec("assethub", 3)


class DevnetError(RuntimeError):
    """The devnet could not be started or inspected; ``str()`` is one line saying why."""


# --------------------------------------------------------------------------- process identity

# Chains started by this Python process, by pid. Keeping the Popen objects lets `down` in the
# same process (tests) reap its own children instead of leaving zombies, and stops Python from
# warning that a still-running subprocess was garbage-collected: outliving us is the point.
_CHILDREN: dict[int, AnvilProcess | ChopsticksProcess] = {}


# The start time recorded by `up` and the one `down` or `status` reads later are both the
# kernel's (boot-relative, exact) start time plus the boot time, which the kernel reports in
# whole seconds from the current wall clock: the two readings can differ by a second, or more
# if the clock is stepped in between. Such a step makes the check refuse (nothing signalled);
# a recycled pid would also need the recorded binary and port to get within this window.
_START_TOLERANCE = 2.0

_GONE_STATES = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _inspect(pid: int) -> tuple[str, float, list[str]] | None:
    """(psutil status, start time in seconds since the epoch, argv) of ``pid``, or None.

    None when there is no such process, when it is a zombie psutil cannot read, or when we may
    not read it (another user's process is not one `up` started). psutil reads the same kernel
    fields on Linux and macOS, so there is one code path and a start time on both.
    """
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.status(), process.create_time(), process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def _gone(pid: int) -> bool:
    """No such process any more, or only a zombie waiting to be reaped."""
    seen = _inspect(pid)
    return seen is None or seen[0] in _GONE_STATES


def _is_ours(entry: dict[str, Any]) -> bool:
    """True if the recorded process is alive and is still the anvil or chopsticks `up` started.

    Checked, because a pid is only a number the kernel recycles: the command line must name
    the recorded binary (argv[0], or argv[1] when node runs it: the npm anvil wrapper,
    chopsticks.cjs) and the recorded ``--port`` argument (``port_arg``, else ``port``: chopsticks
    is started with port 0 and told its port afterwards), the recorded ``--config`` when there
    is one, and the start time must match the recorded one within ``_START_TOLERANCE``. A
    zombie (exited, not yet reaped) is not alive.
    """
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and not child.running:  # also reaps our own exited child
        return False
    seen = _inspect(pid)
    if seen is None or seen[0] in _GONE_STATES:
        return False
    _, started, argv = seen
    if str(entry.get("binary", "")) not in argv[:2]:
        return False
    port = str(entry.get("port_arg", entry.get("port", "")))
    if not any(a == "--port" and b == port for a, b in itertools.pairwise(argv)):
        return False
    config = entry.get("config_arg")
    if config is not None and not any(
        a == "--config" and b == str(config) for a, b in itertools.pairwise(argv)
    ):
        return False
    # A record without a start time (written before psutil was used: "start_ticks") is judged
    # on its command line alone, as such records always were when no start time was readable.
    recorded = entry.get("start_time")
    if recorded is None:
        return True
    return isinstance(recorded, int | float) and abs(recorded - started) <= _START_TOLERANCE


def _rpc(url: str, method: str, params: Sequence[Any] = ()) -> Any:
    """One JSON-RPC call with a short timeout; None if the node does not answer."""
    payload = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    ).encode()
    request = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_RPC_TIMEOUT) as response:
            answer = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return answer.get("result") if isinstance(answer, dict) else None


def _hex_int(value: Any) -> int | None:
    return int(value, 16) if isinstance(value, str) and value.startswith("0x") else None


def _http_url(rpc: str) -> str:
    """chopsticks serves plain HTTP JSON-RPC on its WebSocket port."""
    return "http://" + rpc.removeprefix("ws://") if rpc.startswith("ws://") else rpc


def _answers(entry: dict[str, Any]) -> bool:
    if entry.get("kind") == "substrate":
        # Asset Hub, and still the genesis hash this run was set up with: after a query for an
        # unknown block hash chopsticks reports another one and refuses every signature.
        url = _http_url(str(entry.get("rpc")))
        return bool(
            _rpc(url, "system_chain") == CHAIN_NAME
            and _rpc(url, "chain_getBlockHash", [0]) == entry.get("genesis_hash")
        )
    return _hex_int(_rpc(str(entry.get("rpc")), "eth_chainId")) == entry.get("chain_id")


def _block_number(kind: Any, rpc: str) -> int | None:
    if kind == "substrate":
        header = _rpc(_http_url(rpc), "chain_getHeader")
        return _hex_int(header.get("number")) if isinstance(header, dict) else None
    return _hex_int(_rpc(rpc, "eth_blockNumber"))


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        child = _CHILDREN.get(pid)
        if child is not None:
            if not child.running:
                return True
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
            if _gone(pid):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _signal(pid: int, signum: signal.Signals) -> None:
    """Signal anvil's whole process group when it leads one (it does: start_new_session), so a
    node wrapper's child goes too; otherwise just the pid."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stop(entry: dict[str, Any]) -> str:
    """Stop one recorded process if it is still ours; one line saying what happened."""
    name, pid, port = entry.get("chain", "?"), entry.get("pid"), entry.get("port")
    if not isinstance(pid, int) or not _is_ours(entry):
        if isinstance(pid, int):
            _CHILDREN.pop(pid, None)
        return f"{name}: pid {pid} was not running (nothing signalled)"
    _signal(pid, signal.SIGTERM)
    how = "stopped"
    if not _wait_gone(pid, _STOP_TIMEOUT):
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, _STOP_TIMEOUT)
        how = "killed (SIGKILL after SIGTERM timed out)"
    _CHILDREN.pop(pid, None)
    return f"{name}: {how} {entry.get('program', 'anvil')} pid {pid} on {HOST}:{port}"


# --------------------------------------------------------------------------- state files


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialize up/down on one state directory, so two `up`s never start two devnets."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DevnetError(f"{path} is unreadable ({error}); remove it after checking") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise DevnetError(f"{path} is not a devnet record; remove it after checking")
    return data


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    _write_atomic(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")


def _processes(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in state["processes"] if isinstance(p, dict)]


def _archive_previous_run(state_dir: Path) -> Path | None:
    """Move an old ledger and checkpoint store aside (see the module docstring)."""
    stale = [
        path
        for path in (
            state_dir / LEDGER_FILE,
            state_dir / f"{LEDGER_FILE}-wal",
            state_dir / f"{LEDGER_FILE}-shm",
            state_dir / CHECKPOINT_DIR,
        )
        if path.exists()
    ]
    if not stale:
        return None
    target = state_dir / ARCHIVE_DIR / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target.mkdir(parents=True)
    for path in stale:
        shutil.move(str(path), str(target / path.name))
    return target


# --------------------------------------------------------------------------- config


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for the ASCII values written here.
    return json.dumps(value)


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _checksum(address: bytes) -> str:
    """EIP-55 mixed case, so addresses in the file can be pasted into any wallet or explorer."""
    return str(Web3.to_checksum_address(address))


def _render_config(
    chains: Sequence[tuple[ChainSpec, str, dict[str, bytes]]],
    validators: Sequence[bytes],
    attester_keys: Sequence[bytes],
    substrate_seeds: Sequence[bytes] | None = None,
    assethub: tuple[str, dict[str, object]] | None = None,
) -> str:
    lines = [
        "# Written by `passerelle devnet up`. Devnet only: every key below is a throwaway",
        "# (anvil's public development accounts, //Alice, and attester keys made for this run).",
        "devnet = true",
        "",
        "[ledger]",
        f"location = {_toml_string(LEDGER_FILE)}",
        "",
        "[committee]",
        "validators = [" + ", ".join(_toml_string(_checksum(v)) for v in validators) + "]",
        f"threshold = {THRESHOLD}",
        f"checkpoint_store = {_toml_string(CHECKPOINT_DIR)}",
    ]
    for spec, rpc, contracts in chains:
        lines += [
            "",
            "[[chains]]",
            f"name = {_toml_string(spec.name)}",
            f"domain = {spec.domain}",
            'kind = "evm"',
            f"rpc = [{_toml_string(rpc)}]",
            f"chain_id = {spec.chain_id}",
            f"finality = {_toml_string(FINALITY)}",
            "start_block = 0",
        ]
        for key in ("outbox", "inbox", "ping", "token_bridge", "token", "wrapped_token"):
            if key in contracts:
                lines.append(f"{key} = {_toml_string(_checksum(contracts[key]))}")
    if assethub is not None:
        rpc, setup = assethub
        collections = setup["collections"]
        signatories = setup["signatories"]
        assert isinstance(collections, dict) and isinstance(signatories, list)
        lines += [
            "",
            "# chopsticks (Rococo Asset Hub): every block is final once built, no GRANDPA",
            "# justifications and no read proofs; the finality policy says so.",
            "[[chains]]",
            f"name = {_toml_string(ASSETHUB.name)}",
            f"domain = {ASSETHUB.domain}",
            'kind = "substrate"',
            f"rpc = [{_toml_string(rpc)}]",
            f"finality = {_toml_string(FINALITY_POLICY)}",
            f"genesis_hash = {_toml_string(str(setup['genesis_hash']))}",
            "# The committee's multisig (of the attesters' substrate_key accounts): owner, issuer",
            "# and admin of the replay-guard collections (item = nonce) and the wrapped asset.",
            f"multisig = {_toml_string(str(setup['multisig']))}",
            f"multisig_threshold = {int(str(setup['multisig_threshold']))}",
            "signatories = ["
            + ", ".join(_toml_string(str(s)) for s in signatories)
            + "]  # the attesters' substrate_key accounts",
            "collections = { "
            + ", ".join(
                f"{_toml_string(str(origin))} = {int(str(cid))}"
                for origin, cid in collections.items()
            )
            + " }  # EVM origin domain -> Uniques collection",
            f"asset_id = {int(str(setup['asset_id']))}",
            "asset_home = { "
            + f"domain = {CHAINS[0].domain}, "
            + f"token = {_toml_string(_checksum(chains[0][2]['token']))}"
            + " }  # the EVM token the asset wraps",
        ]
    lines += ["", "[relayer]", f"key = {_toml_string(_hex(RELAYER_KEY))}"]
    seeds: Sequence[bytes | None] = (
        [None] * len(attester_keys) if substrate_seeds is None else substrate_seeds
    )
    for attester_key, seed in zip(attester_keys, seeds, strict=True):
        lines += ["", "[[attesters]]", f"key = {_toml_string(_hex(attester_key))}"]
        if seed is not None:  # sr25519 mini-secret: the attester's assethub identity
            lines.append(f"substrate_key = {_toml_string(_hex(seed))}")
    lines += ["", "[client]", f"key = {_toml_string(_hex(CLIENT_KEY))}"]
    if assethub is not None:
        lines.append(f"substrate_uri = {_toml_string(SUBSTRATE_CLIENT_URI)}")
    lines.append("")
    return "\n".join(lines)


def _attester_keys() -> list[bytes]:
    """Fresh random keys, ordered by address so attester i is committee member i."""
    keys: list[bytes] = []
    while len(keys) < ATTESTERS:
        key = secrets.token_bytes(32)
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:  # all but ~2^-128 of draws
            keys.append(key)
    return sorted(keys, key=address_of)


# --------------------------------------------------------------------------- public API


def _one_line(error: BaseException) -> str:
    """The first line of an error, plus the last line of an anvil log tail when it has one
    (that is where anvil says why it died: "Address already in use", …)."""
    text = str(error).strip() or type(error).__name__
    first, _, rest = text.partition("\n")
    first = first.removesuffix("; its log ends:").strip()
    tail = [line.strip() for line in rest.splitlines() if line.strip()]
    return f"{first}: {tail[-1][:200]}" if tail else first


def _healthy(state_dir: Path, state: dict[str, Any], *, assethub: bool) -> bool:
    processes = _processes(state)
    expected = {spec.name for spec in CHAINS} | ({ASSETHUB.name} if assethub else set())
    return (
        state.get("complete") is True
        and (state_dir / CONFIG_FILE).is_file()
        and {p.get("chain") for p in processes} == expected
        and all(_is_ours(p) and _answers(p) for p in processes)
    )


def up(
    state_dir: Path,
    *,
    block_time: float = 1.0,
    ports: Sequence[int] | None = None,
    assethub: bool = True,
) -> Path:
    """Start the devnet (or find it running) and return the path of its config TOML.

    If ``state_dir/devnet.json`` records a complete devnet whose every process is alive, is
    still the recorded anvil or chopsticks and answers (``eth_chainId``; ``system_chain`` and
    the recorded genesis hash), nothing is started and the existing config path is returned.
    Otherwise whatever that record names is stopped and a fresh devnet is started: two anvils
    with ``block_time``-second blocks on free ports of 127.0.0.1 (or on ``ports``, one per
    chain of :data:`CHAINS`, e.g. to test a busy port), contracts deployed and linked, three
    fresh attester keys with threshold 2, and - when ``assethub`` is True - chopsticks
    (:data:`ASSETHUB`, on a free port) with the committee's multisig, collections and wrapped
    asset set up (:func:`devnet.substrate.setup_asset_hub`) while the EVM contracts deploy;
    then the config is written and checked with :func:`relayer.config.load_config`.

    Raises :class:`DevnetError` (one line) on any failure, having stopped what it started.
    """
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        config_path = state_dir / CONFIG_FILE
        previous = _read_state(state_dir)
        if previous is not None:
            if _healthy(state_dir, previous, assethub=assethub):
                return config_path
            for entry in _processes(previous):
                _stop(entry)
            (state_dir / STATE_FILE).unlink(missing_ok=True)
        return _start_fresh(state_dir, block_time=block_time, ports=ports, assethub=assethub)


def _substrate_seeds() -> list[bytes]:
    """Fresh sr25519 seeds for the attesters' Substrate identities (not their EVM keys)."""
    return [secrets.token_bytes(32) for _ in range(ATTESTERS)]


def _start_assethub(
    state_dir: Path,
    seeds: Sequence[bytes],
    *,
    state: dict[str, Any],
    state_lock: threading.Lock,
    started: list[ChopsticksProcess],
    abort: threading.Event,
) -> tuple[str, dict[str, object]]:
    """Start chopsticks (funding //Alice, the attesters and the multisig), record it, and set
    up the multisig's collections and asset. Runs in a worker thread next to the deploys."""
    publics = [bytes(keypair_from_seed(seed).public_key) for seed in seeds]
    multisig = multisig_account(publics, THRESHOLD)
    funded = {ALICE: DEV_BALANCE, _hex(multisig): DEV_BALANCE}
    funded.update({_hex(public): DEV_BALANCE for public in publics})
    try:
        chain = start_chopsticks(
            funded=funded,
            state_dir=state_dir / "chopsticks",
            log_path=state_dir / f"chopsticks-{ASSETHUB.name}.log",
            block_mode="Instant",
        )
    except ChopsticksError as error:
        raise DevnetError(f"{ASSETHUB.name}: {_one_line(error)}") from None
    started.append(chain)
    _CHILDREN[chain.pid] = chain
    seen = _inspect(chain.pid)
    with state_lock:
        state["processes"].append(
            {
                "chain": ASSETHUB.name,
                "kind": "substrate",
                "program": "chopsticks",
                "domain": ASSETHUB.domain,
                "chain_id": None,
                "pid": chain.pid,
                "port": chain.port,
                "port_arg": 0,  # started with --port 0; chopsticks announced the real one
                "config_arg": str(chain.config_path),
                "rpc": chain.ws_url,
                "binary": str(chopsticks_entry()),
                "log": str(chain.log_path),
                "start_time": None if seen is None else seen[1],
                "block_mode": chain.block_mode,
                "finality": chain.finality_policy,
                "genesis_hash": None,
            }
        )
        _write_state(state_dir, state)
    if abort.is_set():
        raise DevnetError(f"{ASSETHUB.name}: not set up (another chain failed)")
    try:
        setup = setup_asset_hub(
            chain.ws_url,
            committee_seeds=seeds,
            threshold=THRESHOLD,
            evm_origins=[spec.domain for spec in CHAINS],
            client_seed_uri=SUBSTRATE_CLIENT_URI,
        )
    except SubstrateSetupError as error:
        raise DevnetError(f"{ASSETHUB.name}: {_one_line(error)}") from None
    with state_lock:
        for entry in state["processes"]:
            if entry["chain"] == ASSETHUB.name:
                entry["genesis_hash"] = setup["genesis_hash"]
        _write_state(state_dir, state)
    return chain.ws_url, setup


def _start_fresh(
    state_dir: Path, *, block_time: float, ports: Sequence[int] | None, assethub: bool
) -> Path:
    if ports is not None and len(ports) != len(CHAINS):
        raise DevnetError(f"give {len(CHAINS)} ports (one per chain), got {len(ports)}")
    try:
        binary = anvil_binary()
        if assethub:
            chopsticks_entry()
    except (AnvilError, ChopsticksError) as error:
        raise DevnetError(_one_line(error)) from None
    state: dict[str, Any] = {
        "version": _STATE_VERSION,
        "complete": False,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": str(state_dir / CONFIG_FILE),
        "processes": [],
    }
    started: list[AnvilProcess] = []
    hub_started: list[ChopsticksProcess] = []
    state_lock = threading.Lock()  # the assethub worker records its process too
    abort = threading.Event()
    try:
        for index, spec in enumerate(CHAINS):
            try:
                chain = start_anvil(
                    port=None if ports is None else ports[index],
                    chain_id=spec.chain_id,
                    block_time=block_time,
                    log_path=state_dir / f"anvil-{spec.name}.log",
                )
            except AnvilError as error:
                raise DevnetError(f"{spec.name}: {_one_line(error)}") from None
            started.append(chain)
            _CHILDREN[chain.pid] = chain
            seen = _inspect(chain.pid)
            state["processes"].append(
                {
                    "chain": spec.name,
                    "domain": spec.domain,
                    "chain_id": spec.chain_id,
                    "pid": chain.pid,
                    "port": chain.port,
                    "rpc": chain.rpc_url,
                    "binary": str(binary),
                    "log": str(chain.log_path),
                    "start_time": None if seen is None else seen[1],
                    "block_time": block_time,
                    "finality": FINALITY,
                }
            )
            # Recorded at once, so a `down` after a crash here still finds this process.
            _write_state(state_dir, state)

        attester_keys = _attester_keys()
        validators = [address_of(key) for key in attester_keys]
        substrate_seeds = _substrate_seeds() if assethub else None
        # The chains are independent until linked: deploy both EVM chains in parallel (one
        # block each), and start and set up assethub (the slow part) next to them.
        with ThreadPoolExecutor(max_workers=len(CHAINS) + 1) as pool:
            hub_future = (
                None
                if substrate_seeds is None
                else pool.submit(
                    _start_assethub,
                    state_dir,
                    substrate_seeds,
                    state=state,
                    state_lock=state_lock,
                    started=hub_started,
                    abort=abort,
                )
            )
            try:
                futures = [
                    pool.submit(
                        deploy_evm_chain,
                        chain.rpc_url,
                        domain=spec.domain,
                        deployer_key=DEPLOYER_KEY,
                        committee=validators,
                        threshold=THRESHOLD,
                        home_token=spec.home_token,
                        client=address_of(CLIENT_KEY),
                    )
                    for spec, chain in zip(CHAINS, started, strict=True)
                ]
                deployed = [future.result() for future in futures]
                link_evm_chains(
                    *(
                        EvmDeployment(chain.rpc_url, spec.domain, contracts)
                        for spec, chain, contracts in zip(CHAINS, started, deployed, strict=True)
                    ),
                    deployer_key=DEPLOYER_KEY,
                )
            except BaseException:
                abort.set()  # assethub: skip the setup; its process is stopped below
                raise
            hub = None if hub_future is None else hub_future.result()
            if hub is not None:  # the EVM inboxes and bridges learn assethub's outbox and escrow
                for spec, chain, contracts in zip(CHAINS, started, deployed, strict=True):
                    link_substrate_remote(
                        EvmDeployment(chain.rpc_url, spec.domain, contracts),
                        domain=ASSETHUB.domain,
                        outbox=bytes.fromhex(str(hub[1]["genesis_hash"])[2:]),
                        bridge_account=bytes.fromhex(str(hub[1]["multisig"])[2:]),
                        deployer_key=DEPLOYER_KEY,
                    )

        archived = _archive_previous_run(state_dir)
        config_path = state_dir / CONFIG_FILE
        _write_atomic(
            config_path,
            _render_config(
                [
                    (spec, chain.rpc_url, contracts)
                    for spec, chain, contracts in zip(CHAINS, started, deployed, strict=True)
                ],
                validators,
                attester_keys,
                substrate_seeds,
                hub,
            ),
        )
        load_config(config_path)  # the file we hand out must be one the relayer accepts
        with state_lock:
            state["complete"] = True
            state["archived_previous_run"] = None if archived is None else str(archived)
            _write_state(state_dir, state)
        return config_path
    except BaseException as error:
        for process in [*started, *hub_started]:
            process.stop()
            _CHILDREN.pop(process.pid, None)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        if isinstance(error, DevnetError):
            raise
        if isinstance(error, DeployError | ConfigError | OSError):
            raise DevnetError(f"devnet setup failed: {_one_line(error)}") from error
        if isinstance(error, Exception):
            raise DevnetError(
                f"devnet setup failed: {type(error).__name__}: {_one_line(error)}"
            ) from error
        raise  # KeyboardInterrupt and friends: cleaned up, now let them through


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes recorded in ``state_dir/devnet.json``; remove the record.

    Each pid is signalled only if it is still the recorded anvil (see :func:`_is_ours`): its
    process group gets SIGTERM, then SIGKILL if it is still there after a few seconds. Logs,
    the config and the ledger stay. Returns one line per recorded process saying what was done
    (an empty list when nothing was recorded, so a second ``down`` is harmless).
    """
    state_dir = Path(state_dir).resolve()
    if not (state_dir / STATE_FILE).exists():
        return []
    with _locked(state_dir):
        state = _read_state(state_dir)
        if state is None:
            return []
        lines = [_stop(entry) for entry in _processes(state)]
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return lines


def status(state_dir: Path) -> dict[str, Any]:
    """What runs in ``state_dir``: JSON-ready, for ``passerelle devnet status [--json]``.

    ``{"state_dir", "config" (path or None), "running" (every recorded chain alive),
    "chains": [{"name", "domain", "chain_id", "rpc", "port", "pid", "alive", "block",
    "finality", "log"}]}`` where ``block`` is the latest block number, or None when the chain
    is not ours-and-alive or does not answer. Chains and their finality come from the config
    when it is readable, else from ``devnet.json``.
    """
    state_dir = Path(state_dir).resolve()
    config_path = state_dir / CONFIG_FILE
    state = _read_state(state_dir)
    records = {str(p.get("chain")): p for p in _processes(state)} if state else {}
    chains: list[dict[str, Any]] = []
    try:
        config = load_config(config_path) if config_path.is_file() else None
    except ConfigError:
        config = None
    described: list[tuple[str, Any, Any, Any, Any]]
    if config is not None:
        described = [
            (c.name, c.domain, c.chain_id, c.rpc[0], str(c.finality)) for c in config.chains
        ]
    else:
        described = [
            (name, p.get("domain"), p.get("chain_id"), p.get("rpc"), p.get("finality"))
            for name, p in records.items()
        ]
    for name, domain, chain_id, rpc, finality in described:
        record = records.get(name)
        alive = record is not None and _is_ours(record)
        kind = None if record is None else record.get("kind")
        block = _block_number(kind, str(rpc)) if alive else None
        chains.append(
            {
                "name": name,
                "domain": domain,
                "chain_id": chain_id,
                "rpc": rpc,
                "port": None if record is None else record.get("port"),
                "pid": None if record is None else record.get("pid"),
                "alive": alive,
                "block": block,
                "finality": finality,
                "log": None if record is None else record.get("log"),
            }
        )
    return {
        "state_dir": str(state_dir),
        "config": str(config_path) if config_path.is_file() else None,
        "running": bool(records) and all(c["alive"] for c in chains if c["name"] in records),
        "chains": chains,
    }
