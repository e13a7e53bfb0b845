"""``python -m benchmarks.bench_scale``: the options, the relay runs on one devnet, then the
ledger-workload simulation on a PostgreSQL of its own, each printed with its raw numbers."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks.bench_relay import host
from benchmarks.bench_relay.chains import EvmRpc, check_devnet
from benchmarks.bench_relay.stats import fmt, ratio
from benchmarks.bench_scale import pgstats, simulate
from benchmarks.bench_scale.relay import (
    CHAINS,
    ROUTES,
    Devnet,
    MemoryResult,
    PhaseResult,
    run_pending,
    run_phase,
    sqlite_config,
)
from benchmarks.harness import ATTESTERS, HarnessError, Procs
from devnet import manager
from devnet.errors import DevnetError
from devnet.postgres import PostgresError, running_server, start_postgres
from relayer.config import load_config

SEED_RATE = 100_000_000 / 86_400  # 10^8 users, one message a day each: ~1,157 msg/s
RELAY_COUNTS = (1, 2, 4)


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale")
    add = options.add_argument
    add("--per-route", type=int, default=150, help="messages per route per relay run (6 routes)")
    add("--pending", type=int, default=10_000, help="messages waiting in the memory run")
    add("--sim-relayers", default="1,2,4,8", help="simulated relayer counts, comma-separated")
    add("--sim-chains", type=int, default=16, help="chains of the simulated topology")
    add("--sim-seconds", type=float, default=10.0, help="measured window of each simulation")
    add("--sim-warmup", type=float, default=5.0, help="seconds before it (leases spread)")
    add(
        "--sim-backlog",
        type=int,
        default=25,
        help="an origin's undelivered messages at most (its scan waits): higher measures "
        "capacity, not the pipeline's latency",
    )
    add(
        "--sim-latency",
        type=float,
        default=0.0,
        help="ms added to each statement and commit: a database on another machine",
    )
    add("--poll", type=float, default=None, help="relay --poll (default: the relayer's own)")
    add("--small", action="store_true", help="a quick run: 40 per route, 2,000 pending, 4 s")
    add("--skip-relay", action="store_true", help="only the simulation (no devnet)")
    add("--skip-sim", action="store_true", help="only the relay runs")
    add("--keep", action="store_true", help="keep the state directories (logs, ledgers)")
    return options


def _per(value: float | None, messages: int, scale: float = 1.0, spec: str = ".2f") -> str:
    return "n/a" if value is None or not messages else format(value * scale / messages, spec)


def report_phase(result: PhaseResult) -> None:
    memory = ", ".join(
        f"{kb.get('VmRSS', 0) / 1024:.0f}/{kb.get('VmHWM', 0) / 1024:.0f}"
        for kb in result.memory_kb
    )
    n = result.delivered
    print(
        f"\n[{result.name}] {result.relayers} relayer(s): {result.delivered}/{result.messages} "
        f"delivered over {len(ROUTES)} routes (signed in {result.sign_seconds:.1f} s), load "
        f"{result.load}"
    )
    print(
        f"  sustained {fmt(result.sustained)} msg/s (first → last delivery block, all "
        f"destinations); send → all delivered {fmt(result.end_to_end)} msg/s "
        f"({result.wall_seconds:.1f} s)"
    )
    print(
        f"  relayer CPU {result.relayer_cpu:.1f} s = {_per(result.relayer_cpu, n, 1000)} ms/msg"
        f" ({ATTESTERS} attesters: {result.attester_cpu:.1f} s in the same "
        f"{result.wall_seconds:.0f} s);"
        f" memory VmRSS/VmHWM MiB per relayer at the end: {memory}"
    )
    if result.stages:
        print(
            "  where it goes (medians, ledger wall clock; 'sent → final' includes the 3-block "
            "finality): " + ", ".join(f"{step} {sec:.2f} s" for step, sec in result.stages.items())
        )
    if result.db is not None:
        db = result.db
        print(
            f"  PostgreSQL (pg_stat_database deltas, relayers' idle polls included): "
            f"{_per(db.transactions, n)} transactions/msg, {_per(db.rows_written, n)} rows "
            f"written/msg (ins {db.tup_inserted}, upd {db.tup_updated}, del {db.tup_deleted}), "
            f"{_per(db.tup_returned + db.tup_fetched, n, 1, '.0f')} rows read/msg, "
            f"{_per(db.active_time, n)} ms executing/msg, server CPU "
            f"{_per(result.server_cpu, n, 1000)} ms/msg"
        )


def report_relay(results: list[PhaseResult], memory: MemoryResult | None) -> None:
    base = results[0] if results and results[0].name == "sqlite" else None
    print("\nsummary (ratio: against 1 relayer on SQLite, same run)")
    for result in results:
        versus = (
            ""
            if base is None or result is base
            else (
                f" = {ratio(result.sustained, base.sustained)} of SQLite's sustained, "
                f"{ratio(result.end_to_end, base.end_to_end)} end to end"
            )
        )
        print(
            f"  {result.name:>10}: {fmt(result.sustained)} msg/s sustained, "
            f"{fmt(result.end_to_end)} end to end{versus}"
        )
    if memory is not None:
        samples = " ".join(f"{kb / 1024:.0f}" for kb in memory.samples_kb)
        print(
            f"  memory with {memory.pending:,} pending (recorded final, attesters stopped): "
            f"VmRSS {memory.memory_kb.get('VmRSS', 0) / 1024:.1f} MiB, peak VmHWM "
            f"{memory.memory_kb.get('VmHWM', 0) / 1024:.1f} MiB (samples MiB: {samples}); it "
            f"recorded them {memory.scan_seconds:.1f} s after starting; signing took "
            f"{memory.sign_seconds:.1f} s"
        )


def run_relay(args: argparse.Namespace, root: Path) -> None:
    """The relay runs on a fresh ``devnet up --evm-chains 3 --postgres`` in ``root``."""
    began = time.monotonic()
    state_dir = root / "devnet"
    try:
        config_path = manager.up(state_dir, assethub=False, evm_chains=len(CHAINS), postgres=True)
    except DevnetError as error:
        raise HarnessError(f"devnet up: {error}") from None
    try:
        config = load_config(config_path)
        check_devnet(config)
        postmaster = running_server(state_dir / "postgres")
        procs = Procs(config_path, root / "logs")
        sqlite_procs = Procs(sqlite_config(config_path, "ledger-sqlite.db"), root / "logs")
        with httpx.Client(timeout=60) as http:
            rpcs = {name: EvmRpc(config.chain(name).rpc[0], http) for name in CHAINS}
            net = Devnet(config, rpcs, postmaster)
            print(
                f"devnet: {', '.join(CHAINS)} (anvil, 1-second blocks), {len(ROUTES)} routes, "
                f"PostgreSQL pid {postmaster} (fsync off: the devnet's), {ATTESTERS} attesters; "
                f"up in {time.monotonic() - began:.1f} s"
            )
            try:
                for index in range(ATTESTERS):
                    net.attesters.append(procs.start_attester(index).pid)
                results = [
                    run_phase(
                        net,
                        sqlite_procs,
                        "sqlite",
                        1,
                        str(config_path.parent / "ledger-sqlite.db"),
                        args.per_route,
                        poll=args.poll,
                    )
                ]
                report_phase(results[-1])
                for count in RELAY_COUNTS:
                    results.append(
                        run_phase(
                            net,
                            procs,
                            f"postgres-{count}",
                            count,
                            config.ledger,
                            args.per_route,
                            poll=args.poll,
                        )
                    )
                    report_phase(results[-1])
                sizes, stored = pgstats.ledger_bytes(config.ledger)
                size = sum(sizes.values())
                print(
                    f"\n  PostgreSQL ledger after them: {stored:,} messages in {size / 2**20:.1f}"
                    f" MiB = {size / max(stored, 1):,.0f} bytes/message (tables + indexes)"
                )
                memory = None
                if args.pending > 0:
                    print(f"\n... {args.pending:,} pending messages, load {host.load_average()}")
                    memory = run_pending(net, procs, config.ledger, args.pending, poll=args.poll)
                report_relay(results, memory)
            finally:
                procs.stop_all()
                sqlite_procs.stop_all()
    finally:
        for line in manager.down(state_dir):
            print(f"  {line}")
    print(f"relay runs: {time.monotonic() - began:.0f} s")


def report_simulation(results: list[simulate.RunResult]) -> None:
    first = results[0].workload
    print(
        f"\nledger workload simulation: {first.chains} chains ({len(first.lease_names())} "
        f"leases), origins offering up to {first.offered:,.0f} msg/s with at most "
        f"{first.backlog} undelivered each, batches of {first.batch}, "
        f"lease {first.lease_seconds:g} s, {first.seconds:g} s measured after "
        f"{first.warmup:g} s; durable PostgreSQL (fsync on)"
        + (f", {first.latency * 1000:g} ms per round trip added" if first.latency else "")
        + "; ratio: against 1 relayer"
    )
    base = results[0].rate
    header = (
        "  relayers  msg/s  recorded/s  ratio  stmts/msg  xacts/msg  rows-written/msg  db-ms/msg  "
        "server-CPU-ms/msg  client-CPU-ms/msg  lock-held-ms/msg  writes/s(rows)  xacts/s  "
        "waiting: advisory  row  other  row-wait-ms/msg  busy  lost"
    )
    print(header)
    for r in results:
        n = r.tally.delivered
        print(
            f"  {r.workload.relayers:>8}  {r.rate:>5.0f}  {r.tally.scanned / r.window:>10.0f}  "
            f"{ratio(r.rate, base):>5}  "
            f"{_per(r.tally.statements, n, 1, '.1f'):>9}  {_per(r.db.transactions, n):>9}  "
            f"{_per(r.db.rows_written, n):>16}  {_per(r.db.active_time, n, 1, '.3f'):>9}  "
            f"{_per(r.server_cpu, n, 1000, '.3f'):>17}  {_per(r.client_cpu, n, 1000, '.3f'):>17}"
            f"  {_per(r.tally.lock_held, n, 1000, '.3f'):>16}"
            f"  {r.db.rows_written / r.window:>14,.0f}  {r.db.transactions / r.window:>7,.0f}"
            f"  {r.advisory_waiters:>17.1f}  {r.row_waiters:>3.1f}  {r.other_waiters:>5.1f}"
            f"  {_per(r.row_waiters * r.window, n, 1000, '.3f'):>15}"
            f"  {r.tally.busy:>4}  {r.tally.leases_lost:>4}"
        )
        for failure in r.tally.failures[:3]:
            print(f"      failure: {failure}")
    best = max(results, key=lambda r: r.rate)
    for r in results:
        if r.tally.domain_held:
            lock, held = max(r.tally.domain_held.items(), key=lambda item: item[1])
            print(
                f"  {r.workload.relayers} relayer(s): write locks held "
                f"{_per(r.tally.lock_held, r.tally.delivered, 1000)} ms per delivered message "
                f"in all (acquired → COMMIT sent, client-measured; fenced writes of different "
                f"domains hold theirs at once); the busiest exclusive lock, {lock}, was held "
                f"{held / r.window:.0%} of the window ({len(r.tally.domain_held)} locks used); "
                f"beside it, row-lock waits (writers of different domains meeting on a row, "
                f"sampled from pg_locks every {simulate.LOCK_SAMPLE:g} s): "
                f"{r.row_waiters:.2f} backends on average, "
                f"~{_per(r.row_waiters * r.window, r.tally.delivered, 1000)} ms per delivered "
                f"message"
            )
    per_msg = [r for r in results if r.messages_stored]
    stored = max(sum(r.messages_stored for r in per_msg), 1)
    tables: dict[str, int] = {}
    for r in per_msg:
        for table, size_of in r.ledger_bytes.items():
            tables[table] = tables.get(table, 0) + size_of
    size = sum(tables.values()) / stored
    live = sum(sum(r.compact_bytes.values()) for r in per_msg) / stored
    rows = best.db.rows_written / max(best.tally.delivered, 1)
    print(
        f"  raw: delivered {[r.tally.delivered for r in results]}, recorded "
        f"{[r.tally.scanned for r in results]}, statements "
        f"{[r.tally.statements for r in results]}, server CPU s "
        f"{[round(r.server_cpu, 2) for r in results]}, client CPU s "
        f"{[round(r.client_cpu, 2) for r in results]}, messages stored "
        f"{[r.messages_stored for r in results]}"
    )
    print(
        f"  ledger size: {size:,.0f} bytes/message = {size * 10_000 / 2**20:.1f} MiB per 10,000 "
        f"as written, {live:,.0f} bytes/message = {live * 10_000 / 2**20:.1f} MiB per 10,000 "
        f"after VACUUM FULL (every table and index, over {stored:,} messages); per table "
        f"as written: "
        + ", ".join(
            f"{table} {b / stored:,.0f}"
            for table, b in sorted(tables.items(), key=lambda item: -item[1])
            if b / stored >= 10
        )
    )
    print(
        f"  at the seed's average of {SEED_RATE:,.0f} msg/s: {rows * SEED_RATE:,.0f} rows "
        f"written/s, {best.db.transactions / max(best.tally.delivered, 1) * SEED_RATE:,.0f} "
        f"transactions/s, {live * SEED_RATE * 86_400 / 2**30:,.1f} GiB/day of live rows "
        f"({size * SEED_RATE * 86_400 / 2**30:,.1f} as written) before pruning; "
        f"best measured here {best.rate:,.0f} msg/s with {best.workload.relayers} relayers"
    )


def run_simulation(args: argparse.Namespace, root: Path) -> None:
    counts = [int(x) for x in args.sim_relayers.split(",") if x.strip()]
    # On the disk, not in /dev/shm: fsync must cost what it costs.
    directory = Path(tempfile.mkdtemp(prefix="passerelle-bench-scale-sim-"))
    directory.chmod(0o711)
    try:
        server = start_postgres(directory, durable=True)
    except PostgresError as error:
        raise HarnessError(f"simulation: {error}") from None
    results = []
    try:
        for count in counts:
            work = simulate.Workload(
                relayers=count,
                chains=args.sim_chains,
                seconds=args.sim_seconds,
                latency=args.sim_latency / 1000,
                backlog=args.sim_backlog,
                warmup=args.sim_warmup,
            )
            url = server.create_database(f"sim{count}")
            print(f"... simulating {count} relayer(s), load {host.load_average()}", flush=True)
            results.append(simulate.run_workload(url, work, server.pid))
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    report_simulation(results)


def main(argv: Sequence[str] = ()) -> None:
    """The relay runs, then the simulation; ``argv``: the options (none when ``python -m
    benchmarks`` runs every benchmark with its defaults)."""
    args = parser().parse_args(list(argv))
    if args.small:
        args.per_route, args.pending, args.sim_seconds = 40, 2_000, 4.0
        args.sim_relayers = "1,2,4"
    print(
        f"bench_scale: Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} "
        f"CPUs, {host.anvil_version()}, load average {host.load_average()} (chains, attesters, "
        f"relayers, PostgreSQL and this process share the machine)"
    )
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="passerelle-bench-scale-", dir=base))
    root.chmod(0o711)  # as root PostgreSQL runs as "nobody", which must reach its directory
    began = time.monotonic()
    failed = True
    try:
        if not args.skip_relay:
            run_relay(args, root)
        if not args.skip_sim:
            run_simulation(args, root)
        failed = False
    except HarnessError as error:
        raise SystemExit(f"bench_scale: {error}") from None
    finally:
        print(f"\nbench_scale: {time.monotonic() - began:.0f} s, load {host.load_average()}")
        if failed or args.keep:
            print(f"  state directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
