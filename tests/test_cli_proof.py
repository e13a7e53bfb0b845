"""`passerelle proof verify|inspect`: exit codes, one-line errors, --json, the shipped examples.

The exit-code tests run the real console script in a subprocess, so they see exactly what a
user sees (including any traceback, which must never appear).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.hashing import keccak256
from relayer import proof_files
from relayer.jsonfields import MAX_HEX_CHARS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.json"))
PASSERELLE = str(Path(sys.executable).parent / "passerelle")
KINDS = set(proof_files.KINDS)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PASSERELLE, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write(tmp_path: Path, name: str, obj: Any) -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def flip_hex(value: str, position: int = -1) -> str:
    """Change one hex digit (keeping the string well-formed)."""
    digits = list(value)
    pos = position if position >= 0 else len(digits) + position
    digits[pos] = "1" if digits[pos] != "1" else "2"
    return "".join(digits)


# One semantic alteration per kind: each must turn a valid file into an invalid one (exit 1).
ALTERATIONS = {
    "merkle": lambda o: o.__setitem__("root", flip_hex(o["root"])),
    "committee": lambda o: o["checkpoint"].__setitem__("root", flip_hex(o["checkpoint"]["root"])),
    "message": lambda o: o.__setitem__("message", flip_hex(o["message"])),
    "eth-header": lambda o: o["header"].__setitem__(
        "stateRoot", flip_hex(o["header"]["stateRoot"])
    ),
    "eth-getproof": lambda o: o["proof"].__setitem__(
        "nonce", hex(int(o["proof"]["nonce"], 16) + 1)
    ),
    "eth-receipt": lambda o: o.__setitem__("receipt", flip_hex(o["receipt"])),
    "substrate-header": lambda o: o.__setitem__("header", flip_hex(o["header"], 10)),
    "substrate-storage": lambda o: o.__setitem__("value", flip_hex(o["value"])),
    "grandpa": lambda o: o.__setitem__("set_id", o["set_id"] + 1),
}


def example(kind: str) -> Path:
    return next(p for p in EXAMPLES if load(p)["kind"] == kind)


def test_every_kind_has_one_example() -> None:
    assert {load(p)["kind"] for p in EXAMPLES} == KINDS
    assert len(EXAMPLES) == len(KINDS)


def test_examples_verify_exit_0() -> None:
    result = run("proof", "verify", *EXAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    assert all(line.endswith(": valid") for line in lines)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_altered_example_exit_1(example: Path, tmp_path: Path) -> None:
    obj = load(example)
    ALTERATIONS[obj["kind"]](obj)
    result = run("proof", "verify", write(tmp_path, example.name, obj))
    assert result.returncode == 1, result.stdout + result.stderr
    assert ": invalid: " in result.stdout
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_json_lines_in_order(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", "{")
    result = run("proof", "verify", "--json", EXAMPLES[0], bad, EXAMPLES[1])
    assert result.returncode == 2
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(EXAMPLES[0]), str(bad), str(EXAMPLES[1])]
    assert [r["valid"] for r in rows] == [True, False, True]
    for row in rows:
        assert set(row) == {"file", "valid", "kind", "reason", "details"}
    assert rows[1]["kind"] is None
    assert rows[0]["kind"] == load(EXAMPLES[0])["kind"]


def test_two_wins_over_one(tmp_path: Path) -> None:
    obj = load(EXAMPLES[0])
    ALTERATIONS[obj["kind"]](obj)
    invalid = write(tmp_path, "invalid.json", obj)
    unusable = write(tmp_path, "unusable.json", "not json")
    assert run("proof", "verify", invalid).returncode == 1
    assert run("proof", "verify", invalid, unusable).returncode == 2
    assert run("proof", "verify", unusable, invalid).returncode == 2


GARBAGE: dict[str, Any] = {
    "empty": "",
    "whitespace": "  \n",
    "not_json": "hello",
    "truncated": '{"kind": "merkle", ',
    "array": "[1, 2]",
    "number": "42",
    "no_kind": {"root": "0x00"},
    "unknown_kind": {"kind": "zk-snark"},
    "kind_not_string": {"kind": 7},
    "odd_hex": {"kind": "merkle", "root": "0x123", "index": 0, "branch": [], "leaf": "0x00"},
    "not_hex": {
        "kind": "merkle",
        "root": "0x" + "zz" * 32,
        "index": 0,
        "branch": [],
        "leaf": "0x00",
    },
    "no_0x": {"kind": "merkle", "root": "00" * 32, "index": 0, "branch": [], "leaf": "0x00"},
    "index_string": {"kind": "merkle", "root": "0x" + "11" * 32, "index": "0", "branch": []},
    "index_float": {"kind": "merkle", "root": "0x" + "11" * 32, "index": 1.5, "branch": []},
    "index_bool": {"kind": "merkle", "root": "0x" + "11" * 32, "index": True, "branch": []},
    "index_negative": {"kind": "merkle", "root": "0x" + "11" * 32, "index": -1, "branch": []},
    "branch_not_list": {"kind": "merkle", "root": "0x" + "11" * 32, "index": 0, "branch": "0x"},
    "no_leaf": {"kind": "merkle", "root": "0x" + "11" * 32, "index": 0, "branch": []},
    "checkpoint_not_object": {
        "kind": "committee",
        "checkpoint": [],
        "validators": [],
        "threshold": 1,
        "signatures": [],
    },
    "validator_short": {
        "kind": "committee",
        "checkpoint": {
            "origin": 1,
            "outbox": "0x" + "00" * 32,
            "root": "0x" + "11" * 32,
            "index": 0,
        },
        "validators": ["0x1234"],
        "threshold": 1,
        "signatures": [],
    },
    "getproof_garbage": {"kind": "eth-getproof", "state_root": "0x" + "11" * 32, "proof": {}},
    "header_garbage": {"kind": "eth-header", "hash": "0x" + "11" * 32, "header": {"number": 5}},
    "storage_no_value": {
        "kind": "substrate-storage",
        "state_root": "0x" + "11" * 32,
        "proof": [],
        "key": "0x00",
    },
    "nan": '{"kind": "grandpa", "set_id": NaN}',
    "deep": "[" * 100_000 + "]" * 100_000,
    "huge_number": '{"kind": "merkle", "index": 1' + "0" * 5000 + "}",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_exit_2_one_line(name: str, tmp_path: Path) -> None:
    path = write(tmp_path, f"{name}.json", GARBAGE[name])
    result = run("proof", "verify", path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert ": unusable: " in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_non_utf8_missing_directory_and_oversized(tmp_path: Path) -> None:
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    huge = tmp_path / "huge.json"
    with huge.open("wb") as out:
        out.truncate(proof_files.MAX_FILE_BYTES + 1)
    for path in (binary, tmp_path / "missing.json", tmp_path, huge):
        result = run("proof", "verify", path)
        assert result.returncode == 2, (path, result.stdout, result.stderr)
        assert len(result.stdout.splitlines()) == 1
        assert "Traceback" not in result.stdout + result.stderr


def test_oversized_hex_field(tmp_path: Path) -> None:
    obj = load(example("merkle"))
    obj["root"] = "0x" + "00" * (MAX_HEX_CHARS // 2 + 1)
    result = run("proof", "verify", write(tmp_path, "big.json", obj))
    assert result.returncode == 2
    assert "too large" in result.stdout


def test_usage_errors_are_one_line() -> None:
    result = run("proof", "verify")
    assert result.returncode == 2
    assert result.stderr.startswith("passerelle: ")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run("proof", "frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_inspect_shows_claims_steps_and_verdict(example: Path) -> None:
    result = run("proof", "inspect", example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "claims:" in result.stdout
    assert "checks:" in result.stdout
    assert "verdict: valid" in result.stdout
    as_json = json.loads(run("proof", "inspect", "--json", example).stdout)
    assert as_json["valid"] is True
    assert as_json["steps"] and as_json["claims"]


def test_inspect_invalid_says_why(tmp_path: Path) -> None:
    obj = load(EXAMPLES[0])
    ALTERATIONS[obj["kind"]](obj)
    result = run("proof", "inspect", write(tmp_path, "x.json", obj))
    assert result.returncode == 1
    assert "verdict: invalid: " in result.stdout


def test_T2_caller_supplied_verdict_is_ignored(tmp_path: Path) -> None:
    """A file that says it is verified, or lists its own signers/digest, gains nothing."""
    obj = load(example("committee"))
    obj["checkpoint"]["index"] += 1
    obj |= {
        "verified": True,
        "valid": True,
        "digest": "0x" + "00" * 32,
        "signers": obj["validators"],
    }
    result = run("proof", "verify", write(tmp_path, "t2.json", obj))
    assert result.returncode == 1


# ---------------------------------------------------------------- property: never a crash


def _mutations(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a hex string or integer leaf in a JSON value."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _mutations(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _mutations(v, (*path, i))]
    if (isinstance(obj, str) and obj.startswith("0x") and len(obj) > 2) or (
        isinstance(obj, int) and not isinstance(obj, bool)
    ):
        return [path]
    return []


EXAMPLE_OBJECTS = [load(p) for p in EXAMPLES]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_examples_never_crash(data: st.DataObject, tmp_path: Path) -> None:
    obj = copy.deepcopy(data.draw(st.sampled_from(EXAMPLE_OBJECTS)))
    paths = _mutations(obj)
    path = data.draw(st.sampled_from(paths))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    leaf = parent[path[-1]]
    replacement = data.draw(
        st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70),
            st.binary(max_size=80).map(lambda b: "0x" + b.hex()),
            st.just(None),
            st.text(max_size=10),
        )
        if not isinstance(leaf, str)
        else st.one_of(
            st.integers(min_value=0, max_value=max(len(leaf) - 3, 0)).map(
                lambda i: flip_hex(leaf, 2 + i)
            ),
            st.binary(max_size=80).map(lambda b: "0x" + b.hex()),
            st.just(leaf[:-2]),
            st.just(leaf + "00"),
            st.just(None),
        )
    )
    parent[path[-1]] = replacement
    target = tmp_path / "mutated.json"
    target.write_text(json.dumps(obj))
    report = proof_files.check_file(target)
    assert report.valid in (True, False, None)
    assert report.reason
    assert "\n" not in report.reason


def test_cli_module_runs_as_python_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relayer.cli", "proof", "verify", *EXAMPLES],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0


def test_examples_copy_verifies(tmp_path: Path) -> None:
    """Examples are self-contained: a copy elsewhere verifies too (no relative lookups)."""
    for example in EXAMPLES:
        shutil.copy(example, tmp_path / example.name)
    assert run("proof", "verify", *sorted(tmp_path.glob("*.json"))).returncode == 0


def test_merkle_leaf_and_message_must_agree(tmp_path: Path) -> None:
    obj = load(example("merkle"))
    message = bytes.fromhex(obj["message"][2:])
    agreeing = obj | {"leaf": "0x" + keccak256(message).hex()}
    disagreeing = obj | {"leaf": "0x" + keccak256(message + b"!").hex()}
    assert run("proof", "verify", write(tmp_path, "a.json", agreeing)).returncode == 0
    result = run("proof", "verify", write(tmp_path, "d.json", disagreeing))
    assert result.returncode == 1
    assert "is not keccak256(message)" in result.stdout
