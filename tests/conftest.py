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
# this process: 11.8 s CPU paused, 17.5 s traced), for lines other tests reach anyway. So only
# the modules below run traced; every other runs with coverage paused (pytest-cov's `no_cover`
# marker). They are the light clients' own unit modules: measured (2026-12-08, session 13, the
# `ci` hypothesis profile), these alone reach every line and branch the whole suite reaches —
# all but mpt.py's one (pyproject.toml): 99.98 %. Until session 11 the rule was the other way
# round (a list of modules to pause), and 18 modules that reach nothing new were still traced at
# ~10 CPU s; a new module now starts untraced. Session 13 found by a per-test coverage context
# that five traced modules added nothing or almost nothing: test_ancestry, test_beacon_config,
# test_substrate_finality and test_substrate_route nothing, and the chain-driven
# tests/test_substrate_hardening.py 39 arcs of remark.py (the committee's refunds, the recipient
# allow-list) and, with test_substrate_route, multisig.py's derivation — pure code no unit test
# reached. Those now have unit and property tests (tests/test_escrow.py, tests/test_remark.py,
# tests/test_substrate_multisig.py) and the five run untraced (the 20 traced: 60 CPU s; the
# 24 before: 108).
# Should a light-client line ever be reached only by an untraced module, the coverage floor
# (pyproject.toml) fails `make test` and names the line: test it in a light-client unit module
# (better), or add the module here.
TRACED_MODULES = frozenset(
    {
        "test_beacon_forks.py",
        "test_beacon_light_client.py",
        "test_beacon_spec_vectors.py",
        "test_beacon_store.py",
        "test_committee.py",
        "test_escrow.py",
        "test_eth_header.py",
        "test_eth_receipt.py",
        "test_eth_rlp.py",
        "test_eth_state.py",
        "test_grandpa.py",
        "test_light_client_rejections.py",
        "test_merkle.py",
        "test_message.py",
        "test_multiproof.py",
        "test_remark.py",
        "test_substrate_header.py",
        "test_substrate_multisig.py",
        "test_substrate_scale.py",
        "test_substrate_trie.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests longest module first (see :data:`LONGEST_FIRST`), and pause
    coverage for every module but those of :data:`TRACED_MODULES`."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        if item.path.name not in TRACED_MODULES:
            item.add_marker(pytest.mark.no_cover)
