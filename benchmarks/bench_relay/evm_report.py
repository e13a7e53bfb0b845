"""The printed results of the EVM → EVM legs: each phase (rate, latency, where the time goes,
gas, memory, then raw numbers) and the summary, where the pipelined run is set next to the
``--max-inflight 1`` baseline and the ``--batch-size 1`` run measured in the same run, and
against the targets of issue #3."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING

from benchmarks.bench_relay.chains import BLOCK_TIME, FINALITY_BLOCKS
from benchmarks.bench_relay.host import cpu_line
from benchmarks.bench_relay.stats import fmt, percentile, ratio, verdict

if TYPE_CHECKING:
    from benchmarks.bench_relay.evm_legs import PhaseResult

TARGET_GAS = 60_000
TARGET_ADDED_BLOCKS = 1
TARGET_RATE = 100.0


def stage_medians(result: PhaseResult) -> dict[str, float]:
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


def _report_latency(result: PhaseResult) -> None:
    finality = FINALITY_BLOCKS * BLOCK_TIME
    latencies = result.latencies
    adjusted = [x - finality for x in latencies]
    print(
        f"  latency after finality (− {finality:.0f} s): p50 {percentile(adjusted, 0.5):.1f} s"
        f", p95 {percentile(adjusted, 0.95):.1f} s | raw dispatch → delivery: p50 "
        f"{percentile(latencies, 0.5):.1f} s, p95 {percentile(latencies, 0.95):.1f} s, "
        f"min {min(latencies)} s, max {max(latencies)} s"
    )
    wall = result.wall_latencies
    print(
        f"  the same with blocks at their real appearance time (alpha +"
        f"{result.alpha_offset:.2f} s, beta +{result.beta_offset:.2f} s after their "
        f"timestamps): after finality p50 {percentile(wall, 0.5) - finality:.2f} s, p95 "
        f"{percentile(wall, 0.95) - finality:.2f} s"
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
            f"{percentile(ordered[:quarter], 0.5) - finality:.1f} s, of the last quarter "
            f"{percentile(ordered[-quarter:], 0.5) - finality:.1f} s"
        )


def _report_gas(result: PhaseResult, gas_limit: int) -> None:
    batched = result.batched_gas
    if batched is None:
        return
    sizes = [d.delivered for d in result.deliveries]
    print(
        f"  gas: {batched:,.0f} per delivered message over {len(result.deliveries)} "
        f"transactions (messages per tx: min {min(sizes)}, median "
        f"{statistics.median(sizes):.0f}, max {max(sizes)}); gas limit asked "
        f"{fmt(result.gas_limit_per_message, ',.0f')} per message"
    )
    rate = result.rate
    if rate is not None:
        ceiling = gas_limit / batched / BLOCK_TIME
        print(
            f"  ceiling: {gas_limit:,} gas/block / {batched:,.0f} gas/message / "
            f"{BLOCK_TIME:.0f} s = {ceiling:,.0f} messages/s | measured {rate:,.1f}/s = "
            f"{rate / ceiling:.1%} of it"
        )
    ceilings = result.ceilings(gas_limit)
    dispatch = result.dispatch_gas_median
    if ceilings is not None and dispatch is not None:
        origin, destination, route = ceilings
        print(
            f"  route ceiling (issue #11) = min(origin {result.alpha_gas_limit or gas_limit:,} "
            f"gas/block / {dispatch:,.0f} gas per Outbox.dispatch (median of "
            f"{len(result.dispatch_gas)} receipts) / {BLOCK_TIME:.0f} s = {origin:,.0f}/s, "
            f"destination {destination:,.0f}/s) = {route:,.0f} messages/s | measured "
            f"{fmt(rate, ',.1f')}/s = {ratio(rate, route)} of it (target >= 0.80x)"
        )
    # What the receipts say one beta block held; no claim about how the node fills a block.
    txs: Counter[int] = Counter()
    messages: Counter[int] = Counter()
    used: Counter[int] = Counter()
    asked: Counter[int] = Counter()
    for d in result.deliveries:
        txs[d.block] += 1
        messages[d.block] += d.delivered
        used[d.block] += d.gas_used
        asked[d.block] += d.gas_limit
    print(
        f"  per delivery block (receipts, {len(txs)} blocks): up to {max(txs.values())} "
        f"delivery transactions and {max(messages.values())} messages; gasUsed up to "
        f"{max(used.values()):,}, gas limit asked up to {max(asked.values()):,} (block gas "
        f"limit {gas_limit:,})"
    )


def report_phase(result: PhaseResult, gas_limit: int) -> None:
    """Print one phase: rate, latency, gas, memory, the ceiling, then raw numbers."""
    phase = result.phase
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
    print(
        f"  sustained delivery: {fmt(result.rate)} messages/s (first → last delivery block); "
        f"wall clock first broadcast → last delivery {result.wall_seconds:.1f} s"
    )
    if result.latencies:
        _report_latency(result)
    medians = stage_medians(result)
    if medians:
        print(
            "  where it goes (medians; ledger wall clock, blocks at their appearance time): "
            + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in medians.items())
        )
    _report_gas(result, gas_limit)
    if result.memory_kb:
        print(
            f"  relayer memory: peak (VmHWM) {result.memory_kb.get('VmHWM', 0) / 1024:.1f} MiB, "
            f"at the end (VmRSS) {result.memory_kb.get('VmRSS', 0) / 1024:.1f} MiB"
        )
    if result.idle_cpu:
        idle = ", ".join(f"{share:.0%}" for share in result.idle_cpu.values())
        print(
            f"  settled {result.settle_seconds:.1f} s before the phase (relayer, attesters idle "
            f"at {idle} of a core)"
        )
    if result.cpu:
        print(f"  {cpu_line(result.cpu, result.wall_seconds)} (bench = the load generator)")
        delivered = len(result.delivery_block)
        if delivered:
            print(
                "  CPU per delivered message: "
                + ", ".join(
                    f"{group} {seconds / delivered * 1000:.2f} ms"
                    for group, seconds in result.cpu.items()
                )
                + f" ({delivered} messages)"
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
    if result.latencies:
        histogram = sorted(Counter(result.latencies).items())
        print(
            "    raw latency histogram (s:messages): " + " ".join(f"{s}:{n}" for s, n in histogram)
        )
    print(
        "    raw delivery txs (messages/gasUsed/gasLimit): "
        + " ".join(f"{d.delivered}/{d.gas_used}/{d.gas_limit}" for d in result.deliveries[:40])
        + (" …" if len(result.deliveries) > 40 else "")
    )


def _p50_after_finality(result: PhaseResult | None) -> float | None:
    if result is None or not result.latencies:
        return None
    return percentile(result.latencies, 0.5) - FINALITY_BLOCKS * BLOCK_TIME


def summarize(results: dict[str, PhaseResult], gas_limit: int) -> None:
    """The comparisons with the in-run baselines, and the targets of issue #3."""
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
    if baseline is not None:
        total, base_total = burst.end_to_end, baseline.end_to_end
        per_s = None if not total else burst.phase.messages / total
        base_per_s = None if not base_total else baseline.phase.messages / base_total
        print(
            f"  send → all delivered: {fmt(per_s)} messages/s ({burst.phase.messages} in "
            f"{fmt(total)} s) vs {fmt(base_per_s)}/s with --max-inflight 1 "
            f"({baseline.phase.messages} in {fmt(base_total)} s): ratio {ratio(per_s, base_per_s)}"
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
        f"  target batched gas <= {TARGET_GAS:,}/message: {fmt(batched, ',.0f')} → "
        f"{verdict(None if batched is None else batched <= TARGET_GAS)}"
    )
    limit = TARGET_ADDED_BLOCKS * BLOCK_TIME
    floor = None if ceiling is None else burst.phase.messages / 2 / ceiling
    print(
        f"  target p50 adds <= {TARGET_ADDED_BLOCKS} block after finality, burst of "
        f"{burst.phase.messages}: {fmt(p50, '.1f')} s → "
        f"{verdict(None if p50 is None else p50 <= limit)} (queueing alone, at the gas "
        f"ceiling, costs the median message {fmt(floor, '.1f')} s)"
    )
    if paced is not None:
        paced_p50 = _p50_after_finality(paced)
        print(
            f"  target p50 adds <= {TARGET_ADDED_BLOCKS} block after finality, paced at "
            f"{paced.phase.pace}/s: {fmt(paced_p50, '.1f')} s → "
            f"{verdict(None if paced_p50 is None else paced_p50 <= limit)}"
        )
    print(
        f"  target >= {TARGET_RATE:.0f} messages/s sustained: {fmt(rate)} → "
        f"{verdict(None if rate is None else rate >= TARGET_RATE)} "
        f"(ceiling {fmt(ceiling, ',.0f')}/s)"
    )
