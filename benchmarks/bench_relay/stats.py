"""Small numeric helpers of the reports: percentiles, ratios, "n/a" for what was not measured."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def fmt(value: float | None, spec: str = ",.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def ratio(value: float | None, baseline: float | None) -> str:
    """``value / baseline`` as ``1.23x``; "n/a" if either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return "n/a"
    return f"{value / baseline:.2f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")
