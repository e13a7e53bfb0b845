"""Property tests that prove they exercised what they are named for.

A hypothesis test passes just as happily when its strategy never reaches the interesting branch
(an acceptance, a consumed transfer, a missing inner node) as when it reaches it every time, so
"200 examples passed" says nothing on its own. :class:`Reach` counts the outcomes a test
names, reports them to hypothesis (``hypothesis.event``, shown by ``pytest
--hypothesis-show-statistics``) and fails the test when a named outcome was drawn too rarely::

    def test_accepts_iff_backed() -> None:
        reach = Reach("accepted", "rejected")

        @PROPERTY
        @given(...)
        def check(...) -> None:
            ...
            reach.hit("accepted" if ok else "rejected")

        check()
        reach.assert_reached()

Counts include hypothesis's own replays of the example database and any shrinking, which only
ever add hits: a share that passes on a fresh run passes on a replay too.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import event


class Reach:
    """Counters for the outcomes one property test must reach."""

    def __init__(self, *outcomes: str, min_share: float = 0.03) -> None:
        """``outcomes``: every name the test promises to reach; ``min_share``: the fraction of
        all recorded hits each of them must have. 3 % of 200 examples is 6 hits: a branch a
        strategy misses gets 0-2 by luck, and the strategies here aim at 10 % or more of each,
        so the check neither flakes nor lets a regressed strategy through."""
        if not outcomes:
            raise ValueError("name at least one outcome")
        self.outcomes = outcomes
        self.min_share = min_share
        self.counts: Counter[str] = Counter()

    def hit(self, outcome: str) -> None:
        """Record one example's outcome (any name; only the promised ones are checked)."""
        event(outcome)
        self.counts[outcome] += 1

    def assert_reached(self) -> None:
        """Fail with every count when a promised outcome has less than its share."""
        total = sum(self.counts.values())
        rare = [
            name
            for name in self.outcomes
            if total == 0 or self.counts[name] < self.min_share * total
        ]
        assert not rare, (
            f"outcomes {rare} drawn too rarely (need {self.min_share:.0%} each of {total}): "
            f"{dict(self.counts)}"
        )
