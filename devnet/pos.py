"""The devnet's proof-of-stake chain (``passerelle devnet up --pos``): Lodestar driving the
EthereumJS client through the authenticated Engine API.

Usage::

    chain = start_pos_chain(state_dir / "gamma", chain_id=31340, funded={address: wei})
    chain.rpc_url            # the execution client's JSON-RPC (deploy, send, eth_getProof)
    chain.beacon_api         # Lodestar's REST API (the light-client endpoints)
    root = wait_for_checkpoint(chain.beacon_api)   # a finalized block root with a bootstrap
    info = beacon_info(chain.beacon_api)            # genesis, fork schedule, slot time
    chain.stop()

How the chain is built (``docs/pos-devnet.md`` has the why and the pitfalls):

1. :func:`execution_genesis` writes a geth-style genesis: every fork through Shanghai at block
   0 / time 0, terminal total difficulty 0 (proof of stake from the first block), the devnet's
   accounts funded. Shanghai is as far as it goes: Lodestar 1.5.1 stops at Capella.
2. The EthereumJS client (``@ethereumjs/client`` 0.10.5) starts on it with ``--sync none``
   (a single node: no devp2p server, so nothing listens beyond 127.0.0.1), its JSON-RPC and
   its Engine API (JWT-authenticated, :func:`write_jwt_secret`) on free loopback ports, and
   ``--saveReceipts`` (receipts and logs are what the relayer reads). Its block-0 hash is read
   back, never computed here: Lodestar must build on exactly that block.
3. ``lodestar dev`` (``@chainsafe/lodestar`` 1.5.1, minimal preset) makes a beacon genesis on
   that hash with 8 interop validators (4 sync-committee seats each), all run in-process,
   Altair, Bellatrix and Capella at epoch 0 and 2-second slots; its REST API serves the
   namespaces the validators, the devnet and the light client use, discv5 and eth1 following
   are off, libp2p listens on 127.0.0.1.

Both are node processes, preloaded (``NODE_OPTIONS=--require``) with :data:`POLYFILL` (Node 20
has no ``Promise.withResolvers``, which the EthereumJS client calls), started in their own
process group with an environment scrubbed of ``LODESTAR_*`` (Lodestar reads those as
command-line arguments: a stray one in the user's shell would change the chain). Lodestar 1.5.1
ignores SIGTERM: :data:`BEACON_STOP_GRACE` is how long it gets before SIGKILL.

Every failure is a :class:`PosChainError` whose ``str()`` is one line (plus the log tail where
the process said why), after stopping what this call started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from adapters.jsonrpc import RpcError, call_sync
from adapters.redact import redact_url
from devnet.process import HOST, NodeProcess, log_tail
from devnet.tools import ToolError, ethereumjs_script, lodestar_script, node_executable
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data, parse_quantity

__all__ = [
    "BEACON_STOP_GRACE",
    "FAR_FUTURE_EPOCH",
    "FINALITY_POLICY",
    "GENESIS_BASE_FEE",
    "GENESIS_GAS_LIMIT",
    "POLYFILL",
    "PRESET",
    "SECONDS_PER_SLOT",
    "VALIDATORS",
    "BeaconInfo",
    "PosChain",
    "PosChainError",
    "PosNodeProcess",
    "beacon_get",
    "beacon_info",
    "child_environment",
    "execution_genesis",
    "forks_from_spec",
    "start_pos_chain",
    "wait_for_checkpoint",
    "write_jwt_secret",
]

FINALITY_POLICY: Final = "beacon"
"""The relayer's finality policy for this chain: its attesters follow the beacon chain's sync
committee from a checkpoint and prove state under the finalized execution state root."""

PRESET: Final = "minimal"  # 8 slots per epoch, a sync committee of 32, periods of 64 slots
SECONDS_PER_SLOT: Final = 2
"""Two, not one: at 1-second slots on a busy 2-core machine (the test suite's other worker, its
chains) the in-process validators miss slots and sync-committee duties, the finality updates
Lodestar serves then carry fewer than 2/3 of the committee, and a light client (rightly) cannot
advance; a second per slot leaves them the time."""
VALIDATORS: Final = 8
"""Interop validators, all in Lodestar's process. The minimal preset's sync committee still has
32 seats (what the light client verifies: a 32-bit participation vector, an aggregate over 32
seat keys); with 8 validators at full balance each holds exactly 4 of them (the spec samples
seats with replacement, cycling through the shuffled validators). 8, not 32: every slot the node
signs and verifies one sync-committee message per validator, so a quarter of them cut the
beacon node's CPU by about a fifth (measured, chains side by side: 0.122-0.128 -> 0.095 CPU s
per second idle, start-up 4.5 -> 3.1 CPU s; through tests/test_pos_chain.py 0.138 -> 0.108) on
the 2 cores the test suite shares, and finality came no later (epoch 8 final at slot 80 with
either). Lodestar's own ``dev`` default is 8."""
FAR_FUTURE_EPOCH: Final = 2**64 - 1  # the spec's "not scheduled"
GENESIS_GAS_LIMIT: Final = 30_000_000
GENESIS_BASE_FEE: Final = 10**9  # 1 gwei at block 0; EIP-1559 lowers it while blocks are empty
BEACON_STOP_GRACE: Final = 2.0
"""Seconds Lodestar gets after SIGTERM before SIGKILL: 1.5.1 does not exit on SIGTERM, so a
longer wait only slows ``down`` (its database is thrown away with the chain anyway)."""

POLYFILL: Final = """\
// Written by passerelle's devnet (devnet/pos.py); preloaded with NODE_OPTIONS=--require.
// @ethereumjs/client 0.10.5 calls Promise.withResolvers, which Node.js has only from 22;
// on Node 20 this stand-in (the TC39 proposal's semantics) takes its place.
"use strict";
if (typeof Promise.withResolvers !== "function") {
  Object.defineProperty(Promise, "withResolvers", {
    configurable: true,
    writable: true,
    value: function withResolvers() {
      let resolve;
      let reject;
      const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
"""

_EXECUTION_STARTUP = 90.0  # the client loads ~100 MB of JavaScript; slow on a busy machine
_BEACON_STARTUP = 90.0
_POLL = 0.25
_HTTP_TIMEOUT = 3.0
_MAX_ANSWER_BYTES = 4 << 20  # a bootstrap is ~25 kB in the minimal preset; a spec ~10 kB
_FORKS: Final = ("altair", "bellatrix", "capella", "deneb", "electra")


_T = TypeVar("_T")


class PosChainError(RuntimeError):
    """The proof-of-stake chain could not be started or read; ``str()`` is one line (plus a
    log tail after "its log ends:")."""


# --------------------------------------------------------------------------- pure parts


def execution_genesis(chain_id: int, funded: Mapping[str, int]) -> dict[str, Any]:
    """The geth-style genesis of the execution chain: proof of stake from block 0, Shanghai.

    ``funded`` maps 0x-addresses to wei. Every fork through Shanghai is active at block 0 /
    timestamp 0 and the terminal total difficulty is 0 with difficulty 0, so block 0 is the
    merge block and Lodestar's first payload builds on it. Raises :class:`PosChainError` for a
    chain id or balance that is not a positive / non-negative integer, or a bad address.
    """
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 < chain_id < 2**63:
        raise PosChainError(f"chain id must be a positive 63-bit integer, got {chain_id!r}")
    alloc: dict[str, dict[str, str]] = {}
    for address, balance in funded.items():
        try:
            raw = parse_data(address, "funded address", 20)
        except DecodeError as error:
            raise PosChainError(str(error)) from None
        if isinstance(balance, bool) or not isinstance(balance, int) or not 0 <= balance < 2**256:
            raise PosChainError(f"balance of {address} must be a uint256, got {balance!r}")
        alloc["0x" + raw.hex()] = {"balance": hex(balance)}
    block_forks = (
        "homestead",
        "eip150",
        "eip155",
        "eip158",
        "byzantium",
        "constantinople",
        "petersburg",
        "istanbul",
        "muirGlacier",
        "berlin",
        "london",
        "arrowGlacier",
        "grayGlacier",
        "mergeNetsplit",
    )
    config: dict[str, Any] = {"chainId": chain_id}
    config.update({f"{fork}Block": 0 for fork in block_forks})
    config.update(shanghaiTime=0, terminalTotalDifficulty=0, terminalTotalDifficultyPassed=True)
    zero32 = "0x" + "00" * 32
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": "0x0",
        "extraData": "0x",
        "gasLimit": hex(GENESIS_GAS_LIMIT),
        "difficulty": "0x0",
        "mixHash": zero32,
        "coinbase": "0x" + "00" * 20,
        "baseFeePerGas": hex(GENESIS_BASE_FEE),
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": zero32,
        "alloc": alloc,
    }


def child_environment(base: Mapping[str, str], polyfill: Path) -> dict[str, str]:
    """The environment the two node processes get: ``base`` without any ``LODESTAR_*``
    variable (Lodestar reads those as CLI arguments), and with ``NODE_OPTIONS`` preloading
    ``polyfill`` (replacing the user's NODE_OPTIONS: a ``--max-old-space-size`` or an
    ``--inspect`` there must not reach a devnet node either).

    ``NODE_BACKEND=js`` selects bcrypto's pure-JavaScript backend. Lodestar imports bcrypto
    (through discv5, for secp256k1 and ENRs) but this single node with discovery off uses it
    only at start-up, so ``make pos-tools`` does not compile bcrypto's native code (26 of the
    build's ~70 CPU s); without the variable bcrypto would require that native build and
    Lodestar would not start. Measured side by side, 150 s from genesis: Lodestar 17.8 CPU s
    native, 18.3 with the JS backend (noise at load 7-10), both finalized epoch 7."""
    env = {k: v for k, v in base.items() if not k.upper().startswith("LODESTAR_")}
    env["NODE_OPTIONS"] = "--require " + json.dumps(str(polyfill))
    env["NO_COLOR"] = "1"  # logs without ANSI codes
    env["NODE_BACKEND"] = "js"  # bcrypto's JS backend: its native build is skipped (above)
    return env


def forks_from_spec(spec: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """``{fork: (version "0x…", epoch)}`` of every fork the node's ``/eth/v1/config/spec``
    schedules (an epoch of 2**64-1 means not scheduled and is left out), in fork order.

    Raises :class:`PosChainError` when a scheduled fork's version is not 4 bytes of hex or its
    epoch not a decimal u64: the config written from this is trusted by every attester.
    """
    forks: dict[str, tuple[str, int]] = {}
    for fork in _FORKS:
        epoch_text = spec.get(f"{fork.upper()}_FORK_EPOCH")
        version = spec.get(f"{fork.upper()}_FORK_VERSION")
        if epoch_text is None:
            continue
        if not isinstance(epoch_text, str) or not epoch_text.isdigit():
            raise PosChainError(f"beacon spec: {fork} epoch {epoch_text!r} is not a u64")
        epoch = int(epoch_text)
        if epoch >= FAR_FUTURE_EPOCH:
            continue
        try:
            raw = parse_data(version, f"beacon spec: {fork} fork version", 4)
        except DecodeError as error:
            raise PosChainError(str(error)) from None
        forks[fork] = ("0x" + raw.hex(), epoch)
    return forks


def write_jwt_secret(path: Path) -> None:
    """A fresh 32-byte Engine API secret, hex, readable by its owner only: whoever has it can
    drive the execution client's fork choice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write("0x" + secrets.token_hex(32) + "\n")


# --------------------------------------------------------------------------- beacon API


def beacon_get(api: str, path: str, *, timeout: float = _HTTP_TIMEOUT) -> Any | None:
    """``GET api+path`` as JSON, its ``data`` member; None while the node says "not yet"
    (Lodestar answers HTTP 500 for "not ready", 404 for "no such block", and refuses
    connections while starting). Raises :class:`PosChainError` for an answer that is not a
    JSON object with ``data`` (something else holds the port)."""
    request = urllib.request.Request(api + path, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(_MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError:
        return None
    except (OSError, urllib.error.URLError):
        return None
    if len(body) > _MAX_ANSWER_BYTES:
        raise PosChainError(f"{redact_url(api)}{path}: answer over {_MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(body)
    except ValueError:
        raise PosChainError(f"{redact_url(api)}{path}: not JSON (is this a beacon node?)") from None
    if not isinstance(answer, dict) or "data" not in answer:
        raise PosChainError(f"{redact_url(api)}{path}: no data member (is this a beacon node?)")
    return answer["data"]


@dataclass(frozen=True)
class BeaconInfo:
    """What the relayer config needs about the beacon chain (all from its own API)."""

    genesis_validators_root: str
    genesis_time: int
    seconds_per_slot: int
    preset: str
    forks: dict[str, tuple[str, int]]


def beacon_info(api: str) -> BeaconInfo:
    """Genesis, slot time, preset and fork schedule of the beacon node at ``api``; raises
    :class:`PosChainError` (one line) if it does not answer them or answers them malformed."""
    genesis = beacon_get(api, "/eth/v1/beacon/genesis")
    spec = beacon_get(api, "/eth/v1/config/spec")
    if not isinstance(genesis, dict) or not isinstance(spec, dict):
        raise PosChainError(f"{redact_url(api)} does not serve its genesis and spec")
    try:
        root = parse_data(genesis.get("genesis_validators_root"), "genesis_validators_root", 32)
    except DecodeError as error:
        raise PosChainError(str(error)) from None
    time_text, slot_text = genesis.get("genesis_time"), spec.get("SECONDS_PER_SLOT")
    preset = spec.get("PRESET_BASE")
    if not (isinstance(time_text, str) and time_text.isdigit()):
        raise PosChainError(f"beacon genesis_time {time_text!r} is not a u64")
    if not (isinstance(slot_text, str) and slot_text.isdigit() and int(slot_text) > 0):
        raise PosChainError(f"beacon SECONDS_PER_SLOT {slot_text!r} is not a positive integer")
    if not isinstance(preset, str) or preset not in ("minimal", "mainnet"):
        raise PosChainError(f"beacon PRESET_BASE {preset!r} is not minimal or mainnet")
    return BeaconInfo(
        genesis_validators_root="0x" + root.hex(),
        genesis_time=int(time_text),
        seconds_per_slot=int(slot_text),
        preset=preset,
        forks=forks_from_spec(spec),
    )


def wait_for_checkpoint(api: str, *, timeout: float = 180.0) -> str:
    """The block root (0x-hex) of the beacon chain's finalized checkpoint, once there is one
    past genesis whose light-client bootstrap the node serves (HTTP 200).

    The genesis checkpoint (epoch 0, root zero) is no checkpoint; the first real one comes
    about four epochs in (~65 s with 2-second slots on an idle machine; longer when the CPU is
    shared: missed attestations delay justification). Raises :class:`PosChainError` after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    seen = "none yet"
    while True:
        checkpoints = beacon_get(api, "/eth/v1/beacon/states/head/finality_checkpoints")
        finalized = checkpoints.get("finalized") if isinstance(checkpoints, dict) else None
        if isinstance(finalized, dict):
            epoch, root = finalized.get("epoch"), finalized.get("root")
            seen = f"epoch {epoch}"
            if isinstance(epoch, str) and epoch.isdigit() and int(epoch) > 0:
                try:
                    raw = parse_data(root, "finalized root", 32)
                except DecodeError as error:
                    raise PosChainError(str(error)) from None
                root_hex = "0x" + raw.hex()
                if beacon_get(api, f"/eth/v1/beacon/light_client/bootstrap/{root_hex}"):
                    return root_hex
        if time.monotonic() > deadline:
            raise PosChainError(
                f"the beacon chain at {redact_url(api)} finalized nothing with a light-client "
                f"bootstrap within {timeout:g} s (finalized: {seen})"
            )
        time.sleep(_POLL)


# --------------------------------------------------------------------------- processes


class PosNodeProcess(NodeProcess):
    """One of the chain's two node processes: its program name, port and log, and how long
    it gets between SIGTERM and SIGKILL."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        program: str,
        port: int,
        log_path: Path,
        stop_grace: float,
    ) -> None:
        """Wrap a started process; :func:`start_pos_chain` makes these."""
        super().__init__(process)
        self.program = program
        self.port = port
        self.log_path = log_path
        self.stop_grace = stop_grace

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL after :attr:`stop_grace` (or ``timeout``) seconds."""
        super().stop(self.stop_grace if timeout is None else timeout)

    def __repr__(self) -> str:
        """Show program, pid and port."""
        return f"PosNodeProcess({self.program}, pid={self.pid}, port={self.port})"


@dataclass
class PosChain:
    """A running proof-of-stake chain: the execution client and the beacon node."""

    chain_id: int
    execution: PosNodeProcess
    beacon: PosNodeProcess
    rpc_port: int
    engine_port: int
    beacon_port: int
    p2p_port: int
    genesis_hash: str
    node: str
    ethereumjs: Path
    lodestar: Path

    @property
    def rpc_url(self) -> str:
        """The execution client's JSON-RPC, ``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.rpc_port}"

    @property
    def beacon_api(self) -> str:
        """Lodestar's REST API, ``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.beacon_port}"

    def stop(self) -> None:
        """Stop the beacon node, then the execution client it drives."""
        self.beacon.stop()
        self.execution.stop()


def _spawn(
    command: list[str],
    program: str,
    port: int,
    folder: Path,
    env: dict[str, str],
    *,
    stop_grace: float,
) -> PosNodeProcess:
    """Start ``command`` detached, its output appended to ``folder/<program>.log``."""
    log_path = folder / f"{program}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
            start_new_session=True,  # its own group: `down` signals exactly it, it outlives us
        )
    return PosNodeProcess(
        process, program=program, port=port, log_path=log_path, stop_grace=stop_grace
    )


def _await(
    process: PosNodeProcess, ready: Callable[[], _T | None], what: str, timeout: float
) -> _T:
    """Poll ``ready`` until it returns something; :class:`PosChainError` with the log tail if
    ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while (answer := ready()) is None:
        if not process.running:
            raise PosChainError(
                f"{process.program} exited before it would {what}; its log ends:\n"
                f"{log_tail(process.log_path)}"
            )
        if time.monotonic() > deadline:
            raise PosChainError(
                f"{process.program} did not {what} within {timeout:g} s; its log ends:\n"
                f"{log_tail(process.log_path)}"
            )
        time.sleep(_POLL)
    return answer


def _block_zero_hash(rpc_url: str, chain_id: int) -> str | None:
    """Block 0's hash once the client answers with ``chain_id``; None while it does not."""
    try:
        answered = parse_quantity(call_sync(rpc_url, "eth_chainId", timeout=1.0), "chainId", 32)
        if answered != chain_id:
            raise PosChainError(
                f"{rpc_url} answers chain id {answered}, not {chain_id}: another node holds "
                "the port"
            )
        block = call_sync(rpc_url, "eth_getBlockByNumber", ["0x0", False], timeout=1.0)
        if not isinstance(block, dict):
            return None
        return "0x" + parse_data(block.get("hash"), "block 0 hash", 32).hex()
    except RpcError:
        return None
    except DecodeError as error:
        raise PosChainError(f"{rpc_url} is not the execution client: {error}") from None


def start_pos_chain(
    folder: Path,
    *,
    chain_id: int,
    funded: Mapping[str, int],
    ports: tuple[int, int, int, int],
    fee_recipient: str = "0x" + "00" * 19 + "01",
) -> PosChain:
    """Start the execution client, then Lodestar on its block 0; return once both answer.

    ``folder`` (created; its ``execution/`` and ``beacon-node/`` databases are wiped: a chain
    is new on every start) receives the genesis, the JWT secret, the polyfill and the two logs
    (``ethereumjs.log``, ``lodestar.log``, appended across runs). ``ports`` are the execution
    JSON-RPC, Engine API, beacon REST and libp2p ports, all bound on 127.0.0.1.

    Raises :class:`PosChainError` (one line, plus a log tail) on any failure, having stopped
    whatever it started; the tools missing is one line naming how to install them.
    """
    try:
        node = node_executable()
        ethereumjs, lodestar = ethereumjs_script(), lodestar_script()
    except ToolError as error:
        raise PosChainError(str(error)) from None
    rpc_port, engine_port, beacon_port, p2p_port = ports
    folder.mkdir(parents=True, exist_ok=True)
    for database in ("execution", "beacon-node"):
        shutil.rmtree(folder / database, ignore_errors=True)
    genesis_path, jwt_path, polyfill = (
        folder / "genesis.json",
        folder / "jwt.hex",
        folder / "polyfill.cjs",
    )
    genesis_path.write_text(json.dumps(execution_genesis(chain_id, funded), indent=1) + "\n")
    write_jwt_secret(jwt_path)
    polyfill.write_text(POLYFILL, encoding="utf-8")
    env = child_environment(os.environ, polyfill)

    execution_command = [
        node,
        str(ethereumjs),
        "--gethGenesis", str(genesis_path),
        "--dataDir", str(folder / "execution"),
        "--sync", "none",  # a single node: no devp2p server (it would bind 0.0.0.0)
        "--rpc", "--rpcAddr", HOST, "--rpcPort", str(rpc_port),
        "--rpcEngine", "--rpcEngineAddr", HOST, "--rpcEnginePort", str(engine_port),
        "--rpcEngineAuth", "true", "--jwtSecret", str(jwt_path),
        "--saveReceipts",  # eth_getTransactionReceipt and eth_getLogs need them
        "--isSingleNode", "--maxPeers", "0", "--discDns", "false", "--discV4", "false",
        "--logLevel", "info",
    ]  # fmt: skip
    execution = _spawn(execution_command, "ethereumjs", rpc_port, folder, env, stop_grace=5.0)
    started: list[PosNodeProcess] = [execution]
    try:
        rpc_url = f"http://{HOST}:{rpc_port}"
        genesis_hash = _await(
            execution,
            lambda: _block_zero_hash(rpc_url, chain_id),
            f"answer on {rpc_url}",
            _EXECUTION_STARTUP,
        )

        beacon_api = f"http://{HOST}:{beacon_port}"
        beacon_command = [
            node,
            str(lodestar),
            "dev",
            "--preset", PRESET,
            "--dataDir", str(folder / "beacon-node"),
            "--reset",
            "--genesisValidators", str(VALIDATORS),
            "--startValidators", f"0..{VALIDATORS - 1}",
            "--genesisEth1Hash", genesis_hash,
            "--params.ALTAIR_FORK_EPOCH", "0",
            "--params.BELLATRIX_FORK_EPOCH", "0",
            "--params.CAPELLA_FORK_EPOCH", "0",
            "--params.TERMINAL_TOTAL_DIFFICULTY", "0",
            "--params.SECONDS_PER_SLOT", str(SECONDS_PER_SLOT),
            "--execution.urls", f"http://{HOST}:{engine_port}",
            "--jwt-secret", str(jwt_path),
            "--rest", "--rest.address", HOST, "--rest.port", str(beacon_port),
            # What the validators, the devnet and the light client use; not debug or lodestar.
            "--rest.namespace", "beacon,config,events,lightclient,node,validator",
            "--beaconNodes", beacon_api,  # its in-process validators (default: port 9596)
            "--eth1", "false", "--discv5", "false", "--mdns", "false",
            "--listenAddress", HOST, "--port", str(p2p_port),
            "--suggestedFeeRecipient", fee_recipient,
            "--logLevel", "info",
        ]  # fmt: skip
        beacon = _spawn(
            beacon_command, "lodestar", beacon_port, folder, env, stop_grace=BEACON_STOP_GRACE
        )
        started.append(beacon)
        _await(
            beacon,
            lambda: beacon_get(beacon_api, "/eth/v1/beacon/genesis"),
            f"serve its genesis on {beacon_api}",
            _BEACON_STARTUP,
        )
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return PosChain(
        chain_id=chain_id,
        execution=execution,
        beacon=beacon,
        rpc_port=rpc_port,
        engine_port=engine_port,
        beacon_port=beacon_port,
        p2p_port=p2p_port,
        genesis_hash=genesis_hash,
        node=node,
        ethereumjs=ethereumjs,
        lodestar=lodestar,
    )
