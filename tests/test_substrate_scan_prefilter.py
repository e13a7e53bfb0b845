"""The Asset Hub scan's two shortcuts, on their own (adapters/substrate/client.py; pure, no chain).

1. :func:`_carrying_prefix`: only extrinsics whose bytes contain ``PSRL`` are decoded. Its
   soundness rests on every remark the decoder returns being a slice of its extrinsic's bytes;
   that is proven with the real runtime decoder in tests/test_substrate_adapter.py (a running
   chopsticks), here only the search itself.
2. :func:`_batch_calls`: a batch's calls are taken from its own decode only when they tile the
   batch's bytes exactly. scalecodec keeps them on metadata shared by every call of the same
   function, so a stale or foreign list must be refused, never used: played here with objects
   shaped like scalecodec's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.substrate.client import _batch_calls, _carrying_prefix, _DecodedCall
from light_clients.substrate.remark import REMARK_PREFIX
from light_clients.substrate.scale import encode_compact

BATCH_INDEX = b"\x28\x02"  # any two bytes: _batch_calls reads the names, not the index


# Parts without the prefix's first byte can never form it: which extrinsics hold it is known
# from where the test put it, not from the expression under test.
_NO_P = st.binary(max_size=12).map(lambda b: b.replace(REMARK_PREFIX[:1], b"Q"))


@given(st.lists(_NO_P, max_size=6), st.data())
def test_only_extrinsics_holding_the_prefix_are_kept(parts: list[bytes], data: Any) -> None:
    # Put the prefix into some extrinsics at a random place, split nowhere else.
    extrinsics = []
    holding = set()
    for index, part in enumerate(parts):
        extrinsic = part
        if data.draw(st.booleans()):
            at = data.draw(st.integers(0, len(part)))
            extrinsic = part[:at] + REMARK_PREFIX + part[at:]
            holding.add(index)
        extrinsics.append(extrinsic)
    assert _carrying_prefix(extrinsics) == holding


def test_a_prefix_split_over_two_extrinsics_is_in_neither() -> None:
    # Each extrinsic is searched on its own: bytes of two extrinsics never form one remark.
    assert _carrying_prefix([b"xxPS", b"RLyy", REMARK_PREFIX]) == {2}
    assert _carrying_prefix([]) == frozenset()


# --- the batch hint ----------------------------------------------------------------------


@dataclass
class _Element:
    """A decoded inner call as scalecodec shows it: ``value`` and ``get_used_bytes``."""

    pallet: str
    function: str
    used: bytes

    @property
    def value(self) -> dict[str, str]:
        return {"call_module": self.pallet, "call_function": self.function}

    def get_used_bytes(self) -> bytearray:
        return bytearray(self.used)


@dataclass
class _Vec:
    elements: list[_Element]


@dataclass
class _Argument:
    """One of the function's argument descriptions in the metadata (shared by every call)."""

    name: str
    holding: Any

    @property
    def value(self) -> dict[str, str]:
        return {"name": self.name}

    @property
    def value_object(self) -> dict[str, Any]:
        return {"value": self.holding}


@dataclass
class _Call:
    call_args: list[_Argument] = field(default_factory=list)


def _remark(body: bytes) -> _Element:
    return _Element("System", "remark_with_event", b"\x00\x08" + encode_compact(len(body)) + body)


def _batch_bytes(elements: list[_Element]) -> bytes:
    return BATCH_INDEX + encode_compact(len(elements)) + b"".join(e.used for e in elements)


def _hint(elements: list[_Element], used: bytes, function: str = "batch_all") -> Any:
    call = _Call([_Argument("calls", _Vec(elements))])
    return _batch_calls(call, "Utility", function, used)


def test_the_batch_s_own_calls_are_taken() -> None:
    calls = [_remark(b"PSRL one"), _remark(b"two")]
    assert _hint(calls, _batch_bytes(calls)) == tuple(
        _DecodedCall(c.pallet, c.function, c.used) for c in calls
    )
    assert _hint([], _batch_bytes([])) == ()


def test_a_stale_or_foreign_list_of_calls_is_refused() -> None:
    mine = [_remark(b"PSRL mine"), _remark(b"second")]
    used = _batch_bytes(mine)
    # Another batch's calls (a later decode of the same function overwrote the shared
    # description): other bytes.
    assert _hint([_remark(b"PSRL other"), _remark(b"second")], used) is None
    # One call short, one too many, or the right bytes in another order: refused.
    assert _hint(mine[:1], used) is None
    assert _hint([*mine, _remark(b"")], used) is None
    assert _hint(mine[::-1], used) is None
    # (The same bytes cut at other boundaries would pass this check, but cannot come from the
    # decoder: it cuts a given run of bytes one way only. See _batch_calls.)
    # Trailing bytes after the calls (the batch's encoding is longer than its calls).
    assert _hint(mine, used + b"\x00") is None


def test_no_hint_for_other_functions_or_unknown_shapes() -> None:
    calls = [_remark(b"PSRL")]
    used = _batch_bytes(calls)
    assert _batch_calls(_Call([_Argument("calls", _Vec(calls))]), "System", "remark", used) is None
    # A library that keeps arguments elsewhere: no "calls" description, or no elements.
    assert _batch_calls(_Call([]), "Utility", "batch", used) is None
    assert _batch_calls(_Call([_Argument("calls", object())]), "Utility", "batch", used) is None
    assert _batch_calls(object(), "Utility", "batch", used) is None
    # A batch whose count does not even parse.
    assert _hint(calls, BATCH_INDEX + b"\x03") is None
