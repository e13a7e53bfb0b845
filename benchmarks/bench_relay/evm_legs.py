"""The measured EVM → EVM legs (alpha → beta, issue #3): one relayer configuration per
:class:`Phase`, run over a fresh set of messages and measured from the chains until every one
has its ``Delivered`` on beta (:func:`run_phase`); :func:`run_evm_legs` runs issue #3's phases,
the in-run baseline among them."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.evm.chain import DISPATCH_TOPIC
from benchmarks.bench_relay import host, ledger
from benchmarks.bench_relay.chains import BLOCK_TIME, FINALITY_BLOCKS, EvmRpc, block_offsets
from benchmarks.bench_relay.evm_report import report_phase, summarize
from benchmarks.bench_relay.load import broadcast, sign_dispatches
from benchmarks.harness import (
    ALREADY_DELIVERED,
    DELIVERED,
    HANDLE_FAILED,
    HarnessError,
    Procs,
    wait_for,
)
from light_clients.hexstr import parse_data
from relayer.config import Config

UNBATCHED_MESSAGES = 5
SETTLE_BUSY = 0.4  # share of a core under which the relayer and attesters count as idle
SETTLE_WINDOWS = 3  # consecutive quiet seconds that make the processes settled
SETTLE_TIMEOUT = 120.0  # seconds after which a phase starts anyway


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
    cpu: dict[str, float] = field(default_factory=dict)  # group → CPU s, first broadcast → end
    settle_seconds: float = 0.0  # waited for the relayer and attesters to finish starting
    idle_cpu: dict[int, float] = field(default_factory=dict)  # pid → share of a core, settled
    dispatch_gas: list[int] = field(default_factory=list)  # gasUsed of sampled dispatch txs
    alpha_gas_limit: int = 0
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
    def dispatch_gas_median(self) -> float | None:
        """Median gasUsed of one ``Outbox.dispatch`` transaction (this phase's, sampled)."""
        return statistics.median(self.dispatch_gas) if self.dispatch_gas else None

    def ceilings(self, gas_limit: int) -> tuple[float, float, float] | None:
        """(origin, destination, route) ceilings in messages/s at this phase's measured gas:
        a block's gas limit / gas per message / block time; the route's is the smaller
        (issue #11). None until both gases are measured."""
        batched, dispatch = self.batched_gas, self.dispatch_gas_median
        if batched is None or dispatch is None:
            return None
        origin = (self.alpha_gas_limit or gas_limit) / dispatch / BLOCK_TIME
        destination = gas_limit / batched / BLOCK_TIME
        return origin, destination, min(origin, destination)

    @property
    def gas_limit_per_message(self) -> float | None:
        """The gas *limit* the relayer asked for, per message."""
        messages = sum(d.delivered for d in self.deliveries)
        return sum(d.gas_limit for d in self.deliveries) / messages if messages else None


def run_phase(
    phase: Phase,
    config: Config,
    procs: Procs,
    alpha_rpc: EvmRpc,
    beta_rpc: EvmRpc,
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
        relayer = procs.start_relayer(
            "--batch-size",
            str(phase.batch_size),
            "--max-inflight",
            str(phase.max_inflight),
            name=name,
            poll=phase.poll,
        )
        procs.wait_relaying(name)
    else:
        name, relayer = shared_relayer, procs.running[shared_relayer]
    result.alpha_offset, result.beta_offset = block_offsets([alpha_rpc, beta_rpc])
    attesters = [p.pid for n, p in procs.running.items() if n.startswith("attester")]
    result.settle_seconds, result.idle_cpu = wait_settled([relayer.pid, *attesters])
    alpha_start, beta_start = alpha_rpc.block_number() + 1, beta_rpc.block_number() + 1
    groups = {
        "relayer": [relayer.pid],
        "attesters": attesters,
        "anvils": anvil_pids([alpha_rpc.url, beta_rpc.url]),
    }
    dispatch_txs: dict[str, str] = {}

    signing = time.monotonic()
    raw = sign_dispatches(
        config,
        alpha,
        alpha_rpc,
        phase.messages,
        first_body,
        destination=beta.domain,
        recipient=beta.contract("ping").rjust(32, b"\0"),
    )
    # From here on the CPU is the relay's: pre-signing is the load generator's own set-up,
    # and while it ran the relayer and attesters only polled an idle chain.
    cpu_before = host.cpu_snapshot(groups)
    started = time.monotonic()
    result.started_at = time.time()
    result.sign_seconds = started - signing
    broadcast(alpha_rpc, raw, pace=phase.pace, interval=phase.interval, started=started)
    result.send_seconds = time.monotonic() - started

    def all_delivered() -> bool:
        if len(result.dispatch_block) < phase.messages:
            for entry in alpha_rpc.logs(outbox, DISPATCH_TOPIC, alpha_start):
                result.dispatch_block[entry["topics"][1].lower()] = int(entry["blockNumber"], 16)
                dispatch_txs[entry["topics"][1].lower()] = entry["transactionHash"]
        for message_id, block in beta_rpc.delivered(inbox, beta_start).items():
            if message_id in result.dispatch_block:
                result.delivery_block[message_id] = block
        return len(result.dispatch_block) >= phase.messages and len(result.delivery_block) >= len(
            result.dispatch_block
        )

    deadline = started + 90.0 + phase.messages / 10
    try:
        wait_for(
            all_delivered,
            f"{phase.messages} deliveries",
            deadline - time.monotonic(),
            poll=0.5,
            alive=lambda: procs.check_running(name),
        )
        result.complete = True
    except HarnessError as error:
        print(f"  {error}")
    result.wall_seconds = time.monotonic() - started
    if not result.complete:
        print(
            f"  INCOMPLETE after {result.wall_seconds:.0f} s: {len(result.dispatch_block)} "
            f"dispatched, {len(result.delivery_block)} delivered"
        )

    result.memory_kb = host.proc_status(relayer.pid)
    # "bench" is this process: the load generator (broadcasting) and the polling.
    result.cpu = host.cpu_delta(groups, cpu_before)
    if shared_relayer is None:
        procs.stop(name)

    result.alpha_time = alpha_rpc.timestamps(set(result.dispatch_block.values()))
    result.beta_time = beta_rpc.timestamps(set(result.delivery_block.values()))
    result.deliveries = deliveries(beta_rpc, inbox, beta_start, set(result.dispatch_block))
    result.dispatch_gas = dispatch_gas(alpha_rpc, sorted(set(dispatch_txs.values())))
    result.alpha_gas_limit = alpha_rpc.gas_limit()
    result.stages = ledger.stages(ledger_path, set(result.dispatch_block))
    return result


def wait_settled(
    pids: list[int],
    *,
    busy: float = SETTLE_BUSY,
    windows: int = SETTLE_WINDOWS,
    timeout: float = SETTLE_TIMEOUT,
) -> tuple[float, dict[int, float]]:
    """Wait until the processes of ``pids`` together used less than ``busy`` of a core in each
    of ``windows`` consecutive seconds: the seconds waited, and each one's share of a core in
    the last of them (what it costs idle, polling).

    A relayer logs that it is relaying, and an attester signs, before their Asset Hub tasks
    have connected: each connection decodes the runtime metadata, seconds of CPU per process
    (about 15 s of wall clock when four processes start together on 2 cores). Without this
    wait that start-up was billed to the burst's messages (session 5: about half of the "CPU
    per message" measured then). Idle, an attester uses ~4 % of a core and a relayer ~11 %
    (~25 % together); starting together, each gets ~20 % of the shared cores (~80 %), so it is
    their sum that tells the two apart, not any one of them. Gives up after ``timeout`` (a
    machine too busy for anything to look idle) and measures anyway: the report shows the
    wait and the shares."""
    began = time.monotonic()
    quiet = 0
    while True:
        before = {pid: host.cpu_seconds(pid) or 0.0 for pid in pids}
        time.sleep(1.0)
        shares = {pid: (host.cpu_seconds(pid) or 0.0) - before[pid] for pid in pids}
        quiet = quiet + 1 if sum(shares.values()) < busy else 0
        waited = time.monotonic() - began
        if quiet >= windows or waited >= timeout:
            return waited, shares


def anvil_pids(urls: list[str]) -> list[int]:
    """The pids of the anvil processes serving ``urls`` (found by ``--port`` in their command
    lines): their CPU time is part of what limits the rate."""
    ports = {url.rsplit(":", 1)[-1].split("/")[0] for url in urls}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if words and words[0].endswith("anvil") and "--port" in words:
            at = words.index("--port")
            if at + 1 < len(words) and words[at + 1] in ports:
                found.append(int(entry))
    return found


def dispatch_gas(rpc: EvmRpc, hashes: list[str], sample: int = 200) -> list[int]:
    """gasUsed of up to ``sample`` of the dispatch transactions ``hashes`` (evenly spread)."""
    step = max(1, len(hashes) // sample)
    chosen = hashes[::step][:sample]
    out: list[int] = []
    for start in range(0, len(chosen), 50):
        chunk = chosen[start : start + 50]
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
        out += [int(r["gasUsed"], 16) for r in receipts]
    return out


def deliveries(rpc: EvmRpc, inbox: bytes, from_block: int, ids: set[str]) -> list[Delivery]:
    """Every delivery transaction carrying one of ``ids``, from its receipt."""
    hashes = sorted(
        {
            entry["transactionHash"]
            for entry in rpc.logs(inbox, DELIVERED, from_block)
            if entry["topics"][1].lower() in ids
        }
    )
    inbox_address = inbox[-20:]
    out = []
    for start in range(0, len(hashes), 50):
        chunk = hashes[start : start + 50]
        receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
        txs = rpc.batch([("eth_getTransactionByHash", [h]) for h in chunk])
        for tx_hash, receipt, tx in zip(chunk, receipts, txs, strict=True):
            topics = Counter(
                parse_data(log["topics"][0], "log topic", 32)
                for log in receipt["logs"]
                if parse_data(log["address"], "log address", 20) == inbox_address
            )
            out.append(
                Delivery(
                    tx_hash=tx_hash,
                    block=int(receipt["blockNumber"], 16),
                    gas_used=int(receipt["gasUsed"], 16),
                    gas_limit=int(tx["gas"], 16),
                    delivered=topics[DELIVERED],
                    already=topics[ALREADY_DELIVERED],
                    handle_failed=topics[HANDLE_FAILED],
                )
            )
    return out


def run_evm_legs(
    args: argparse.Namespace,
    config: Config,
    procs: Procs,
    alpha_rpc: EvmRpc,
    beta_rpc: EvmRpc,
    ledger_path: Path,
    gas_limit: int,
) -> dict[str, PhaseResult]:
    """Issue #3's phases, alpha → beta, each with its own relayer; the baseline (``--max-inflight
    1``) is measured in the same run, and the summary compares with it."""
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
        print(
            f"\n... phase {phase.name}: {phase.messages} messages, load {host.load_average()}",
            flush=True,
        )
        results[phase.name] = run_phase(
            phase, config, procs, alpha_rpc, beta_rpc, ledger_path, sent
        )
        sent += phase.messages
        report_phase(results[phase.name], gas_limit)
    summarize(results, gas_limit)
    return results
