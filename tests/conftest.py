"""Shared fixtures: real local anvil chains (devnet/anvil.py), stopped by PID afterwards.

- ``anvil``: one automining chain for the whole session (a block per transaction, so contract
  tests run in milliseconds). Tests share it: deploy fresh contracts rather than assume an
  empty chain.
- ``fresh_anvil``: a chain of its own for one test (e.g. one that reorgs or stops the node).

Both skip, with the reason, when anvil is not installed (`make` installs it); in CI they
fail instead (:func:`e2e_support.missing_chain_tool`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from e2e_support import chain_tools_required, missing_chain_tool
from hypothesis import settings

from devnet.anvil import AnvilError, AnvilProcess, anvil_binary, start_anvil
from devnet.chopsticks import (
    ChopsticksError,
    ChopsticksProcess,
    chopsticks_entry,
    node_binary,
    start_chopsticks,
)
from devnet.postgres import PostgresProcess, PostgresUnavailable, postgres_bin_dir, start_postgres

# Property tests share 2 cores with real chains in CI: time limits per example would only add
# flakiness (speed is measured in benchmarks/, never asserted in a test).
settings.register_profile("passerelle", deadline=None, print_blob=True)
# CI draws the same examples every run (a red CI is then a regression, never a new seed; the
# branch-reach counts and the coverage floor stay stable); developers' runs keep exploring.
# "In CI" is the switch that also makes missing chain tools fail (.ci/run sets it).
settings.register_profile("ci", parent=settings.get_profile("passerelle"), derandomize=True)
settings.load_profile("ci" if chain_tools_required() else "passerelle")

ANVIL_CHAIN_ID = 31337


def _start(chain_id: int) -> AnvilProcess:
    try:
        anvil_binary()
    except AnvilError as error:
        missing_chain_tool(str(error))
    return start_anvil(chain_id=chain_id, block_time=None)


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    """A session-wide automining anvil on a free port of 127.0.0.1."""
    chain = _start(ANVIL_CHAIN_ID)
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def fresh_anvil() -> Iterator[AnvilProcess]:
    """An automining anvil used by one test only."""
    chain = _start(ANVIL_CHAIN_ID)
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProcess]:
    """A throwaway PostgreSQL server for the whole run (devnet/postgres.py); skips (fails in CI)
    without binaries. Under pytest-xdist each worker starts its own, in its own directory and on
    its own free port. Tests create a database each (``CREATE DATABASE``) on :attr:`url`."""
    try:
        postgres_bin_dir()
    except PostgresUnavailable as error:
        missing_chain_tool(str(error))
    # tmpfs when there is one: a database per test is created 2-10x faster than on a VM disk.
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="passerelle-postgres-", dir=base))
    directory.chmod(0o711)  # as root the server runs as "nobody", which must reach its data
    try:
        server = start_postgres(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def running_chopsticks(funded: Mapping[str, int] | None = None) -> Iterator[ChopsticksProcess]:
    """Body of a module-scoped fixture: chopsticks (the devnet's Collator blocks) with
    ``funded`` accounts (default //Alice), stopped — and checked gone — at the end."""
    try:
        node_binary()
        chopsticks_entry()
    except ChopsticksError as error:
        missing_chain_tool(str(error))
    process = start_chopsticks(funded=funded, block_mode="Collator")
    try:
        yield process
    finally:
        process.stop()
    assert not process.running


# The longest modules first: `make test` runs whole modules per worker (--dist loadfile), and a
# long module picked up last leaves one worker running alone at the end (longest-processing-time
# first scheduling). `make test` passes --no-loadscope-reorder: xdist otherwise re-sorts modules
# by their number of tests, which put the 7-test proof-of-stake module (four minutes of chain
# time) last. Measured durations decide the list (each module's summed test time, setup
# included, from a fresh clone's `--junitxml`, 2026-12-07); modules not named keep their order
# after them.
LONGEST_FIRST = (
    "test_pos_chain.py",  # 228 s
    "test_e2e_substrate.py",  # 113 s
    "test_ledger.py",  # 66 s
    "test_substrate_hardening.py",  # 63 s
    "test_inbox_v2.py",  # 61 s
    "test_e2e_evm.py",  # 52 s
    "test_contract_artifacts.py",  # 46 s
    "test_e2e_resilience.py",  # 46 s
    "test_delivery_hardening.py",  # ~40 s (session 10, 0.25 s blocks: 30 s alone, was 94-106)
    "test_family_conformance.py",  # 40 s
    "test_ledger_rebuild.py",  # 36 s
    "test_devnet.py",  # 34 s
    "test_beacon_finality.py",  # 29 s
    "test_relayers_shared.py",  # 28 s
    "test_devnet_scale.py",  # 23 s
    "test_contracts.py",  # 22 s
    "test_substrate_adapter.py",  # 21 s
    "test_leases_hostile.py",  # 20 s
    "test_paid_delivery.py",  # 16 s
    "test_seam_leftovers.py",  # 16 s
    "test_cli_proof_beacon.py",  # 15 s
    "test_installed_package.py",  # 14 s
    "test_chopsticks.py",  # 14 s
    "test_multisig_together.py",  # 11-23 s (session 9, measured alone and under load)
    "test_hub_relayer_rounds.py",  # 14 s
    "test_grandpa_route.py",  # 13 s
    "test_leases.py",  # 11 s
    "test_signer.py",  # 11 s
    "test_governance.py",  # 11 s
)

# Coverage measures `light_clients/` only, but its tracer still costs every Python call of every
# test: +24 % CPU on the SQLite ledger tests, +48 % on tests/test_contracts.py (web3 calls in
# this process: 11.8 s CPU paused, 17.5 s traced), for lines other tests reach anyway. Two kinds
# of module run with coverage paused (pytest-cov's `no_cover` marker):
# - those of the ledger, leases, keys and configuration: code that never calls `light_clients/`;
# - the chain, CLI and end-to-end modules. Measured (2026-12-07, the `ci` hypothesis profile):
#   the light clients' own unit modules (test_eth_*, test_beacon_* but test_beacon_finality,
#   test_substrate_{finality,header,route,scale,trie}, test_grandpa, test_merkle,
#   test_multiproof, test_message, test_committee, test_remark, test_escrow, test_ancestry,
#   test_light_client_rejections) with tests/test_substrate_hardening.py reach every line and
#   branch the whole suite reaches (all but mpt.py's one, pyproject.toml): 99.98 %. Those stay
#   traced; coverage only grows with more traced tests, so the floor holds with these untraced.
# Should that ever change (a light-client line only such a module reaches), the coverage floor
# (pyproject.toml) fails `make test` and names the line: trace the module again, or better, test
# the line in a light-client unit module.
UNTRACED_MODULES = frozenset(
    {
        # Ledger, leases, keys, configuration: no light-client call at all.
        "test_ledger.py",
        "test_ledger_domains.py",
        "test_ledger_exclusion.py",
        "test_ledger_migrations.py",
        "test_ledger_queries.py",
        "test_ledger_route_locks.py",
        "test_leases.py",
        "test_leases_hostile.py",
        "test_keys.py",
        "test_keys_hostile.py",
        "test_keys_sr25519.py",
        "test_config.py",
        "test_config_strict.py",
        "test_bench_scale.py",
        "test_pos_tools_wait.py",
        "test_cli_runner_threads.py",
        "test_import_cost.py",
        # EVM, beacon and CLI modules that never run the Substrate family.
        "test_attester_busy_store.py",
        "test_attester_hardening.py",
        "test_beacon_finality.py",
        "test_checkpoint_store.py",
        "test_checkpoint_store_bounds.py",
        "test_cli_exit.py",
        "test_cli_proof_beacon.py",
        "test_contract_artifacts.py",
        "test_contracts.py",
        "test_delivery_reads.py",
        "test_delivery_reads_fast.py",
        "test_e2e_evm.py",
        "test_e2e_resilience.py",
        "test_governance.py",
        "test_hostile_endpoints.py",
        "test_inbox_truncation.py",
        "test_inbox_v2.py",
        "test_ledger_rebroadcast.py",
        "test_ledger_rebuild_memory.py",
        "test_legacy_fees.py",
        "test_outbox_gas.py",
        "test_paymaster.py",
        "test_redact.py",
        "test_relay_cpu.py",
        "test_signer_callers.py",
        "test_tx_engine.py",
        # Modules that do run the Substrate family (or the PoS chain) but are not the ones that
        # reach remark.py's rejections: tests/test_substrate_hardening.py reaches all of them.
        "test_cli_proof.py",
        "test_cli_startup.py",
        "test_delivery_hardening.py",
        "test_devnet.py",
        "test_devnet_pos.py",
        "test_devnet_scale.py",
        "test_error_tree.py",
        "test_grandpa_route.py",
        "test_health.py",
        "test_hub_block_cost.py",
        "test_hub_rate.py",
        "test_attester_together.py",
        "test_multisig_together.py",
        "test_ledger_rebuild.py",
        "test_metrics.py",
        "test_paid_delivery.py",
        "test_pos_chain.py",
        "test_proposal_store.py",
        "test_relayers_shared.py",
        "test_signer.py",
        "test_signer_sr25519_bound.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests longest module first (see :data:`LONGEST_FIRST`), and pause
    coverage for the modules of :data:`UNTRACED_MODULES`."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        if item.path.name in UNTRACED_MODULES:
            item.add_marker(pytest.mark.no_cover)
