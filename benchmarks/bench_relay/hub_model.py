"""What the Asset Hub legs (issue #4) are and what they record: a leg (:class:`HubPhase`), its
raw measurements (:class:`HubResult`, with the multisig :class:`Batch` es it saw), the floor
(:class:`Floor`), everything the section measured (:class:`HubOutcome`) and what the legs
share (:class:`HubContext`)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_relay.chains import EvmRpc
from benchmarks.bench_relay.evm_legs import PhaseResult
from benchmarks.bench_relay.hub_chain import HeadWatcher, HubBlock
from benchmarks.harness import Procs
from relayer.config import Config

REMARKS_PER_EXTRINSIC = 750
"""A burst's remarks per ``Utility.batch_all``: 1500 in one are refused (``exhaustsResources``:
more than one extrinsic's weight), 1000 took 4.6 s to build on a loaded host. Bursts larger
than this go out as several extrinsics, back to back (consecutive nonces, so in order)."""


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
                f"{self.messages} PSRL remarks in Utility.batch_all s of up to "
                f"{REMARKS_PER_EXTRINSIC}"
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

    @property
    def per_block(self) -> list[tuple[int, int]]:
        """(delivery block, messages delivered in it), in block order."""
        return sorted(Counter(self.delivery_block.values()).items())

    @property
    def sustained(self) -> float | None:
        """Messages/s from the first to the last delivery block, defined as the EVM legs'
        :attr:`~benchmarks.bench_relay.evm_legs.PhaseResult.rate`: the first block's messages
        are not counted (the span starts when that block appeared), so the pipeline's start-up
        (the origin's finality, the first checkpoint, the first proposal, its opening) is left
        out and what remains is how fast the relay delivers once it is running. None with
        fewer than two delivery blocks or a block not seen appear."""
        blocks = self.per_block
        if len(blocks) < 2:
            return None
        first = self._appeared(blocks[0][0])
        last = self._appeared(blocks[-1][0])
        if first is None or last is None or last <= first:
            return None
        return (len(self.delivery_block) - blocks[0][1]) / (last - first)

    def _appeared(self, block: int) -> float | None:
        """When delivery block ``block`` appeared (the time of any message delivered in it)."""
        for nonce, number in self.delivery_block.items():
            if number == block:
                return self.delivered_time.get(nonce)
        return None


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


@dataclass
class HubOutcome:
    """Everything the Asset Hub section measured."""

    floor: Floor | None = None
    evm: dict[str, PhaseResult] = field(default_factory=dict)  # the same-shape EVM baselines
    legs: dict[str, HubResult] = field(default_factory=dict)
    batch_messages: int = 0  # the weight-sized batch of the burst's messages (relayer's plan)
    batch_note: str = ""  # what sized it: the chain's limits and one message's measured cost


@dataclass
class HubContext:
    """Everything the Asset Hub legs share."""

    config: Config
    procs: Procs
    relayer: str  # the relayer process all Asset Hub legs (and their EVM baselines) share
    alpha_rpc: EvmRpc
    beta_rpc: EvmRpc
    ledger_path: Path
    proposals: Path  # the relayer's proposal files for Asset Hub
    logs: Path
    watcher: HeadWatcher
    chopsticks_log: Path | None  # its block builder logs "building #N" and "new head #N"
    pids: dict[str, list[int]]  # "relayer", "attesters", "chopsticks", "anvils" → pids
    sent: int  # message bodies used so far (each body is unique)
    gas_limit: int  # of a beta block
