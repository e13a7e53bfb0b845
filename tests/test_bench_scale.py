"""The pure pieces of the scale benchmark (benchmarks/bench_scale): what it rewrites in a config,
how it turns counters and block times into figures. The measurements themselves run on the
devnet (``python -m benchmarks.bench_scale``) and are never asserted: machines differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_scale.pgstats import DbCounters, server_cpu_between
from benchmarks.bench_scale.relay import PhaseResult, sqlite_config
from benchmarks.bench_scale.simulate import Workload
from benchmarks.harness import HarnessError

CONFIG = """[ledger]
location = "postgresql+psycopg://passerelle@127.0.0.1:5432/passerelle"

[committee]
checkpoint_store = "postgresql+psycopg://passerelle@127.0.0.1:5432/checkpoints"
location = "not the ledger's"
"""


def test_sqlite_config_changes_only_the_ledger_location(tmp_path: Path) -> None:
    original = tmp_path / "passerelle.toml"
    original.write_text(CONFIG)
    copy = sqlite_config(original, "ledger-sqlite.db")
    assert copy.parent == tmp_path and copy != original
    assert copy.read_text() == CONFIG.replace(
        '"postgresql+psycopg://passerelle@127.0.0.1:5432/passerelle"', '"ledger-sqlite.db"'
    )
    assert original.read_text() == CONFIG  # the devnet's own config is left alone


@pytest.mark.parametrize(
    "text",
    [
        '[relayer]\nlocation = "x"\n',  # no [ledger] table: refused, nothing guessed
        CONFIG + CONFIG,  # two ledgers: which one would the copy use?
        '[ledger]\nlocation = "a"b"\n',  # not one quoted string
    ],
)
def test_sqlite_config_refuses_a_config_it_cannot_rewrite_exactly(
    tmp_path: Path, text: str
) -> None:
    original = tmp_path / "passerelle.toml"
    original.write_text(text)
    with pytest.raises(HarnessError, match="no \\[ledger\\] location line"):
        sqlite_config(original, "ledger-sqlite.db")
    assert not (tmp_path / "passerelle-sqlite.toml").exists()


def test_sustained_rate_leaves_out_the_first_delivery_block() -> None:
    result = PhaseResult("p", 1, delivery_times=[100, 100, 100, 101, 102, 102])
    assert result.sustained == 3 / 2  # the 3 of second 100 arrived before the clock started
    assert PhaseResult("p", 1, delivery_times=[7, 7]).sustained is None  # one block: no rate
    assert PhaseResult("p", 1, delivered=10, wall_seconds=4.0).end_to_end == 2.5


def test_server_cpu_counts_new_processes_whole_and_ignores_exited_ones() -> None:
    before = {10: 5.0, 11: 2.0}  # 11 exits before the second reading
    after = {10: 6.5, 12: 0.25}  # 12 started in between
    assert server_cpu_between(before, after) == 1.5 + 0.25


def test_counter_deltas() -> None:
    later = DbCounters(10, 1, 100, 50, 7, 5, 2, 30.5)
    delta = later - DbCounters(4, 1, 40, 20, 3, 1, 0, 10.0)
    assert (delta.transactions, delta.rows_written, delta.active_time) == (6, 10, 20.5)


def test_simulated_topology_is_a_ring_with_three_leases_per_chain() -> None:
    work = Workload(relayers=4, chains=3, seconds=1, warmup=1)
    assert [work.destination_of(o) for o in work.domains()] == [2, 3, 1]
    assert len(work.lease_names()) == len(set(work.lease_names())) == 9
    assert work.offered == 3 * 25 / 0.25
