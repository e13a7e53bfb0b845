"""Proving older block hashes from the final one (adapters/evm/ancestry.py), on a synthetic
chain: what each call costs, and that a conflicting history shows.

Headers here are stand-ins with a number, a hash and a parent hash: the walk only follows parent
links through ``fetch`` (which, in EvmChain, checks each header's hash against the expected one;
tests/test_beacon_finality.py runs it on a real anvil)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from adapters.evm.ancestry import MAX_WALK, AncestryIncomplete, ProvenAncestry


@dataclass(frozen=True)
class Header:
    number: int
    hash: bytes
    parent_hash: bytes


class Chain:
    """Block ``n``'s hash depends on ``n`` and on the fork it belongs to from ``fork_at`` up."""

    def __init__(self) -> None:
        self.fork_at: int | None = None
        self.fetched = 0

    def hash(self, number: int) -> bytes:
        fork = b"b" if self.fork_at is not None and number >= self.fork_at else b"a"
        return hashlib.sha256(fork + number.to_bytes(8, "big")).digest()

    def header(self, number: int) -> Header:
        return Header(number, self.hash(number), self.hash(number - 1))

    async def fetch(self, number: int, expected: bytes) -> Any:
        self.fetched += 1
        header = self.header(number)
        assert header.hash == expected, f"asked block {number} under another hash"
        return header


def _hash_of(ancestry: ProvenAncestry, chain: Chain, top: int, number: int) -> bytes:
    async def main() -> bytes:
        return await ancestry.hash_of(chain.header(top), number)  # type: ignore[arg-type]

    return trio.run(main)


def test_a_quiet_origin_costs_only_what_finalized_since() -> None:
    """An attester re-checking the same old block every poll walks the finality advance, not
    the whole (growing) distance to that block."""
    chain = Chain()
    ancestry = ProvenAncestry(chain.fetch)
    assert _hash_of(ancestry, chain, 5_000, 10) == chain.hash(10)
    assert chain.fetched == 4_990
    for poll in range(1, 20):
        chain.fetched = 0
        assert _hash_of(ancestry, chain, 5_000 + 32 * poll, 10) == chain.hash(10)
        assert chain.fetched == 32


def test_a_long_walk_is_spread_over_calls_and_resumes() -> None:
    chain = Chain()
    ancestry = ProvenAncestry(chain.fetch)
    gap = 2 * MAX_WALK + 100
    calls = 0
    while True:
        calls += 1
        try:
            proven = _hash_of(ancestry, chain, gap, 0)
            break
        except AncestryIncomplete:
            assert chain.fetched == calls * MAX_WALK  # bounded per call
    assert proven == chain.hash(0)
    assert calls == 3
    assert chain.fetched == gap  # nothing walked twice


def test_a_conflicting_finalized_history_shows_as_another_hash() -> None:
    chain = Chain()
    ancestry = ProvenAncestry(chain.fetch)
    signed = _hash_of(ancestry, chain, 1_000, 500)
    chain.fork_at = 400  # the chain the light client now follows left ours below block 500
    assert _hash_of(ancestry, chain, 1_100, 500) != signed
    assert _hash_of(ancestry, chain, 1_100, 500) == chain.hash(500)


def test_nothing_above_the_final_block() -> None:
    chain = Chain()
    with pytest.raises(ValueError, match="above the final block"):
        _hash_of(ProvenAncestry(chain.fetch), chain, 10, 11)


def test_a_failed_fetch_loses_at_most_one_stretch() -> None:
    chain = Chain()
    ancestry = ProvenAncestry(chain.fetch)
    fail_at = [3_000]

    async def flaky(number: int, expected: bytes) -> Any:
        if number == fail_at[0]:
            fail_at[0] = -1
            raise RuntimeError("endpoint down")
        return await chain.fetch(number, expected)

    ancestry = ProvenAncestry(flaky)
    with pytest.raises(RuntimeError):
        _hash_of(ancestry, chain, 6_000, 0)
    walked = chain.fetched
    chain.fetched = 0
    assert _hash_of(ancestry, chain, 6_000, 0) == chain.hash(0)
    assert chain.fetched < 6_000 - walked + 1_024  # resumed from the last progress anchor
