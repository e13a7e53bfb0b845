"""``python -m benchmarks.bench_relay``: the options, then one fresh devnet with its attesters
(``benchmarks/harness.py``), the legs chosen, and everything torn down whatever happened."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks import harness
from benchmarks.bench_relay import host
from benchmarks.bench_relay.chains import BLOCK_TIME, FINALITY_BLOCKS, EvmRpc, check_devnet
from benchmarks.bench_relay.evm_legs import run_evm_legs
from benchmarks.bench_relay.hub_section import run_hub_legs
from relayer.config import (
    ATTESTER_POLL,
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    RELAY_POLL,
    load_config,
)

DEFAULT_MESSAGES = 2_000
HUB_MESSAGES = 100  # burst, each way: one batch_all of 100 remarks; 4 multisig batches of 25
HUB_PACED_MESSAGES = 5
HUB_INTERVAL = 6.0  # seconds between two paced messages (alpha → Asset Hub keeps up)
FLOOR_EXTRINSICS = 4


def parser() -> argparse.ArgumentParser:
    # The package's docstring is the description: what is measured, and how.
    described = importlib.import_module("benchmarks.bench_relay").__doc__
    options = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_relay",
        description=described,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = options.add_argument
    add(
        "--legs",
        choices=("all", "evm", "assethub"),
        default="all",
        help="EVM → EVM phases (issue #3), Asset Hub legs (issue #4), or both",
    )
    add("--messages", type=int, default=DEFAULT_MESSAGES, help="pipelined run")
    add("--baseline-messages", type=int, default=None, help="--max-inflight 1 run (default: same)")
    add("--batch-size", type=int, default=RELAY_BATCH_SIZE, help="relay --batch-size")
    add("--max-inflight", type=int, default=RELAY_MAX_INFLIGHT, help="relay --max-inflight")
    add("--poll", type=float, default=RELAY_POLL, help="relay --poll (its default)")
    add("--no-baseline", action="store_true", help="skip the --max-inflight 1 run")
    add("--paced-messages", type=int, default=1_000, help="paced run (0: skip it)")
    add("--paced-rate", type=int, default=100, help="paced run: messages/s")
    add(
        "--hub-messages",
        type=int,
        default=HUB_MESSAGES,
        help="Asset Hub legs: burst size, each way (and of their EVM baseline)",
    )
    add(
        "--hub-paced-messages",
        type=int,
        default=HUB_PACED_MESSAGES,
        help="Asset Hub legs: messages of the paced runs (0: skip them)",
    )
    add(
        "--hub-interval",
        type=float,
        default=HUB_INTERVAL,
        help="Asset Hub legs: seconds between two paced messages",
    )
    add(
        "--floor-extrinsics",
        type=int,
        default=FLOOR_EXTRINSICS,
        help="plain extrinsics timed on Asset Hub (the floor)",
    )
    add("--attester-poll", type=float, default=ATTESTER_POLL, help="attest --poll (its default)")
    add("--keep", action="store_true", help="keep the state dir (logs, ledger)")
    return options


def run(args: argparse.Namespace, state_dir: Path) -> bool:
    """Every leg chosen on a fresh devnet in ``state_dir``; True if all were complete."""
    began = time.monotonic()
    complete: list[bool] = []
    with harness.devnet(state_dir, block_time=BLOCK_TIME, echo=True) as config_path:
        config = load_config(config_path)
        hub = check_devnet(config)
        ledger_path = Path(config.ledger)
        if not ledger_path.is_absolute():
            ledger_path = state_dir / ledger_path
        with (
            harness.running(
                config_path, state_dir / "logs", attester_poll=args.attester_poll, relayer=False
            ) as procs,
            httpx.Client(timeout=60) as http,
        ):
            alpha_rpc = EvmRpc(config.chain("alpha").rpc[0], http)
            beta_rpc = EvmRpc(config.chain("beta").rpc[0], http)
            gas_limit = beta_rpc.gas_limit()
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
                    args, config, procs, alpha_rpc, beta_rpc, ledger_path, gas_limit
                )
                complete += [r.complete for r in results.values()]
            if args.legs in ("all", "assethub"):
                if hub is None:
                    print("\nthe devnet has no Asset Hub: its legs are skipped")
                else:
                    outcome = run_hub_legs(
                        args, config, procs, state_dir, alpha_rpc, beta_rpc, ledger_path, gas_limit
                    )
                    complete += [r.complete for r in outcome.evm.values()]
                    complete += [r.complete for r in outcome.legs.values()]
            print(
                f"\ntotal {time.monotonic() - began:.0f} s, load average at the end "
                f"{host.load_average()}"
            )
    return all(complete)


def main(argv: Sequence[str] = ()) -> None:
    """Run the legs on one fresh devnet and print everything. ``argv``: the options (none when
    ``python -m benchmarks`` runs every benchmark with its defaults)."""
    args = parser().parse_args(list(argv))
    print(
        f"bench_relay: Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} "
        f"CPUs, {host.anvil_version()}, load average {host.load_average()} (chains, 3 attesters, "
        f"the relayer and this process share the machine)"
    )
    state_dir = Path(tempfile.mkdtemp(prefix="passerelle-bench-relay-"))
    failed = True
    try:
        failed = not run(args, state_dir)
    except harness.HarnessError as error:
        raise SystemExit(f"bench_relay: {error}") from None
    finally:
        if failed or args.keep:
            print(f"  state directory kept: {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
