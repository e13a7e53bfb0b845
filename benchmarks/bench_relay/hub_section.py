"""The Asset Hub section of a run (issue #4): one relayer of default settings for all of it,
the floor, then per shape (burst, paced) the EVM → EVM baseline of that shape, measured in the
same run with the same relayer, and both Asset Hub legs, each reported next to it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import trio

from adapters.substrate.client import SubstrateClient
from adapters.substrate.multisig import extrinsic_limits
from benchmarks.bench_relay import host
from benchmarks.bench_relay.chains import BLOCK_TIME, HUB, EvmRpc
from benchmarks.bench_relay.evm_legs import Phase, run_phase
from benchmarks.bench_relay.evm_report import report_phase
from benchmarks.bench_relay.hub_chain import HeadWatcher
from benchmarks.bench_relay.hub_evidence import chopsticks_builds
from benchmarks.bench_relay.hub_legs import (
    LOG_FLUSH,
    measure_floor,
    run_from_hub,
    run_to_hub,
    wait_hub_scanned,
)
from benchmarks.bench_relay.hub_model import HubContext, HubOutcome, HubPhase
from benchmarks.bench_relay.hub_report import report_floor, report_hub, summarize_hub
from benchmarks.bench_relay.load import BODY
from benchmarks.harness import Procs
from devnet import manager
from light_clients.message import Message
from relayer.config import RELAY_BATCH_SIZE, RELAY_MAX_INFLIGHT, SUBSTRATE_BATCH_SIZE, Config
from relayer.families.substrate.batching import (
    chain_sizing,
    message_cost,
    plan_batches,
)
from relayer.families.substrate.calls import token_bridges
from relayer.families.substrate.user import client_keypair


async def run_hub_section(ctx: HubContext, args: argparse.Namespace) -> HubOutcome:
    """The floor, then per shape (burst, paced) the EVM → EVM baseline and both Asset Hub legs,
    all with one relayer (started by the caller) and the attesters already running."""
    outcome = HubOutcome()
    hub = ctx.config.chain(HUB)
    keypair = client_keypair(ctx.config)
    async with SubstrateClient(hub.rpc[0]) as sub:
        # A first extrinsic, not timed: once the relayer has scanned its block, the relayer
        # is connected to Asset Hub and past its start-up.
        probe = await measure_floor(sub, keypair, ctx, 1)
        if not await wait_hub_scanned(ctx, hub.domain, probe.last_block, 60.0):
            print(f"  the relayer has not scanned assethub yet:\n{ctx.procs.tail(ctx.relayer)}")
        print(
            f"\n... Asset Hub floor: {args.floor_extrinsics} plain extrinsics, "
            f"load {host.load_average()}"
        )
        before, begun = host.cpu_snapshot(ctx.pids), time.monotonic()
        outcome.floor = await measure_floor(sub, keypair, ctx, args.floor_extrinsics)
        outcome.floor.wall = time.monotonic() - begun
        outcome.floor.cpu = host.cpu_delta(ctx.pids, before)
        await trio.sleep(LOG_FLUSH)
        builds = chopsticks_builds(ctx.chopsticks_log, time.time())
        outcome.floor.builds = [builds[n] for n in outcome.floor.blocks if n in builds]
        report_floor(outcome.floor)
        await plan_burst(outcome, ctx, sub, args.hub_messages)
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
            print(
                f"\n... phase {evm_phase.name}: {count} messages alpha → beta, "
                f"load {host.load_average()}"
            )
            ctx.procs.check_running()
            before, begun = host.cpu_snapshot(ctx.pids), time.monotonic()
            evm = run_phase(
                evm_phase,
                ctx.config,
                ctx.procs,
                ctx.alpha_rpc,
                ctx.beta_rpc,
                ctx.ledger_path,
                ctx.sent,
                shared_relayer=ctx.relayer,
            )
            cpu, wall = host.cpu_delta(ctx.pids, before), time.monotonic() - begun
            ctx.sent += count
            outcome.evm[kind] = evm
            report_phase(evm, ctx.gas_limit)
            print(f"  {host.cpu_line(cpu, wall)} (Asset Hub idle: only polled)")
            for from_hub in (True, False):
                phase = HubPhase(
                    f"{'assethub-to-alpha' if from_hub else 'alpha-to-assethub'}-{kind}",
                    from_hub,
                    count,
                    interval,
                )
                print(
                    f"\n... phase {phase.name}: {phase.title}, load {host.load_average()}",
                    flush=True,
                )
                ctx.procs.check_running()
                if from_hub:
                    leg = await run_from_hub(phase, ctx, sub, keypair)
                else:
                    leg = await run_to_hub(phase, ctx, sub)
                ctx.sent += count
                outcome.legs[phase.name] = leg
                report_hub(leg, evm)
                ctx.procs.check_running()
    return outcome


async def plan_burst(
    outcome: HubOutcome, ctx: HubContext, sub: SubstrateClient, count: int
) -> None:
    """The batches the relayer's planner makes of the burst's messages, from the chain's own
    limits and measured costs (the same code the relayer runs): the ceiling's batch size."""
    hub, alpha = ctx.config.chain(HUB), ctx.config.chain("alpha")
    settings = hub.settings()
    bridges = token_bridges(ctx.config)
    limits = await extrinsic_limits(sub)
    budget, model = await chain_sizing(sub, settings, hub.domain, bridges)
    sample = Message(
        1, 0, alpha.domain, alpha.outbox_id, hub.domain, b"\x01" * 32, BODY % 0
    )  # a burst message's shape: 12-byte body to an account
    cost = message_cost(model, sample, settings, bridges)
    batches, _ = plan_batches([cost] * count, budget)
    outcome.batch_messages = len(batches[0]) if batches else 0
    outcome.batch_note = (
        f"max_extrinsic {limits.weight:,} ps, {limits.length:,} bytes; batch budget "
        f"{budget.weight:,} ps; one message {cost.weight:,} ps, {cost.length} bytes"
    )
    print(
        f"  weight-sized batches: {outcome.batch_messages} of these messages per batch "
        f"({outcome.batch_note}); SUBSTRATE_BATCH_SIZE caps it at {SUBSTRATE_BATCH_SIZE}"
    )


def run_hub_legs(
    args: argparse.Namespace,
    config: Config,
    procs: Procs,
    state_dir: Path,
    alpha_rpc: EvmRpc,
    beta_rpc: EvmRpc,
    ledger_path: Path,
    gas_limit: int,
) -> HubOutcome:
    """The Asset Hub legs (issue #4) with one relayer of default settings, next to their EVM →
    EVM baselines of the same shape."""
    hub = config.chain(HUB)
    watcher = HeadWatcher(hub.rpc[0])
    watcher.start()
    name = "relayer-assethub"
    relayer = procs.start_relayer(name=name, poll=args.poll)
    try:
        procs.wait_relaying(name)
        shown = manager.status(state_dir)["chains"]
        chains = {str(c["name"]): c.get("pid") for c in shown}
        logs = {str(c["name"]): c.get("log") for c in shown}
        pids = {
            "relayer": [relayer.pid],
            "attesters": [p.pid for n, p in procs.running.items() if n.startswith("attester")],
            "chopsticks": [int(chains[HUB])] if chains.get(HUB) else [],
            "anvils": [int(chains[c]) for c in ("alpha", "beta") if chains.get(c)],
        }
        checkpoint_store = Path(config.checkpoint_store)
        if not checkpoint_store.is_absolute():
            checkpoint_store = state_dir / checkpoint_store
        context = HubContext(
            config=config,
            procs=procs,
            relayer=name,
            alpha_rpc=alpha_rpc,
            beta_rpc=beta_rpc,
            ledger_path=ledger_path,
            proposals=checkpoint_store / "proposals" / str(hub.domain),
            logs=procs.logs,
            watcher=watcher,
            chopsticks_log=Path(str(logs[HUB])) if logs.get(HUB) else None,
            pids=pids,
            sent=10**5,  # bodies distinct from the EVM legs'
            gas_limit=gas_limit,
        )
        outcome = trio.run(run_hub_section, context, args)
        memory = host.proc_status(relayer.pid)
        print(
            f"\n  relayer (all Asset Hub legs): peak memory (VmHWM) "
            f"{memory.get('VmHWM', 0) / 1024:.1f} MiB"
            + (f"; head watcher: {watcher.error}" if watcher.error else "")
        )
    finally:
        procs.stop(name)
        watcher.stop()
    summarize_hub(outcome)
    return outcome
