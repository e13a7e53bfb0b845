"""The persisted light-client store (issue #10: the attester survives a restart).

``store_to_json`` / ``store_from_json`` on stores built from the real mainnet Capella vectors
(tests/vectors/eth_consensus_lc/): the round trip is the identity, and a file changed by
someone who wants the attester to believe a false execution state root is refused. The
minimal-preset Deneb/Electra stores of the spec vectors round-trip in
tests/test_beacon_spec_vectors.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reach import Reach
from test_beacon_light_client import FINALITY, OPTIMISTIC, store_after

from light_clients.beacon import (
    MAINNET,
    BeaconConfig,
    Fork,
    InvalidExecutionBranch,
    LightClientError,
    LightClientStore,
    MalformedBeaconData,
    SlotOrderError,
    StoreConfigMismatch,
    UnsupportedFork,
    process_finality_update,
    process_optimistic_update,
    store_from_json,
    store_to_json,
)

PROPERTY = settings(max_examples=60, deadline=None)


@cache
def stores() -> tuple[LightClientStore, ...]:
    """Every shape a store takes on the real chain: fresh from the bootstrap (no next
    committee), mid-chain, after the finality update, and with an optimistic header ahead of
    the finalized one (the real updates have too few signers to move it, so it is set here;
    the header is real, branch included)."""
    finalized = process_finality_update(store_after(6), FINALITY).store
    ahead = replace(finalized, optimistic_header=OPTIMISTIC.attested_header)
    return store_after(0), store_after(3), finalized, ahead


@cache
def _written(index: int) -> str:
    return json.dumps(store_to_json(stores()[index]))


def written(index: int = 3) -> Any:
    """A private copy of a store as it comes back from a file."""
    return copy.deepcopy(json.loads(_written(index)))


@pytest.mark.parametrize("index", range(4))
def test_round_trip_is_identity(index: int) -> None:
    store = stores()[index]
    obj = json.loads(json.dumps(store_to_json(store)))
    assert store_from_json(obj, MAINNET) == store
    assert store_to_json(store_from_json(obj, MAINNET)) == obj


def test_the_file_is_the_beacon_api_encoding() -> None:
    obj = written()
    header = obj["finalized_header"]
    assert header["beacon"]["slot"] == str(stores()[3].finalized_header.beacon.slot)
    assert header["execution"]["state_root"].startswith("0x")
    assert len(obj["current_sync_committee"]["pubkeys"]) == 512
    assert written(0)["next_sync_committee"] is None


def test_a_restored_store_keeps_verifying() -> None:
    restored = store_from_json(json.loads(_written(3)), MAINNET)
    # The optimistic update verifies against the restored committee as against the original.
    assert process_optimistic_update(restored, OPTIMISTIC) == process_optimistic_update(
        stores()[3], OPTIMISTIC
    )


# --------------------------------------------------------------------------- refusals


def test_another_chain_or_preset() -> None:
    other = BeaconConfig(bytes(32), MAINNET.forks)
    with pytest.raises(StoreConfigMismatch, match="genesis validators root"):
        store_from_json(written(), other)
    obj = written()
    obj["preset"] = "minimal"
    with pytest.raises(StoreConfigMismatch, match="'minimal' preset"):
        store_from_json(obj, MAINNET)


def test_another_fork_schedule_is_applied_not_refused() -> None:
    # The schedule is the caller's: a config that puts the stored headers in a fork without
    # execution payloads refuses them.
    pre_capella = BeaconConfig(
        MAINNET.genesis_validators_root, (Fork("capella", bytes.fromhex("03000000"), 10**9),)
    )
    with pytest.raises(UnsupportedFork, match="phase0"):
        store_from_json(written(), pre_capella)


@pytest.mark.parametrize("which", ["finalized_header", "optimistic_header"])
@pytest.mark.parametrize(
    "field", ["state_root", "block_number", "block_hash", "receipts_root", "base_fee_per_gas"]
)
def test_a_forged_execution_payload_is_refused(which: str, field: str) -> None:
    obj = written(3)
    value = obj[which]["execution"][field]
    obj[which]["execution"][field] = (
        "0x" + "ab" * 32 if value.startswith("0x") else str(int(value) + 1)
    )
    with pytest.raises(InvalidExecutionBranch, match=which):
        store_from_json(obj, MAINNET)


def test_a_header_of_another_body_is_refused() -> None:
    obj = written(3)
    obj["finalized_header"]["beacon"]["body_root"] = obj["optimistic_header"]["beacon"]["body_root"]
    with pytest.raises(InvalidExecutionBranch):
        store_from_json(obj, MAINNET)


def test_optimistic_behind_finalized() -> None:
    obj = written(3)
    obj["optimistic_header"], obj["finalized_header"] = (
        obj["finalized_header"],
        obj["optimistic_header"],
    )
    with pytest.raises(SlotOrderError, match="optimistic slot"):
        store_from_json(obj, MAINNET)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o: o.pop("preset"), r"missing \['preset'\]"),
        (lambda o: o.__setitem__("extra", 1), r"unexpected \['extra'\]"),
        (lambda o: o.__setitem__("current_max_active_participants", "513"), "exceeds the"),
        (lambda o: o.__setitem__("previous_max_active_participants", "-1"), "decimal string"),
        (lambda o: o["current_sync_committee"]["pubkeys"].pop(), "list of 512 keys"),
        (
            lambda o: o["next_sync_committee"]["pubkeys"].__setitem__(5, "0x" + "00" * 48),
            r"pubkeys\[5\] is not a BLS",
        ),
        (lambda o: o["finalized_header"]["execution"].pop("withdrawals_root"), "missing"),
        (
            lambda o: o["finalized_header"]["execution"].__setitem__("blob_gas_used", "0"),
            r"unexpected \['blob_gas_used'\]",
        ),
        (lambda o: o.__setitem__("genesis_validators_root", "0x00"), "1 bytes"),
    ],
)
def test_malformed_file(change: Any, reason: str) -> None:
    obj = written(3)
    change(obj)
    with pytest.raises(MalformedBeaconData, match=reason):
        store_from_json(obj, MAINNET)


def test_not_an_object() -> None:
    with pytest.raises(MalformedBeaconData, match="must be an object"):
        store_from_json([], MAINNET)


# --------------------------------------------------------------------------- property


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to the scalar leaves of a store file, a committee's keys sampled (1 of 512)."""
    if isinstance(obj, dict):
        return [leaf for key, value in obj.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(obj, list):
        items = list(enumerate(obj))
        return [leaf for i, value in items[:3] for leaf in _leaves(value, (*path, i))]
    return [path]


LEAVES = _leaves(written(3))
# What the execution branch authenticates: a change to any of these must be refused.
PROTECTED = [
    path
    for path in LEAVES
    if path[0] in ("finalized_header", "optimistic_header")
    and (path[1] in ("execution", "execution_branch") or path[-1] == "body_root")
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)


def _replace(path: tuple[Any, ...], value: Any) -> Any:
    obj = written(3)
    target = obj
    for key in path[:-1]:
        target = target[key]
    original = target[path[-1]]
    target[path[-1]] = value
    return obj, original


def test_tampering_is_refused_or_changes_nothing_checkable() -> None:
    """Any leaf replaced by arbitrary JSON, or by a value of the same shape: the file is
    refused with MalformedBeaconData or a LightClientError (never another exception). Where it
    is read back, the change was to a field no branch covers (slots, committee keys, counters:
    the caveat in light_clients/beacon/store.py), never to what the execution branch proves."""
    reach = Reach("malformed", "refused")

    @PROPERTY
    @given(path=st.sampled_from(LEAVES), same_shape=st.booleans(), value=JSON, data=st.data())
    def check(path: tuple[Any, ...], same_shape: bool, value: Any, data: st.DataObject) -> None:
        obj, original = _replace(path, None)
        if same_shape and isinstance(original, str) and original.startswith("0x"):
            size = len(original) - 2
            value = "0x" + data.draw(st.text("0123456789abcdef", min_size=size, max_size=size))
        elif same_shape and isinstance(original, str):
            value = str(data.draw(st.integers(0, 2**64 - 1)))
        obj, _ = _replace(path, value)
        if value == original:
            return
        try:
            store_from_json(obj, MAINNET)
        except MalformedBeaconData:
            reach.hit("malformed")
            return
        except LightClientError:
            reach.hit("refused")
            return
        assert path not in PROTECTED, f"{path} changed to {value!r} and was accepted"
        reach.hit("unprovable")

    check()
    reach.assert_reached()


def test_every_protected_leaf_is_refused_when_changed() -> None:
    """Deterministic complement of the property: each execution field and branch node of
    both headers, changed by one byte (or by one), is refused."""
    for path in PROTECTED:
        obj, original = _replace(path, None)
        if original.startswith("0x"):
            changed = original[:-1] + ("1" if original[-1] != "1" else "2")
        else:
            changed = str(int(original) + 1)
        obj, _ = _replace(path, changed)
        with pytest.raises((MalformedBeaconData, LightClientError)):
            store_from_json(obj, MAINNET)
