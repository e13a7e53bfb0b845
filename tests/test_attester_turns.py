"""Who opens and who executes a multisig delivery (relayer.attester._rank): one at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relayer.config import SubstrateSettings
from relayer.families.substrate.approval import _rank

SIGNATORIES = tuple(sorted(bytes([i]) * 32 for i in (7, 42, 99)))


def settings(signatories: tuple[bytes, ...] = SIGNATORIES) -> SubstrateSettings:
    return SubstrateSettings(
        genesis_hash=b"\x45" * 32,
        multisig=b"\x01" * 32,
        multisig_threshold=2,
        signatories=signatories,
        collections={1: 1},
    )


@given(st.binary(min_size=32, max_size=32))
def test_every_signatory_has_its_own_turn(call_hash: bytes) -> None:
    ranks = [_rank(settings(), call_hash, me, frozenset()) for me in SIGNATORIES]
    assert sorted(ranks) == [0, 1, 2]  # exactly one acts at once, the others after a grace


@given(st.binary(min_size=32, max_size=32), st.sampled_from(SIGNATORIES))
def test_approvers_are_left_out_of_the_executor_rotation(call_hash: bytes, approver: bytes) -> None:
    rest = [s for s in SIGNATORIES if s != approver]
    ranks = [_rank(settings(), call_hash, me, frozenset({approver})) for me in rest]
    assert sorted(ranks) == [0, 1]


def test_the_rotation_follows_the_call_hash() -> None:
    first = {
        start: next(
            me
            for me in SIGNATORIES
            if _rank(settings(), start.to_bytes(8, "big") + bytes(24), me, frozenset()) == 0
        )
        for start in range(3)
    }
    # call hash ≡ k (mod 3) puts signatory k first: the work is spread over the committee.
    assert first == {0: SIGNATORIES[0], 1: SIGNATORIES[1], 2: SIGNATORIES[2]}
