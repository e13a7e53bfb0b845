"""Relaying end to end on the devnet (issue #3): throughput, latency, gas and memory.

Run with ``.venv/bin/python -m benchmarks.bench_relay [--messages N]`` (default 2,000; ``--help``
for the rest). On a fresh devnet in a temporary state directory (two anvil chains, 1-second
blocks, finality ``confirmations:3``) it starts three ``passerelle attest`` processes and one
``passerelle relay`` process per phase, as ``devnet/demo.py`` does, and runs on that devnet:

1. **pipelined** (the relayer's defaults: ``--batch-size 100 --max-inflight 4 --poll 0.5``): N
   messages alpha → beta dispatched at once — pre-signed ``Outbox.dispatch`` transactions with
   consecutive nonces, broadcast in JSON-RPC batches, so they land in 2-4 blocks (sending speed
   is not what is measured) — then measured until every one has its ``Delivered`` on beta;
2. **paced**: 1,000 messages at 100 per second (the target rate), for the latency the relayer
   adds when it is not draining a backlog;
3. **baseline**: the same N with ``--max-inflight 1`` (no pipelining), the in-run baseline;
4. **unbatched** (``--batch-size 1``): 5 messages, one per delivery transaction.

Every number comes from the chains: latency is the delivery block's timestamp minus the
Dispatch block's (whole seconds, as block timestamps are), minus the finality wait (3 blocks ×
1 s), and also raw; it is repeated with each block placed at the moment it really appeared
(``block_offsets``), which removes the up-to-1-second skew between the two chains' clocks. The
rate runs from the first to the last delivery block; gas is ``gasUsed`` of the delivery
receipts; the ceiling is the beta block gas limit / batched gas per message / block time. The
relayer's peak memory is ``VmHWM`` from ``/proc/<pid>/status`` at the end of its phase. Where
the latency goes comes from the relayer's own ledger (``status_events``, wall clock):
dispatch block → final → attested → submitted → delivery block.

The devnet, the attesters and the relayer are always torn down (``finally``); the temporary
state directory is removed unless ``--keep`` is given or something failed (its path is printed,
with every process's log in ``logs/``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address

from adapters.evm.chain import DISPATCH_TOPIC, selector
from devnet import manager
from devnet.anvil import anvil_binary
from light_clients.hashing import keccak256
from relayer.config import (
    ATTESTER_POLL,
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    RELAY_POLL,
    ChainConfig,
    Config,
    load_config,
)

PASSERELLE = str(Path(sys.executable).parent / "passerelle")
BLOCK_TIME = 1.0  # seconds, what the issue's targets assume
FINALITY_BLOCKS = 3  # the devnet's "confirmations:3"
DEFAULT_MESSAGES = 2_000
UNBATCHED_MESSAGES = 5
BODY = b"bench %06d"  # 12-byte bodies: the message is 89 bytes
DISPATCH = selector("dispatch(uint32,bytes32,bytes)")
DISPATCH_GAS = 100_000  # a dispatch uses 50-71k; a fixed limit lets us pre-sign in bulk
DISPATCH_MAX_FEE = 50 * 10**9
DISPATCH_TIP = 10**9
SEND_BATCH = 200  # raw transactions per JSON-RPC batch request
TOPIC_DELIVERED = keccak256(b"Delivered(bytes32,uint32,uint32)")
TOPIC_ALREADY = keccak256(b"AlreadyDelivered(bytes32)")
TOPIC_HANDLE_FAILED = keccak256(b"HandleFailed(bytes32,bytes)")

TARGET_GAS = 60_000
TARGET_ADDED_BLOCKS = 1
TARGET_RATE = 100.0


# --------------------------------------------------------------------------- JSON-RPC


class Rpc:
    """A small synchronous JSON-RPC client (the benchmark's own eyes on the chains)."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.url, self.http = url, http

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One call; raises RuntimeError on a JSON-RPC error."""
        body = self.http.post(
            self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).json()
        if body.get("error") is not None:
            raise RuntimeError(f"{method} on {self.url}: {body['error']}")
        return body["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in call order."""
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        answers = self.http.post(self.url, json=payload).json()
        by_id = {a["id"]: a for a in answers}
        errors = [by_id[i]["error"] for i in range(len(calls)) if by_id[i].get("error")]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(calls)} calls failed, e.g. {errors[0]}")
        return [by_id[i]["result"] for i in range(len(calls))]

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def timestamps(self, numbers: set[int]) -> dict[int, int]:
        """Block number → timestamp (seconds) for every block in ``numbers``."""
        ordered = sorted(numbers)
        out: dict[int, int] = {}
        for start in range(0, len(ordered), 100):
            chunk = ordered[start : start + 100]
            blocks = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            out.update({n: int(b["timestamp"], 16) for n, b in zip(chunk, blocks, strict=True)})
        return out

    def logs(self, address: bytes, topic: bytes, from_block: int) -> list[dict[str, Any]]:
        """Logs of ``address`` with ``topic`` from ``from_block`` to the head (none if ahead)."""
        if from_block > self.block_number():
            return []
        query = {
            "address": "0x" + address[-20:].hex(),
            "fromBlock": hex(from_block),
            "toBlock": "latest",
            "topics": ["0x" + topic.hex()],
        }
        result: list[dict[str, Any]] = self.call("eth_getLogs", [query])
        return result


def block_offsets(rpcs: Sequence[Rpc], blocks: int = 2, timeout: float = 10.0) -> list[float]:
    """Per chain, how long after its whole-second timestamp a block really appears (seconds).

    anvil stamps a block with the wall clock truncated to the second, and mines on a fixed
    1-second phase, so ``wall time ≈ timestamp + offset`` with a constant offset in [0, 1) per
    chain. Watching the head at ~10 ms resolution measures it (the smallest of ``blocks``
    sightings; 0.0 for a chain on which no block appeared within ``timeout``).
    """
    last = [rpc.block_number() for rpc in rpcs]
    seen: list[list[float]] = [[] for _ in rpcs]
    deadline = time.monotonic() + timeout
    while any(len(s) < blocks for s in seen) and time.monotonic() < deadline:
        for k, rpc in enumerate(rpcs):
            head = rpc.call("eth_getBlockByNumber", ["latest", False])
            now = time.time()
            number = int(head["number"], 16)
            if number > last[k]:
                if number == last[k] + 1:
                    seen[k].append(now - int(head["timestamp"], 16))
                last[k] = number
        time.sleep(0.01)
    return [min(s) if s else 0.0 for s in seen]


# --------------------------------------------------------------------------- processes


class Processes:
    """The attesters and the relayer: ``passerelle`` subprocesses, stopped by their own pid."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [PASSERELLE, *args, "--config", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def stop(self, name: str) -> int | None:
        process = self.running.pop(name, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=20)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (kB) of ``pid`` from /proc (empty where there is no /proc)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- one phase


@dataclass
class Phase:
    """One relayer configuration run over a fresh set of messages."""

    name: str
    messages: int
    batch_size: int
    max_inflight: int
    poll: float
    pace: int = 0  # messages dispatched per block time; 0: all at once (a burst)


@dataclass
class Delivery:
    """A delivery transaction as its receipt tells it."""

    tx_hash: str
    block: int
    gas_used: int
    gas_limit: int
    delivered: int
    already: int
    handle_failed: int


@dataclass
class PhaseResult:
    """What one phase measured, raw."""

    phase: Phase
    complete: bool = False
    sign_seconds: float = 0.0  # pre-signing the dispatches (before the clock starts)
    send_seconds: float = 0.0  # broadcasting them (wall clock)
    wall_seconds: float = 0.0  # first broadcast → last Delivered seen (wall clock)
    dispatch_block: dict[str, int] = field(default_factory=dict)  # id → alpha block
    delivery_block: dict[str, int] = field(default_factory=dict)  # id → beta block
    alpha_time: dict[int, int] = field(default_factory=dict)  # block → timestamp
    beta_time: dict[int, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    memory_kb: dict[str, int] = field(default_factory=dict)
    relayer_cpu: float | None = None
    attester_cpu: float | None = None
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # id → status → time
    alpha_offset: float = 0.0  # wall time of a block ≈ its timestamp + offset (block_offsets)
    beta_offset: float = 0.0

    @property
    def latencies(self) -> list[int]:
        """Seconds from Dispatch block to delivery block, per delivered message."""
        return [
            self.beta_time[self.delivery_block[i]] - self.alpha_time[self.dispatch_block[i]]
            for i in self.delivery_block
            if i in self.dispatch_block
        ]

    @property
    def wall_latencies(self) -> list[float]:
        """The same, with each block's real appearance time (timestamp + measured offset)."""
        shift = self.beta_offset - self.alpha_offset
        return [x + shift for x in self.latencies]

    @property
    def per_block(self) -> list[tuple[int, int]]:
        """(beta block, messages delivered in it), in block order."""
        return sorted(Counter(self.delivery_block.values()).items())

    @property
    def rate(self) -> float | None:
        """Messages/s from the first to the last delivery block (first block's not counted)."""
        blocks = self.per_block
        if len(blocks) < 2:
            return None
        span = self.beta_time[blocks[-1][0]] - self.beta_time[blocks[0][0]]
        if span <= 0:
            return None
        return (len(self.delivery_block) - blocks[0][1]) / span

    @property
    def batched_gas(self) -> float | None:
        """gasUsed of the delivery transactions / messages they delivered."""
        messages = sum(d.delivered for d in self.deliveries)
        return sum(d.gas_used for d in self.deliveries) / messages if messages else None

    @property
    def gas_limit_per_message(self) -> float | None:
        """The gas *limit* the relayer asked for, per message (what block packing sees)."""
        messages = sum(d.delivered for d in self.deliveries)
        return sum(d.gas_limit for d in self.deliveries) / messages if messages else None


def _sign_dispatches(
    config: Config, alpha: ChainConfig, beta: ChainConfig, rpc: Rpc, count: int, first: int
) -> list[str]:
    """Pre-signed raw dispatch transactions with consecutive nonces, from the client key."""
    assert config.client_key is not None, "the devnet config has a [client] key"
    account = Account.from_key(config.client_key.load())
    nonce = int(rpc.call("eth_getTransactionCount", [account.address, "pending"]), 16)
    recipient = beta.contract("ping").rjust(32, b"\0")
    outbox = to_checksum_address(alpha.contract("outbox"))
    raw = []
    for k in range(count):
        data = DISPATCH + abi_encode(
            ["uint32", "bytes32", "bytes"], [beta.domain, recipient, BODY % (first + k)]
        )
        signed = account.sign_transaction(
            {
                "type": 2,
                "chainId": alpha.chain_id,
                "nonce": nonce + k,
                "to": outbox,
                "data": "0x" + data.hex(),
                "value": 0,
                "gas": DISPATCH_GAS,
                "maxFeePerGas": DISPATCH_MAX_FEE,
                "maxPriorityFeePerGas": DISPATCH_TIP,
            }
        )
        raw.append("0x" + signed.raw_transaction.hex())
    return raw


def _wait_started(processes: Processes, name: str, timeout: float = 30.0) -> None:
    """Wait until the relayer logs that it is relaying (it has loaded its ledger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = processes.running[name]
        if process.poll() is not None:
            raise SystemExit(f"bench_relay: {name} exited early:\n{processes.tail(name)}")
        if "relaying:" in processes.tail(name, 50):
            return
        time.sleep(0.1)
    raise SystemExit(f"bench_relay: {name} did not start within {timeout:.0f} s")


def run_phase(
    phase: Phase,
    config: Config,
    processes: Processes,
    alpha_rpc: Rpc,
    beta_rpc: Rpc,
    ledger_path: Path,
    first_body: int,
) -> PhaseResult:
    """Start a relayer, dispatch the phase's messages, measure until all are delivered."""
    alpha, beta = config.chain("alpha"), config.chain("beta")
    outbox, inbox = alpha.contract("outbox"), beta.contract("inbox")
    result = PhaseResult(phase)
    name = f"relayer-{phase.name}"
    relayer = processes.start(
        name,
        "relay",
        "--batch-size",
        str(phase.batch_size),
        "--max-inflight",
        str(phase.max_inflight),
        "--poll",
        str(phase.poll),
    )
    _wait_started(processes, name)
    result.alpha_offset, result.beta_offset = block_offsets([alpha_rpc, beta_rpc])
    cpu_before = _cpu_seconds(relayer.pid) or 0.0
    attesters = [p.pid for n, p in processes.running.items() if n.startswith("attester")]
    attester_before = sum(_cpu_seconds(pid) or 0.0 for pid in attesters)
    alpha_start, beta_start = alpha_rpc.block_number() + 1, beta_rpc.block_number() + 1

    signing = time.monotonic()
    raw = _sign_dispatches(config, alpha, beta, alpha_rpc, phase.messages, first_body)
    started = time.monotonic()
    result.sign_seconds = started - signing
    step = phase.pace or SEND_BATCH
    for k, start in enumerate(range(0, len(raw), step)):
        if phase.pace:  # one chunk per block time
            time.sleep(max(0.0, started + k * BLOCK_TIME - time.monotonic()))
        alpha_rpc.batch([("eth_sendRawTransaction", [tx]) for tx in raw[start : start + step]])
    result.send_seconds = time.monotonic() - started

    timeout = 90.0 + phase.messages / 10
    deadline = started + timeout
    while time.monotonic() < deadline:
        if relayer.poll() is not None:
            print(f"  relayer exited with {relayer.returncode}:\n{processes.tail(name)}")
            break
        if len(result.dispatch_block) < phase.messages:
            for entry in alpha_rpc.logs(outbox, DISPATCH_TOPIC, alpha_start):
                result.dispatch_block[entry["topics"][1].lower()] = int(entry["blockNumber"], 16)
        for entry in beta_rpc.logs(inbox, TOPIC_DELIVERED, beta_start):
            message_id = entry["topics"][1].lower()
            if message_id in result.dispatch_block:
                result.delivery_block[message_id] = int(entry["blockNumber"], 16)
        if len(result.dispatch_block) >= phase.messages and len(result.delivery_block) >= len(
            result.dispatch_block
        ):
            result.complete = True
            break
        time.sleep(0.5)
    result.wall_seconds = time.monotonic() - started
    if not result.complete:
        print(
            f"  INCOMPLETE after {result.wall_seconds:.0f} s: {len(result.dispatch_block)} "
            f"dispatched, {len(result.delivery_block)} delivered"
        )

    result.memory_kb = _proc_status(relayer.pid)
    cpu_after = _cpu_seconds(relayer.pid)
    result.relayer_cpu = None if cpu_after is None else cpu_after - cpu_before
    result.attester_cpu = sum(_cpu_seconds(pid) or 0.0 for pid in attesters) - attester_before
    processes.stop(name)

    result.alpha_time = alpha_rpc.timestamps(set(result.dispatch_block.values()))
    result.beta_time = beta_rpc.timestamps(set(result.delivery_block.values()))
    result.deliveries = _deliveries(beta_rpc, inbox, beta_start, set(result.dispatch_block))
    result.stages = _ledger_stages(ledger_path, set(result.dispatch_block))
    return result


def _deliveries(rpc: Rpc, inbox: bytes, from_block: int, ids: set[str]) -> list[Delivery]:
    """Every delivery transaction carrying one of ``ids``, from its receipt."""
    hashes = sorted(
        {
            entry["transactionHash"]
            for entry in rpc.logs(inbox, TOPIC_DELIVERED, from_block)
            if entry["topics"][1].lower() in ids
        }
    )
    out = []
    for start in range(0, len(hashes), 50):
        chunk = hashes[start : start + 50]
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
        txs = rpc.batch([("eth_getTransactionByHash", [h]) for h in chunk])
        for tx_hash, receipt, tx in zip(chunk, receipts, txs, strict=True):
            topics = Counter(
                bytes.fromhex(log["topics"][0][2:])
                for log in receipt["logs"]
                if log["address"].lower() == "0x" + inbox[-20:].hex()
            )
            out.append(
                Delivery(
                    tx_hash=tx_hash,
                    block=int(receipt["blockNumber"], 16),
                    gas_used=int(receipt["gasUsed"], 16),
                    gas_limit=int(tx["gas"], 16),
                    delivered=topics[TOPIC_DELIVERED],
                    already=topics[TOPIC_ALREADY],
                    handle_failed=topics[TOPIC_HANDLE_FAILED],
                )
            )
    return out


def _ledger_stages(path: Path, ids: set[str]) -> dict[str, dict[str, float]]:
    """id → {status: first time the relayer's ledger recorded it} (wall clock, seconds)."""
    stages: dict[str, dict[str, float]] = {}
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as error:
        print(f"  (ledger unreadable, no stage breakdown: {error})")
        return stages
    try:
        rows = connection.execute(
            "SELECT message_id, to_status, at FROM status_events ORDER BY id"
        ).fetchall()
    except sqlite3.Error as error:
        print(f"  (ledger unreadable, no stage breakdown: {error})")
        return stages
    finally:
        connection.close()
    for message_id, status, at in rows:
        if message_id in ids and status is not None:
            stages.setdefault(message_id, {}).setdefault(str(status).lower(), float(at))
    return stages


# --------------------------------------------------------------------------- reporting


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _stage_medians(result: PhaseResult) -> dict[str, float]:
    """Median seconds of each step, Dispatch block → delivery block (blocks at appearance)."""
    steps: dict[str, list[float]] = {
        "dispatch block → final": [],
        "final → attested": [],
        "attested → submitted": [],
        "submitted → delivery block": [],
    }
    for message_id, stages in result.stages.items():
        if message_id not in result.delivery_block or message_id not in result.dispatch_block:
            continue
        if not {"final", "attested", "submitted"} <= stages.keys():
            continue
        dispatched = result.alpha_time[result.dispatch_block[message_id]] + result.alpha_offset
        delivered = result.beta_time[result.delivery_block[message_id]] + result.beta_offset
        steps["dispatch block → final"].append(stages["final"] - dispatched)
        steps["final → attested"].append(stages["attested"] - stages["final"])
        steps["attested → submitted"].append(stages["submitted"] - stages["attested"])
        steps["submitted → delivery block"].append(delivered - stages["submitted"])
    return {step: statistics.median(values) for step, values in steps.items() if values}


def report_phase(result: PhaseResult, gas_limit: int) -> None:
    """Print one phase: rate, latency, gas, memory, the ceiling, then raw numbers."""
    phase = result.phase
    finality = FINALITY_BLOCKS * BLOCK_TIME
    latencies = result.latencies
    how = f"{phase.pace}/s paced" if phase.pace else "all at once"
    print(
        f"\n[{phase.name}] relay --batch-size {phase.batch_size} --max-inflight "
        f"{phase.max_inflight} --poll {phase.poll}: {phase.messages} messages ({how}), "
        f"{len(result.delivery_block)} delivered{'' if result.complete else ' (INCOMPLETE)'}"
    )
    dispatch_blocks = sorted(set(result.dispatch_block.values()))
    if dispatch_blocks:
        first, last = dispatch_blocks[0], dispatch_blocks[-1]
        span = result.alpha_time[last] - result.alpha_time[first]
        print(
            f"  dispatch: pre-signed in {result.sign_seconds:.1f} s, broadcast in "
            f"{result.send_seconds:.1f} s, mined in "
            f"{len(dispatch_blocks)} alpha blocks over {span} s ({first}..{last})"
        )
    rate = result.rate
    print(
        f"  sustained delivery: {_fmt(rate)} messages/s (first → last delivery block); wall "
        f"clock first broadcast → last delivery {result.wall_seconds:.1f} s"
    )
    if latencies:
        adjusted = [x - finality for x in latencies]
        print(
            f"  latency after finality (− {finality:.0f} s): p50 {_percentile(adjusted, 0.5):.1f} s"
            f", p95 {_percentile(adjusted, 0.95):.1f} s | raw dispatch → delivery: p50 "
            f"{_percentile(latencies, 0.5):.1f} s, p95 {_percentile(latencies, 0.95):.1f} s, "
            f"min {min(latencies)} s, max {max(latencies)} s"
        )
        wall = result.wall_latencies
        print(
            f"  the same with blocks at their real appearance time (alpha +"
            f"{result.alpha_offset:.2f} s, beta +{result.beta_offset:.2f} s after their "
            f"timestamps): after finality p50 {_percentile(wall, 0.5) - finality:.2f} s, p95 "
            f"{_percentile(wall, 0.95) - finality:.2f} s"
        )
        ordered = [
            result.beta_time[result.delivery_block[i]] - result.alpha_time[block]
            for i, block in sorted(result.dispatch_block.items(), key=lambda item: item[1])
            if i in result.delivery_block
        ]
        quarter = max(1, len(ordered) // 4)
        if len(ordered) >= 8:
            print(
                f"  backlog: p50 after finality of the first quarter dispatched "
                f"{_percentile(ordered[:quarter], 0.5) - finality:.1f} s, of the last quarter "
                f"{_percentile(ordered[-quarter:], 0.5) - finality:.1f} s"
            )
    medians = _stage_medians(result)
    if medians:
        print(
            "  where it goes (medians; ledger wall clock, blocks at their appearance time): "
            + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in medians.items())
        )
    batched = result.batched_gas
    if batched is not None:
        sizes = [d.delivered for d in result.deliveries]
        print(
            f"  gas: {batched:,.0f} per delivered message over {len(result.deliveries)} "
            f"transactions (messages per tx: min {min(sizes)}, median "
            f"{statistics.median(sizes):.0f}, max {max(sizes)}); gas limit asked "
            f"{_fmt(result.gas_limit_per_message, ',.0f')} per message"
        )
        ceiling = gas_limit / batched / BLOCK_TIME
        if rate is not None:
            print(
                f"  ceiling: {gas_limit:,} gas/block / {batched:,.0f} gas/message / "
                f"{BLOCK_TIME:.0f} s = {ceiling:,.0f} messages/s | measured {rate:,.1f}/s = "
                f"{rate / ceiling:.1%} of it"
            )
        asked = result.gas_limit_per_message
        if asked is not None:
            per_block = int(gas_limit // (asked * phase.batch_size)) * phase.batch_size
            print(
                f"    (blocks are packed by gas limit: {gas_limit:,} / {asked:,.0f} asked per "
                f"message = {gas_limit / asked:,.0f}/s; whole {phase.batch_size}-message "
                f"transactions: {per_block}/s)"
            )
    if result.memory_kb:
        print(
            f"  relayer memory: peak (VmHWM) {result.memory_kb.get('VmHWM', 0) / 1024:.1f} MiB, "
            f"at the end (VmRSS) {result.memory_kb.get('VmRSS', 0) / 1024:.1f} MiB; CPU "
            f"{_fmt(result.relayer_cpu, '.1f')} s relayer, {_fmt(result.attester_cpu, '.1f')} s "
            f"for the 3 attesters"
        )
    extra = (
        sum(d.already for d in result.deliveries),
        sum(d.handle_failed for d in result.deliveries),
    )
    if any(extra):
        print(f"  AlreadyDelivered events: {extra[0]}, HandleFailed events: {extra[1]}")
    print(
        "    raw delivered per beta block (block:count): "
        + " ".join(f"{block}:{count}" for block, count in result.per_block)
    )
    if latencies:
        histogram = sorted(Counter(latencies).items())
        print(
            "    raw latency histogram (s:messages): " + " ".join(f"{s}:{n}" for s, n in histogram)
        )
    print(
        "    raw delivery txs (messages/gasUsed/gasLimit): "
        + " ".join(f"{d.delivered}/{d.gas_used}/{d.gas_limit}" for d in result.deliveries[:40])
        + (" …" if len(result.deliveries) > 40 else "")
    )


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def _p50_after_finality(result: PhaseResult | None) -> float | None:
    if result is None or not result.latencies:
        return None
    return _percentile(result.latencies, 0.5) - FINALITY_BLOCKS * BLOCK_TIME


def summarize(results: dict[str, PhaseResult], gas_limit: int) -> None:
    """The comparisons and the targets of issue #3."""
    burst = results["pipelined"]
    paced, baseline = results.get("paced"), results.get("baseline")
    unbatched = results.get("unbatched")
    print("\nsummary")
    rate = burst.rate
    if baseline is not None and rate is not None and baseline.rate is not None:
        print(
            f"  pipelining: {rate:,.1f} messages/s with --max-inflight "
            f"{burst.phase.max_inflight} vs {baseline.rate:,.1f}/s with --max-inflight 1 "
            f"({baseline.phase.messages} messages): ratio {rate / baseline.rate:.2f}x"
        )
    p50 = _p50_after_finality(burst)
    base_p50 = _p50_after_finality(baseline)
    if p50 is not None and base_p50 is not None:
        print(f"  latency after finality p50: {p50:.1f} s pipelined vs {base_p50:.1f} s baseline")
    batched = burst.batched_gas
    single = None if unbatched is None else unbatched.batched_gas
    if batched is not None and single is not None:
        print(
            f"  gas per message: {batched:,.0f} batched vs {single:,.0f} unbatched "
            f"(--batch-size 1): batching saves {1 - batched / single:.1%}"
        )
    ceiling = None if batched is None else gas_limit / batched / BLOCK_TIME
    print(
        f"  target batched gas <= {TARGET_GAS:,}/message: {_fmt(batched, ',.0f')} → "
        f"{_verdict(None if batched is None else batched <= TARGET_GAS)}"
    )
    limit = TARGET_ADDED_BLOCKS * BLOCK_TIME
    floor = None if ceiling is None else burst.phase.messages / 2 / ceiling
    print(
        f"  target p50 adds <= {TARGET_ADDED_BLOCKS} block after finality, burst of "
        f"{burst.phase.messages}: {_fmt(p50, '.1f')} s → "
        f"{_verdict(None if p50 is None else p50 <= limit)} (queueing alone, at the gas "
        f"ceiling, costs the median message {_fmt(floor, '.1f')} s)"
    )
    if paced is not None:
        paced_p50 = _p50_after_finality(paced)
        print(
            f"  target p50 adds <= {TARGET_ADDED_BLOCKS} block after finality, paced at "
            f"{paced.phase.pace}/s: {_fmt(paced_p50, '.1f')} s → "
            f"{_verdict(None if paced_p50 is None else paced_p50 <= limit)}"
        )
    print(
        f"  target >= {TARGET_RATE:.0f} messages/s sustained: {_fmt(rate)} → "
        f"{_verdict(None if rate is None else rate >= TARGET_RATE)} "
        f"(ceiling {_fmt(ceiling, ',.0f')}/s)"
    )


# --------------------------------------------------------------------------- main


def _anvil_version() -> str:
    try:
        shown = subprocess.run(
            [str(anvil_binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return "anvil ?"
    return shown.stdout.strip().splitlines()[0] if shown.stdout.strip() else "anvil ?"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Run the three phases on one fresh devnet and print everything."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_relay", description=__doc__)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="pipelined run")
    parser.add_argument(
        "--baseline-messages", type=int, default=None, help="--max-inflight 1 run (default: same)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=RELAY_BATCH_SIZE, help="relay --batch-size"
    )
    parser.add_argument(
        "--max-inflight", type=int, default=RELAY_MAX_INFLIGHT, help="relay --max-inflight"
    )
    parser.add_argument("--poll", type=float, default=RELAY_POLL, help="relay --poll (its default)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the --max-inflight 1 run")
    parser.add_argument("--paced-messages", type=int, default=1_000, help="paced run (0: skip it)")
    parser.add_argument("--paced-rate", type=int, default=100, help="paced run: messages/s")
    parser.add_argument(
        "--attester-poll", type=float, default=ATTESTER_POLL, help="attest --poll (its default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir (logs, ledger)")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    baseline_messages = args.messages if args.baseline_messages is None else args.baseline_messages

    print(
        f"bench_relay: Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} "
        f"CPUs, {_anvil_version()}, load average {_load()} (chains, 3 attesters, the relayer "
        f"and this process share the machine)"
    )
    state_dir = Path(tempfile.mkdtemp(prefix="passerelle-bench-relay-"))
    processes: Processes | None = None
    failed = True
    began = time.monotonic()
    try:
        config_path = manager.up(state_dir, block_time=BLOCK_TIME)
        config = load_config(config_path)
        for chain in config.chains:
            if (chain.finality.name, chain.finality.depth) != ("confirmations", FINALITY_BLOCKS):
                raise SystemExit(f"bench_relay: expected confirmations:3, got {chain.finality}")
        processes = Processes(config_path, state_dir / "logs")
        for index in range(3):
            processes.start(
                f"attester{index}",
                "attest",
                "--index",
                str(index),
                "--poll",
                str(args.attester_poll),
            )
        ledger_path = Path(config.ledger)
        if not ledger_path.is_absolute():
            ledger_path = state_dir / ledger_path
        with httpx.Client(timeout=60) as http:
            alpha_rpc = Rpc(config.chain("alpha").rpc[0], http)
            beta_rpc = Rpc(config.chain("beta").rpc[0], http)
            gas_limit = int(
                beta_rpc.call("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16
            )
            print(
                f"devnet in {state_dir}: 1-second blocks, finality confirmations:"
                f"{FINALITY_BLOCKS}, beta block gas limit {gas_limit:,}; attesters with --poll "
                f"{args.attester_poll} (up in {time.monotonic() - began:.1f} s)"
            )
            phases = [
                Phase("pipelined", args.messages, args.batch_size, args.max_inflight, args.poll)
            ]
            if args.paced_messages > 0:
                phases.append(
                    Phase(
                        "paced",
                        args.paced_messages,
                        args.batch_size,
                        args.max_inflight,
                        args.poll,
                        pace=args.paced_rate,
                    )
                )
            if not args.no_baseline and baseline_messages > 0:
                phases.append(Phase("baseline", baseline_messages, args.batch_size, 1, args.poll))
            phases.append(Phase("unbatched", UNBATCHED_MESSAGES, 1, args.max_inflight, args.poll))
            results: dict[str, PhaseResult] = {}
            sent = 0
            for phase in phases:
                print(
                    f"\n... phase {phase.name}: {phase.messages} messages, load {_load()}",
                    flush=True,
                )
                results[phase.name] = run_phase(
                    phase, config, processes, alpha_rpc, beta_rpc, ledger_path, sent
                )
                sent += phase.messages
                report_phase(results[phase.name], gas_limit)
        summarize(results, gas_limit)
        print(f"\ntotal {time.monotonic() - began:.0f} s, load average at the end {_load()}")
        failed = not all(r.complete for r in results.values())
    finally:
        if processes is not None:
            processes.stop_all()
        for line in manager.down(state_dir):
            print(f"  {line}")
        if failed or args.keep:
            print(f"  state directory kept: {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
