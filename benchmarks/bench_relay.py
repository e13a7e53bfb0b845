"""Relaying end to end on the devnet: throughput, latency, gas and memory, EVM → EVM (issue #3)
and between Asset Hub and EVM (issue #4).

Run with ``.venv/bin/python -m benchmarks.bench_relay [--legs all|evm|assethub]`` (``--help``
for the sizes). On a fresh devnet in a temporary state directory (``devnet up``: the anvil
chains alpha and beta, 1-second blocks, finality ``confirmations:3``, and Asset Hub under
chopsticks, one block per extrinsic, finality ``devnet-instant``) it starts three ``passerelle
attest`` processes, which run throughout, and ``passerelle relay`` processes, as
``devnet/demo.py`` does.

EVM → EVM (alpha → beta), one relayer per phase:

1. **pipelined** (the relayer's defaults: ``--batch-size 100 --max-inflight 4``): N messages
   (default 2,000) dispatched at once — pre-signed ``Outbox.dispatch`` transactions with
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

Asset Hub legs, all with one relayer of default settings:

- **floor**: a few plain ``System.remark`` extrinsics (no event, so no message) submitted one
  after the other: what one block costs chopsticks right now;
- per shape — a **burst** of ``--hub-messages`` (default 100) and a **paced** run of
  ``--hub-paced-messages`` (default 5), one every ``--hub-interval`` (default 6) seconds — first
  the EVM → EVM baseline of that shape (alpha → beta), then **Asset Hub → alpha** (the client's
  ``PSRL`` remarks as ``passerelle send`` makes them: one ``Utility.batch_all`` for the burst,
  one ``remark_with_event`` per paced message, composed before the clock starts) and **alpha →
  Asset Hub** (pre-signed dispatches to the client's Substrate account; delivered when the
  committee's multisig has minted the message's ``Uniques`` replay-guard item).

Each leg reports messages/s from the first submission to the moment the last delivery block
appeared, and p50/p95 latency from the source block being final (Asset Hub: the moment its
block was announced, ``devnet-instant``; alpha: the Dispatch block's appearance + 3 s) to the
delivery block's appearance (alpha: timestamp + measured offset; Asset Hub: announced on
``chain_subscribeNewHeads``, :class:`HeadWatcher` — chopsticks' chain time runs 12 s per block
and cannot be used), each next to the same-shape EVM → EVM baseline and their ratio. The
evidence of what limits a leg is printed with it: the steps (ledger, proposal files,
attesters' logs), every Asset Hub block built and what each extrinsic in it did (from its
events: approvals, executions, failures), and the CPU seconds of the relayer, the attesters,
chopsticks, the anvils and this process during the leg.

The devnet, the attesters and the relayer are always torn down (``finally``); the temporary
state directory is removed unless ``--keep`` is given or something failed (its path is printed,
with every process's log in ``logs/``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import httpx
import trio
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address

from adapters.errors import AdapterError
from adapters.evm.chain import DISPATCH_TOPIC, selector
from adapters.substrate.client import SubstrateClient
from devnet import manager
from devnet.anvil import anvil_binary
from devnet.chopsticks import FINALITY_POLICY as HUB_FINALITY
from light_clients.hashing import keccak256
from light_clients.message import Message
from light_clients.substrate.remark import REMARK_PREFIX
from relayer.client import client_keypair
from relayer.config import (
    ATTESTER_POLL,
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    RELAY_POLL,
    SUBSTRATE_BATCH_SIZE,
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

HUB = "assethub"  # the devnet's Asset Hub (chopsticks), domain 3
HUB_BODY = b"hub %06d"
HUB_MESSAGES = 100  # burst, each way: one batch_all of 100 remarks; 4 multisig batches of 25
HUB_PACED_MESSAGES = 5
HUB_INTERVAL = 6.0  # seconds between two paced messages (alpha → Asset Hub keeps up)
FLOOR_EXTRINSICS = 4
FIRST_USER_EXTRINSIC = 2  # 0 and 1 are set_validation_data and Timestamp.set
LOG_FLUSH = 1.0  # seconds to let chopsticks write its last log lines (a worker thread does)


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
    pace: int = 0  # messages dispatched per interval; 0: all at once (a burst)
    interval: float = BLOCK_TIME  # seconds between two paced chunks


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
    started_at: float = 0.0  # wall clock (time.time()) of the first broadcast
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
    def final_latencies(self) -> list[float]:
        """Source block final (appeared + finality) → delivery block appeared, seconds."""
        return [x - FINALITY_BLOCKS * BLOCK_TIME for x in self.wall_latencies]

    @property
    def end_to_end(self) -> float | None:
        """First broadcast → the last delivery block appeared (seconds): "send → all
        delivered", the measure the Asset Hub legs are compared by."""
        if not self.complete or not self.delivery_block:
            return None
        last = max(self.beta_time[b] for b in self.delivery_block.values())
        return last + self.beta_offset - self.started_at

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
    config: Config,
    alpha: ChainConfig,
    rpc: Rpc,
    count: int,
    first: int,
    *,
    destination: int,
    recipient: bytes,
) -> list[str]:
    """Pre-signed raw dispatch transactions with consecutive nonces, from the client key, to
    ``recipient`` (32 bytes: an EVM address left-padded, or a Substrate account) on
    ``destination``."""
    assert config.client_key is not None, "the devnet config has a [client] key"
    account = Account.from_key(config.client_key.load())
    nonce = int(rpc.call("eth_getTransactionCount", [account.address, "pending"]), 16)
    outbox = to_checksum_address(alpha.contract("outbox"))
    raw = []
    for k in range(count):
        data = DISPATCH + abi_encode(
            ["uint32", "bytes32", "bytes"], [destination, recipient, BODY % (first + k)]
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
    shared_relayer: str | None = None,
) -> PhaseResult:
    """Start a relayer (or use the running ``shared_relayer``), dispatch the phase's messages
    alpha → beta, measure until all are delivered."""
    alpha, beta = config.chain("alpha"), config.chain("beta")
    outbox, inbox = alpha.contract("outbox"), beta.contract("inbox")
    result = PhaseResult(phase)
    if shared_relayer is None:
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
    else:
        name, relayer = shared_relayer, processes.running[shared_relayer]
    result.alpha_offset, result.beta_offset = block_offsets([alpha_rpc, beta_rpc])
    cpu_before = _cpu_seconds(relayer.pid) or 0.0
    attesters = [p.pid for n, p in processes.running.items() if n.startswith("attester")]
    attester_before = sum(_cpu_seconds(pid) or 0.0 for pid in attesters)
    alpha_start, beta_start = alpha_rpc.block_number() + 1, beta_rpc.block_number() + 1

    signing = time.monotonic()
    raw = _sign_dispatches(
        config,
        alpha,
        alpha_rpc,
        phase.messages,
        first_body,
        destination=beta.domain,
        recipient=beta.contract("ping").rjust(32, b"\0"),
    )
    started = time.monotonic()
    result.started_at = time.time()
    result.sign_seconds = started - signing
    step = phase.pace or SEND_BATCH
    for k, start in enumerate(range(0, len(raw), step)):
        if phase.pace:  # one chunk per interval
            time.sleep(max(0.0, started + k * phase.interval - time.monotonic()))
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
    if shared_relayer is None:
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
    if not phase.pace:
        how = "all at once"
    elif phase.interval == BLOCK_TIME:
        how = f"{phase.pace}/s paced"
    else:
        how = f"{phase.pace} every {phase.interval:g} s"
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


# --------------------------------------------------------------------------- Asset Hub legs


class HeadWatcher:
    """When each Asset Hub block appeared, by the wall clock (``chain_subscribeNewHeads``).

    chopsticks' own ``Timestamp.Now`` advances 12 s per block whatever the wall clock does, so
    chain time cannot place a block; this thread records the moment each new head is announced
    (the first one announced is the head at subscription time).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.error: str | None = None
        self._appeared: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assethub-heads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def at(self, number: int) -> float | None:
        """Wall time block ``number`` was announced, None if it was not seen."""
        with self._lock:
            return self._appeared.get(number)

    def _run(self) -> None:
        import websocket  # noqa: PLC0415 (websocket-client, substrate-interface's transport)

        subscribe = {"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeNewHeads", "params": []}
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(self.url, timeout=0.5)
            except Exception as exc:  # retried; reported if it never works
                self.error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(0.5)
                continue
            try:
                ws.send(json.dumps(subscribe))
                while not self._stop.is_set():
                    try:
                        text = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    now = time.time()
                    note = json.loads(text)
                    if note.get("method") != "chain_newHead":
                        continue
                    number = int(note["params"]["result"]["number"], 16)
                    with self._lock:
                        self._appeared.setdefault(number, now)
            except Exception as exc:  # reconnect
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                ws.close()


@dataclass
class HubBlock:
    """An Asset Hub block built during a phase: what each user extrinsic in it did."""

    number: int
    appeared: float | None
    extrinsics: list[str]  # one label per user extrinsic (index >= 2)
    issued: list[tuple[int, int]]  # (collection, item) of every Uniques.Issued
    build: float | None = None  # seconds chopsticks spent building it (its log)


def _classify(events: Sequence[Any]) -> str:
    """One label for the events of one extrinsic."""
    names = [(e.pallet, e.name) for e in events]
    failed = next((e for e in events if (e.pallet, e.name) == ("System", "ExtrinsicFailed")), None)
    if failed is not None:
        return f"failed: {failed.error or '?'}"
    if ("Multisig", "MultisigExecuted") in names:
        issued = names.count(("Uniques", "Issued"))
        executed = next(e for e in events if (e.pallet, e.name) == ("Multisig", "MultisigExecuted"))
        result = (
            executed.attributes.get("result") if isinstance(executed.attributes, dict) else None
        )
        ok = isinstance(result, dict) and "Ok" in result
        return f"as_multi: executed, {issued} delivered" if ok else "as_multi: executed, Err"
    if ("Multisig", "NewMultisig") in names:
        return "approve_as_multi: opened"
    if ("Multisig", "MultisigApproval") in names:
        return "approve_as_multi: joined"
    remarks = names.count(("System", "Remarked"))
    if remarks:
        return f"remarks: {remarks}"
    return "other"


async def _hub_block(sub: SubstrateClient, number: int, appeared: float | None) -> HubBlock:
    block_hash = await sub.block_hash(number)
    if block_hash is None:
        raise AdapterError(f"assethub has no block {number}")
    by_extrinsic: dict[int, list[Any]] = {}
    issued = []
    for event in await sub.events(block_hash):
        if event.extrinsic_index is None or event.extrinsic_index < FIRST_USER_EXTRINSIC:
            continue
        by_extrinsic.setdefault(event.extrinsic_index, []).append(event)
        if (event.pallet, event.name) == ("Uniques", "Issued"):
            attrs = event.attributes if isinstance(event.attributes, dict) else {}
            collection = attrs.get("collection", attrs.get("class"))
            item = attrs.get("item", attrs.get("instance"))
            if isinstance(collection, int) and isinstance(item, int):
                issued.append((collection, item))
    labels = [_classify(events) for _, events in sorted(by_extrinsic.items())]
    return HubBlock(number, appeared, labels, issued)


@dataclass
class HubPhase:
    """One Asset Hub leg: ``from_hub`` (Asset Hub → alpha) or not (alpha → Asset Hub)."""

    name: str
    from_hub: bool
    messages: int
    interval: float = 0.0  # 0: a burst; else one message every ``interval`` seconds

    @property
    def title(self) -> str:
        route = "Asset Hub → alpha" if self.from_hub else "alpha → Asset Hub"
        if not self.interval:
            how = (
                f"one Utility.batch_all of {self.messages} PSRL remarks"
                if self.from_hub
                else f"{self.messages} dispatches at once"
            )
        else:
            how = f"{self.messages}, one every {self.interval:g} s"
        return f"{route}: {how}"


@dataclass
class Batch:
    """A multisig batch (a proposal) as the relayer's files and the attesters' logs show it."""

    name: str
    first: int
    last: int
    created: float | None = None  # the relayer wrote the proposal (its ``created`` field)
    opened: float | None = None  # an attester logged "opened the multisig operation"


@dataclass
class HubResult:
    """What one Asset Hub leg measured, raw. Times are wall clock (``time.time()``)."""

    phase: HubPhase
    complete: bool = False
    prepare_seconds: float = 0.0  # composing the remarks, or pre-signing the dispatches
    started_at: float = 0.0  # first submission / broadcast
    finished_at: float = 0.0  # when the bench saw the last delivery
    submitted_at: dict[int, float] = field(default_factory=dict)  # nonce → its extrinsic sent
    source_time: dict[int, float] = field(default_factory=dict)  # nonce → source block final
    delivered_time: dict[int, float] = field(default_factory=dict)  # nonce → delivery appeared
    source_block: dict[int, int] = field(default_factory=dict)
    delivery_block: dict[int, int] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)  # nonce → message id
    blocks: list[HubBlock] = field(default_factory=list)  # Asset Hub blocks of the phase
    batches: dict[str, Batch] = field(default_factory=dict)
    races: Counter[str] = field(default_factory=Counter)  # attester logs: lost races and more
    signed: dict[int, list[float]] = field(default_factory=dict)  # index → attesters' signing
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # ledger, by id
    cpu: dict[str, float] = field(default_factory=dict)  # process group → CPU seconds
    errors: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        """Source block final → delivery block appeared, per delivered message."""
        return [
            self.delivered_time[n] - self.source_time[n]
            for n in self.delivered_time
            if n in self.source_time
        ]

    @property
    def end_to_end(self) -> float | None:
        """First submission → the last delivery appeared (seconds), if all were delivered."""
        if not self.complete or not self.delivered_time:
            return None
        return max(self.delivered_time.values()) - self.started_at


@dataclass
class HubContext:
    """Everything the Asset Hub legs share."""

    config: Config
    processes: Processes
    relayer: str  # the relayer process all Asset Hub legs (and their EVM baselines) share
    alpha_rpc: Rpc
    beta_rpc: Rpc
    ledger_path: Path
    proposals: Path  # the relayer's proposal files for Asset Hub
    logs: Path
    watcher: HeadWatcher
    chopsticks_log: Path | None  # its block builder logs "building #N" and "new head #N"
    pids: dict[str, list[int]]  # "relayer", "attesters", "chopsticks", "anvils" → pids
    sent: int  # message bodies used so far (each body is unique)
    gas_limit: int  # of a beta block


_BUILD_LINE = re.compile(
    r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] \w+ \(block-builder\): .*(building|new head) #(\d+)"
)


def _chopsticks_builds(path: Path | None, near: float) -> dict[int, float]:
    """Block number → seconds from chopsticks' "building #N" to its "new head #N" (its log,
    pino-pretty's ``[HH:MM:SS.mmm]`` in UTC; ``near`` gives the day)."""
    if path is None:
        return {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    day = datetime.fromtimestamp(near, UTC).date()
    started: dict[int, float] = {}
    built: dict[int, float] = {}
    for line in text.splitlines():
        found = _BUILD_LINE.match(line)
        if found is None:
            continue
        hour, minute, second, milli = (int(found.group(k)) for k in range(1, 5))
        at = datetime.combine(
            day, clock_time(hour, minute, second, milli * 1000), tzinfo=UTC
        ).timestamp()
        if at > near + 43_200:  # the log line is from the day before ``near``
            at -= 86_400
        elif at < near - 43_200:
            at += 86_400
        number = int(found.group(6))
        if found.group(5) == "building":
            started[number] = at
        elif number in started:
            built[number] = at - started[number]
    return built


def _attach_builds(ctx: HubContext, result: HubResult) -> None:
    builds = _chopsticks_builds(ctx.chopsticks_log, result.started_at)
    for block in result.blocks:
        block.build = builds.get(block.number)


def _check_alive(ctx: HubContext) -> None:
    """Every attester and the relayer still runs (each leg needs all of them)."""
    for name, process in ctx.processes.running.items():
        if process.poll() is not None:
            raise SystemExit(
                f"bench_relay: {name} exited with {process.returncode}:\n{ctx.processes.tail(name)}"
            )


def _cpu_delta(pids: dict[str, list[int]], before: dict[str, float]) -> dict[str, float]:
    after = _cpu_snapshot(pids)
    return {group: after[group] - before.get(group, 0.0) for group in after}


def _cpu_line(cpu: dict[str, float], wall: float) -> str:
    shares = ", ".join(
        f"{group} {seconds:.1f} s ({seconds / wall:.0%})" for group, seconds in cpu.items()
    )
    return f"CPU ({wall:.1f} s wall; 2 cores = 200 %): {shares}"


def _cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {
        group: sum(_cpu_seconds(pid) or 0.0 for pid in members) for group, members in pids.items()
    }
    out["bench"] = time.process_time()
    return out


def _ledger_query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return []
    try:
        return connection.execute(sql, list(params)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        connection.close()


def _next_hub_nonce(path: Path, domain: int) -> int:
    """The next canonical nonce of the Asset Hub origin, from the relayer's ledger."""
    rows = _ledger_query(path, "SELECT MAX(nonce) FROM messages WHERE origin = ?", [domain])
    return 0 if not rows or rows[0][0] is None else int(rows[0][0]) + 1


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


_PROPOSAL_LINE = re.compile(
    r"^(\S+ \S+) passerelle\.attester \w+ proposal (\d+)-(\d+)-(\d+)-(\d+)\.json: (.*)$"
)
_SIGNED_LINE = re.compile(
    r"^(\S+ \S+) passerelle\.attester \w+ origin (\S+): signed index (\d+) root"
)
_DELIVERED_IN = re.compile(r"delivered (\d+) message\(s\) in block (\d+)")


def _read_attester_logs(ctx: HubContext, result: HubResult, origin: str, since: float) -> None:
    """The attesters' own account of the phase: when each signed the origin's checkpoints,
    when each batch was opened, and what else they said about the proposals (the races they
    lost, above all)."""
    for path in sorted(ctx.logs.glob("attester*.log")):
        for line in path.read_text(errors="replace").splitlines():
            signed = _SIGNED_LINE.match(line)
            if signed is not None:
                at = _log_time(signed.group(1))
                if at >= since and signed.group(2) == origin:
                    result.signed.setdefault(int(signed.group(3)), []).append(at)
                continue
            found = _PROPOSAL_LINE.match(line)
            if found is None:
                continue
            at = _log_time(found.group(1))
            if at < since:
                continue
            name = "-".join(found.group(k) for k in (2, 3, 4, 5))
            batch = result.batches.setdefault(
                name, Batch(name, int(found.group(3)), int(found.group(4)))
            )
            text = found.group(6)
            if text.startswith("opened the multisig operation"):
                batch.opened = at if batch.opened is None else min(batch.opened, at)
            elif _DELIVERED_IN.search(text) is not None:
                continue  # the execution: read from the chain (Uniques.Issued), not the log
            elif "another signatory was first" in text:
                reason = re.search(r"failed: (\S+?)\)?$", text)
                result.races[f"approval lost ({reason.group(1) if reason else '?'})"] += 1
            elif "another signatory executed it first" in text:
                result.races["execution lost"] += 1
            else:
                result.races[text[:60]] += 1


_PROPOSAL_NAME = re.compile(r"^\d+-(\d+)-(\d+)-\d+$")


def _snapshot_proposals(ctx: HubContext, result: HubResult) -> None:
    """Record the proposal files the relayer has written (they vanish once delivered); the
    store's ``.tmp-*.json`` files, written and renamed by ``atomic_write``, are not proposals."""
    try:
        paths = list(ctx.proposals.iterdir())
    except OSError:
        return
    for path in paths:
        name = path.name.removesuffix(".json")
        found = _PROPOSAL_NAME.match(name)
        if found is None or not path.name.endswith(".json"):
            continue
        if name in result.batches and result.batches[name].created is not None:
            continue
        try:
            created = float(json.loads(path.read_text()).get("created", 0.0))
        except (OSError, ValueError, AttributeError):
            continue
        batch = result.batches.setdefault(
            name, Batch(name, int(found.group(1)), int(found.group(2)))
        )
        batch.created = created


def _finish_hub_result(
    ctx: HubContext, result: HubResult, cpu_before: dict[str, float], origin: str
) -> None:
    result.cpu = _cpu_delta(ctx.pids, cpu_before)
    result.stages = _ledger_stages(ctx.ledger_path, set(result.ids.values()))
    _read_attester_logs(ctx, result, origin, result.started_at - 1.0)


async def _hub_blocks_since(
    sub: SubstrateClient, ctx: HubContext, result: HubResult, first: int
) -> int:
    """Read every Asset Hub block from ``first`` to the best one; the next block to read."""
    best = await sub.best_number()
    for number in range(first, best + 1):
        appeared = ctx.watcher.at(number)
        if appeared is None:
            appeared = time.time()
            result.errors.append(f"block {number} not seen announced: timed when read instead")
        result.blocks.append(await _hub_block(sub, number, appeared))
    return max(first, best + 1)


async def run_from_hub(
    phase: HubPhase, ctx: HubContext, sub: SubstrateClient, keypair: Any
) -> HubResult:
    """Asset Hub → alpha: the client's PSRL remarks (one ``Utility.batch_all`` for a burst, one
    ``remark_with_event`` per message when paced, as ``passerelle send`` makes them), composed
    before the clock starts; measured until every one has its ``Delivered`` on alpha."""
    config = ctx.config
    alpha, hub = config.chain("alpha"), config.chain(HUB)
    result = HubResult(phase)
    first_nonce = _next_hub_nonce(ctx.ledger_path, hub.domain)
    sender = bytes(keypair.public_key)
    recipient = alpha.contract("ping").rjust(32, b"\0")
    messages = [
        Message(
            version=1,
            nonce=first_nonce + k,
            origin=hub.domain,
            sender=sender,
            destination=alpha.domain,
            recipient=recipient,
            body=HUB_BODY % (ctx.sent + k),
        )
        for k in range(phase.messages)
    ]
    result.ids = {m.nonce: "0x" + m.id.hex() for m in messages}
    preparing = time.monotonic()
    calls = [
        await sub.compose(
            "System", "remark_with_event", {"remark": REMARK_PREFIX + replace(m, nonce=0).encode()}
        )
        for m in messages
    ]
    if not phase.interval:
        calls = [await sub.compose("Utility", "batch_all", {"calls": calls})]
    result.prepare_seconds = time.monotonic() - preparing
    (alpha_offset,) = block_offsets([ctx.alpha_rpc])
    alpha_start = ctx.alpha_rpc.block_number() + 1
    hub_first = await sub.best_number() + 1
    inbox = alpha.contract("inbox")
    origin_topic = "0x" + hub.domain.to_bytes(32, "big").hex()
    included: dict[int, int] = {}  # extrinsic → its block
    delivered_block: dict[int, int] = {}  # nonce → alpha block
    cpu_before = _cpu_snapshot(ctx.pids)

    async def submit_all(nursery: trio.Nursery, started: float) -> None:
        for k, call in enumerate(calls):
            if phase.interval:
                await trio.sleep_until(started + k * phase.interval)
            now = time.time()
            for nonce in [first_nonce + k] if phase.interval else list(result.ids):
                result.submitted_at[nonce] = now
            submitted = await sub.submit_call(keypair, call, wait_for_inclusion=False)
            nursery.start_soon(wait_one, k, submitted)

    async def wait_one(k: int, submitted: Any) -> None:
        landed = await sub.wait_included(submitted)
        if not landed.success:
            result.errors.append(f"extrinsic {k} failed: {landed.error}")
        included[k] = landed.block_number

    timeout = 90.0 + phase.messages * (phase.interval + 0.2)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        result.started_at = time.time()
        nursery.start_soon(submit_all, nursery, started)
        while trio.current_time() < started + timeout:
            for entry in ctx.alpha_rpc.logs(inbox, TOPIC_DELIVERED, alpha_start):
                if len(entry["topics"]) < 3 or entry["topics"][2].lower() != origin_topic:
                    continue
                nonce = int(entry["data"][2:66], 16)
                if nonce in result.ids:
                    delivered_block[nonce] = int(entry["blockNumber"], 16)
                    if entry["topics"][1].lower() != result.ids[nonce]:
                        result.errors.append(f"nonce {nonce}: delivered id differs")
            if len(delivered_block) == phase.messages and len(included) == len(calls):
                result.complete = True
                break
            await trio.sleep(0.5)
        result.finished_at = time.time()
        nursery.cancel_scope.cancel()
    _finish_hub_result(ctx, result, cpu_before, HUB)

    stamps = ctx.alpha_rpc.timestamps(set(delivered_block.values()))
    for k, number in included.items():
        nonces = [first_nonce + k] if phase.interval else list(result.ids)
        for nonce in nonces:
            result.source_block[nonce] = number
            appeared = ctx.watcher.at(number)
            if appeared is not None:
                result.source_time[nonce] = appeared
    for nonce, number in delivered_block.items():
        result.delivery_block[nonce] = number
        result.delivered_time[nonce] = stamps[number] + alpha_offset
    await _hub_blocks_since(sub, ctx, result, hub_first)
    await trio.sleep(LOG_FLUSH)
    _attach_builds(ctx, result)
    return result


async def run_to_hub(phase: HubPhase, ctx: HubContext, sub: SubstrateClient) -> HubResult:
    """alpha → Asset Hub: pre-signed ``Outbox.dispatch`` transactions to the client's Substrate
    account, measured until the multisig has minted every message's replay-guard item."""
    config = ctx.config
    alpha, hub = config.chain("alpha"), config.chain(HUB)
    collection = hub.settings().collections[alpha.domain]
    result = HubResult(phase)
    preparing = time.monotonic()
    raw = _sign_dispatches(
        config,
        alpha,
        ctx.alpha_rpc,
        phase.messages,
        ctx.sent,
        destination=hub.domain,
        recipient=bytes(client_keypair(config).public_key),
    )
    result.prepare_seconds = time.monotonic() - preparing
    (alpha_offset,) = block_offsets([ctx.alpha_rpc])
    alpha_start = ctx.alpha_rpc.block_number() + 1
    next_hub = await sub.best_number() + 1
    outbox = alpha.contract("outbox")
    dispatch_block: dict[int, int] = {}  # nonce → alpha block
    cpu_before = _cpu_snapshot(ctx.pids)

    async def broadcast(started: float) -> None:
        step = 1 if phase.interval else SEND_BATCH
        for k, start in enumerate(range(0, len(raw), step)):
            if phase.interval:
                await trio.sleep_until(started + k * phase.interval)
            ctx.alpha_rpc.batch(
                [("eth_sendRawTransaction", [tx]) for tx in raw[start : start + step]]
            )

    timeout = 120.0 + phase.messages * (phase.interval + 2.0)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        result.started_at = time.time()
        nursery.start_soon(broadcast, started)
        while trio.current_time() < started + timeout:
            if len(dispatch_block) < phase.messages:
                for entry in ctx.alpha_rpc.logs(outbox, DISPATCH_TOPIC, alpha_start):
                    nonce = int(entry["data"][2:66], 16)
                    dispatch_block[nonce] = int(entry["blockNumber"], 16)
                    result.ids[nonce] = entry["topics"][1].lower()
            _snapshot_proposals(ctx, result)
            next_hub = await _hub_blocks_since(sub, ctx, result, next_hub)
            for block in result.blocks:
                for issued_collection, item in block.issued:
                    if issued_collection == collection and item in dispatch_block:
                        result.delivery_block.setdefault(item, block.number)
            if len(dispatch_block) == phase.messages and len(result.delivery_block) == len(
                dispatch_block
            ):
                result.complete = True
                break
            await trio.sleep(0.5)
        result.finished_at = time.time()
        nursery.cancel_scope.cancel()
    _finish_hub_result(ctx, result, cpu_before, "alpha")

    stamps = ctx.alpha_rpc.timestamps(set(dispatch_block.values()))
    appeared = {block.number: block.appeared for block in result.blocks}
    for nonce, number in dispatch_block.items():
        result.source_block[nonce] = number
        result.source_time[nonce] = stamps[number] + alpha_offset + FINALITY_BLOCKS * BLOCK_TIME
    for nonce, number in result.delivery_block.items():
        seen = appeared.get(number)
        if seen is not None:
            result.delivered_time[nonce] = seen
    await trio.sleep(LOG_FLUSH)
    _attach_builds(ctx, result)
    return result


@dataclass
class Floor:
    """The bench's own plain extrinsics on Asset Hub: what one block costs chopsticks now."""

    included: list[float] = field(default_factory=list)  # submit → inclusion seen (s)
    appeared: list[float] = field(default_factory=list)  # submit → head announced (s)
    last_block: int = 0
    blocks: list[int] = field(default_factory=list)
    builds: list[float] = field(default_factory=list)  # chopsticks building each (its log)
    cpu: dict[str, float] = field(default_factory=dict)  # process group → CPU seconds
    wall: float = 0.0

    @property
    def block_seconds(self) -> float | None:
        values = self.appeared or self.included
        return statistics.median(values) if values else None


async def measure_floor(
    sub: SubstrateClient, keypair: Any, watcher: HeadWatcher, count: int
) -> Floor:
    """``count`` plain ``System.remark`` extrinsics (no event: not a message), one after the
    other, each waited for: chopsticks builds one block per extrinsic ("Instant")."""
    floor = Floor()
    for k in range(count):
        call = await sub.compose("System", "remark", {"remark": b"bench floor %d" % k})
        begun = time.time()
        landed = await sub.submit_call(keypair, call)
        floor.included.append(time.time() - begun)
        seen = watcher.at(landed.block_number)
        if seen is not None:
            floor.appeared.append(seen - begun)
        floor.last_block = landed.block_number
        floor.blocks.append(landed.block_number)
    return floor


async def wait_hub_scanned(ctx: HubContext, domain: int, block: int, timeout: float) -> bool:
    """Until the relayer's ledger cursor for ``domain`` is past ``block``."""
    deadline = trio.current_time() + timeout
    while trio.current_time() < deadline:
        rows = _ledger_query(
            ctx.ledger_path, "SELECT next_block FROM scan_cursors WHERE domain = ?", [domain]
        )
        if rows and int(rows[0][0]) > block:
            return True
        await trio.sleep(0.2)
    return False


@dataclass
class HubOutcome:
    """Everything the Asset Hub section measured."""

    floor: Floor | None = None
    evm: dict[str, PhaseResult] = field(default_factory=dict)  # the same-shape EVM baselines
    legs: dict[str, HubResult] = field(default_factory=dict)


async def run_hub_section(ctx: HubContext, args: argparse.Namespace) -> HubOutcome:
    """The floor, then per shape (burst, paced) the EVM → EVM baseline and both Asset Hub legs,
    all with one relayer (started by the caller) and the attesters already running."""
    outcome = HubOutcome()
    hub = ctx.config.chain(HUB)
    keypair = client_keypair(ctx.config)
    async with SubstrateClient(hub.rpc[0]) as sub:
        # A first extrinsic, not timed: once the relayer has scanned its block, the relayer
        # is connected to Asset Hub and past its start-up.
        probe = await measure_floor(sub, keypair, ctx.watcher, 1)
        if not await wait_hub_scanned(ctx, hub.domain, probe.last_block, 60.0):
            print(f"  the relayer has not scanned assethub yet:\n{ctx.processes.tail(ctx.relayer)}")
        print(f"\n... Asset Hub floor: {args.floor_extrinsics} plain extrinsics, load {_load()}")
        before, begun = _cpu_snapshot(ctx.pids), time.monotonic()
        outcome.floor = await measure_floor(sub, keypair, ctx.watcher, args.floor_extrinsics)
        outcome.floor.wall = time.monotonic() - begun
        outcome.floor.cpu = _cpu_delta(ctx.pids, before)
        await trio.sleep(LOG_FLUSH)
        builds = _chopsticks_builds(ctx.chopsticks_log, time.time())
        outcome.floor.builds = [builds[n] for n in outcome.floor.blocks if n in builds]
        report_floor(outcome.floor)
        shapes = [(args.hub_messages, 0, 0.0)]
        if args.hub_paced_messages > 0:
            shapes.append((args.hub_paced_messages, 1, args.hub_interval))
        for count, pace, interval in shapes:
            if count <= 0:
                continue
            kind = "burst" if not pace else "paced"
            evm_phase = Phase(
                f"evm-{kind}",
                count,
                RELAY_BATCH_SIZE,
                RELAY_MAX_INFLIGHT,
                args.poll,
                pace=pace,
                interval=interval or BLOCK_TIME,
            )
            print(f"\n... phase {evm_phase.name}: {count} messages alpha → beta, load {_load()}")
            _check_alive(ctx)
            before, begun = _cpu_snapshot(ctx.pids), time.monotonic()
            evm = run_phase(
                evm_phase,
                ctx.config,
                ctx.processes,
                ctx.alpha_rpc,
                ctx.beta_rpc,
                ctx.ledger_path,
                ctx.sent,
                shared_relayer=ctx.relayer,
            )
            cpu, wall = _cpu_delta(ctx.pids, before), time.monotonic() - begun
            ctx.sent += count
            outcome.evm[kind] = evm
            report_phase(evm, ctx.gas_limit)
            print(f"  {_cpu_line(cpu, wall)} (Asset Hub idle: only polled)")
            for from_hub in (True, False):
                phase = HubPhase(
                    f"{'assethub-to-alpha' if from_hub else 'alpha-to-assethub'}-{kind}",
                    from_hub,
                    count,
                    interval,
                )
                print(f"\n... phase {phase.name}: {phase.title}, load {_load()}", flush=True)
                _check_alive(ctx)
                if from_hub:
                    leg = await run_from_hub(phase, ctx, sub, keypair)
                else:
                    leg = await run_to_hub(phase, ctx, sub)
                ctx.sent += count
                outcome.legs[phase.name] = leg
                report_hub(leg, evm)
                _check_alive(ctx)
    return outcome


def report_floor(floor: Floor) -> None:
    print(
        f"\n[floor] {len(floor.included)} plain System.remark extrinsics on Asset Hub, one after "
        f"the other: submit → head announced p50 {_fmt(floor.block_seconds, '.2f')} s; submit → "
        f"inclusion seen by substrate-interface p50 "
        f"{_fmt(statistics.median(floor.included) if floor.included else None, '.2f')} s"
    )
    if floor.builds:
        print(
            f"  chopsticks' log: building a block took p50 {statistics.median(floor.builds):.2f} s "
            "(" + " ".join(f"{b:.2f}" for b in floor.builds) + ")"
        )
    if floor.cpu and floor.wall > 0:
        per_block = floor.cpu.get("chopsticks", 0.0) / max(1, len(floor.included))
        print(f"  {_cpu_line(floor.cpu, floor.wall)}; chopsticks {per_block:.2f} CPU s per block")
    print(
        "    raw (s, announced / included): "
        + " ".join(f"{a:.2f}/{i:.2f}" for a, i in zip(floor.appeared, floor.included, strict=False))
    )


def _hub_stage_medians(result: HubResult) -> dict[str, float]:
    """Median seconds of each step of a message's way, from the ledger, the attesters' logs
    and the proposal files."""
    steps: dict[str, list[float]] = {}

    def add(step: str, value: float) -> None:
        steps.setdefault(step, []).append(value)

    by_nonce = {
        nonce: batch
        for batch in result.batches.values()
        for nonce in range(batch.first, batch.last + 1)
    }
    appeared = {block.number: block.appeared for block in result.blocks}
    for nonce, message_id in result.ids.items():
        stages = result.stages.get(message_id, {})
        source = result.source_time.get(nonce)
        if source is None or nonce not in result.delivered_time:
            continue
        final, attested = stages.get("final"), stages.get("attested")
        if nonce in result.submitted_at:
            add("remark submitted → its block appeared", source - result.submitted_at[nonce])
        if final is not None:
            add("source final → relayer scanned it", final - source)
        signatures = sorted(
            at for index, times in result.signed.items() if index >= nonce for at in times
        )
        if len(signatures) >= 2:
            add("source final → 2nd attester signed", signatures[1] - source)
        if final is not None and attested is not None:
            add("scanned → attested (relayer has a quorum)", attested - final)
        if result.phase.from_hub:
            submitted = stages.get("submitted")
            if attested is not None and submitted is not None:
                add("attested → delivery tx sent", submitted - attested)
            if submitted is not None:
                add("sent → delivery block", result.delivered_time[nonce] - submitted)
            continue
        batch = by_nonce.get(nonce)
        if batch is None:
            continue
        if attested is not None and batch.created is not None:
            add("attested → proposed", batch.created - attested)
        if batch.created is not None and batch.opened is not None:
            add("proposed → approve_as_multi (opened)", batch.opened - batch.created)
        executed = appeared.get(result.delivery_block.get(batch.first, -1))
        if batch.opened is not None and executed is not None:
            add("opened → as_multi block", executed - batch.opened)
    return {step: statistics.median(values) for step, values in steps.items()}


def _block_intervals(blocks: Sequence[HubBlock]) -> list[float]:
    times = [b.appeared for b in blocks if b.appeared is not None]
    return [b - a for a, b in itertools.pairwise(times)]


def report_hub(result: HubResult, baseline: PhaseResult) -> None:
    """Print one Asset Hub leg next to its EVM → EVM baseline of the same shape."""
    phase = result.phase
    wall = result.finished_at - result.started_at
    print(
        f"\n[{phase.name}] {phase.title}: {len(result.delivered_time)} of {phase.messages} "
        f"delivered{'' if result.complete else ' (INCOMPLETE)'}; prepared before the clock in "
        f"{result.prepare_seconds:.1f} s"
    )
    total = result.end_to_end
    base_total = baseline.end_to_end
    rate = None if total is None else phase.messages / total
    base_rate = None if base_total is None else baseline.phase.messages / base_total
    print(
        f"  send → all delivered: {_fmt(total, '.1f')} s = {_fmt(rate, '.2f')} messages/s | "
        f"EVM alpha → beta, same shape, same run: {_fmt(base_total, '.1f')} s = "
        f"{_fmt(base_rate, '.2f')}/s | ratio {_ratio(rate, base_rate)}"
    )
    latencies = result.latencies
    base = baseline.final_latencies
    if latencies:
        source = "block appeared" if phase.from_hub else "block final (appeared + 3 s)"
        target = "alpha" if phase.from_hub else "Asset Hub"
        p50, p95 = _percentile(latencies, 0.5), _percentile(latencies, 0.95)
        b50 = _percentile(base, 0.5) if base else None
        b95 = _percentile(base, 0.95) if base else None
        print(
            f"  latency, source {source} → delivery block appeared on {target}: p50 {p50:.2f} s, "
            f"p95 {p95:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}) | EVM "
            f"alpha → beta after finality: p50 {_fmt(b50, '.2f')} s, p95 {_fmt(b95, '.2f')} s | "
            f"ratio p50 {_ratio(p50, b50)}, p95 {_ratio(p95, b95)}"
        )
    ordered = [
        result.delivered_time[n] - result.source_time[n]
        for n in sorted(result.delivered_time)
        if n in result.source_time
    ]
    if phase.interval and len(ordered) >= 4:
        half = len(ordered) // 2
        early, late = _percentile(ordered[:half], 0.5), _percentile(ordered[-half:], 0.5)
        print(
            f"  backlog: latency p50 of the first {half} sent {early:.2f} s, of the last {half} "
            f"{late:.2f} s"
        )
    medians = _hub_stage_medians(result)
    if medians:
        print(
            "  where it goes (medians): "
            + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in medians.items())
        )
    kinds: Counter[str] = Counter(label for b in result.blocks for label in b.extrinsics)
    intervals = _block_intervals(result.blocks)
    print(
        f"  Asset Hub: {len(result.blocks)} blocks built during the phase, "
        f"{sum(kinds.values())} user extrinsics: "
        + ", ".join(f"{label} ×{n}" for label, n in sorted(kinds.items()))
        + (f"; block → next block p50 {statistics.median(intervals):.2f} s" if intervals else "")
    )
    builds = [b.build for b in result.blocks if b.build is not None]
    if builds and wall > 0:
        print(
            f"  chopsticks' log: building them took {sum(builds):.1f} s (p50 "
            f"{statistics.median(builds):.2f} s, max {max(builds):.2f} s a block): its block "
            f"builder was busy {sum(builds) / wall:.0%} of the {wall:.1f} s"
        )
    if not phase.from_hub and result.batches:
        executed = [b for b in result.batches.values() if b.first in result.delivery_block]
        useful = 2 * len(executed)
        wasted = sum(n for label, n in kinds.items() if label.startswith("failed"))
        cost = f" ≈ {wasted * statistics.median(intervals):.1f} s of blocks" if intervals else ""
        print(
            f"  batches: {len(result.batches)} proposals (messages "
            + ", ".join(
                f"{b.first}-{b.last}"
                for b in sorted(result.batches.values(), key=lambda b: b.first)
            )
            + f"), {len(executed)} executed; the two extrinsics per batch are {useful} of the "
            f"{sum(kinds.values())} extrinsics, {wasted} failed{cost}; the attesters' logs: "
            + (", ".join(f"{k} ×{n}" for k, n in sorted(result.races.items())) or "none")
        )
    if result.cpu and wall > 0:
        print(f"  {_cpu_line(result.cpu, wall)}")
    for error in result.errors[:5]:
        print(f"  ! {error}")
    if latencies:
        counts = sorted(Counter(round(x, 2) for x in latencies).items())
        print(
            "    raw latencies (s×messages): "
            + " ".join(f"{x:.2f}" if n == 1 else f"{x:.2f}×{n}" for x, n in counts)
        )
    print(
        "    raw Asset Hub blocks (number +s since start: extrinsics): "
        + "; ".join(
            f"{b.number} +{(b.appeared or 0) - result.started_at:.1f}: {', '.join(b.extrinsics)}"
            for b in result.blocks[:40]
        )
    )


def _ratio(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None or baseline == 0:
        return "n/a"
    return f"{value / baseline:.2f}x"


def summarize_hub(outcome: HubOutcome) -> None:
    """The Asset Hub rows: each leg next to its same-shape EVM → EVM baseline, and the delivery
    to Asset Hub next to the floor of two extrinsics per batch."""
    print("\nsummary, Asset Hub legs (baselines measured in the same run, same relayer)")
    for kind, evm in outcome.evm.items():
        base_total = evm.end_to_end
        base_rate = None if base_total is None else evm.phase.messages / base_total
        base = evm.final_latencies
        for direction in ("assethub-to-alpha", "alpha-to-assethub"):
            leg = outcome.legs.get(f"{direction}-{kind}")
            if leg is None:
                continue
            total = leg.end_to_end
            rate = None if total is None else leg.phase.messages / total
            lat = leg.latencies
            p50 = _percentile(lat, 0.5) if lat else None
            p95 = _percentile(lat, 0.95) if lat else None
            b50 = _percentile(base, 0.5) if base else None
            b95 = _percentile(base, 0.95) if base else None
            throughput = (
                ""
                if leg.phase.interval  # paced: the rate is the pace
                else f"{_fmt(rate, '.2f')} messages/s send → all delivered (EVM → EVM "
                f"{_fmt(base_rate, '.2f')}/s: {_ratio(rate, base_rate)}); "
            )
            print(
                f"  {leg.phase.title}: {throughput}latency p50 {_fmt(p50, '.2f')} / p95 "
                f"{_fmt(p95, '.2f')} s (EVM → EVM {_fmt(b50, '.2f')} / {_fmt(b95, '.2f')} s: "
                f"{_ratio(p50, b50)} / {_ratio(p95, b95)})"
            )
    floor = outcome.floor
    burst = outcome.legs.get("alpha-to-assethub-burst")
    if floor is not None and floor.block_seconds and burst is not None:
        count = burst.phase.messages
        batches = math.ceil(count / SUBSTRATE_BATCH_SIZE)
        ceiling = count / (2 * batches * floor.block_seconds)
        total = burst.end_to_end
        rate = None if total is None else count / total
        print(
            f"  alpha → Asset Hub ceiling from the floor: {count} messages in {batches} batches "
            f"of up to {SUBSTRATE_BATCH_SIZE}, 2 extrinsics each × {floor.block_seconds:.2f} s a "
            f"block = {ceiling:.1f} messages/s; measured {_fmt(rate, '.2f')}/s = "
            f"{_ratio(rate, ceiling)} of it"
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


def _check_chains(config: Config) -> ChainConfig | None:
    """The finality the numbers assume: confirmations:3 on the anvils, devnet-instant on
    Asset Hub. Returns the Asset Hub chain, or None if the devnet has none."""
    hub = None
    for chain in config.chains:
        if chain.kind == "substrate":
            if str(chain.finality) != HUB_FINALITY:
                raise SystemExit(f"bench_relay: expected {HUB_FINALITY} on {chain.name}")
            hub = chain if chain.name == HUB else hub
        elif (chain.finality.name, chain.finality.depth) != ("confirmations", FINALITY_BLOCKS):
            raise SystemExit(f"bench_relay: expected confirmations:3, got {chain.finality}")
    return hub


def run_evm_legs(
    args: argparse.Namespace,
    config: Config,
    processes: Processes,
    alpha_rpc: Rpc,
    beta_rpc: Rpc,
    ledger_path: Path,
    gas_limit: int,
) -> dict[str, PhaseResult]:
    """Issue #3's phases, alpha → beta, each with its own relayer."""
    baseline_messages = args.messages if args.baseline_messages is None else args.baseline_messages
    phases = [Phase("pipelined", args.messages, args.batch_size, args.max_inflight, args.poll)]
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
        print(f"\n... phase {phase.name}: {phase.messages} messages, load {_load()}", flush=True)
        results[phase.name] = run_phase(
            phase, config, processes, alpha_rpc, beta_rpc, ledger_path, sent
        )
        sent += phase.messages
        report_phase(results[phase.name], gas_limit)
    summarize(results, gas_limit)
    return results


def run_hub_legs(
    args: argparse.Namespace,
    config: Config,
    processes: Processes,
    state_dir: Path,
    alpha_rpc: Rpc,
    beta_rpc: Rpc,
    ledger_path: Path,
    gas_limit: int,
) -> HubOutcome:
    """The Asset Hub legs (issue #4) with one relayer of default settings, next to their EVM →
    EVM baselines of the same shape."""
    hub = config.chain(HUB)
    watcher = HeadWatcher(hub.rpc[0])
    watcher.start()
    name = "relayer-assethub"
    relayer = processes.start(name, "relay", "--poll", str(args.poll))
    try:
        _wait_started(processes, name)
        shown = manager.status(state_dir)["chains"]
        chains = {str(c["name"]): c.get("pid") for c in shown}
        logs = {str(c["name"]): c.get("log") for c in shown}
        pids = {
            "relayer": [relayer.pid],
            "attesters": [p.pid for n, p in processes.running.items() if n.startswith("attester")],
            "chopsticks": [int(chains[HUB])] if chains.get(HUB) else [],
            "anvils": [int(chains[c]) for c in ("alpha", "beta") if chains.get(c)],
        }
        checkpoint_store = Path(config.checkpoint_store)
        if not checkpoint_store.is_absolute():
            checkpoint_store = state_dir / checkpoint_store
        context = HubContext(
            config=config,
            processes=processes,
            relayer=name,
            alpha_rpc=alpha_rpc,
            beta_rpc=beta_rpc,
            ledger_path=ledger_path,
            proposals=checkpoint_store / "proposals" / str(hub.domain),
            logs=processes.logs,
            watcher=watcher,
            chopsticks_log=Path(str(logs[HUB])) if logs.get(HUB) else None,
            pids=pids,
            sent=10**5,  # bodies distinct from the EVM legs'
            gas_limit=gas_limit,
        )
        outcome = trio.run(run_hub_section, context, args)
        memory = _proc_status(relayer.pid)
        print(
            f"\n  relayer (all Asset Hub legs): peak memory (VmHWM) "
            f"{memory.get('VmHWM', 0) / 1024:.1f} MiB"
            + (f"; head watcher: {watcher.error}" if watcher.error else "")
        )
    finally:
        processes.stop(name)
        watcher.stop()
    summarize_hub(outcome)
    return outcome


def main() -> None:
    """Run the phases on one fresh devnet and print everything."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_relay", description=__doc__)
    parser.add_argument(
        "--legs",
        choices=("all", "evm", "assethub"),
        default="all",
        help="EVM → EVM phases (issue #3), Asset Hub legs (issue #4), or both",
    )
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
        "--hub-messages",
        type=int,
        default=HUB_MESSAGES,
        help="Asset Hub legs: burst size, each way (and of their EVM baseline)",
    )
    parser.add_argument(
        "--hub-paced-messages",
        type=int,
        default=HUB_PACED_MESSAGES,
        help="Asset Hub legs: messages of the paced runs (0: skip them)",
    )
    parser.add_argument(
        "--hub-interval",
        type=float,
        default=HUB_INTERVAL,
        help="Asset Hub legs: seconds between two paced messages",
    )
    parser.add_argument(
        "--floor-extrinsics",
        type=int,
        default=FLOOR_EXTRINSICS,
        help="plain extrinsics timed on Asset Hub (the floor)",
    )
    parser.add_argument(
        "--attester-poll", type=float, default=ATTESTER_POLL, help="attest --poll (its default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir (logs, ledger)")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])

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
        hub = _check_chains(config)
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
        complete: list[bool] = []
        with httpx.Client(timeout=60) as http:
            alpha_rpc = Rpc(config.chain("alpha").rpc[0], http)
            beta_rpc = Rpc(config.chain("beta").rpc[0], http)
            gas_limit = int(
                beta_rpc.call("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16
            )
            print(
                f"devnet in {state_dir}: alpha and beta with 1-second blocks, finality "
                f"confirmations:{FINALITY_BLOCKS}, beta block gas limit {gas_limit:,}; "
                + (
                    f"{hub.name} (chopsticks, one block per extrinsic, finality {hub.finality}); "
                    if hub is not None
                    else "no Asset Hub; "
                )
                + f"attesters with --poll {args.attester_poll} (up in "
                f"{time.monotonic() - began:.1f} s)"
            )
            if args.legs in ("all", "evm"):
                results = run_evm_legs(
                    args, config, processes, alpha_rpc, beta_rpc, ledger_path, gas_limit
                )
                complete += [r.complete for r in results.values()]
            if args.legs in ("all", "assethub"):
                if hub is None:
                    print("\nthe devnet has no Asset Hub: its legs are skipped")
                else:
                    outcome = run_hub_legs(
                        args,
                        config,
                        processes,
                        state_dir,
                        alpha_rpc,
                        beta_rpc,
                        ledger_path,
                        gas_limit,
                    )
                    complete += [r.complete for r in outcome.evm.values()]
                    complete += [r.complete for r in outcome.legs.values()]
        print(f"\ntotal {time.monotonic() - began:.0f} s, load average at the end {_load()}")
        failed = not all(complete)
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
