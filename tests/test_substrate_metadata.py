"""The process-wide metadata decode cache (adapters/substrate/metadata.py), without a chain.

The chain tests (tests/test_substrate_adapter.py) show a second connection reusing the decode,
a node serving other bytes under the same spec version getting their own, the shared decode
surviving its decoder's registry rebuild, and a failed runtime switch forgotten. Here: which
decodes are reused, against an independent model (a decode lives while something holds it,
and the most recent one is held for the process), and what a decode failure leaves: nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.substrate import metadata as metadata_module
from adapters.substrate.metadata import decoded_metadata


class Decoded:
    """A stand-in decode (weakly referenceable, as scalecodec's objects are)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw


class Decodes:
    """A stand-in for scalecodec's decode: a new object per call, the calls counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, raw: str) -> Decoded:
        if raw == "0xnot metadata":
            raise ValueError("not metadata")
        self.calls.append(raw)
        return Decoded(raw)


@contextmanager
def faked_decode() -> Iterator[Decodes]:
    """The cache emptied and its decode faked, both restored after (also per hypothesis
    example, which a function-scoped fixture would not be)."""
    fake = Decodes()
    saved, latest = dict(metadata_module._decoded), list(metadata_module._latest)
    metadata_module._decoded.clear()
    metadata_module._latest.clear()
    original, metadata_module._decode = metadata_module._decode, fake
    try:
        yield fake
    finally:
        metadata_module._decode = original
        metadata_module._decoded.clear()
        metadata_module._decoded.update(saved)
        metadata_module._latest[:] = latest


keys = st.sampled_from([f"0x{n:02x}" for n in range(5)])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), keys, st.booleans()),  # and hold the answer, or not
        st.tuples(st.just("drop"), keys, st.just(False)),  # let go of what we held
    ),
    max_size=40,
)


@given(steps=steps)
def test_a_decode_is_reused_while_held_and_the_latest_is_held(
    steps: list[tuple[str, str, bool]],
) -> None:
    """Asked for bytes whose decode someone still holds (a connection, in the adapter; the
    test here), or that were asked for last, the cache answers that very decode; otherwise
    it decodes again. A connection's decode thus outlives it only as the latest."""
    with faked_decode() as fake:
        held: dict[str, Decoded] = {}
        latest: str | None = None
        for action, raw, keep in steps:
            if action == "drop":
                held.pop(raw, None)
                continue
            before = len(fake.calls)
            expected = held.get(raw)
            reused = raw in held or raw == latest
            got = decoded_metadata(raw)
            assert (len(fake.calls) == before) == reused, (raw, sorted(held), latest)
            if expected is not None:
                assert got is expected
            if keep:
                held[raw] = got
            latest = raw
            del got, expected  # the loop must not hold a decode itself
        assert set(metadata_module._decoded) == set(held) | ({latest} if latest else set())


def test_bytes_that_do_not_decode_are_refused_each_time_and_never_kept() -> None:
    with faked_decode() as decodes:
        for _ in range(2):
            with pytest.raises(ValueError, match="not metadata"):
                decoded_metadata("0xnot metadata")
        assert not metadata_module._decoded and not metadata_module._latest
        first = decoded_metadata("0x01")
        assert decoded_metadata("0x01") is first and decodes.calls == ["0x01"]
