"""The measured Asset Hub legs (issue #4): Asset Hub → alpha (:func:`run_from_hub`), alpha →
Asset Hub (:func:`run_to_hub`) and the floor of plain extrinsics (:func:`measure_floor`), each
measured from the chains until every message is delivered, with the evidence of what limited
it (:mod:`~benchmarks.bench_relay.hub_evidence`)."""

from __future__ import annotations

import time
from typing import Any

import trio

from adapters.evm.chain import DISPATCH_TOPIC, dispatch_message
from adapters.substrate.client import SubstrateClient
from benchmarks.bench_relay import host, ledger
from benchmarks.bench_relay.chains import BLOCK_TIME, FINALITY_BLOCKS, HUB, block_offsets
from benchmarks.bench_relay.hub_chain import read_block
from benchmarks.bench_relay.hub_evidence import (
    attach_builds,
    read_attester_logs,
    snapshot_proposals,
)
from benchmarks.bench_relay.hub_model import (
    REMARKS_PER_EXTRINSIC,
    Floor,
    HubContext,
    HubPhase,
    HubResult,
)
from benchmarks.bench_relay.load import (
    SEND_BATCH,
    chunks,
    compose_remarks,
    hub_messages,
    send_raw,
    sign_dispatches,
)
from benchmarks.harness import DELIVERED
from light_clients.hexstr import parse_data, to_hex
from relayer.families.substrate.user import client_keypair

LOG_FLUSH = 1.0  # seconds to let chopsticks write its last log lines (a worker thread does)


def _nonce_of(entry: dict[str, Any]) -> int:
    """The nonce of a Delivered log: the first word of its data (a Dispatch log's is in its
    message: :func:`adapters.evm.chain.dispatch_message`)."""
    return int.from_bytes(parse_data(entry["data"], "log data")[:32], "big")


def _finish(ctx: HubContext, result: HubResult, cpu_before: dict[str, float], origin: str) -> None:
    result.cpu = host.cpu_delta(ctx.pids, cpu_before)
    result.stages = ledger.stages(ctx.ledger_path, set(result.ids.values()))
    read_attester_logs(ctx, result, origin, result.started_at - 1.0)


async def _blocks_since(
    sub: SubstrateClient, ctx: HubContext, result: HubResult, first: int
) -> int:
    """Read every Asset Hub block from ``first`` to the best one; the next block to read."""
    best = await sub.best_number()
    for number in range(first, best + 1):
        appeared = ctx.watcher.at(number)
        if appeared is None:
            appeared = time.time()
            result.errors.append(f"block {number} not seen announced: timed when read instead")
        result.blocks.append(await read_block(sub, number, appeared))
    return max(first, best + 1)


def _delivered_in(result: HubResult, collection: int, dispatched: dict[int, int]) -> None:
    """Each dispatched message's delivery block: the read block that issued its guard item."""
    for block in result.blocks:
        for issued_collection, item in block.issued:
            if issued_collection == collection and item in dispatched:
                result.delivery_block.setdefault(item, block.number)


async def _guard_items(sub: SubstrateClient, collection: int) -> int:
    """How many items the guard collection holds (``Uniques.Class``'s ``instances``)."""
    details = await sub.query("Uniques", "Class", [collection])
    return int(details["instances"]) if isinstance(details, dict) else 0


async def run_from_hub(
    phase: HubPhase, ctx: HubContext, sub: SubstrateClient, keypair: Any
) -> HubResult:
    """Asset Hub → alpha: the client's PSRL remarks (a burst in ``Utility.batch_all`` s of up to
    :data:`REMARKS_PER_EXTRINSIC`, one ``remark_with_event`` per message when paced, as
    ``passerelle send`` makes them), composed before the clock starts; measured until every
    one has its ``Delivered`` on alpha."""
    config = ctx.config
    alpha, hub = config.chain("alpha"), config.chain(HUB)
    result = HubResult(phase)
    first_nonce = ledger.next_nonce(ctx.ledger_path, hub.domain)
    messages = hub_messages(
        hub, alpha, bytes(keypair.public_key), first_nonce, phase.messages, ctx.sent
    )
    result.ids = {m.nonce: to_hex(m.id) for m in messages}
    preparing = time.monotonic()
    size = 1 if phase.interval else REMARKS_PER_EXTRINSIC
    pieces = [messages[k : k + size] for k in range(0, len(messages), size)]
    carried = [[m.nonce for m in piece] for piece in pieces]  # call k → the nonces it sends
    calls = [
        call
        for piece in pieces
        for call in await compose_remarks(sub, piece, one_batch=not phase.interval)
    ]
    result.prepare_seconds = time.monotonic() - preparing
    (alpha_offset,) = block_offsets([ctx.alpha_rpc])
    alpha_start = ctx.alpha_rpc.block_number() + 1
    hub_first = await sub.best_number() + 1
    inbox = alpha.contract("inbox")
    origin_topic = to_hex(hub.domain.to_bytes(32, "big"))
    included: dict[int, int] = {}  # extrinsic → its block
    delivered_block: dict[int, int] = {}  # nonce → alpha block
    cpu_before = host.cpu_snapshot(ctx.pids)

    async def submit_all(nursery: trio.Nursery, started: float) -> None:
        for k, call in enumerate(calls):
            if phase.interval:
                await trio.sleep_until(started + k * phase.interval)
            now = time.time()
            for nonce in carried[k]:
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
            for entry in ctx.alpha_rpc.logs(inbox, DELIVERED, alpha_start):
                if len(entry["topics"]) < 3 or entry["topics"][2].lower() != origin_topic:
                    continue
                nonce = _nonce_of(entry)
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
    _finish(ctx, result, cpu_before, HUB)

    stamps = ctx.alpha_rpc.timestamps(set(delivered_block.values()))
    for k, number in included.items():
        for nonce in carried[k]:
            result.source_block[nonce] = number
            appeared = ctx.watcher.at(number)
            if appeared is not None:
                result.source_time[nonce] = appeared
    for nonce, number in delivered_block.items():
        result.delivery_block[nonce] = number
        result.delivered_time[nonce] = stamps[number] + alpha_offset
    await _blocks_since(sub, ctx, result, hub_first)
    await trio.sleep(LOG_FLUSH)
    attach_builds(ctx, result)
    return result


async def run_to_hub(phase: HubPhase, ctx: HubContext, sub: SubstrateClient) -> HubResult:
    """alpha → Asset Hub: pre-signed ``Outbox.dispatch`` transactions to the client's Substrate
    account, measured until the multisig has minted every message's replay-guard item."""
    config = ctx.config
    alpha, hub = config.chain("alpha"), config.chain(HUB)
    collection = hub.settings().collections[alpha.domain]
    result = HubResult(phase)
    preparing = time.monotonic()
    raw = sign_dispatches(
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
    cpu_before = host.cpu_snapshot(ctx.pids)

    async def broadcast(started: float) -> None:
        for k, chunk in enumerate(chunks(raw, 1 if phase.interval else SEND_BATCH)):
            if phase.interval:
                await trio.sleep_until(started + k * phase.interval)
            send_raw(ctx.alpha_rpc, chunk)

    timeout = 120.0 + phase.messages * (phase.interval + 2.0)
    # The measuring must not take the CPU the bridge runs on: while the phase runs it reads
    # each Dispatch log once (from the block after the last one it saw) and one counter, the
    # guard collection's item count; the Asset Hub blocks (thousands of events each, a
    # substrate-interface decode of a few tenths of a second) are read once that count says
    # every message may be in — their appearance times come from the watcher meanwhile.
    items_before = await _guard_items(sub, collection)
    log_from = alpha_start
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        result.started_at = time.time()
        nursery.start_soon(broadcast, started)
        while trio.current_time() < started + timeout:
            if len(dispatch_block) < phase.messages:
                for entry in ctx.alpha_rpc.logs(outbox, DISPATCH_TOPIC, log_from):
                    message = dispatch_message(parse_data(entry["data"], "log data"))
                    nonce = int.from_bytes(message[1:5], "big")
                    dispatch_block[nonce] = int(entry["blockNumber"], 16)
                    result.ids[nonce] = entry["topics"][1].lower()
                    log_from = max(log_from, dispatch_block[nonce] + 1)
            snapshot_proposals(ctx, result)
            if (
                len(dispatch_block) == phase.messages
                and await _guard_items(sub, collection) - items_before >= phase.messages
            ):
                next_hub = await _blocks_since(sub, ctx, result, next_hub)
                _delivered_in(result, collection, dispatch_block)
            if len(dispatch_block) == phase.messages and len(result.delivery_block) == len(
                dispatch_block
            ):
                result.complete = True
                break
            await trio.sleep(0.5)
        result.finished_at = time.time()
        nursery.cancel_scope.cancel()
    if not result.complete:  # timed out: what did land is still measured (review REVIEW1 F5)
        await _blocks_since(sub, ctx, result, next_hub)
        _delivered_in(result, collection, dispatch_block)
    _finish(ctx, result, cpu_before, "alpha")

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
    attach_builds(ctx, result)
    return result


async def measure_floor(sub: SubstrateClient, keypair: Any, ctx: HubContext, count: int) -> Floor:
    """``count`` plain ``System.remark`` extrinsics (no event: not a message), one after the
    other, each waited for: chopsticks builds one block per extrinsic ("Instant")."""
    floor = Floor()
    for k in range(count):
        call = await sub.compose("System", "remark", {"remark": b"bench floor %d" % k})
        begun = time.time()
        landed = await sub.submit_call(keypair, call)
        floor.included.append(time.time() - begun)
        seen = ctx.watcher.at(landed.block_number)
        if seen is not None:
            floor.appeared.append(seen - begun)
        floor.last_block = landed.block_number
        floor.blocks.append(landed.block_number)
    return floor


async def wait_hub_scanned(ctx: HubContext, domain: int, block: int, timeout: float) -> bool:
    """Until the relayer's ledger cursor for ``domain`` is past ``block``."""
    deadline = trio.current_time() + timeout
    while trio.current_time() < deadline:
        cursor = ledger.scan_cursor(ctx.ledger_path, domain)
        if cursor is not None and cursor > block:
            return True
        await trio.sleep(0.2)
    return False
