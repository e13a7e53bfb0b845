"""Beacon sync-committee light client: update verification next to the bare BLS cost.

Run with ``.venv/bin/python -m benchmarks.bench_beacon``. On the real mainnet Capella vectors
(tests/vectors/eth_consensus_lc/), each measured in the same run as its baseline, interleaved:

(a) ``process_finality_update`` (period 867, 512 signers) against the bare
    ``fast_aggregate_verify`` of the same participating keys, signing root and signature: the
    overhead is the branch checks, the header roots and the store rules (goal <= 25 %);
(b) ``process_update`` (period 863, with its next sync committee and its branch) against the
    same bare BLS cost;
(c) what is paid once per period, when an update's JSON is parsed: 512 key decompressions
    with subgroup checks and the 512-key SyncCommittee root (both computed when a
    ``SyncCommittee`` is built, never per update); the root is also timed alone;
(d) the minimal preset (a committee of 32, as on the devnet): ``process_update`` of the
    Electra spec-test chain's first update (depth-6/7 branches, Deneb payload header) against
    the same bare BLS check, its 32 keys (tests/vectors/eth_consensus_lc/spec_tests/, decoded
    from SSZ by the decoder in tests/test_beacon_spec_vectors.py).

Timings are best-of-N wall clock (time.perf_counter); raw numbers follow each line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from light_clients.beacon import (
    MAINNET,
    BeaconConfig,
    LightClientStore,
    bootstrap,
    parse_bootstrap,
    parse_finality_update,
    parse_update,
    process_finality_update,
    process_update,
)
from light_clients.beacon.bls import fast_aggregate_verify
from light_clients.beacon.sync import compute_domain, compute_signing_root
from light_clients.beacon.types import (
    LightClientHeader,
    SyncAggregate,
    SyncCommittee,
    sync_committee_root,
)

TESTS = Path(__file__).resolve().parent.parent / "tests"
VECTORS = TESTS / "vectors" / "eth_consensus_lc"
TARGET_OVERHEAD = 0.25


def _load(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


def _runs(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _interleaved(
    ours: Callable[[], object], baseline: Callable[[], object], number: int, repeat: int
) -> tuple[list[float], list[float]]:
    """Alternate the two measurements so CPU frequency drift hits both alike."""
    ours_runs: list[float] = []
    base_runs: list[float] = []
    for _ in range(repeat):
        ours_runs.append(_runs(ours, number))
        base_runs.append(_runs(baseline, number))
    return ours_runs, base_runs


def _raw(label: str, values: Sequence[float]) -> None:
    print(f"    raw {label}: " + ", ".join(f"{v * 1e3:.3f}" for v in values) + " ms")


def _bare(
    committee: SyncCommittee,
    header: LightClientHeader,
    aggregate: SyncAggregate,
    signature_slot: int,
    config: BeaconConfig = MAINNET,
) -> Callable[[], object]:
    keys = [key for key, bit in zip(committee.points, aggregate.bits, strict=True) if bit]
    version = config.fork_version_at_slot(signature_slot - 1, "benchmark")
    domain = compute_domain(version, config.genesis_validators_root)
    root = compute_signing_root(header.beacon.hash_tree_root(), domain)

    def bare() -> None:
        if not fast_aggregate_verify(keys, root, aggregate.signature):
            raise AssertionError("benchmark signature does not verify")

    return bare


def _compare(label: str, ours: Callable[[], object], bare: Callable[[], object]) -> None:
    ours_runs, base_runs = _interleaved(ours, bare, number=5, repeat=20)
    mine, base = min(ours_runs), min(base_runs)
    overhead = mine / base - 1
    verdict = "OK" if overhead <= TARGET_OVERHEAD else "ABOVE TARGET"
    print(
        f"  {label:<34} {mine * 1e3:8.3f} ms | bare FastAggregateVerify {base * 1e3:8.3f} ms | "
        f"ratio {mine / base:5.3f} (overhead {overhead:+.1%}, target <= "
        f"{TARGET_OVERHEAD:.0%}: {verdict})"
    )
    _raw("ours", ours_runs)
    _raw("bare", base_runs)


def main() -> None:
    """Measure the light client's verification against the bare BLS check."""
    boot = parse_bootstrap(_load("bootstrap"))
    checkpoint = boot.header.beacon.hash_tree_root()
    store: LightClientStore = bootstrap(boot, checkpoint, MAINNET)
    raw_updates = _load("updates")
    updates = [parse_update(update) for update in raw_updates]
    stores = [store]
    for update in updates:
        stores.append(process_update(stores[-1], update).store)
    finality = parse_finality_update(_load("finality"))

    print("(a) finality update, mainnet slot 7109430, 512 of 512 signers")
    after = stores[6]
    _compare(
        "process_finality_update",
        lambda: process_finality_update(after, finality),
        _bare(
            after.current_sync_committee,
            finality.attested_header,
            finality.sync_aggregate,
            finality.signature_slot,
        ),
    )

    print("(b) sync-committee update, period 863 (next committee and its branch), 512 signers")
    update = updates[1]
    before = stores[1]
    signing = before.next_sync_committee
    assert signing is not None
    _compare(
        "process_update",
        lambda: process_update(before, update),
        _bare(signing, update.attested_header, update.sync_aggregate, update.signature_slot),
    )

    print("(c) once per period")
    parse_runs = [_runs(lambda: parse_update(raw_updates[1]), 2) for _ in range(5)]
    committee = update.next_sync_committee
    assert committee is not None
    root_runs = [
        _runs(lambda: sync_committee_root(committee.pubkeys, committee.aggregate_pubkey), 20)
        for _ in range(10)
    ]
    print(f"  parse_update (keys + committee root)   {min(parse_runs) * 1e3:8.3f} ms")
    _raw("parse", parse_runs)
    print(f"  of which the SyncCommittee root        {min(root_runs) * 1e3:8.3f} ms")
    _raw("root", root_runs)
    _minimal()


def _minimal() -> None:
    """(d): the Electra spec-test chain, minimal preset."""
    # The SSZ decoder of the spec vectors lives with their test (one implementation).
    sys.path.insert(0, str(TESTS))
    from test_beacon_spec_vectors import load  # noqa: PLC0415 (test helper, bench only)

    case = load("electra/light_client_sync")
    first = next(step["process_update"] for step in case.steps if "process_update" in step)
    data = parse_bootstrap(case.json("bootstrap"), case.config)
    store = bootstrap(data, case.trusted_block_root, case.config)
    update = case.update(first["update"])
    participants = update.sync_aggregate.participants
    print(f"(d) minimal preset, Electra spec-test update, {participants} of 32 signers")
    _compare(
        "process_update (minimal, Electra)",
        lambda: process_update(store, update),
        _bare(
            store.current_sync_committee,
            update.attested_header,
            update.sync_aggregate,
            update.signature_slot,
            case.config,
        ),
    )


if __name__ == "__main__":
    main()
