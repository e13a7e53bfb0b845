"""pallet_multisig's account derivation (light_clients.substrate.multisig.multisig_account).

The known answer is the 2-of-3 multisig of //Alice, //Bob and //Charlie: the account
tests/test_chopsticks.py funds and runs the pallet's approve-then-execute flow through on a real
runtime (so the chain agrees with it), and the one Substrate's documentation gives for them in
SS58 (5DjYJStm…). The refusals of a bad signatory set are in
tests/test_light_client_rejections.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from light_clients.hashing import blake2_256
from light_clients.substrate.multisig import MULTISIG_PREFIX, multisig_account
from light_clients.substrate.scale import encode_compact

PROPERTY = settings(max_examples=200, deadline=None)

ALICE = bytes.fromhex("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
BOB = bytes.fromhex("8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48")
CHARLIE = bytes.fromhex("90b5ab205c6974c9ea841be688864633dc9ca8a357843eeacf2314649965fe22")
ALICE_BOB_CHARLIE_2 = bytes.fromhex(
    "49daa32c7287890f38b7e1a8cd2961723d36d20baa0bf3b82e0c4bdda93b1c0a"
)  # SS58 (prefix 42): 5DjYJStmdZ2rcqXbXGX7TW85JsrW6uG4y9MUcLq2BoPMpRA7


def test_the_known_committee_of_alice_bob_and_charlie() -> None:
    assert multisig_account([ALICE, BOB, CHARLIE], 2) == ALICE_BOB_CHARLIE_2
    assert multisig_account([CHARLIE, ALICE, BOB], 2) == ALICE_BOB_CHARLIE_2
    assert multisig_account([bytearray(BOB), ALICE, CHARLIE], 2) == ALICE_BOB_CHARLIE_2


signatory_sets = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=8, unique=True)


@PROPERTY
@given(signatories=signatory_sets, data=st.data())
def test_the_account_is_the_documented_hash_whatever_the_order(
    signatories: list[bytes], data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(1, len(signatories)), label="threshold")
    shuffled = data.draw(st.permutations(signatories), label="order")
    expected = blake2_256(
        MULTISIG_PREFIX
        + encode_compact(len(signatories))
        + b"".join(sorted(signatories))
        + threshold.to_bytes(2, "little")
    )
    assert multisig_account(shuffled, threshold) == expected


@PROPERTY
@given(
    signatories=st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=6, unique=True)
)
def test_another_threshold_or_signatory_is_another_account(signatories: list[bytes]) -> None:
    accounts = {multisig_account(signatories, t) for t in range(1, len(signatories) + 1)}
    assert len(accounts) == len(signatories)
    assert multisig_account(signatories[1:], 1) not in accounts
