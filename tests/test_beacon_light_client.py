"""The beacon sync-committee light client (issue #10), on real mainnet Capella data.

Vectors: tests/vectors/eth_consensus_lc/ (PROVENANCE.md there): a bootstrap at slot 7069376,
six updates (periods 862–867), a finality and an optimistic update, and expected.json with the
trusted checkpoint. The positive path follows the spec's store through all of them; each
negative case changes one thing in real data and expects one named error. Property tests feed
arbitrary JSON and mutated real objects to the parsers and arbitrary branches to the branch
check.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients.beacon import (
    MAINNET,
    BeaconConfig,
    BootstrapMismatch,
    ConflictingSyncCommittee,
    Fork,
    ForkMismatch,
    InsufficientParticipation,
    InvalidExecutionBranch,
    InvalidFinalityBranch,
    InvalidSyncCommitteeBranch,
    InvalidSyncCommitteeSignature,
    IrrelevantUpdate,
    LightClientError,
    LightClientStore,
    MalformedBeaconData,
    SlotOrderError,
    UnsupportedFork,
    WrongSyncCommitteePeriod,
    bootstrap,
    parse_bootstrap,
    parse_finality_update,
    parse_optimistic_update,
    parse_update,
    process_finality_update,
    process_optimistic_update,
    process_update,
)
from light_clients.beacon import types as types_module
from light_clients.beacon.bls import decode_pubkey
from light_clients.beacon.ssz import is_valid_merkle_branch, merkleize
from light_clients.beacon.sync import compute_domain, compute_signing_root
from light_clients.beacon.types import SyncAggregate
from light_clients.errors import DecodeError, FinalityError, HeaderHashMismatch, VerificationError

VECTORS = Path(__file__).parent / "vectors" / "eth_consensus_lc"
PROPERTY = settings(max_examples=150, deadline=None)
SLOW_PROPERTY = settings(max_examples=40, deadline=None)


@cache
def raw(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


def fresh(name: str) -> Any:
    """A private copy of a vector file, to mutate."""
    return copy.deepcopy(raw(name))


EXPECTED = raw("expected")
CHECKPOINT = bytes.fromhex(EXPECTED["trusted_checkpoint_block_root"][2:])
BOOTSTRAP = parse_bootstrap(raw("bootstrap"))
UPDATES = [parse_update(update) for update in raw("updates")]
FINALITY = parse_finality_update(raw("finality"))
OPTIMISTIC = parse_optimistic_update(raw("optimistic"))


CAPELLA = Fork("capella", bytes.fromhex("03000000"), 194048)


def capella_config(capella_epoch: int = CAPELLA.epoch, *later: Fork) -> BeaconConfig:
    """Mainnet's chain with Capella at ``capella_epoch`` and the ``later`` forks after it."""
    return BeaconConfig(
        MAINNET.genesis_validators_root, (replace(CAPELLA, epoch=capella_epoch), *later)
    )


@cache
def store_after(count: int) -> LightClientStore:
    """The store after the bootstrap and the first ``count`` updates."""
    if count == 0:
        return bootstrap(BOOTSTRAP, CHECKPOINT, MAINNET)
    return process_update(store_after(count - 1), UPDATES[count - 1]).store


def with_bits(aggregate: SyncAggregate, count: int) -> SyncAggregate:
    """The same signature, claimed by the first ``count`` members only."""
    bits = tuple(i < count for i in range(len(aggregate.bits)))
    return replace(aggregate, bits=bits)


# --------------------------------------------------------------------------- positive path


def test_bootstrap_is_the_trusted_checkpoint() -> None:
    assert BOOTSTRAP.header.beacon.hash_tree_root() == CHECKPOINT
    store = store_after(0)
    assert store.period == 862
    assert store.finalized_header == store.optimistic_header == BOOTSTRAP.header
    assert store.next_sync_committee is None


def test_domain_is_mainnet_capella() -> None:
    fork = MAINNET.fork_at_slot(UPDATES[0].signature_slot - 1)
    assert fork == CAPELLA
    domain = compute_domain(fork.version, MAINNET.genesis_validators_root)
    assert domain[:4] == bytes.fromhex(EXPECTED["domain_sync_committee"][2:])
    assert MAINNET.genesis_validators_root.hex() == EXPECTED["genesis_validators_root"][2:]
    outcome = process_update(store_after(0), UPDATES[0])
    assert outcome.signing_root == compute_signing_root(
        UPDATES[0].attested_header.beacon.hash_tree_root(), domain
    )


def test_six_updates_advance_a_period_each() -> None:
    store = store_after(0)
    participants = []
    for number, update in enumerate(UPDATES):
        outcome = process_update(store, update, current_slot=update.signature_slot)
        participants.append(outcome.participants)
        assert outcome.next_sync_committee_learned
        # The first update only teaches the next committee: its finalized header is older
        # than the bootstrap; every later one finalizes and rotates the committee.
        assert outcome.finalized_advanced is (number > 0)
        assert outcome.sync_committee_rotated is (number > 0)
        store = outcome.store
        assert store.period == 862 + number
        assert store.next_sync_committee == update.next_sync_committee
        if number > 0:
            assert store.current_sync_committee == UPDATES[number - 1].next_sync_committee
            assert store.finalized_header == update.finalized_header
    assert participants == [511, 512, 511, 510, 512, 512]
    assert store == store_after(6)


def test_finality_then_optimistic_update() -> None:
    outcome = process_finality_update(store_after(6), FINALITY)
    assert (outcome.participants, outcome.finalized_advanced) == (512, True)
    store = outcome.store
    assert store.finalized_header == FINALITY.finalized_header
    # Mainnet block 17923026, whose hash matches the EL header vectors.
    assert store.finalized_header.execution.block_number == 17923026
    # 512 signers exceed the safety threshold max(512, 512) // 2: the attested header is the
    # optimistic one (with the mean of the two high-water marks, as this client had it
    # before, it never moved; the spec vectors in test_beacon_spec_vectors.py caught it).
    assert outcome.optimistic_advanced
    assert store.optimistic_header == FINALITY.attested_header
    optimistic = process_optimistic_update(store, OPTIMISTIC)
    assert optimistic.participants == 510
    assert optimistic.optimistic_advanced
    assert optimistic.store.optimistic_header == OPTIMISTIC.attested_header
    assert optimistic.store.finalized_header == store.finalized_header


def test_optimistic_update_moves_the_optimistic_header() -> None:
    # Fresh participation records (as after a restart): the safety threshold is 510 // 2.
    store = replace(store_after(6), previous_max_active_participants=0)
    store = replace(store, current_max_active_participants=0)
    outcome = process_optimistic_update(store, OPTIMISTIC)
    assert outcome.optimistic_advanced
    assert outcome.store.optimistic_header == OPTIMISTIC.attested_header
    assert outcome.store.finalized_header == store_after(6).finalized_header


def test_finalized_header_overtakes_an_unadopted_optimistic_one() -> None:
    # A safety threshold above every participation: the attested header is not adopted,
    # and the finalized header then replaces the (older) optimistic one.
    store = replace(store_after(5), previous_max_active_participants=10_000)
    outcome = process_update(store, UPDATES[5])
    assert not outcome.optimistic_advanced
    assert outcome.store.optimistic_header == UPDATES[5].finalized_header


def test_repeated_updates_change_nothing() -> None:
    after = process_finality_update(store_after(6), FINALITY).store
    again = process_finality_update(after, FINALITY)
    assert not again.finalized_advanced and again.store == after
    # updates[5] once more: its attested slot is still after the finalized slot, and its
    # next committee is the one already known.
    replay = process_update(store_after(6), UPDATES[5])
    assert not replay.finalized_advanced and not replay.next_sync_committee_learned
    assert replay.store == replace(store_after(6), current_max_active_participants=512)


def test_without_a_next_fork_every_later_slot_is_capella() -> None:
    config = capella_config()
    store = bootstrap(BOOTSTRAP, CHECKPOINT, config)
    assert process_update(store, UPDATES[0]).store.next_sync_committee is not None


# --------------------------------------------------------------------------- bootstrap rejections


def test_bootstrap_from_another_root() -> None:
    with pytest.raises(BootstrapMismatch, match="is not the trusted"):
        bootstrap(BOOTSTRAP, bytes(32), MAINNET)
    assert issubclass(BootstrapMismatch, HeaderHashMismatch)


def test_bootstrap_committee_not_in_state() -> None:
    branch = (bytes(32), *BOOTSTRAP.current_sync_committee_branch[1:])
    with pytest.raises(InvalidSyncCommitteeBranch, match="not in the header's state"):
        bootstrap(replace(BOOTSTRAP, current_sync_committee_branch=branch), CHECKPOINT, MAINNET)
    # Another period's committee under the right branch.
    other = replace(BOOTSTRAP, current_sync_committee=UPDATES[0].next_sync_committee)
    with pytest.raises(InvalidSyncCommitteeBranch):
        bootstrap(other, CHECKPOINT, MAINNET)


def test_bootstrap_execution_payload_not_in_body() -> None:
    header = BOOTSTRAP.header
    execution = replace(header.execution, block_number=header.execution.block_number + 1)
    tampered = replace(BOOTSTRAP, header=replace(header, execution=execution))
    with pytest.raises(InvalidExecutionBranch, match="bootstrap header execution payload"):
        bootstrap(tampered, CHECKPOINT, MAINNET)


def test_bootstrap_outside_the_fork() -> None:
    with pytest.raises(UnsupportedFork, match="is in fork phase0"):
        bootstrap(BOOTSTRAP, CHECKPOINT, capella_config(10**9))
    # A Capella-shaped header whose slot a config puts in Deneb claims the wrong fork.
    deneb = Fork("deneb", bytes.fromhex("04000000"), 1)
    with pytest.raises(ForkMismatch, match="is in deneb but its execution header lacks"):
        bootstrap(BOOTSTRAP, CHECKPOINT, capella_config(0, deneb))
    # A fork whose rules this client does not implement.
    electra = Fork("electra", bytes.fromhex("05000000"), 1)
    fulu = Fork("fulu", bytes.fromhex("06000000"), 1)
    gloas = Fork("gloas", bytes.fromhex("07000000"), 1)
    with pytest.raises(UnsupportedFork, match="is in fork gloas"):
        bootstrap(
            BOOTSTRAP, CHECKPOINT, capella_config(0, replace(deneb, epoch=1), electra, fulu, gloas)
        )


# --------------------------------------------------------------------------- update rejections


def test_wrong_period_committee() -> None:
    # Signed in period 867: the committee of period 868 does not verify it.
    store = replace(store_after(6), current_sync_committee=UPDATES[5].next_sync_committee)
    with pytest.raises(InvalidSyncCommitteeSignature, match="does not verify"):
        process_finality_update(store, FINALITY)
    # Skipping an update: period 863 is signed by a committee the store does not know yet.
    with pytest.raises(WrongSyncCommitteePeriod, match="signature period 863"):
        process_update(store_after(0), UPDATES[1])
    # Two periods ahead of a store that knows the next committee.
    with pytest.raises(WrongSyncCommitteePeriod):
        process_update(store_after(1), UPDATES[3])


def test_tampered_attested_header() -> None:
    for field_change in ({"proposer_index": 1}, {"parent_root": bytes(32)}):
        beacon = replace(FINALITY.attested_header.beacon, **field_change)
        attested = replace(FINALITY.attested_header, beacon=beacon)
        with pytest.raises((InvalidSyncCommitteeSignature, InvalidFinalityBranch)):
            process_finality_update(store_after(6), replace(FINALITY, attested_header=attested))
    # expected.json: the attested slot + 1 (then equal to the signature slot, and refused).
    beacon = replace(FINALITY.attested_header.beacon, slot=FINALITY.attested_header.beacon.slot + 1)
    with pytest.raises(SlotOrderError):
        process_finality_update(
            store_after(6),
            replace(FINALITY, attested_header=replace(FINALITY.attested_header, beacon=beacon)),
        )


def test_tampered_attested_header_of_an_optimistic_update() -> None:
    beacon = replace(OPTIMISTIC.attested_header.beacon, proposer_index=0)
    update = replace(OPTIMISTIC, attested_header=replace(OPTIMISTIC.attested_header, beacon=beacon))
    with pytest.raises(InvalidSyncCommitteeSignature):
        process_optimistic_update(store_after(6), update)


def test_default_signature() -> None:
    zero = parse_optimistic_update(
        {
            **fresh("optimistic")["data"],
            "sync_aggregate": {
                "sync_committee_bits": "0x" + "ff" * 64,
                "sync_committee_signature": "0xc0" + "00" * 95,
            },
        }
    )
    with pytest.raises(InvalidSyncCommitteeSignature):
        process_optimistic_update(store_after(6), zero)


def test_too_little_participation_for_finality() -> None:
    # 341 of 512 is under 2/3: rejected before any BLS work.
    few = replace(FINALITY, sync_aggregate=with_bits(FINALITY.sync_aggregate, 341))
    with pytest.raises(InsufficientParticipation, match="341 of 512 signers is under 2/3"):
        process_finality_update(store_after(6), few)
    with pytest.raises(InsufficientParticipation):
        process_update(
            store_after(0),
            replace(UPDATES[0], sync_aggregate=with_bits(UPDATES[0].sync_aggregate, 1)),
        )
    # 342 is enough to be considered; the signature then is not theirs.
    enough = replace(FINALITY, sync_aggregate=with_bits(FINALITY.sync_aggregate, 342))
    with pytest.raises(InvalidSyncCommitteeSignature):
        process_finality_update(store_after(6), enough)


def test_no_participant_at_all() -> None:
    nobody = replace(OPTIMISTIC, sync_aggregate=with_bits(OPTIMISTIC.sync_aggregate, 0))
    with pytest.raises(InsufficientParticipation, match="no sync-committee member signed"):
        process_optimistic_update(store_after(6), nobody)
    # An optimistic update needs only one signer to be considered (then the BLS check).
    one = replace(OPTIMISTIC, sync_aggregate=with_bits(OPTIMISTIC.sync_aggregate, 1))
    with pytest.raises(InvalidSyncCommitteeSignature):
        process_optimistic_update(store_after(6), one)


def test_finality_branch_for_another_header() -> None:
    # helios' negative tests: another update's finalized header.
    update = replace(FINALITY, finalized_header=UPDATES[5].finalized_header)
    with pytest.raises(InvalidFinalityBranch, match="not the attested state's finalized"):
        process_finality_update(store_after(6), update)
    with pytest.raises(InvalidFinalityBranch):
        process_update(
            store_after(1), replace(UPDATES[1], finalized_header=UPDATES[0].finalized_header)
        )


def test_execution_branch_for_another_payload() -> None:
    attested = replace(FINALITY.attested_header, execution=FINALITY.finalized_header.execution)
    with pytest.raises(InvalidExecutionBranch, match="attested header execution payload"):
        process_finality_update(store_after(6), replace(FINALITY, attested_header=attested))
    finalized = replace(FINALITY.finalized_header, execution=FINALITY.attested_header.execution)
    with pytest.raises(InvalidExecutionBranch, match="finalized header execution payload"):
        process_finality_update(store_after(6), replace(FINALITY, finalized_header=finalized))


def test_signature_slot_not_after_attested_slot() -> None:
    attested_slot = FINALITY.attested_header.beacon.slot
    for slot in (attested_slot, attested_slot - 1):
        with pytest.raises(SlotOrderError, match="does not hold"):
            process_finality_update(store_after(6), replace(FINALITY, signature_slot=slot))
    # The finalized header after the attested one.
    with pytest.raises(SlotOrderError):
        process_finality_update(
            store_after(6), replace(FINALITY, finalized_header=OPTIMISTIC.attested_header)
        )
    # A signature from the future of the caller's clock.
    with pytest.raises(SlotOrderError, match="after the current slot"):
        process_finality_update(store_after(6), FINALITY, current_slot=FINALITY.signature_slot - 1)


def test_signature_slot_in_the_next_fork() -> None:
    # Same period, 5 epochs later: the signature slot is not signed, so under Capella alone
    # the update still verifies ...
    late = replace(FINALITY, signature_slot=FINALITY.signature_slot + 160)
    assert process_finality_update(store_after(6), late).finalized_advanced
    # ... but with a fork scheduled in between, the domain is that fork's: the Capella
    # signature does not verify under it (compute_fork_version at signature_slot - 1).
    deneb = Fork("deneb", bytes.fromhex("04000000"), (late.signature_slot - 1) // 32)
    store = replace(store_after(6), config=capella_config(CAPELLA.epoch, deneb))
    with pytest.raises(InvalidSyncCommitteeSignature, match="does not verify"):
        process_finality_update(store, late)
    # A signature slot before every scheduled fork has no version at all.
    early = capella_config(FINALITY.attested_header.beacon.slot // 32 + 1)
    with pytest.raises(UnsupportedFork):
        process_finality_update(replace(store_after(6), config=early), FINALITY)


def test_next_committee_not_in_state() -> None:
    committee = UPDATES[0].next_sync_committee
    tampered = replace(committee, pubkeys=(committee.pubkeys[1], *committee.pubkeys[1:]))
    assert tampered.points[0] == committee.points[1]
    # helios: "next_sync_committee.pubkeys[0] replaced" is InvalidNextSyncCommitteeProof.
    with pytest.raises(InvalidSyncCommitteeBranch, match="attested header's state"):
        process_update(store_after(0), replace(UPDATES[0], next_sync_committee=tampered))


def test_next_committee_conflicting_with_the_known_one() -> None:
    store = replace(store_after(6), next_sync_committee=UPDATES[4].next_sync_committee)
    with pytest.raises(ConflictingSyncCommittee, match="differs from the known one"):
        process_update(store, UPDATES[5])


def test_stale_update() -> None:
    with pytest.raises(IrrelevantUpdate, match="is not after the finalized slot"):
        process_update(store_after(1), UPDATES[0])


def test_error_tree() -> None:
    for error in (
        ConflictingSyncCommittee,
        InsufficientParticipation,
        InvalidExecutionBranch,
        InvalidFinalityBranch,
        InvalidSyncCommitteeBranch,
        InvalidSyncCommitteeSignature,
        IrrelevantUpdate,
        SlotOrderError,
        UnsupportedFork,
        WrongSyncCommitteePeriod,
    ):
        assert issubclass(error, LightClientError)
    assert issubclass(LightClientError, FinalityError)
    assert issubclass(MalformedBeaconData, DecodeError)


# --------------------------------------------------------------------------- parsers


def test_whole_answer_or_data_alone() -> None:
    assert parse_bootstrap(raw("bootstrap")["data"]) == BOOTSTRAP
    assert parse_update({"version": "capella", "data": raw("updates")[0]["data"]}) == UPDATES[0]


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("version",), "deneb", "labelled fork .deneb. but its header is in capella"),
        (("data", "signature_slot"), 7109431, "decimal string"),
        (("data", "signature_slot"), "07109431", "decimal string"),
        (("data", "signature_slot"), "-1", "decimal string"),
        (("data", "signature_slot"), " 1", "decimal string"),
        (("data", "signature_slot"), str(2**64), "exceeds 64 bits"),
        (("data", "attested_header", "execution", "base_fee_per_gas"), str(2**256), "256 bits"),
        (("data", "attested_header", "execution", "base_fee_per_gas"), 1, "decimal string"),
        (("data", "attested_header", "execution", "extra_data"), "0x" + "00" * 33, "longer"),
        (("data", "attested_header", "execution", "extra_data"), "0x0", "whole bytes"),
        (("data", "attested_header", "execution", "fee_recipient"), "0x" + "00" * 32, "20"),
        (("data", "attested_header", "execution", "logs_bloom"), "0x" + "00" * 255, "256"),
        (("data", "attested_header", "beacon", "state_root"), None, "hex string"),
        (("data", "attested_header", "beacon", "state_root"), "0x" + "zz" * 32, "hex"),
        (("data", "attested_header", "beacon"), [], "must be an object"),
        (("data", "attested_header", "execution_branch"), {}, "list of 4 roots"),
        (("data", "finality_branch"), ["0x" + "00" * 32] * 7, "list of 6 roots"),
        (("data", "sync_aggregate", "sync_committee_bits"), "0x" + "ff" * 63, "64"),
        (("data", "sync_aggregate", "sync_committee_signature"), "0x" + "ff" * 96, "G2"),
        (("data", "sync_aggregate", "sync_committee_signature"), "0x" + "00" * 95, "96"),
    ],
)
def test_malformed_finality_update(path: tuple[str, ...], value: object, reason: str) -> None:
    answer = fresh("finality")
    target = answer
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MalformedBeaconData, match=reason):
        parse_finality_update(answer)


def test_missing_and_unexpected_fields() -> None:
    answer = fresh("optimistic")
    del answer["data"]["signature_slot"]
    with pytest.raises(MalformedBeaconData, match=r"missing \['signature_slot'\]"):
        parse_optimistic_update(answer)
    answer = fresh("optimistic")
    answer["data"]["attested_header"]["beacon"]["extra"] = "0x"
    with pytest.raises(MalformedBeaconData, match=r"unexpected \['extra'\]"):
        parse_optimistic_update(answer)
    with pytest.raises(MalformedBeaconData, match="unexpected"):
        parse_optimistic_update({"version": "capella", "data": {}, "extra": 1})
    with pytest.raises(MalformedBeaconData, match="must be an object"):
        parse_update([])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c.__setitem__("pubkeys", c["pubkeys"][:511]), "list of 512 keys"),
        (lambda c: c.__setitem__("pubkeys", "0x"), "list of 512 keys"),
        (lambda c: c["pubkeys"].__setitem__(7, "0x" + "00" * 48), r"pubkeys\[7\] is not a BLS"),
        (
            lambda c: c["pubkeys"].__setitem__(3, "0xc0" + "00" * 47),
            r"pubkeys\[3\] is not a BLS.*infinity",
        ),
        (lambda c: c["pubkeys"].__setitem__(3, "0x" + "00" * 47), r"pubkeys\[3\] is 47 bytes"),
        (lambda c: c.__setitem__("aggregate_pubkey", "0x"), "aggregate_pubkey is 0 bytes"),
    ],
)
def test_malformed_sync_committee(change: Any, reason: str) -> None:
    answer = fresh("bootstrap")
    change(answer["data"]["current_sync_committee"])
    with pytest.raises(MalformedBeaconData, match=reason):
        parse_bootstrap(answer)


def test_a_committee_is_decompressed_once_and_other_keys_never_get_its_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every update of a period carries the same next committee, and decompressing its keys is
    ~36 ms: a committee seen again is not decompressed again. The keys themselves are what is
    remembered, so the same keys in another order (or any other key) are decompressed anew,
    and a bad key is refused every time (test_malformed_sync_committee)."""
    decoded: list[bytes] = []

    def counting(data: bytes) -> Any:
        decoded.append(data)
        return decode_pubkey(data)

    monkeypatch.setattr(types_module, "decode_pubkey", counting)
    types_module._committee_points_and_root.cache_clear()
    first = parse_bootstrap(fresh("bootstrap")).current_sync_committee
    assert len(decoded) == 512
    again = parse_bootstrap(fresh("bootstrap")).current_sync_committee
    assert len(decoded) == 512 and again.points is first.points and again.root == first.root
    swapped = fresh("bootstrap")
    keys = swapped["data"]["current_sync_committee"]["pubkeys"]
    keys[0], keys[1] = keys[1], keys[0]
    other = parse_bootstrap(swapped).current_sync_committee
    assert len(decoded) == 1024
    assert other.points[:2] == (first.points[1], first.points[0]) and other.root != first.root


def test_bitvector_of_another_length() -> None:
    with pytest.raises(MalformedBeaconData, match="has 511 bits, expected 32 or 512"):
        replace(FINALITY.sync_aggregate, bits=FINALITY.sync_aggregate.bits[1:])


def test_malformed_update_committee_branch() -> None:
    answer = fresh("updates")[0]
    answer["data"]["next_sync_committee_branch"].pop()
    with pytest.raises(MalformedBeaconData, match="list of 5 roots"):
        parse_update(answer)


JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
PARSERS = (parse_bootstrap, parse_update, parse_finality_update, parse_optimistic_update)


@PROPERTY
@given(value=JSON, parser=st.sampled_from(PARSERS))
def test_arbitrary_json_is_malformed(value: Any, parser: Any) -> None:
    with pytest.raises(MalformedBeaconData):
        parser(value)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [path]


FINALITY_LEAVES = _leaves(raw("finality"))


def test_mutated_field_parses_or_is_refused() -> None:
    """A field of a real finality update replaced by arbitrary JSON, or by a value of the same
    shape (hex of the same length, a decimal uint64): malformed, or parsed and then refused
    by the light client with a VerificationError — never another exception, never accepted."""
    reach = Reach("malformed", "refused")

    @PROPERTY
    @given(
        path=st.sampled_from(FINALITY_LEAVES),
        same_shape=st.booleans(),
        replacement=JSON,
        data=st.data(),
    )
    def check(
        path: tuple[Any, ...], same_shape: bool, replacement: Any, data: st.DataObject
    ) -> None:
        answer = fresh("finality")
        target = answer
        for key in path[:-1]:
            target = target[key]
        original = target[path[-1]]
        if same_shape and original.startswith("0x"):
            digits = data.draw(
                st.text("0123456789abcdef", min_size=len(original) - 2, max_size=len(original) - 2)
            )
            replacement = "0x" + digits
        elif same_shape:
            replacement = str(data.draw(st.integers(0, 2**64 - 1)))
        target[path[-1]] = replacement
        if replacement == original:
            return
        try:
            parsed = parse_finality_update(answer)
        except MalformedBeaconData:
            reach.hit("malformed")
            return
        try:
            process_finality_update(store_after(6), parsed)
        except VerificationError:
            reach.hit("refused")
            return
        # Only the signature slot is not covered by the signature (the spec's rule too).
        assert path[-1] == "signature_slot"
        reach.hit("unsigned signature slot")

    check()
    reach.assert_reached()


def test_flipped_digit_in_a_real_update_is_refused() -> None:
    reach = Reach("refused")

    @SLOW_PROPERTY
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        flip_one_digit(data, reach)

    check()
    reach.assert_reached()


def flip_one_digit(data: st.DataObject, reach: Reach) -> None:
    answer = fresh("finality")
    # The signature slot alone is not signed (only its period and fork are used), as in the spec.
    paths = [p for p in FINALITY_LEAVES if p[-1] != "signature_slot"]
    path = data.draw(st.sampled_from(paths))
    target = answer
    for key in path[:-1]:
        target = target[key]
    text = target[path[-1]]
    position = data.draw(st.integers(2 if text.startswith("0x") else 0, len(text) - 1))
    digit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != text[position]))
    target[path[-1]] = text[:position] + digit + text[position + 1 :]
    try:
        parsed = parse_finality_update(answer)
    except MalformedBeaconData:
        reach.hit("malformed")  # a decimal given a leading zero
        return
    # Every byte is covered by a root, a branch or the signature.
    with pytest.raises(VerificationError):
        process_finality_update(store_after(6), parsed)
    reach.hit("refused")


# --------------------------------------------------------------------------- SSZ and branches


def _naive_root(chunks: list[bytes], width: int) -> bytes:
    if width == 1:
        return chunks[0] if chunks else bytes(32)
    half = width // 2
    return hashlib.sha256(
        _naive_root(chunks[:half], half) + _naive_root(chunks[half:], half)
    ).digest()


@PROPERTY
@given(data=st.data(), depth=st.integers(0, 9))
def test_merkleize_is_the_padded_tree(data: st.DataObject, depth: int) -> None:
    width = 2**depth
    chunks = data.draw(st.lists(st.binary(min_size=32, max_size=32), max_size=width))
    assert merkleize(chunks, width) == _naive_root(chunks, width)


def _root_of(leaf: bytes, branch: list[bytes], index: int) -> bytes:
    value = leaf
    for level, sibling in enumerate(branch):
        pair = sibling + value if (index >> level) & 1 else value + sibling
        value = hashlib.sha256(pair).digest()
    return value


ROOT32 = st.binary(min_size=32, max_size=32)


@PROPERTY
@given(data=st.data(), depth=st.integers(1, 8), leaf=ROOT32)
def test_branch_check(data: st.DataObject, depth: int, leaf: bytes) -> None:
    branch = data.draw(st.lists(ROOT32, min_size=depth, max_size=depth))
    index = data.draw(st.integers(0, 2**depth - 1))
    root = _root_of(leaf, branch, index)
    assert is_valid_merkle_branch(leaf, branch, depth, index, root)
    # Another index proves only what the naive fold says (nothing, unless a sibling equals the
    # running value); a changed sibling, a short or long branch: refused.
    other = data.draw(st.integers(0, 2**depth - 1).filter(lambda i: i != index))
    assert is_valid_merkle_branch(leaf, branch, depth, other, root) is (
        _root_of(leaf, branch, other) == root
    )
    level = data.draw(st.integers(0, depth - 1))
    flipped = [*branch]
    flipped[level] = bytes([flipped[level][0] ^ 1]) + flipped[level][1:]
    assert not is_valid_merkle_branch(leaf, flipped, depth, index, root)
    assert not is_valid_merkle_branch(leaf, branch[:-1], depth, index, root)
    assert not is_valid_merkle_branch(leaf, [*branch, bytes(32)], depth, index, root)


def test_real_branches_from_expected_json() -> None:
    # The four Capella branches of the bootstrap and of updates[0], checked bare.
    header = BOOTSTRAP.header
    assert is_valid_merkle_branch(
        header.execution.hash_tree_root(), header.execution_branch, 4, 9, header.beacon.body_root
    )
    assert is_valid_merkle_branch(
        BOOTSTRAP.current_sync_committee.hash_tree_root(),
        BOOTSTRAP.current_sync_committee_branch,
        5,
        22,
        header.beacon.state_root,
    )
    update = UPDATES[0]
    state_root = update.attested_header.beacon.state_root
    assert is_valid_merkle_branch(
        update.next_sync_committee.hash_tree_root(),
        update.next_sync_committee_branch,
        5,
        23,
        state_root,
    )
    assert is_valid_merkle_branch(
        update.finalized_header.beacon.hash_tree_root(), update.finality_branch, 6, 41, state_root
    )
    assert not is_valid_merkle_branch(
        update.next_sync_committee.hash_tree_root(),
        update.next_sync_committee_branch,
        5,
        22,
        state_root,
    )


def test_beacon_config_is_typed() -> None:
    assert isinstance(MAINNET, BeaconConfig)
    assert MAINNET.fork_covers(CAPELLA.epoch * 32)
    assert not MAINNET.fork_covers(CAPELLA.epoch * 32 - 1)
