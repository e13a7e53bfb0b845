"""The printed results of the Asset Hub legs: the floor, each leg next to the EVM → EVM
baseline of the same shape measured in the same run (and their ratio), the evidence of what
limited it, then raw numbers; and the summary of the section."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence

from benchmarks.bench_relay.evm_legs import PhaseResult
from benchmarks.bench_relay.host import cpu_line
from benchmarks.bench_relay.hub_chain import HubBlock
from benchmarks.bench_relay.hub_model import Floor, HubOutcome, HubResult
from benchmarks.bench_relay.stats import fmt, percentile, ratio


def report_floor(floor: Floor) -> None:
    print(
        f"\n[floor] {len(floor.included)} plain System.remark extrinsics on Asset Hub, one after "
        f"the other: submit → head announced p50 {fmt(floor.block_seconds, '.2f')} s; submit → "
        f"inclusion seen by substrate-interface p50 "
        f"{fmt(statistics.median(floor.included) if floor.included else None, '.2f')} s"
    )
    if floor.builds:
        print(
            f"  chopsticks' log: building a block took p50 {statistics.median(floor.builds):.2f} s "
            "(" + " ".join(f"{b:.2f}" for b in floor.builds) + ")"
        )
    if floor.cpu and floor.wall > 0:
        per_block = floor.cpu.get("chopsticks", 0.0) / max(1, len(floor.included))
        print(f"  {cpu_line(floor.cpu, floor.wall)}; chopsticks {per_block:.2f} CPU s per block")
    print(
        "    raw (s, announced / included): "
        + " ".join(f"{a:.2f}/{i:.2f}" for a, i in zip(floor.appeared, floor.included, strict=False))
    )


def stage_medians(result: HubResult) -> dict[str, float]:
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


def block_intervals(blocks: Sequence[HubBlock]) -> list[float]:
    times = [b.appeared for b in blocks if b.appeared is not None]
    return [b - a for a, b in itertools.pairwise(times)]


def full_batch_block(floor: Floor, blocks: Sequence[HubBlock]) -> float | None:
    """Seconds from submitting a full batch's execution to its block announced, on this
    devnet: the floor's submit → announced, less the floor's own build time, plus the median
    build time of the phase's blocks that executed a batch (chopsticks' log); None without
    those builds."""
    builds = [
        b.build
        for b in blocks
        if b.build is not None and any(x.startswith("as_multi: executed") for x in b.extrinsics)
    ]
    if not builds or not floor.block_seconds:
        return None
    floor_build = statistics.median(floor.builds) if floor.builds else 0.0
    return max(0.0, floor.block_seconds - floor_build) + statistics.median(builds)


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
        f"  send → all delivered: {fmt(total, '.1f')} s = {fmt(rate, '.2f')} messages/s | "
        f"EVM alpha → beta, same shape, same run: {fmt(base_total, '.1f')} s = "
        f"{fmt(base_rate, '.2f')}/s | ratio {ratio(rate, base_rate)}"
    )
    latencies = result.latencies
    base = baseline.final_latencies
    if latencies:
        source = "block appeared" if phase.from_hub else "block final (appeared + 3 s)"
        target = "alpha" if phase.from_hub else "Asset Hub"
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        b50 = percentile(base, 0.5) if base else None
        b95 = percentile(base, 0.95) if base else None
        print(
            f"  latency, source {source} → delivery block appeared on {target}: p50 {p50:.2f} s, "
            f"p95 {p95:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}) | EVM "
            f"alpha → beta after finality: p50 {fmt(b50, '.2f')} s, p95 {fmt(b95, '.2f')} s | "
            f"ratio p50 {ratio(p50, b50)}, p95 {ratio(p95, b95)}"
        )
    ordered = [
        result.delivered_time[n] - result.source_time[n]
        for n in sorted(result.delivered_time)
        if n in result.source_time
    ]
    if phase.interval and len(ordered) >= 4:
        half = len(ordered) // 2
        early, late = percentile(ordered[:half], 0.5), percentile(ordered[-half:], 0.5)
        print(
            f"  backlog: latency p50 of the first {half} sent {early:.2f} s, of the last {half} "
            f"{late:.2f} s"
        )
    medians = stage_medians(result)
    if medians:
        print(
            "  where it goes (medians): "
            + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in medians.items())
        )
    kinds: Counter[str] = Counter(label for b in result.blocks for label in b.extrinsics)
    intervals = block_intervals(result.blocks)
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
        calls = sum(n * (label.count(" + ") + 1) for label, n in kinds.items())
        wasted = sum(n * label.count("failed") for label, n in kinds.items())
        cost = f" ≈ {wasted * statistics.median(intervals):.1f} s of blocks" if intervals else ""
        print(
            f"  batches: {len(result.batches)} proposals (messages "
            + ", ".join(
                f"{b.first}-{b.last}"
                for b in sorted(result.batches.values(), key=lambda b: b.first)
            )
            + f"), {len(executed)} executed; the two multisig calls per batch are {useful} of "
            f"the {calls} calls, in {sum(kinds.values())} extrinsics, {wasted} failed{cost}; the "
            "attesters' logs: "
            + (", ".join(f"{k} ×{n}" for k, n in sorted(result.races.items())) or "none")
        )
    if result.cpu and wall > 0:
        print(f"  {cpu_line(result.cpu, wall)}")
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
            p50 = percentile(lat, 0.5) if lat else None
            p95 = percentile(lat, 0.95) if lat else None
            b50 = percentile(base, 0.5) if base else None
            b95 = percentile(base, 0.95) if base else None
            throughput = (
                ""
                if leg.phase.interval  # paced: the rate is the pace
                else f"{fmt(rate, '.2f')} messages/s send → all delivered (EVM → EVM "
                f"{fmt(base_rate, '.2f')}/s: {ratio(rate, base_rate)}); "
            )
            print(
                f"  {leg.phase.title}: {throughput}latency p50 {fmt(p50, '.2f')} / p95 "
                f"{fmt(p95, '.2f')} s (EVM → EVM {fmt(b50, '.2f')} / {fmt(b95, '.2f')} s: "
                f"{ratio(p50, b50)} / {ratio(p95, b95)})"
            )
    burst = outcome.legs.get("alpha-to-assethub-burst")
    if burst is not None:
        report_ceilings(outcome, burst)


def hub_ceilings(outcome: HubOutcome, burst: HubResult) -> list[tuple[str, float, str]]:
    """The alpha → Asset Hub burst's ceilings in messages/s, each as (name, rate, one-line
    definition), the issue's first; empty without a measured floor. Each is a rate per batch
    (messages per batch over the blocks a batch costs), so the send → all and the sustained
    figures are both compared against the same number."""
    floor = outcome.floor
    if floor is None or not floor.block_seconds:
        return []
    count = burst.phase.messages
    size = outcome.batch_messages or 1
    batches = math.ceil(count / size)
    ceilings = [
        (
            "issue #12's",
            count / (2 * batches * floor.block_seconds),
            f"2 floor blocks per weight-sized batch ({batches} of up to {size}) × "
            f"{floor.block_seconds:.2f} s, the floor being an empty block's submit → announced "
            '(what the issue means: it said "31.5/s" for 25 a batch × 2 blocks of 0.40 s, '
            "which is 31.25/s)",
        )
    ]
    intervals = block_intervals(burst.blocks)
    if intervals:
        block = statistics.median(intervals)
        ceilings.append(
            (
                "the phase's own blocks",
                count / (2 * batches * block),
                f"2 blocks per batch × this phase's block → next block p50 {block:.2f} s "
                "(their contents included)",
            )
        )
    full = full_batch_block(floor, burst.blocks)
    if full is not None:
        # The floor is an empty block; the block that executes a full batch (494 mints and
        # remarks) takes chopsticks seconds to build. What this devnet can do at best: the
        # first batch's opening block, then one full block per batch (the next batch's opening
        # sharing the execution's block), or two blocks per batch if nothing overlaps.
        ceilings.append(
            (
                "chopsticks' own, openings overlapped",
                count / (floor.block_seconds + batches * full),
                f"one opening block, then one block of {full:.2f} s per batch (the floor's "
                "submit → announced less its build, plus the phase's p50 build of an executing "
                "block)",
            )
        )
        ceilings.append(
            (
                "chopsticks' own, serial",
                count / (batches * (floor.block_seconds + full)),
                f"per batch an opening block at the floor's {floor.block_seconds:.2f} s and an "
                f"executing block of {full:.2f} s, one after the other",
            )
        )
    return ceilings


def sustained_ceiling(burst: HubResult) -> float | None:
    """The best rate over the sustained rate's own span (:attr:`HubResult.sustained`): the
    same messages (those after the first delivery block) over the same delivery blocks, each
    at its own build time (chopsticks' log), back to back. Chopsticks builds one block at a
    time, so the span from the first delivery block to the last holds at least the later ones'
    builds; the best case has the openings share their blocks and nothing else in between.

    Why next to the sustained rate, not only the per-batch ceilings: those assume
    ``ceil(count / batch)`` equal batches at the median full build, while the span holds only
    the later batches, whatever their sizes (494/494/494/18 puts a small last block into the
    span and the sustained rate above the "overlapped" ceiling: review L5). The floor's
    submit → announced is not added per block: blocks built back to back overlap it with the
    previous build (measured, that sum came out below the sustained rate). None without a
    build for every block in the span."""
    blocks = burst.per_block[1:]
    builds = {b.number: b.build for b in burst.blocks}
    span = [builds.get(number) for number, _ in blocks]
    if not span or any(build is None for build in span):
        return None
    seconds = sum(build or 0.0 for build in span)
    return sum(count for _, count in blocks) / seconds if seconds > 0 else None


def openings_before(burst: HubResult) -> int:
    """How many operations were opened in blocks before the burst's first delivery block."""
    if not burst.delivery_block:
        return 0
    first = min(burst.delivery_block.values())
    return sum(
        label.count("approve_as_multi: opened")
        for block in burst.blocks
        if block.number < first
        for label in block.extrinsics
    )


def report_ceilings(outcome: HubOutcome, burst: HubResult) -> None:
    """The alpha → Asset Hub burst's two measured rates (send → all delivered, which includes
    the pipeline's start-up, and the sustained rate, which does not) next to every ceiling,
    each with its definition. None is picked to pass: all are printed, the issue's first."""
    count = burst.phase.messages
    total = burst.end_to_end
    rate = None if total is None else count / total
    sustained = burst.sustained
    blocks = burst.per_block
    first = blocks[0][1] if blocks else 0
    span = sustained_ceiling(burst)
    print(
        f"  alpha → Asset Hub, {count} messages: send → all delivered {fmt(rate, '.2f')}/s; "
        f"sustained {fmt(sustained, '.2f')}/s (first → last of {len(blocks)} delivery blocks, "
        f"the first block's {first} messages left out, as the EVM legs' sustained rate) "
        f"({outcome.batch_note})"
    )
    print(
        f"  ceiling over the same span: {fmt(span, '.1f')} messages/s; sustained = "
        f"{ratio(sustained, span)} of it — the same messages over the same delivery blocks, "
        "each at its own build time (chopsticks' log), back to back, openings sharing their "
        "blocks"
    )
    early = openings_before(burst)
    if sustained is not None and early > 1:
        # With few batches, most openings are built before the first execution: the span
        # then holds about one block per batch, not the two every ceiling below counts.
        print(
            f"  (caution: {early} of the openings were built before the first delivery block, "
            "so the sustained span counts about one block per batch; with a burst of many more "
            "batches than that, e.g. --hub-messages 6000, it measures the steady state)"
        )
    for name, ceiling, definition in hub_ceilings(outcome, burst):
        print(
            f"  ceiling, {name}: {ceiling:.1f} messages/s; sustained = "
            f"{ratio(sustained, ceiling)}, send → all = {ratio(rate, ceiling)} of it — "
            f"{definition}"
        )
    floor = outcome.floor
    if floor is not None and floor.block_seconds:
        old = count / (2 * math.ceil(count / 25) * floor.block_seconds)
        print(f"  (the issue's ceiling with the old fixed 25 a batch: {old:.1f} messages/s)")
    executed = [b for b in burst.batches.values() if b.first in burst.delivery_block]
    if executed:
        appeared = {b.number: b.appeared for b in burst.blocks}
        first_final = min(burst.source_time.values(), default=None)
        last = max((appeared.get(n) or 0.0) for n in burst.delivery_block.values())
        if first_final is not None and last > first_final:
            print(
                f"  from the first message final on alpha to the last delivery block: "
                f"{last - first_final:.1f} s = {count / (last - first_final):.1f} "
                "messages/s (the EVM side's fixed cost, send → final, left out)"
            )
