"""`passerelle proof verify|inspect` for the kinds `beacon-bootstrap` and `beacon-update` (#10).

The shipped examples (docs/examples/beacon-*.json) are real mainnet Capella beacon API answers
from tests/vectors/eth_consensus_lc/ (PROVENANCE.md there). Each tampered variant changes one
thing and must be *invalid* (exit 1) with one line naming what failed; each malformed variant
must be *unusable* (exit 2) with one line; nothing ever prints a traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.beacon import (
    MAINNET,
    bootstrap,
    parse_bootstrap,
    parse_finality_update,
    parse_update,
    process_finality_update,
    process_update,
)
from relayer import proof_files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
VECTORS = ROOT / "tests" / "vectors" / "eth_consensus_lc"

# What the full real chain (bootstrap, six updates, the finality update) finalizes: mainnet
# slot 7109344, execution block 17923026 (expected.json: "finalized 17923026").
FULL_FINALIZED_SLOT = 7109344
FULL_BLOCK_NUMBER = 17923026


run = run_cli  # in-process: tests/cli_runner.py says why and what it cannot show


@cache
def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return loaded


def example(name: str) -> dict[str, Any]:
    """A private copy of a shipped example, to alter."""
    return copy.deepcopy(_example(name))


@cache
def _vector(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


@cache
def _full_chain() -> dict[str, Any]:
    """bootstrap + all six updates + the finality update, claiming what they finalize."""
    obj = example("beacon-update")
    obj["updates"] = _vector("updates")
    obj["finality_update"] = _vector("finality")
    block_root = bytes.fromhex(obj["block_root"][2:])
    store = bootstrap(parse_bootstrap(obj["bootstrap"]), block_root, MAINNET)
    for update in obj["updates"]:
        store = process_update(store, parse_update(update)).store
    store = process_finality_update(store, parse_finality_update(obj["finality_update"])).store
    finalized = store.finalized_header
    assert finalized.beacon.slot == FULL_FINALIZED_SLOT
    obj["finalized_header_root"] = "0x" + finalized.beacon.hash_tree_root().hex()
    obj["execution_state_root"] = "0x" + finalized.execution.state_root.hex()
    obj["execution_block_number"] = finalized.execution.block_number
    return obj


def full_chain() -> dict[str, Any]:
    return copy.deepcopy(_full_chain())


def write(tmp_path: Path, obj: Any, name: str = "proof.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def flip_hex(value: str, position: int = -1) -> str:
    digits = list(value)
    digits[position] = "1" if digits[position] != "1" else "2"
    return "".join(digits)


# --------------------------------------------------------------------------- valid


def test_examples_verify_exit_0() -> None:
    files = [EXAMPLES / "beacon-bootstrap.json", EXAMPLES / "beacon-update.json"]
    result = run("proof", "verify", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.rsplit(": ", 1)[1] for line in result.stdout.splitlines()] == ["valid"] * 2


def test_generate_reproduces_the_beacon_examples() -> None:
    """docs/examples/generate.py (deterministic) writes exactly the committed beacon files."""
    spec = importlib.util.spec_from_file_location("generate", EXAMPLES / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for kind, obj in generate.beacon_examples().items():
        text = (EXAMPLES / f"{kind}.json").read_text()
        assert text == json.dumps(obj, indent=2) + "\n", kind


def test_example_is_real_vector_data() -> None:
    """The examples carry the vectors' beacon API answers unchanged, and the trusted root is
    expected.json's checkpoint."""
    update = _example("beacon-update")
    checkpoint = _vector("expected")["trusted_checkpoint_block_root"]
    assert update["block_root"] == _example("beacon-bootstrap")["block_root"] == checkpoint
    assert update["bootstrap"] == _vector("bootstrap")
    assert update["updates"] == _vector("updates")[: len(update["updates"])]


def test_full_real_chain_verifies(tmp_path: Path) -> None:
    """All six updates and the finality update: the finalized execution block of finality.json."""
    result = run("proof", "inspect", "--json", write(tmp_path, full_chain()))
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["details"]["slot"] == FULL_FINALIZED_SLOT
    assert shown["details"]["execution_block_number"] == FULL_BLOCK_NUMBER
    assert shown["details"]["updates"] == 7
    labels = [label for label, _ in shown["steps"]]
    assert "finality_update (signed in period 867)" in labels


def test_inspect_json_shows_the_steps() -> None:
    result = run("proof", "inspect", "--json", EXAMPLES / "beacon-update.json")
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["valid"] is True and shown["kind"] == "beacon-update"
    steps = dict(shown["steps"])
    assert steps["bootstrap slot"] == "7069376 (period 862)"
    assert "learned committee for period 863" in steps["updates[0] (signed in period 862)"]
    assert "finalized header unchanged" in steps["updates[0] (signed in period 862)"]
    established = steps["updates[1] (signed in period 863)"]
    assert established.startswith("512/512 signed")
    assert "committee rotated to period 863" in established
    assert "finalized slot 7070047" in established
    assert steps["finalized header matches the claim"] == "yes"
    claims = dict(shown["claims"])
    assert claims["execution state root"] == _example("beacon-update")["execution_state_root"]
    assert shown["details"]["execution_block_number"] == 17883995


def test_inspect_text_of_bootstrap() -> None:
    result = run("proof", "inspect", EXAMPLES / "beacon-bootstrap.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bootstrap header root equals trusted root" in result.stdout
    assert "period 862" in result.stdout
    assert "verdict: valid" in result.stdout


def test_claiming_only_the_header_or_only_the_state_root(tmp_path: Path) -> None:
    only_header = example("beacon-update") | {"execution_state_root": None}
    del only_header["execution_block_number"]
    only_state = example("beacon-update")
    del only_state["finalized_header_root"]
    result = run("proof", "verify", write(tmp_path, only_header, "h.json"))
    assert result.returncode == 0, result.stdout
    result = run("proof", "verify", write(tmp_path, only_state, "s.json"))
    assert result.returncode == 0, result.stdout


# --------------------------------------------------------------------------- invalid (exit 1)


def _signature(obj: dict[str, Any], i: int) -> dict[str, Any]:
    aggregate: dict[str, Any] = obj["updates"][i]["data"]["sync_aggregate"]
    return aggregate


def _flip_signature(obj: dict[str, Any]) -> None:
    aggregate = _signature(obj, 1)
    aggregate["sync_committee_signature"] = flip_hex(aggregate["sync_committee_signature"])


def _other_valid_signature(obj: dict[str, Any]) -> None:
    """A well-formed G2 signature, but over another header (updates[0]'s)."""
    _signature(obj, 1)["sync_committee_signature"] = _signature(obj, 0)["sync_committee_signature"]


def _drop_a_signer(obj: dict[str, Any]) -> None:
    aggregate = _signature(obj, 1)
    bits = bytearray.fromhex(aggregate["sync_committee_bits"][2:])
    bits[0] &= 0xFE
    aggregate["sync_committee_bits"] = "0x" + bits.hex()


def _swap_finalized_header(obj: dict[str, Any]) -> None:
    data = obj["updates"][1]["data"]
    data["finalized_header"] = obj["updates"][0]["data"]["finalized_header"]


def _tamper_bootstrap_committee(obj: dict[str, Any]) -> None:
    keys = obj["bootstrap"]["data"]["current_sync_committee"]["pubkeys"]
    keys[0], keys[1] = keys[1], keys[0]


def _root_of_another_block(obj: dict[str, Any]) -> None:
    obj["block_root"] = _example("beacon-update")["finalized_header_root"]


def _reorder(obj: dict[str, Any]) -> None:
    obj["updates"].reverse()


INVALID_UPDATE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "flipped_signature_bit": (_flip_signature, "updates[1]: "),
    "signature_of_another_header": (_other_valid_signature, "updates[1]: sync aggregate"),
    "signer_bit_cleared": (_drop_a_signer, "updates[1]: sync aggregate of 511 signers"),
    "claimed_state_root": (
        lambda o: o.__setitem__("execution_state_root", flip_hex(o["execution_state_root"])),
        "execution state root",
    ),
    "claimed_header_root": (
        lambda o: o.__setitem__("finalized_header_root", flip_hex(o["finalized_header_root"])),
        "finalize header",
    ),
    "claimed_block_number": (
        lambda o: o.__setitem__("execution_block_number", o["execution_block_number"] + 1),
        "finalized execution block is 17883995",
    ),
    "bootstrap_for_another_root": (_root_of_another_block, "bootstrap: bootstrap header root"),
    "bootstrap_committee_swapped_keys": (
        _tamper_bootstrap_committee,
        "bootstrap: bootstrap current sync committee",
    ),
    "first_update_removed": (lambda o: o["updates"].pop(0), "updates[0]: signature period 863"),
    "updates_reordered": (_reorder, "updates[0]: signature period 863"),
    "finalized_header_of_another_update": (_swap_finalized_header, "updates[1]: finalized header"),
}


@pytest.mark.parametrize("name", sorted(INVALID_UPDATE))
def test_tampered_update_exit_1_naming_the_failure(name: str, tmp_path: Path) -> None:
    alter, expected = INVALID_UPDATE[name]
    obj = example("beacon-update")
    alter(obj)
    line = one_line(result := run("proof", "verify", write(tmp_path, obj)))
    assert result.returncode == 1, line
    assert ": invalid: " in line and expected in line, line


def test_update_removed_from_the_middle_of_the_full_chain(tmp_path: Path) -> None:
    obj = full_chain()
    del obj["updates"][2]
    line = one_line(result := run("proof", "verify", write(tmp_path, obj)))
    assert result.returncode == 1, line
    assert "invalid: updates[2]: signature period 865" in line


def test_finality_update_needs_its_period_committee(tmp_path: Path) -> None:
    """The vectors' finality update is signed in period 867: the last update (teaching 868's
    committee) is not needed, but without updates[4] (867's committee) it cannot verify."""
    obj = full_chain()
    obj["updates"] = obj["updates"][:4]
    line = one_line(result := run("proof", "verify", write(tmp_path, obj)))
    assert result.returncode == 1, line
    assert "invalid: finality_update: signature period 867" in line


def test_full_chain_claim_of_an_intermediate_header_is_invalid(tmp_path: Path) -> None:
    """The chain must end at exactly the claimed header: an earlier finalized header (one the
    chain passed through) is not what it proves."""
    obj = full_chain()
    obj |= {
        key: _example("beacon-update")[key]
        for key in ("finalized_header_root", "execution_state_root", "execution_block_number")
    }
    line = one_line(result := run("proof", "verify", write(tmp_path, obj)))
    assert result.returncode == 1, line
    assert "slot 7109344" in line


def test_tampered_bootstrap_kind_exit_1(tmp_path: Path) -> None:
    obj = example("beacon-bootstrap")
    branch = obj["bootstrap"]["data"]["current_sync_committee_branch"]
    branch[2] = flip_hex(branch[2])
    line = one_line(result := run("proof", "verify", write(tmp_path, obj, "b.json")))
    assert result.returncode == 1, line
    assert "current sync committee is not in the header's state" in line
    obj = example("beacon-bootstrap")
    obj["block_root"] = flip_hex(obj["block_root"])
    line = one_line(result := run("proof", "verify", write(tmp_path, obj, "r.json")))
    assert result.returncode == 1, line
    assert "is not the trusted" in line


def test_inspect_invalid_shows_how_far_it_got(tmp_path: Path) -> None:
    obj = example("beacon-update")
    _other_valid_signature(obj)
    result = run("proof", "inspect", "--json", write(tmp_path, obj))
    assert result.returncode == 1
    shown = json.loads(result.stdout)
    labels = [label for label, _ in shown["steps"]]
    assert "updates[0] (signed in period 862)" in labels
    assert not any(label.startswith("updates[1]") for label in labels)
    assert shown["reason"].startswith("invalid: updates[1]: ")


# --------------------------------------------------------------------------- unusable (exit 2)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def alter(obj: dict[str, Any]) -> None:
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value

    return alter


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def alter(obj: dict[str, Any]) -> None:
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]

    return alter


U0 = ("updates", 0, "data")
UNUSABLE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no_block_root": (_delete(("block_root",)), "missing field 'block_root'"),
    "no_bootstrap": (_delete(("bootstrap",)), "missing field 'bootstrap'"),
    "no_updates": (_delete(("updates",)), "missing field 'updates'"),
    "no_claim": (
        lambda o: [o.pop(k) for k in ("finalized_header_root", "execution_state_root")],
        "missing field 'finalized_header_root'",
    ),
    "empty_updates": (_set(("updates",), []), "no update to verify"),
    "updates_not_a_list": (_set(("updates",), {}), "'updates' must be an array"),
    "block_root_short": (_set(("block_root",), "0x1234"), "'block_root' must be 32 bytes"),
    "block_root_not_hex": (_set(("block_root",), "0x" + "zz" * 32), "'block_root' is not hex"),
    "block_number_string": (
        _set(("execution_block_number",), "17883995"),
        "'execution_block_number' must be an integer",
    ),
    "state_root_number": (_set(("execution_state_root",), 5), "must be a 0x-prefixed"),
    "slot_as_number": (_set((*U0, "signature_slot"), 7070143), "must be a decimal string"),
    "pubkey_not_hex": (
        _set((*U0, "next_sync_committee", "pubkeys", 7), "0x" + "zz" * 48),
        "pubkeys[7]",
    ),
    "missing_update_field": (_delete((*U0, "finality_branch")), "missing ['finality_branch']"),
    "extra_update_field": (_set((*U0, "verified"), True), "unexpected ['verified']"),
    "short_branch": (
        lambda o: o["updates"][0]["data"]["finality_branch"].pop(),
        "finality_branch must be a list of 6 roots",
    ),
    "deneb_version": (_set(("updates", 0, "version"), "deneb"), "header is in capella"),
    "bootstrap_not_object": (_set(("bootstrap",), "0x00"), "bootstrap must be an object"),
    "finality_update_garbage": (_set(("finality_update",), {"x": 1}), "'finality_update'"),
    "too_few_keys": (
        lambda o: o["bootstrap"]["data"]["current_sync_committee"]["pubkeys"].pop(),
        "list of 512 keys",
    ),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_malformed_exit_2_one_line(name: str, tmp_path: Path) -> None:
    alter, expected = UNUSABLE[name]
    obj = example("beacon-update")
    alter(obj)
    line = one_line(result := run("proof", "verify", write(tmp_path, obj)))
    assert result.returncode == 2, line
    assert ": unusable: " in line and expected in line, line


def test_malformed_bootstrap_kind_exit_2(tmp_path: Path) -> None:
    for i, alter in enumerate(
        (
            _delete(("block_root",)),
            _delete(("bootstrap", "data", "header")),
            _set(("bootstrap", "data", "header", "beacon", "slot"), "-1"),
            _set(("bootstrap", "data", "current_sync_committee_branch"), "0x"),
        )
    ):
        obj = example("beacon-bootstrap")
        alter(obj)
        line = one_line(result := run("proof", "verify", write(tmp_path, obj, f"{i}.json")))
        assert result.returncode == 2, line
        assert ": unusable: " in line


# --------------------------------------------------------------------------- property


def _paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a JSON value (objects and lists included), pubkey lists sampled:
    512 keys would otherwise crowd out everything else."""
    out: list[tuple[Any, ...]] = [path] if path else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj if len(obj) < 64 else obj[:2]):
            out += _paths(value, (*path, i))
    return out


BEACON_EXAMPLES = ["beacon-bootstrap", "beacon-update"]
PATHS = {name: _paths(_example(name)) for name in BEACON_EXAMPLES}
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=100).map(lambda b: "0x" + b.hex()),
    st.integers(min_value=0, max_value=2**70).map(str),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_beacon_examples_never_crash(data: st.DataObject, tmp_path: Path) -> None:
    """Replacing, deleting or retyping any node of a beacon example gives valid, invalid or
    unusable with a one-line reason, never an exception; a change is never valid unless it
    only drops one of the optional claims."""
    name = data.draw(st.sampled_from(BEACON_EXAMPLES))
    obj = example(name)
    path = data.draw(st.sampled_from(PATHS[name]))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    action = data.draw(st.sampled_from(["replace", "delete", "flip", "wrap"]))
    if action == "delete":
        if isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
    elif action == "flip" and isinstance(old, str) and old.startswith("0x") and len(old) > 2:
        position = data.draw(st.integers(min_value=2, max_value=len(old) - 1))
        parent[path[-1]] = flip_hex(old, position)
    elif action == "wrap":
        parent[path[-1]] = [old]
    else:
        parent[path[-1]] = data.draw(JSON_SCALARS)
    changed = parent[path[-1]] if action != "delete" else None
    report = proof_files.check_file(write(tmp_path, obj, "mutated.json"))
    assert report.reason and "\n" not in report.reason
    assert report.valid in (True, False, None)
    if report.valid and changed != old:
        optional = {"finalized_header_root", "execution_state_root", "execution_block_number"}
        assert name == "beacon-update" and path[0] in optional and changed is None, (
            path,
            action,
        )


# --------------------------------------------------------------------------- another chain


def _minimal_chain_file() -> dict[str, Any]:
    """A beacon-update file for the Electra spec-test chain (minimal preset, its own genesis
    validators root and fork schedule in ``config``): bootstrap and the first two updates,
    claiming the finalized header the spec's store holds after them (steps.yaml)."""
    from test_beacon_spec_vectors import load  # noqa: PLC0415 (the SSZ decoder lives there)

    case = load("electra/light_client_sync")
    steps = [step["process_update"] for step in case.steps[:2]]
    forks = {fork.name: [f"0x{fork.version.hex()}", fork.epoch] for fork in case.config.forks}
    return {
        "kind": "beacon-update",
        "config": {
            "preset": "minimal",
            "genesis_validators_root": f"0x{case.config.genesis_validators_root.hex()}",
            "forks": forks,
        },
        "block_root": f"0x{case.trusted_block_root.hex()}",
        "bootstrap": {"version": "electra", "data": case.json("bootstrap")},
        "updates": [case.json(step["update"]) for step in steps],
        "finalized_header_root": steps[-1]["checks"]["finalized_header"]["beacon_root"],
    }


def test_a_file_names_its_chain_in_config(tmp_path: Path) -> None:
    obj = _minimal_chain_file()
    result = run("proof", "verify", write(tmp_path, obj, "ok.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Another chain's genesis validators root: every signature is over another domain.
    other = copy.deepcopy(obj)
    other["config"]["genesis_validators_root"] = "0x" + "11" * 32
    line = one_line(result := run("proof", "verify", write(tmp_path, other, "other.json")))
    assert result.returncode == 1 and "does not verify" in line, line
    # Without the config the file is read as mainnet, where slot 16 is before Capella.
    del other["config"]
    line = one_line(result := run("proof", "verify", write(tmp_path, other, "mainnet.json")))
    assert result.returncode == 2 and "slot 16 is in fork phase0" in line, line
    # An unusable config: one line, exit 2.
    for i, config in enumerate(({"preset": "tiny"}, {**obj["config"], "extra": 1}, "minimal")):
        bad = {**obj, "config": config}
        line = one_line(result := run("proof", "verify", write(tmp_path, bad, f"bad{i}.json")))
        assert result.returncode == 2 and "'config'" in line, line
