"""The process-wide metadata decode cache (adapters/substrate/metadata.py), without a chain.

The chain tests (tests/test_substrate_adapter.py) show a second connection reusing the decode,
other bytes under the same spec version getting their own, and the shared decode surviving
another connection's registry rebuild. Here: which decodes stay, against an independent
least-recently-used oracle, and what a decode failure leaves (nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.substrate import metadata as metadata_module
from adapters.substrate.metadata import CACHED_RUNTIMES, decoded_metadata


class Decodes:
    """A stand-in for scalecodec's decode: a new object per call, the calls counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, raw: str) -> object:
        if raw == "0xnot metadata":
            raise ValueError("not metadata")
        self.calls.append(raw)
        return object()


@contextmanager
def faked_decode() -> Iterator[Decodes]:
    """The cache emptied and its decode faked, both restored after (also per hypothesis
    example, which a function-scoped fixture would not be)."""
    fake = Decodes()
    saved = dict(metadata_module._decoded)
    metadata_module._decoded.clear()
    original, metadata_module._decode = metadata_module._decode, fake
    try:
        yield fake
    finally:
        metadata_module._decode = original
        metadata_module._decoded.clear()
        metadata_module._decoded.update(saved)


@given(asked=st.lists(st.sampled_from([f"0x{n:02x}" for n in range(7)]), max_size=40))
def test_the_last_runtimes_used_stay_decoded_and_no_others(asked: list[str]) -> None:
    """Each answer is decoded again exactly when it is not among the CACHED_RUNTIMES distinct
    answers most recently asked for; an answer asked again is the same object as before."""
    with faked_decode() as fake:
        recent: list[str] = []  # the oracle: most recent last
        last: dict[str, object] = {}
        for raw in asked:
            before = len(fake.calls)
            got = decoded_metadata(raw)
            cached = raw in recent
            assert (len(fake.calls) == before) == cached, (raw, recent)
            if cached:
                assert got is last[raw]
                recent.remove(raw)
            recent.append(raw)
            del recent[:-CACHED_RUNTIMES]
            last[raw] = got
        assert list(metadata_module._decoded) == recent


def test_bytes_that_do_not_decode_are_refused_each_time_and_never_cached() -> None:
    with faked_decode() as decodes:
        for _ in range(2):
            with pytest.raises(ValueError, match="not metadata"):
                decoded_metadata("0xnot metadata")
        assert not metadata_module._decoded
        first = decoded_metadata("0x01")
        assert decoded_metadata("0x01") is first and decodes.calls == ["0x01"]
