"""Presets and fork schedules of the beacon light client (issue #10): the config, and objects
that claim another fork than their slot is in.

Real data: the Deneb and Electra spec-test chains (tests/test_beacon_spec_vectors.py loads
them) and the mainnet Capella vectors. Each negative case changes one thing and expects one
named error; a property test feeds arbitrary TOML-like values to the config constructor.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reach import Reach
from test_beacon_light_client import BOOTSTRAP, CHECKPOINT, FINALITY, raw
from test_beacon_spec_vectors import load

from light_clients.beacon import (
    MAINNET,
    MINIMAL_PRESET,
    BeaconConfig,
    Fork,
    ForkMismatch,
    InvalidBeaconConfig,
    InvalidFinalityBranch,
    InvalidSyncCommitteeBranch,
    InvalidSyncCommitteeSignature,
    MalformedBeaconData,
    UnsupportedFork,
    bootstrap,
    parse_bootstrap,
    parse_finality_update,
    parse_header,
    parse_sync_committee,
    parse_update,
    process_update,
)
from light_clients.beacon.sync import check_header, sync_committee_period
from light_clients.beacon.types import UnsupportedForkData

# The lead's devnet (Lodestar 1.5.1): minimal preset, every fork through Capella at epoch 0.
DEVNET_ROOT = "0x" + "5a" * 32
DEVNET_FORKS: dict[str, Any] = {
    "altair": ["0x01000001", 0],
    "bellatrix": ["0x02000001", 0],
    "capella": ["0x03000001", 0],
}


def devnet(**changes: Any) -> BeaconConfig:
    forks = copy.deepcopy(DEVNET_FORKS) | changes
    return BeaconConfig.from_schedule("minimal", DEVNET_ROOT, forks)


# --------------------------------------------------------------------------- the config


def test_the_devnet_table_builds_a_minimal_capella_chain() -> None:
    config = devnet()
    assert config.preset == MINIMAL_PRESET
    assert config.preset.sync_committee_size == 32
    assert config.preset.slots_per_period == 64
    assert config.genesis_validators_root == bytes.fromhex("5a" * 32)
    assert [fork.name for fork in config.forks] == ["altair", "bellatrix", "capella"]
    assert config.fork_at_slot(0) == Fork("capella", bytes.fromhex("03000001"), 0)
    assert config.fork_covers(10**9)  # Deneb is not scheduled: Capella forever
    assert (config.epoch(17), config.period(63), config.period(64)) == (2, 0, 1)
    # Table order is irrelevant; bytes are accepted where hex is.
    reordered = BeaconConfig.from_schedule(
        "minimal",
        bytes.fromhex("5a" * 32),
        {"capella": (bytes.fromhex("03000001"), 0), **DEVNET_FORKS},
    )
    assert reordered == config


def test_mainnet_schedule() -> None:
    assert MAINNET.preset.sync_committee_size == 512
    capella, deneb, electra, fulu = MAINNET.forks[2:]
    assert (capella.epoch, deneb.epoch, electra.epoch) == (194048, 269568, 364032)
    assert MAINNET.fork_at_slot(deneb.epoch * 32 - 1) == capella
    assert MAINNET.fork_at_slot(deneb.epoch * 32) == deneb
    # Fulu: Electra's containers under its own version (mainnet runs it since 2025-12-03).
    assert MAINNET.fork_covers(fulu.epoch * 32)
    assert MAINNET.layout_at_slot(fulu.epoch * 32, "header").finalized_root_gindex == 169
    assert MAINNET.fork_at_slot(0) is None


def test_signature_domain_fork_is_that_of_the_previous_slot() -> None:
    # compute_fork_version(epoch(max(signature_slot, 1) - 1)): an update signed in the first
    # slot of Deneb was signed by the committee during the last Capella slot.
    deneb = MAINNET.forks[3]
    first = deneb.epoch * 32
    assert MAINNET.fork_version_at_slot(first - 1, "x") == bytes.fromhex("03000000")
    assert MAINNET.fork_version_at_slot(first, "x") == deneb.version
    with pytest.raises(UnsupportedFork, match="before the first scheduled fork"):
        MAINNET.fork_version_at_slot(0, "update")


@pytest.mark.parametrize(
    ("preset", "root", "forks", "reason"),
    [
        ("mainnet-ish", DEVNET_ROOT, DEVNET_FORKS, "unknown preset 'mainnet-ish'"),
        (None, DEVNET_ROOT, DEVNET_FORKS, "unknown preset None"),
        ("minimal", "0x5a", DEVNET_FORKS, "is 1 bytes, expected 32"),
        ("minimal", "5a" * 32, DEVNET_FORKS, "genesis_validators_root"),
        ("minimal", 7, DEVNET_FORKS, "genesis_validators_root"),
        ("minimal", DEVNET_ROOT, {}, "non-empty table"),
        ("minimal", DEVNET_ROOT, [["capella", "0x03000001", 0]], "non-empty table"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"shanghai": ["0x", 0]}, "unknown fork 'shanghai'"),
        ("minimal", DEVNET_ROOT, {"altair": ["0x01000001", 0]}, "must include capella"),
        ("minimal", DEVNET_ROOT, {"altair": ["0x01000001", 0], "capella": ["0x03000001", 0]},
         "not consecutive"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x030000", 0]}, "expected 4"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x03000001"]}, "[version, epoch]"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": "0x03000001"}, "[version, epoch]"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x03000001", True]}, "integer"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x03000001", -1]}, "integer"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x03000001", 2**64]}, "integer"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x03000001", "0"]}, "integer"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"deneb": ["0x04000001", 5],
                                                 "bellatrix": ["0x02000001", 9]},
         "fork capella (epoch 0) before bellatrix (9)"),
        ("minimal", DEVNET_ROOT, DEVNET_FORKS | {"capella": ["0x02000001", 0]},
         "share a version"),
    ],
)  # fmt: skip
def test_unusable_schedule_one_line(preset: Any, root: Any, forks: Any, reason: str) -> None:
    with pytest.raises(InvalidBeaconConfig, match=re.escape(reason)) as raised:
        BeaconConfig.from_schedule(preset, root, forks)
    assert "\n" not in str(raised.value)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(InvalidBeaconConfig, match="must include capella"):
        BeaconConfig(bytes(32), ())
    with pytest.raises(InvalidBeaconConfig, match="32 bytes"):
        BeaconConfig(bytes(31), MAINNET.forks)
    with pytest.raises(InvalidBeaconConfig, match="is not mainnet or minimal"):
        BeaconConfig(bytes(32), MAINNET.forks, replace(MINIMAL_PRESET, sync_committee_size=64))


TOML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2**65)
    | st.sampled_from(["0x01000001", "0x03000001", "0x", "0xzz", "capella"])
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)
NAMES = ("altair", "bellatrix", "capella", "deneb", "electra", "fulu", "gloas")


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed schedule (consecutive forks through Capella, ascending epochs, distinct
    versions), then possibly one entry added, removed or replaced by an arbitrary value."""
    start = draw(st.integers(0, 2))
    end = draw(st.integers(3, len(NAMES)))
    epochs = sorted(
        draw(st.lists(st.integers(0, 2**20), min_size=end - start, max_size=end - start))
    )
    forks: dict[str, Any] = {
        name: [f"0x{i + 1:02x}000001", epoch]
        for i, (name, epoch) in enumerate(zip(NAMES[start:end], epochs, strict=True))
    }
    change = draw(st.sampled_from(["none", "none", "replace", "remove", "add"]))
    name = draw(st.sampled_from([*NAMES, "shanghai"]))
    if change == "replace":
        forks[name] = draw(TOML_VALUES)
    elif change == "remove":
        forks.pop(name, None)
    elif change == "add":
        forks[name] = [draw(st.sampled_from(["0x03000001", "0x07000001"])), draw(st.integers(0, 9))]
    return forks


def test_arbitrary_schedules_build_or_are_refused() -> None:
    """Schedules near the valid ones: a config or InvalidBeaconConfig, nothing else; and a
    config that builds answers for every slot with a fork whose epoch has come."""
    reach = Reach("built", "refused")

    @settings(max_examples=200, deadline=None)
    @given(
        preset=st.sampled_from(["minimal", "mainnet", "minimal", "MINIMAL"]),
        forks=schedules(),
        slot=st.integers(0, 2**26),
    )
    def check(preset: str, forks: dict[str, Any], slot: int) -> None:
        try:
            config = BeaconConfig.from_schedule(preset, DEVNET_ROOT, forks)
        except InvalidBeaconConfig as error:
            assert "\n" not in str(error)
            reach.hit("refused")
            return
        reach.hit("built")
        fork = config.fork_at_slot(slot)
        assert fork is None or fork.epoch <= config.epoch(slot)
        later = [f for f in config.forks if f.epoch <= config.epoch(slot)]
        assert fork == (later[-1] if later else None)

    check()
    reach.assert_reached()


# --------------------------------------------------------------------------- forks of objects

DENEB = "deneb/light_client_sync"
ELECTRA = "electra/light_client_sync"


def update_json(case_name: str, index: int) -> Any:
    case = load(case_name)
    name = [s["process_update"]["update"] for s in case.steps if "process_update" in s][index]
    return case.json(name)


def test_branch_depth_is_the_attested_forks() -> None:
    deneb, electra = load(DENEB), load(ELECTRA)
    # A Deneb update with an Electra-depth finality branch, and the reverse.
    deep = update_json(DENEB, 0)
    deep["finality_branch"].append("0x" + "00" * 32)
    with pytest.raises(MalformedBeaconData, match="finality_branch must be a list of 6 roots"):
        parse_update(deep, deneb.config)
    shallow = update_json(ELECTRA, 0)
    shallow["finality_branch"].pop()
    with pytest.raises(MalformedBeaconData, match="finality_branch must be a list of 7 roots"):
        parse_update(shallow, electra.config)
    shallow = update_json(ELECTRA, 0)
    shallow["next_sync_committee_branch"].pop()
    with pytest.raises(MalformedBeaconData, match=r"next_sync_committee_branch .* 6 roots"):
        parse_update(shallow, electra.config)
    # Electra data read under a schedule without Electra: its headers are Deneb by slot, so
    # its branches are one node too long.
    without_electra = BeaconConfig(
        electra.config.genesis_validators_root,
        electra.config.forks[:-1],
        electra.config.preset,
    )
    with pytest.raises(MalformedBeaconData, match="list of 5 roots"):
        parse_bootstrap(load(ELECTRA).json("bootstrap"), without_electra)


def test_a_branch_of_the_other_depth_does_not_verify() -> None:
    """Objects built directly (not parsed) with a branch of the other fork's depth: the
    branch check refuses them, not only the parser."""
    deneb, electra = load(DENEB), load(ELECTRA)
    store = bootstrap(
        parse_bootstrap(deneb.json("bootstrap"), deneb.config),
        deneb.trusted_block_root,
        deneb.config,
    )
    update = parse_update(update_json(DENEB, 0), deneb.config)
    assert process_update(store, update).finalized_advanced
    with pytest.raises(InvalidFinalityBranch):
        process_update(store, replace(update, finality_branch=(*update.finality_branch, bytes(32))))
    with pytest.raises(InvalidSyncCommitteeBranch):
        process_update(
            store,
            replace(
                update, next_sync_committee_branch=(bytes(32), *update.next_sync_committee_branch)
            ),
        )
    # Electra's bootstrap branch is 6 deep; cut to Deneb's 5 it does not verify.
    data = parse_bootstrap(electra.json("bootstrap"), electra.config)
    with pytest.raises(InvalidSyncCommitteeBranch):
        bootstrap(
            replace(data, current_sync_committee_branch=data.current_sync_committee_branch[1:]),
            electra.trusted_block_root,
            electra.config,
        )


def test_signature_domain_of_another_fork() -> None:
    deneb = load(DENEB)
    store = bootstrap(
        parse_bootstrap(deneb.json("bootstrap"), deneb.config),
        deneb.trusted_block_root,
        deneb.config,
    )
    for index in range(2):
        store = process_update(store, parse_update(update_json(DENEB, index), deneb.config)).store
    xf = parse_update(update_json(DENEB, 2), deneb.config)
    assert (xf.attested_header.beacon.slot, xf.signature_slot) == (112, 129)
    assert process_update(store, xf).finalized_advanced
    # Electra scheduled at epoch 16: the attested header (slot 112, epoch 14) is still Deneb,
    # but slot 128 = signature slot - 1 is Electra, so the domain is Electra's: the Deneb
    # signature does not verify.
    electra = Fork("electra", bytes.fromhex("05000001"), 16)
    forked = BeaconConfig(deneb.config.genesis_validators_root, (*deneb.config.forks, electra),
                          deneb.config.preset)  # fmt: skip
    with pytest.raises(InvalidSyncCommitteeSignature, match="does not verify"):
        process_update(replace(store, config=forked), xf)
    # The same fork schedule with Deneb's version changed: every signature fails.
    other_version = BeaconConfig(
        deneb.config.genesis_validators_root,
        (*deneb.config.forks[:-1], replace(deneb.config.forks[-1], version=bytes(4))),
        deneb.config.preset,
    )
    with pytest.raises(InvalidSyncCommitteeSignature):
        process_update(replace(store, config=other_version), xf)


def test_header_claiming_another_fork() -> None:
    deneb = load(DENEB)
    header = load(DENEB).json("bootstrap")["header"]
    assert parse_header(header, deneb.config).execution.blob_gas_used is not None
    # A Deneb-era header without the Deneb fields (Capella's shape): refused.
    capella_shaped = copy.deepcopy(header)
    del capella_shaped["execution"]["blob_gas_used"]
    del capella_shaped["execution"]["excess_blob_gas"]
    with pytest.raises(MalformedBeaconData, match=r"\(deneb\) fields: missing \['blob_gas_used'"):
        parse_header(capella_shaped, deneb.config)
    # Read under a schedule where its slot is Capella: the Deneb fields are unknown ones.
    capella_only = BeaconConfig(
        deneb.config.genesis_validators_root, deneb.config.forks[:3], deneb.config.preset
    )
    with pytest.raises(MalformedBeaconData, match=r"\(capella\) fields: .*unexpected \['blob_gas"):
        parse_header(header, capella_only)
    # Built directly: ForkMismatch, both ways (Capella-shaped at a Deneb slot is in
    # test_beacon_light_client.py::test_bootstrap_outside_the_fork).
    data = parse_bootstrap(deneb.json("bootstrap"), deneb.config)
    with pytest.raises(ForkMismatch, match="is in capella but its execution header has"):
        bootstrap(data, deneb.trusted_block_root, capella_only)
    # A slot before Capella while parsing: an error of both kinds.
    early = copy.deepcopy(header)
    early["beacon"]["slot"] = "7"
    with pytest.raises(UnsupportedForkData, match="is in fork phase0") as raised:
        parse_header(early, MAINNET)
    assert isinstance(raised.value, MalformedBeaconData | UnsupportedFork)


def test_answer_labelled_with_another_fork() -> None:
    electra = load(ELECTRA)
    answer = {"version": "deneb", "data": update_json(ELECTRA, 0)}
    with pytest.raises(MalformedBeaconData, match=r"labelled fork 'deneb' but .* electra"):
        parse_update(answer, electra.config)
    answer["version"] = "electra"
    assert parse_update(answer, electra.config).signature_slot == 41
    answer["version"] = 5
    with pytest.raises(MalformedBeaconData, match="version must be a fork name"):
        parse_update(answer, electra.config)


def test_absent_parts_of_an_update() -> None:
    deneb = load(DENEB)
    xf = update_json(DENEB, 2)  # no next sync committee
    sx = update_json(DENEB, 3)  # no finality
    assert parse_update(xf, deneb.config).next_sync_committee is None
    assert parse_update(sx, deneb.config).finalized_header is None
    # A zero branch beside a committee (or a header) that is not the empty one: two
    # readings of one update, refused.
    xf["next_sync_committee"]["aggregate_pubkey"] = sx["next_sync_committee"]["aggregate_pubkey"]
    with pytest.raises(MalformedBeaconData, match="next_sync_committee has an all-zero branch"):
        parse_update(xf, deneb.config)
    sx["finalized_header"]["beacon"]["slot"] = "1"
    with pytest.raises(MalformedBeaconData, match="finalized_header has an all-zero branch"):
        parse_update(sx, deneb.config)


def test_committee_of_the_other_preset() -> None:
    deneb = load(DENEB)
    minimal_committee = deneb.json("bootstrap")["current_sync_committee"]
    assert len(parse_sync_committee(minimal_committee, deneb.config).pubkeys) == 32
    with pytest.raises(MalformedBeaconData, match=r"list of 512 keys \(mainnet preset"):
        parse_sync_committee(minimal_committee, MAINNET)
    # Objects parsed under one preset, verified under the other.
    mainnet_bootstrap_in_minimal_chain = BeaconConfig(
        MAINNET.genesis_validators_root, (MAINNET.forks[2],), MINIMAL_PRESET
    )
    with pytest.raises(
        MalformedBeaconData, match=r"512 members, the minimal preset's committee 32"
    ):
        bootstrap(BOOTSTRAP, CHECKPOINT, mainnet_bootstrap_in_minimal_chain)
    store = bootstrap(
        parse_bootstrap(deneb.json("bootstrap"), deneb.config),
        deneb.trusted_block_root,
        deneb.config,
    )
    update = parse_update(update_json(DENEB, 0), deneb.config)
    padded = replace(update.sync_aggregate, bits=update.sync_aggregate.bits * 16)
    with pytest.raises(MalformedBeaconData, match="sync aggregate has 512 members"):
        process_update(store, replace(update, sync_aggregate=padded))
    mainnet_committee = BOOTSTRAP.current_sync_committee
    with pytest.raises(MalformedBeaconData, match="next sync committee has 512 members"):
        process_update(store, replace(update, next_sync_committee=mainnet_committee))


def test_objects_built_directly_keep_their_invariants() -> None:
    header = parse_header(load(DENEB).json("bootstrap")["header"], load(DENEB).config)
    with pytest.raises(MalformedBeaconData, match="one blob-gas field without the other"):
        replace(header.execution, excess_blob_gas=None)
    committee = BOOTSTRAP.current_sync_committee
    with pytest.raises(MalformedBeaconData, match="has 48 keys, expected 32 or 512"):
        replace(committee, pubkeys=committee.pubkeys[:48])


def test_period_arithmetic_follows_the_preset() -> None:
    assert sync_committee_period(8191) == 0
    assert sync_committee_period(8192) == 1
    assert sync_committee_period(8192, load(DENEB).config) == 128


def test_an_older_header_upgraded_into_a_newer_update() -> None:
    """At a fork, an update's attested header is in the new fork and its finalized header
    may still be in the old one; the API then serves the finalized header in the new
    container (the spec's upgrade: Deneb fields present and zero). It is read back in its own
    shape, whose root its execution branch proves. Real mainnet data, with a schedule that
    puts Deneb between the finalized slot (7109344) and the attested slot (7109430)."""
    answer = copy.deepcopy(raw("finality"))
    data = answer["data"]
    transition = BeaconConfig(
        MAINNET.genesis_validators_root,
        (*MAINNET.forks[:3], Fork("deneb", bytes.fromhex("04000000"), 7109430 // 32)),
    )
    assert transition.fork_at_slot(7109344) == MAINNET.forks[2]  # capella
    assert transition.fork_at_slot(7109430) == transition.forks[3]  # deneb
    for header in (data["finalized_header"], data["attested_header"]):
        header["execution"] |= {"blob_gas_used": "0", "excess_blob_gas": "0"}
    answer["version"] = "deneb"
    parsed = parse_finality_update(answer, transition)
    assert parsed.finalized_header == FINALITY.finalized_header
    check_header(transition, parsed.finalized_header, "finalized header")
    # The upgraded fields must be zero: one reading only.
    data["finalized_header"]["execution"]["excess_blob_gas"] = "1"
    with pytest.raises(MalformedBeaconData, match="its blob-gas fields must be 0"):
        parse_finality_update(answer, transition)
    # A finalized header in a later fork than the attested one that carries it.
    later = copy.deepcopy(raw("finality"))
    later["data"]["finalized_header"]["beacon"]["slot"] = str(7109440)
    after_attested = BeaconConfig(
        MAINNET.genesis_validators_root,
        (*MAINNET.forks[:3], Fork("deneb", bytes.fromhex("04000000"), 7109440 // 32)),
    )
    with pytest.raises(MalformedBeaconData, match="is in deneb, after the capella object"):
        parse_finality_update(later, after_attested)
